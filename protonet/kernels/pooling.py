"""Max and average pooling over (N, C, H, W), with Caffe's windows.

A window starts at o*s - p and ends at min(start + k, H + p) (average: the divisor is that
clipped-to-padding size) and is then clipped to the input. Output sizes round up (ceil), and a
last window that would start inside the padding only is dropped (pool_output_size).
Parallel over the N*C planes; each plane is read and written by one thread.
"""
from __future__ import annotations

import numpy as np

from ._jit import jit, prange


def pool_output_size(size: int, kernel: int, pad: int, stride: int) -> int:
    """ceil((size + 2 pad - kernel) / stride) + 1, minus 1 if the last window starts in the pad."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@jit(parallel=True)
def max_pool_forward(x, kh, kw, ph, pw, sh, sw, y, mask):
    """y = window max; mask = flat index h*W + w of the first maximum (Caffe's strict >)."""
    n_img, channels, height, width = x.shape
    ho, wo = y.shape[2], y.shape[3]
    for plane in prange(n_img * channels):
        n = plane // channels
        c = plane % channels
        for oy in range(ho):
            hs = oy * sh - ph
            he = min(hs + kh, height)
            hs = max(hs, 0)
            for ox in range(wo):
                ws = ox * sw - pw
                we = min(ws + kw, width)
                ws = max(ws, 0)
                best = np.float32(-3.4028234663852886e38)
                idx = -1
                for iy in range(hs, he):
                    for ix in range(ws, we):
                        v = x[n, c, iy, ix]
                        if v > best:
                            best = v
                            idx = iy * width + ix
                y[n, c, oy, ox] = best
                mask[n, c, oy, ox] = idx


@jit(parallel=True)
def max_pool_backward(dy, mask, dx):
    """dx (overwritten) gets each dy at its window's argmax."""
    n_img, channels, height, width = dx.shape
    ho, wo = dy.shape[2], dy.shape[3]
    for plane in prange(n_img * channels):
        n = plane // channels
        c = plane % channels
        for iy in range(height):
            for ix in range(width):
                dx[n, c, iy, ix] = 0.0
        for oy in range(ho):
            for ox in range(wo):
                idx = mask[n, c, oy, ox]
                if idx >= 0:
                    dx[n, c, idx // width, idx % width] += dy[n, c, oy, ox]


@jit(parallel=True)
def ave_pool_forward(x, kh, kw, ph, pw, sh, sw, y):
    n_img, channels, height, width = x.shape
    ho, wo = y.shape[2], y.shape[3]
    for plane in prange(n_img * channels):
        n = plane // channels
        c = plane % channels
        for oy in range(ho):
            hs = oy * sh - ph
            he = min(hs + kh, height + ph)
            for ox in range(wo):
                ws = ox * sw - pw
                we = min(ws + kw, width + pw)
                size = (he - hs) * (we - ws)
                total = np.float32(0.0)
                for iy in range(max(hs, 0), min(he, height)):
                    for ix in range(max(ws, 0), min(we, width)):
                        total += x[n, c, iy, ix]
                y[n, c, oy, ox] = total / size


@jit(parallel=True)
def ave_pool_backward(dy, kh, kw, ph, pw, sh, sw, dx):
    n_img, channels, height, width = dx.shape
    ho, wo = dy.shape[2], dy.shape[3]
    for plane in prange(n_img * channels):
        n = plane // channels
        c = plane % channels
        for iy in range(height):
            for ix in range(width):
                dx[n, c, iy, ix] = 0.0
        for oy in range(ho):
            hs = oy * sh - ph
            he = min(hs + kh, height + ph)
            for ox in range(wo):
                ws = ox * sw - pw
                we = min(ws + kw, width + pw)
                g = dy[n, c, oy, ox] / ((he - hs) * (we - ws))
                for iy in range(max(hs, 0), min(he, height)):
                    for ix in range(max(ws, 0), min(we, width)):
                        dx[n, c, iy, ix] += g
