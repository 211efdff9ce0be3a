"""Elementwise kernels over flat arrays; `out` may be the input (in-place layers)."""
from __future__ import annotations

from ._jit import jit, prange


@jit(parallel=True)
def relu_forward(x, negative_slope, y):
    """y = x if x > 0 else negative_slope * x."""
    for i in prange(x.size):
        v = x[i]
        y[i] = v if v > 0 else v * negative_slope


@jit(parallel=True)
def relu_backward(x, dy, negative_slope, dx):
    """dx = dy if x > 0 else negative_slope * dy (x may be the in-place top: same sign)."""
    for i in prange(x.size):
        dx[i] = dy[i] if x[i] > 0 else dy[i] * negative_slope
