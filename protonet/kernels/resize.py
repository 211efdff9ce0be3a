"""Spatial resampling of stacks of planes (P, H, W): max-unpooling by saved indices (SegNet's
Upsample), bilinear resize with aligned corners (PSPNet's Interp) and nearest resize.

x is the input stack, y the output stack, `index` a stack of flat positions (h * W_out + w)
within each output plane. Parallel over the planes; each plane is written by one thread.
"""
from __future__ import annotations

import numpy as np

from ._jit import jit, prange


@jit(parallel=True)
def unpool_forward(x, index, y):
    """y = 0, then each x goes to its plane's flat position index (the last one written wins
    when two share a position, as in Caffe's loop)."""
    width = y.shape[2]
    for p in prange(x.shape[0]):
        y[p] = 0
        for i in range(x.shape[1]):
            for j in range(x.shape[2]):
                k = int(index[p, i, j])
                y[p, k // width, k % width] = x[p, i, j]


@jit(parallel=True)
def unpool_backward(dy, index, dx):
    """dx (overwritten) = dy at each input's position."""
    width = dy.shape[2]
    for p in prange(dx.shape[0]):
        for i in range(dx.shape[1]):
            for j in range(dx.shape[2]):
                k = int(index[p, i, j])
                dx[p, i, j] = dy[p, k // width, k % width]


@jit()
def _aligned_taps(size_in, size_out):
    """For each output position: (first input tap, offset to the second, its weight), with the
    first and last samples on the first and last inputs (corners aligned)."""
    ratio = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    first = np.empty(size_out, np.int64)
    step = np.empty(size_out, np.int64)
    weight = np.empty(size_out, np.float64)
    for o in range(size_out):
        pos = ratio * o
        i = int(pos)
        first[o] = i
        step[o] = 1 if i < size_in - 1 else 0
        weight[o] = pos - i
    return first, step, weight


@jit(parallel=True)
def bilinear_forward(x, y):
    """y = x resized bilinearly, corners aligned (PSPNet's caffe_cpu_interp2)."""
    hs, hstep, hw = _aligned_taps(x.shape[1], y.shape[1])
    ws, wstep, ww = _aligned_taps(x.shape[2], y.shape[2])
    for p in prange(x.shape[0]):
        for i in range(y.shape[1]):
            h0, h1, b = hs[i], hs[i] + hstep[i], hw[i]
            for j in range(y.shape[2]):
                w0, w1, a = ws[j], ws[j] + wstep[j], ww[j]
                top = (1 - a) * x[p, h0, w0] + a * x[p, h0, w1]
                bottom = (1 - a) * x[p, h1, w0] + a * x[p, h1, w1]
                y[p, i, j] = (1 - b) * top + b * bottom


@jit(parallel=True)
def bilinear_backward(dy, dx):
    """dx (overwritten) = the transpose of bilinear_forward applied to dy."""
    hs, hstep, hw = _aligned_taps(dx.shape[1], dy.shape[1])
    ws, wstep, ww = _aligned_taps(dx.shape[2], dy.shape[2])
    for p in prange(dx.shape[0]):
        dx[p] = 0
        for i in range(dy.shape[1]):
            h0, h1, b = hs[i], hs[i] + hstep[i], hw[i]
            for j in range(dy.shape[2]):
                w0, w1, a = ws[j], ws[j] + wstep[j], ww[j]
                g = dy[p, i, j]
                dx[p, h0, w0] += (1 - b) * (1 - a) * g
                dx[p, h0, w1] += (1 - b) * a * g
                dx[p, h1, w0] += b * (1 - a) * g
                dx[p, h1, w1] += b * a * g


@jit(parallel=True)
def nearest_forward(x, y):
    """y[i, j] = x[floor(i * H / Ho), floor(j * W / Wo)] (OpenCV's nearest resize)."""
    fy = x.shape[1] / y.shape[1]
    fx = x.shape[2] / y.shape[2]
    for p in prange(x.shape[0]):
        for i in range(y.shape[1]):
            si = min(int(np.floor(i * fy)), x.shape[1] - 1)
            for j in range(y.shape[2]):
                sj = min(int(np.floor(j * fx)), x.shape[2] - 1)
                y[p, i, j] = x[p, si, sj]
