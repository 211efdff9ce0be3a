"""Max and average pooling of a stack of planes (P, H, W): a blob's (N, C, H, W) through
planes(), with Caffe's windows.

A window starts at o*s - p and ends at min(start + k, H + p) (average: the divisor is that
clipped-to-padding size) and is then clipped to the input. Output sizes round up (ceil; or
down, round_mode FLOOR), and a
last window that would start inside the padding only is dropped (pool_output_size).
Parallel over the planes; each plane is read and written by one thread. Masks hold the flat
index h*W + w of each window's maximum within its plane.
"""
from __future__ import annotations

import numpy as np

from ._jit import jit, prange


def planes(a):
    """An (N, C, H, W) array as the (N*C, H, W) stack of its planes (a view of a blob)."""
    return a.reshape(-1, a.shape[-2], a.shape[-1])


def pool_output_size(size: int, kernel: int, pad: int, stride: int, ceil: bool = True) -> int:
    """ceil((size + 2 pad - kernel) / stride) + 1 (floor with ceil=False: round_mode FLOOR),
    minus 1 if the last window starts in the pad."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@jit(parallel=True)
def max_pool_forward(x, kh, kw, ph, pw, sh, sw, y, mask):
    """y = window max; mask = flat index h*W + w of the first maximum (Caffe's strict >)."""
    height, width = x.shape[1], x.shape[2]
    ho, wo = y.shape[1], y.shape[2]
    for p in prange(x.shape[0]):
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
                        v = x[p, iy, ix]
                        if v > best:
                            best = v
                            idx = iy * width + ix
                y[p, oy, ox] = best
                mask[p, oy, ox] = idx


@jit(parallel=True)
def max_pool_backward(dy, mask, dx):
    """dx (overwritten) gets each dy at its window's argmax."""
    height, width = dx.shape[1], dx.shape[2]
    ho, wo = dy.shape[1], dy.shape[2]
    for p in prange(dx.shape[0]):
        for iy in range(height):
            for ix in range(width):
                dx[p, iy, ix] = 0.0
        for oy in range(ho):
            for ox in range(wo):
                idx = mask[p, oy, ox]
                if idx >= 0:
                    dx[p, idx // width, idx % width] += dy[p, oy, ox]


@jit(parallel=True)
def max_pool_2x2_forward(x, y, mask):
    """max_pool_forward for 2x2 windows at stride 2 that tile the input exactly (no pad, even
    H and W): the window most Caffe nets pool with. With the geometry fixed, LLVM vectorizes
    along the output row; measured 0.16 ms against 1.5 ms for LeNet's pool1 on one thread.
    Same values, same first-maximum indices and the same -FLT_MAX start as the general kernel.
    """
    width = x.shape[2]
    ho, wo = y.shape[1], y.shape[2]
    for p in prange(x.shape[0]):
        for oy in range(ho):
            upper = x[p, 2 * oy]
            lower = x[p, 2 * oy + 1]
            out = y[p, oy]
            arg = mask[p, oy]
            top_left = 2 * oy * width
            for ox in range(wo):
                # Caffe's scan order (row by row) with strict >, as selects rather than
                # branches so the loop vectorizes.
                best = np.float32(-3.4028234663852886e38)
                idx = -1
                for v, at in ((upper[2 * ox], top_left + 2 * ox),
                              (upper[2 * ox + 1], top_left + 2 * ox + 1),
                              (lower[2 * ox], top_left + width + 2 * ox),
                              (lower[2 * ox + 1], top_left + width + 2 * ox + 1)):
                    gt = v > best
                    best = v if gt else best
                    idx = at if gt else idx
                out[ox] = best
                arg[ox] = idx


@jit(parallel=True)
def max_pool_2x2_backward(dy, mask, dx):
    """max_pool_backward for max_pool_2x2_forward's windows: each input is either its
    window's argmax (it gets the window's dy) or not (0), so dx is written once, in one pass,
    with no zeroing pass and no scatter."""
    width = dx.shape[2]
    ho, wo = dy.shape[1], dy.shape[2]
    for p in prange(dx.shape[0]):
        for oy in range(ho):
            grad = dy[p, oy]
            arg = mask[p, oy]
            upper = dx[p, 2 * oy]
            lower = dx[p, 2 * oy + 1]
            top_left = 2 * oy * width
            for ox in range(wo):
                g = grad[ox]
                at = arg[ox] - top_left - 2 * ox  # 0, 1 (upper row); width, width + 1 (lower)
                zero = np.float32(0.0)
                upper[2 * ox] = g if at == 0 else zero
                upper[2 * ox + 1] = g if at == 1 else zero
                lower[2 * ox] = g if at == width else zero
                lower[2 * ox + 1] = g if at == width + 1 else zero


@jit(parallel=True)
def ave_pool_forward(x, kh, kw, ph, pw, sh, sw, y):
    height, width = x.shape[1], x.shape[2]
    ho, wo = y.shape[1], y.shape[2]
    for p in prange(x.shape[0]):
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
                        total += x[p, iy, ix]
                y[p, oy, ox] = total / size


@jit(parallel=True)
def ave_pool_backward(dy, kh, kw, ph, pw, sh, sw, dx):
    height, width = dx.shape[1], dx.shape[2]
    ho, wo = dy.shape[1], dy.shape[2]
    for p in prange(dx.shape[0]):
        for iy in range(height):
            for ix in range(width):
                dx[p, iy, ix] = 0.0
        for oy in range(ho):
            hs = oy * sh - ph
            he = min(hs + kh, height + ph)
            for ox in range(wo):
                ws = ox * sw - pw
                we = min(ws + kw, width + pw)
                g = dy[p, oy, ox] / ((he - hs) * (we - ws))
                for iy in range(max(hs, 0), min(he, height)):
                    for ix in range(max(ws, 0), min(we, width)):
                        dx[p, iy, ix] += g
