"""Depthwise convolution done directly: each channel with its own k x k filter, no im2col.

x (N, C, H, W), w (C, KH, KW), y (N, C, Ho, Wo); geometry (ph, pw, sh, sw, dh, dw) as in
Caffe's convolution: input row oy * sh - ph + i * dh for filter row i (0 outside). Each loop
nest runs tap by tap over the output positions whose input lies inside the map (_valid), so
the innermost loop is a plain strided multiply-add without bounds tests.
"""
from __future__ import annotations

from ._jit import jit, prange


@jit()
def _valid(out_size, in_size, pad, stride, offset):
    """(first, end) of the outputs o with 0 <= o * stride - pad + offset < in_size."""
    start = pad - offset
    first = 0 if start <= 0 else (start + stride - 1) // stride
    last = (in_size - 1 + pad - offset)
    end = 0 if last < 0 else min(out_size, last // stride + 1)
    return first, max(first, end)


@jit(parallel=True)
def depthwise_forward(x, w, ph, pw, sh, sw, dh, dw, y):
    """y = the channel's filter over the channel. Parallel over the planes (n, c)."""
    channels = x.shape[1]
    kh, kw = w.shape[1], w.shape[2]
    for p in prange(x.shape[0] * channels):
        n, c = p // channels, p % channels
        y[n, c] = 0
        for i in range(kh):
            oy0, oy1 = _valid(y.shape[2], x.shape[2], ph, sh, i * dh)
            for j in range(kw):
                ox0, ox1 = _valid(y.shape[3], x.shape[3], pw, sw, j * dw)
                tap = w[c, i, j]
                for oy in range(oy0, oy1):
                    iy = oy * sh - ph + i * dh
                    for ox in range(ox0, ox1):
                        y[n, c, oy, ox] += tap * x[n, c, iy, ox * sw - pw + j * dw]


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
