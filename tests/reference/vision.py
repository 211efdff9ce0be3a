"""Direct-loop references for convolution, pooling and inner product (slow and obvious)."""
import math

import numpy as np


def conv(x, w, b, stride, pad, dilation, group):
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    ho = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    wo = (wd + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    y = np.zeros((n, m, ho, wo))
    mg = m // group
    for o in range(m):
        g = o // mg
        for oy in range(ho):
            for ox in range(wo):
                patch = xp[:, g * cg:(g + 1) * cg, oy * sh:oy * sh + dh * (kh - 1) + 1:dh,
                           ox * sw:ox * sw + dw * (kw - 1) + 1:dw]
                y[:, o, oy, ox] = (patch * w[o]).sum(axis=(1, 2, 3))
    if b is not None:
        y += b[None, :, None, None]
    return y


def deconv(x, w, b, stride, pad, dilation, group):
    """The adjoint of conv in x: scatter each input pixel times the kernel."""
    n, c, h, wd = x.shape
    _, mg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    ho = sh * (h - 1) + dh * (kh - 1) + 1 - 2 * ph
    wo = sw * (wd - 1) + dw * (kw - 1) + 1 - 2 * pw
    full = np.zeros((n, mg * group, ho + 2 * ph, wo + 2 * pw))
    cg = c // group
    for ci in range(c):
        g = ci // cg
        for iy in range(h):
            for ix in range(wd):
                for i in range(kh):
                    for j in range(kw):
                        full[:, g * mg:(g + 1) * mg, iy * sh + i * dh, ix * sw + j * dw] += \
                            x[:, ci, iy, ix][:, None] * w[ci, :, i, j][None, :]
    y = full[:, :, ph:ph + ho, pw:pw + wo]
    if b is not None:
        y = y + b[None, :, None, None]
    return y


def pool(x, kernel, stride, pad, method, ceil=True):
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    rounding = math.ceil if ceil else math.floor
    ho = int(rounding((h + 2 * ph - kh) / sh)) + 1
    wo = int(rounding((w + 2 * pw - kw) / sw)) + 1
    if ph and (ho - 1) * sh >= h + ph:
        ho -= 1
    if pw and (wo - 1) * sw >= w + pw:
        wo -= 1
    y = np.zeros((n, c, ho, wo))
    for oy in range(ho):
        for ox in range(wo):
            hs, ws = oy * sh - ph, ox * sw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            size = (he - hs) * (we - ws)
            win = x[:, :, max(hs, 0):min(he, h), max(ws, 0):min(we, w)]
            y[:, :, oy, ox] = win.max(axis=(2, 3)) if method == "MAX" else \
                win.sum(axis=(2, 3)) / size
    return y


def inner_product(x, w, b, axis, transpose):
    m = int(np.prod(x.shape[:axis]))
    x2 = x.reshape(m, -1)
    y = x2 @ (w if transpose else w.T)
    if b is not None:
        y = y + b
    return y.reshape(*x.shape[:axis], -1)


def caffe_pool_float32(x, kernel, stride, pad, method, ceil=True):
    """Caffe's CPU pooling step by step in float32, for exact comparisons: (y, mask, backward)
    where mask holds the first maximum's h * W + w in Caffe's scan order (strict > from
    -FLT_MAX; -1 when nothing beats it) and backward(dy) gives the bottom diff summed in
    Caffe's order (outputs row by row). x is (N, C, H, W) float32."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    ho, wo = pool(np.zeros((1, 1, h, w)), kernel, stride, pad, method, ceil).shape[2:]
    y = np.zeros((n, c, ho, wo), np.float32)
    mask = np.full((n, c, ho, wo), -1, np.int64)
    windows = []   # (oy, ox, rows, cols, pool size)
    for oy in range(ho):
        for ox in range(wo):
            hs, ws = oy * sh - ph, ox * sw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            size = (he - hs) * (we - ws)
            windows.append((oy, ox, range(max(hs, 0), min(he, h)),
                            range(max(ws, 0), min(we, w)), size))
    for a in range(n):
        for b in range(c):
            for oy, ox, rows, cols, size in windows:
                if method == "MAX":
                    best = np.float32(-np.finfo(np.float32).max)
                    for iy in rows:
                        for ix in cols:
                            if x[a, b, iy, ix] > best:
                                best, mask[a, b, oy, ox] = x[a, b, iy, ix], iy * w + ix
                    y[a, b, oy, ox] = best
                else:
                    total = np.float32(0)
                    for iy in rows:
                        for ix in cols:
                            total = np.float32(total + x[a, b, iy, ix])
                    y[a, b, oy, ox] = np.float32(total / np.float32(size))

    def backward(dy):
        dx = np.zeros(x.shape, np.float32)
        for a in range(n):
            for b in range(c):
                for oy, ox, rows, cols, size in windows:
                    if method == "MAX":
                        at = mask[a, b, oy, ox]
                        if at >= 0:
                            dx[a, b, at // w, at % w] += dy[a, b, oy, ox]
                        continue
                    g = np.float32(dy[a, b, oy, ox] / np.float32(size))
                    for iy in rows:
                        for ix in cols:
                            dx[a, b, iy, ix] = np.float32(dx[a, b, iy, ix] + g)
        return dx

    return y, mask, backward
