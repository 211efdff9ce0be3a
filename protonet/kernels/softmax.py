"""Softmax over the middle axis of an (outer, channels, inner) view, and its fused loss.

Parallel over `outer` (samples); each thread writes its own rows only.
"""
from __future__ import annotations

import math

import numpy as np

from ._jit import jit, prange

FLT_MIN = np.float32(1.17549435e-38)


@jit()
def _softmax_column(x, o, i, y):
    """y[o, :, i] = exp(x - max) / sum(exp(x - max)) for one column."""
    channels = x.shape[1]
    m = x[o, 0, i]
    for c in range(1, channels):
        if x[o, c, i] > m:
            m = x[o, c, i]
    total = np.float32(0.0)
    for c in range(channels):
        e = np.float32(math.exp(x[o, c, i] - m))
        y[o, c, i] = e
        total += e
    for c in range(channels):
        y[o, c, i] /= total


@jit(parallel=True)
def softmax_forward(x, y):
    """y = softmax of x along axis 1."""
    outer, channels, inner = x.shape
    for o in prange(outer):
        for i in range(inner):
            _softmax_column(x, o, i, y)


@jit(parallel=True)
def softmax_backward(y, dy, dx):
    """dx = y * (dy - sum_c(dy * y)) along axis 1."""
    outer, channels, inner = y.shape
    for o in prange(outer):
        for i in range(inner):
            dot = np.float32(0.0)
            for c in range(channels):
                dot += dy[o, c, i] * y[o, c, i]
            for c in range(channels):
                dx[o, c, i] = y[o, c, i] * (dy[o, c, i] - dot)


@jit(parallel=True)
def softmax_loss_forward(x, label, has_ignore, ignore_label, prob, losses):
    """prob = softmax(x); losses[o, i] = -log(max(prob[label], FLT_MIN)), 0 where ignored.
    Returns nothing; a label out of range is marked by losses[o, i] = -1."""
    outer, channels, inner = x.shape
    for o in prange(outer):
        for i in range(inner):
            _softmax_column(x, o, i, prob)
            lab = int(label[o, i])
            if has_ignore and lab == ignore_label:
                losses[o, i] = 0.0
            elif lab < 0 or lab >= channels:
                losses[o, i] = -1.0
            else:
                losses[o, i] = -math.log(max(prob[o, lab, i], FLT_MIN))


@jit(parallel=True)
def softmax_loss_backward(prob, label, has_ignore, ignore_label, scale, dx):
    """dx = scale * (prob - onehot(label)); 0 where the label is ignored."""
    outer, channels, inner = prob.shape
    for o in prange(outer):
        for i in range(inner):
            lab = int(label[o, i])
            if has_ignore and lab == ignore_label:
                for c in range(channels):
                    dx[o, c, i] = 0.0
            else:
                for c in range(channels):
                    dx[o, c, i] = prob[o, c, i] * scale
                dx[o, lab, i] -= scale
