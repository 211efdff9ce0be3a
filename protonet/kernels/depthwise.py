"""Depthwise convolution done directly: each channel with its own k x k filter, no im2col.

x (N, C, H, W), w (C, KH, KW), y (N, C, Ho, Wo); geometry (ph, pw, sh, sw, dh, dw) as in
Caffe's convolution: input row oy * sh - ph + i * dh for filter row i (0 outside). The
forward works on a zero-padded copy of each plane split by stride phase (kernels/phases.py);
the backward loop nests run tap by tap over the output positions whose
input lies inside the map (_valid), a strided multiply-add without bounds tests.
"""
from __future__ import annotations

import numpy as np

from ._jit import jit, prange
from .phases import CHUNKS, phase_shape, tap_sums, write_phases


@jit()
def _valid(out_size, in_size, pad, stride, offset):
    """(first, end) of the outputs o with 0 <= o * stride - pad + offset < in_size."""
    start = pad - offset
    first = 0 if start <= 0 else (start + stride - 1) // stride
    last = (in_size - 1 + pad - offset)
    end = 0 if last < 0 else min(out_size, last // stride + 1)
    return first, max(first, end)


# Floats of one block of output rows accumulated at a time (8 KB: stays in L1).
BLOCK_FLOATS = 2048


@jit(parallel=True)
def depthwise_forward(x, w, ph, pw, sh, sw, dh, dw, y):
    """y = the channel's filter over the channel. Parallel over chunks of planes (n, c).

    On the plane's phase planes (kernels/phases.py) every tap is a stride-1 shift, so a block
    of output rows is one flat multiply-add per tap that LLVM vectorizes (the per-row loop
    with a run-time stride it replaced stayed scalar: 2-4x slower on MobileNet's layers).
    Each output is summed over the taps in (i, j) order from 0, padding contributing
    tap * 0, as Caffe's im2col + GEMM.
    """
    n_img, channels, height, width = x.shape
    kh, kw = w.shape[1], w.shape[2]
    out_h, out_w = y.shape[2], y.shape[3]
    shape = phase_shape(height, width, kh, kw, ph, pw, sh, sw, dh, dw, out_h, out_w)
    pitch = shape[3]
    block = max(1, min(out_h, BLOCK_FLOATS // pitch))
    n_planes = n_img * channels
    # Chunks of planes, so each thread zeroes its phase planes once (their padding stays 0).
    chunks = min(n_planes, CHUNKS)
    for chunk in prange(chunks):
        planes = np.zeros(shape, np.float32)
        acc = np.empty(block * pitch, np.float32)
        for p in range(chunk * n_planes // chunks, (chunk + 1) * n_planes // chunks):
            n, c = p // channels, p % channels
            write_phases(x[n, c], ph, pw, planes)
            for r0 in range(0, out_h, block):
                rows = min(block, out_h - r0)
                tap_sums(planes, w[c], dh, dw, r0, (rows - 1) * pitch + out_w, acc)
                for k in range(rows):
                    y[n, c, r0 + k] = acc[k * pitch:k * pitch + out_w]


@jit(parallel=True)
def depthwise_backward_data(dy, w, ph, pw, sh, sw, dh, dw, dx):
    """dx (overwritten) = the transpose of depthwise_forward applied to dy. Parallel over
    the planes: a plane's dx gathers from its own dy only."""
    channels = dx.shape[1]
    kh, kw = w.shape[1], w.shape[2]
    for p in prange(dx.shape[0] * channels):
        n, c = p // channels, p % channels
        dx[n, c] = 0
        for i in range(kh):
            oy0, oy1 = _valid(dy.shape[2], dx.shape[2], ph, sh, i * dh)
            for j in range(kw):
                ox0, ox1 = _valid(dy.shape[3], dx.shape[3], pw, sw, j * dw)
                tap = w[c, i, j]
                for oy in range(oy0, oy1):
                    iy = oy * sh - ph + i * dh
                    for ox in range(ox0, ox1):
                        dx[n, c, iy, ox * sw - pw + j * dw] += tap * dy[n, c, oy, ox]


@jit(parallel=True)
def depthwise_backward_weight(x, dy, ph, pw, sh, sw, dh, dw, dw_out):
    """dw_out (ADDED to) += sum over images and positions of dy * x under each tap.
    Parallel over channels: each channel's filter gradient is summed by one thread."""
    kh, kw = dw_out.shape[1], dw_out.shape[2]
    for c in prange(x.shape[1]):
        for i in range(kh):
            oy0, oy1 = _valid(dy.shape[2], x.shape[2], ph, sh, i * dh)
            for j in range(kw):
                ox0, ox1 = _valid(dy.shape[3], x.shape[3], pw, sw, j * dw)
                total = 0.0
                for n in range(x.shape[0]):
                    for oy in range(oy0, oy1):
                        iy = oy * sh - ph + i * dh
                        for ox in range(ox0, ox1):
                            total += dy[n, c, oy, ox] * x[n, c, iy, ox * sw - pw + j * dw]
                dw_out[c, i, j] += total
