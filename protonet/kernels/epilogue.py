"""A producing layer's last pass over its output, per channel: y = y * scale + shift (or
y + shift, or y as it is), then optionally ReLU (y if y > 0 else y * negative_slope).

Without scale and ReLU it is the bias add every Convolution and InnerProduct does; with them
it is a BatchNorm + Scale folded in and the in-place ReLU after it (protonet/fusion.py), done
while the row is in cache instead of in passes of their own over the blob. An absent scale or
shift is an empty array. Each step is the arithmetic of the layer it replaces (float32, no
contraction into FMA), so a bias + ReLU gives the same bits as the two layers.
"""
from __future__ import annotations

import math

import numpy as np

from ._jit import jit, prange

NONE = np.zeros(0, np.float32)   # an absent scale or shift


def channel_planes(array):
    """An array with its channels on axis 1 as (N, C, the rest), the layout of the kernels
    below (a vector as one plane). The sizes are spelt out, so that an empty batch (N = 0,
    e.g. after a Filter layer) reshapes too."""
    if array.ndim < 2:
        return array.reshape(1, 1, array.size)
    n, c = array.shape[:2]
    return array.reshape(n, c, math.prod(array.shape[2:]))


@jit()
def finish_row(row, a, b, has_scale, has_shift, relu, negative_slope):
    """One channel's row in place: the affine step, then the ReLU (separate loops keep each
    vectorized; the row is still in L1/L2 for the second)."""
    if has_scale:
        for k in range(row.size):
            row[k] = row[k] * a + b
    elif has_shift:
        for k in range(row.size):
            row[k] += b
    if relu:
        relu_row(row, negative_slope)


@jit()
def relu_row(row, negative_slope):
    """ReLU's arithmetic (kernels/neuron.py's relu_forward) on one row in place."""
    for k in range(row.size):
        v = row[k]
        row[k] = v if v > 0 else v * negative_slope


@jit()
def finish_channel_row(row, m, scale, shift, relu, negative_slope):
    """A row of channel m in place: finish_row with scale[m] and shift[m] (each absent when
    empty)."""
    has_scale, has_shift = scale.size > 0, shift.size > 0
    a = scale[m] if has_scale else np.float32(1)
    b = shift[m] if has_shift else np.float32(0)
    finish_row(row, a, b, has_scale, has_shift, relu, negative_slope)


@jit()
def finish_channel_plane(plane, m, scale, shift, relu, negative_slope):
    """A plane (H, W) of channel m in place, row by row: finish_channel_row on each, by a
    kernel that has just written them (the rows still in its cache)."""
    for row in range(plane.shape[0]):
        finish_channel_row(plane[row], m, scale, shift, relu, negative_slope)


@jit(parallel=True)
def channel_epilogue(y, scale, shift, relu, negative_slope):
    """y (N, M, P) in place, channel m with scale[m] and shift[m]."""
    n_img, m_out, p = y.shape
    for plane in prange(n_img * m_out):
        n = plane // m_out
        m = plane % m_out
        finish_channel_row(y[n, m], m, scale, shift, relu, negative_slope)


@jit(parallel=True)
def sum_epilogue(a, b, y, scale, shift, relu, negative_slope):
    """y = a + b (all (N, M, P); y may be a or b), then channel m's epilogue with scale[m]
    and shift[m], plane by plane in one pass on numba's threads: an Eltwise SUM with what the
    net fused after it (ResNet's ReLU after each shortcut sum). The sum is numpy's a + b,
    bit for bit."""
    n_img, m_out, p = y.shape
    for plane in prange(n_img * m_out):
        n = plane // m_out
        m = plane % m_out
        row, first, second = y[n, m], a[n, m], b[n, m]
        for k in range(p):
            row[k] = first[k] + second[k]
        finish_channel_row(row, m, scale, shift, relu, negative_slope)


@jit(parallel=True)
def channels_first_epilogue(y2, out, scale, shift, relu, negative_slope):
    """out[n, m, p] = y2[m, n, p] (a GEMM's (M, N, P) output into the blob's (N, M, P)), with
    the epilogue applied in the same pass."""
    m_out, n_img, p = y2.shape
    for n in prange(n_img):
        for m in range(m_out):
            row = out[n, m]
            for k in range(p):
                row[k] = y2[m, n, k]
            finish_channel_row(row, m, scale, shift, relu, negative_slope)


@jit(parallel=True)
def rows_epilogue(y, scale, shift, relu, negative_slope):
    """y (N, M) in place, column m with scale[m] and shift[m]: an InnerProduct's output,
    where the channel changes from one element to the next (channel_epilogue on it as
    (N, M, 1) pays a call per element: 1.8 ms instead of 11 us at 16 x 4096)."""
    n_rows, m_out = y.shape
    has_scale, has_shift = scale.size > 0, shift.size > 0
    for i in prange(n_rows):
        row = y[i]
        if has_scale:
            for m in range(m_out):
                row[m] = row[m] * scale[m] + shift[m]
        elif has_shift:
            for m in range(m_out):
                row[m] += shift[m]
        if relu:
            relu_row(row, negative_slope)
