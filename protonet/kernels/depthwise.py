"""Depthwise convolution done directly: each channel with its own k x k filter, no im2col.

x (N, C, H, W), w (C, KH, KW), y (N, C, Ho, Wo); geometry (ph, pw, sh, sw, dh, dw) as in
Caffe's convolution: input row oy * sh - ph + i * dh for filter row i (0 outside). The
forward works on a zero-padded copy of each plane split by stride phase (see
depthwise_forward); the backward loop nests run tap by tap over the output positions whose
input lies inside the map (_valid), a strided multiply-add without bounds tests.
"""
from __future__ import annotations

import numba
import numpy as np

from ._jit import jit, prange


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


@jit()
def _phase_planes(x, n, c, ph, pw, sh, sw, planes):
    """Write plane (n, c) of x, zero-padded, split by stride phase: planes[qy, qx, r, t] =
    padded[r * sh + qy, t * sw + qx]. Only the input's positions are written: the padding
    stays as the caller zeroed it (the same positions for every plane)."""
    height, width = x.shape[2], x.shape[3]
    pitch = planes.shape[3]
    for iy in range(height):
        qy = (iy + ph) % sh
        ry = (iy + ph) // sh
        row = x[n, c, iy]
        for qx in range(sw):
            t0 = 0 if qx >= pw else (pw - qx + sw - 1) // sw
            t1 = min(pitch, (width - 1 + pw - qx) // sw + 1)
            if t1 <= t0:
                continue
            first = t0 * sw + qx - pw
            src = row[first:first + (t1 - t0 - 1) * sw + 1]
            dst = planes[qy, qx, ry, t0:t1]
            # Strides 1 and 2 as literals: LLVM vectorizes those copies (2 as interleaved
            # loads); a run-time stride stays scalar.
            if sw == 1:
                for t in range(t1 - t0):
                    dst[t] = src[t]
            elif sw == 2:
                for t in range(t1 - t0):
                    dst[t] = src[2 * t]
            else:
                for t in range(t1 - t0):
                    dst[t] = src[sw * t]


@jit(parallel=True)
def depthwise_forward(x, w, ph, pw, sh, sw, dh, dw, y):
    """y = the channel's filter over the channel. Parallel over chunks of planes (n, c).

    In the phase planes every tap (i, j) is a stride-1 shift: output (oy, ox) reads
    planes[(i dh) % sh, (j dw) % sw] at (oy + (i dh) // sh, ox + (j dw) // sw). With the
    outputs laid out at the planes' row pitch, a block of output rows is one flat, contiguous
    multiply-add per tap, which LLVM vectorizes (the former per-row loop with a run-time
    stride stayed scalar: 2-4x slower on MobileNet's layers). Each output is summed over the
    taps in (i, j) order from 0, padding contributing tap * 0, as Caffe's im2col + GEMM.
    """
    n_img, channels, height, width = x.shape
    kh, kw = w.shape[1], w.shape[2]
    out_h, out_w = y.shape[2], y.shape[3]
    rows_q = -(-(height + 2 * ph) // sh)
    pitch = -(-(width + 2 * pw) // sw)
    block = max(1, min(out_h, BLOCK_FLOATS // pitch))
    n_planes = n_img * channels
    # Chunks of planes, so each thread zeroes its phase planes once (their padding stays 0).
    chunks = min(n_planes, 4 * numba.get_num_threads())
    for chunk in prange(chunks):
        planes = np.zeros((sh, sw, rows_q, pitch), np.float32)
        acc = np.empty(block * pitch, np.float32)
        for p in range(chunk * n_planes // chunks, (chunk + 1) * n_planes // chunks):
            n, c = p // channels, p % channels
            _phase_planes(x, n, c, ph, pw, sh, sw, planes)
            for r0 in range(0, out_h, block):
                rows = min(block, out_h - r0)
                length = (rows - 1) * pitch + out_w
                out = acc[:length]
                out[:] = 0
                for i in range(kh):
                    qy, shift_y = (i * dh) % sh, (i * dh) // sh
                    for j in range(kw):
                        qx, shift_x = (j * dw) % sw, (j * dw) // sw
                        start = (r0 + shift_y) * pitch + shift_x
                        src = planes[qy, qx].reshape(-1)[start:start + length]
                        tap = w[c, i, j]
                        for e in range(length):
                            out[e] += tap * src[e]
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
