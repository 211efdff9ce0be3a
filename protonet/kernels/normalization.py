"""Local response normalisation across channels (Caffe's LRN, ACROSS_CHANNELS).

The window sum over channels runs as Caffe's does (add the head channel, subtract the tail),
so rounding matches its order. WITHIN_CHANNEL LRN is built from average pooling instead.
"""
from __future__ import annotations

import numpy as np

from ._jit import jit, prange


@jit(parallel=True)
def lrn_across_forward(x, size, alpha_over_size, k, neg_beta, scale, y):
    """scale = k + alpha/size * (sum of x^2 over `size` channels centred on c, zero padded);
    y = x * scale^-beta. The window sum runs as Caffe's: add the head channel, subtract the
    tail. Parallel over (image, pixel); each writes only its own column of channels."""
    n_img, channels, height, width = x.shape
    pre_pad = (size - 1) // 2
    plane = height * width
    for p in prange(n_img * plane):
        n = p // plane
        i = (p // width) % height
        j = p % width
        s = k
        for c in range(min(pre_pad + 1, channels)):
            v = x[n, c, i, j]
            s += alpha_over_size * (v * v)
        scale[n, 0, i, j] = s
        for c in range(1, channels):
            head = c + pre_pad
            if head < channels:
                v = x[n, head, i, j]
                s += alpha_over_size * (v * v)
            tail = c - 1 - pre_pad
            if tail >= 0:
                v = x[n, tail, i, j]
                s -= alpha_over_size * (v * v)
            scale[n, c, i, j] = s
        for c in range(channels):
            y[n, c, i, j] = x[n, c, i, j] * scale[n, c, i, j] ** neg_beta


@jit(parallel=True)
def lrn_across_backward(x, y, scale, dy, size, neg_beta, cache_ratio, dx):
    """Caffe's CrossChannelBackward: dx = dy scale^-beta
    - 2 alpha beta / size * x * sum over the window of dy y / scale. `dx` must not alias
    `dy`. Parallel over (image, pixel) as the forward."""
    n_img, channels, height, width = x.shape
    pre_pad = (size - 1) // 2
    plane = height * width
    for p in prange(n_img * plane):
        n = p // plane
        i = (p // width) % height
        j = p % width
        accum = np.float32(0.0)
        for c in range(min(pre_pad, channels)):
            accum += dy[n, c, i, j] * y[n, c, i, j] / scale[n, c, i, j]
        for c in range(channels):
            head = c + pre_pad
            if head < channels:
                accum += dy[n, head, i, j] * y[n, head, i, j] / scale[n, head, i, j]
            grad = dy[n, c, i, j] * scale[n, c, i, j] ** neg_beta
            dx[n, c, i, j] = grad - cache_ratio * (x[n, c, i, j] * accum)
            tail = c - pre_pad
            if tail >= 0:
                accum -= dy[n, tail, i, j] * y[n, tail, i, j] / scale[n, tail, i, j]
