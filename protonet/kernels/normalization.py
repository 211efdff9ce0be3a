"""Local response normalisation across channels (Caffe's LRN, ACROSS_CHANNELS).

The window sum over channels runs as Caffe's does (add the head channel, subtract the tail),
so rounding matches its order. WITHIN_CHANNEL LRN is built from average pooling instead, and
its power and product (lrn_within_power) are here.

scale^-beta is float32's pow (powers), as Caffe's powx, but for beta 0.75 (Caffe's default,
and AlexNet's, GoogLeNet's and CIFAR-10 full's): 1 / (sqrt(s) sqrt(sqrt(s))) in float64,
rounded once to float32, a loop LLVM vectorizes (2 ns an element on one core against powf's
4-8). It is the correctly rounded power; glibc's powf, which Caffe calls on Linux, is not:
of 10M scales in [1, 51] 0.064% came out one float32 ulp apart (6e-8 relative), the rest the
same bits.
"""
from __future__ import annotations

import numpy as np

from ._jit import jit, prange


# Pixels of one image handled together: the channel loops run over a contiguous block of
# at most this many pixels, so they vectorize (a loop over channels per pixel strides by a
# whole plane and cannot).
PIXELS = 256
# ... and a batch is cut into at least this many blocks (of at least 16 pixels), so that every
# thread gets some: CaffeNet's norm2 at batch 1 (13 x 13 pixels) was one block, on one thread.
# A fixed count, as numba.get_num_threads() in a kernel keeps numba from caching it on disk.
MIN_BLOCKS = 8


# A power and a divide per element (about 5 ns on one thread) pay for the threads from about
# 8K elements: CaffeNet's norm2 at batch 1 (43K).
LRN_PARALLEL_MIN_ELEMENTS = 1 << 13


@jit()
def powers(s, neg_beta, out):
    """out[q] = s[q] ** neg_beta for 1-D float32 s and out (distinct arrays: in place, the
    loop runs scalar); for neg_beta -0.75 the correctly rounded power through float64 square
    roots (see the module docstring)."""
    if neg_beta == np.float32(-0.75):
        for q in range(s.shape[0]):
            root = np.sqrt(np.float64(s[q]))
            out[q] = np.float32(1.0 / (root * np.sqrt(root)))
    else:
        for q in range(s.shape[0]):
            out[q] = s[q] ** neg_beta


@jit(parallel=True, min_elements=LRN_PARALLEL_MIN_ELEMENTS)
def lrn_across_forward(x, size, alpha_over_size, k, neg_beta, scale, y):
    """scale = k + alpha/size * (sum of x^2 over `size` channels centred on c, zero padded);
    y = x * scale^-beta. The window sum runs as Caffe's: add the head channel, subtract the
    tail. Parallel over blocks of an image's pixels; each writes only its own pixels."""
    n_img, channels = x.shape[:2]
    pre_pad = (size - 1) // 2
    xs, ss, ys = _by_pixels(x), _by_pixels(scale), _by_pixels(y)
    width = _block_width(n_img, xs.shape[2])
    blocks = -(-xs.shape[2] // width)
    for b in prange(n_img * blocks):
        n, p0, p1 = _block(b, blocks, width, xs.shape[2])
        s = np.empty(p1 - p0, np.float32)
        s[:] = k
        for c in range(min(pre_pad + 1, channels)):
            _add_squares(s, xs[n, c, p0:p1], alpha_over_size, True)
        ss[n, 0, p0:p1] = s
        for c in range(1, channels):
            if c + pre_pad < channels:
                _add_squares(s, xs[n, c + pre_pad, p0:p1], alpha_over_size, True)
            if c - 1 - pre_pad >= 0:
                _add_squares(s, xs[n, c - 1 - pre_pad, p0:p1], alpha_over_size, False)
            ss[n, c, p0:p1] = s
        for c in range(channels):   # s, the window's running sum, now holds the powers
            xc, yc = xs[n, c, p0:p1], ys[n, c, p0:p1]
            powers(ss[n, c, p0:p1], neg_beta, s)
            for q in range(p1 - p0):
                yc[q] = xc[q] * s[q]


@jit(parallel=True, min_elements=LRN_PARALLEL_MIN_ELEMENTS)
def lrn_within_power(pool, alpha, neg_beta, x, power, y):
    """power = (1 + alpha * pool)^-beta, y = x * power: WITHIN_CHANNEL LRN's Power and
    Eltwise PROD layers in Caffe's float32 steps (scale, shift, powers), one pass on the
    threads; y, which holds the power's base first, is none of the other arrays. numpy's
    power ran on one thread: 7 ns an element, 0.96 ms of CIFAR-10 full's norm1 at batch 16
    (131K elements)."""
    ps, xs, ws, ys = pool.reshape(-1), x.reshape(-1), power.reshape(-1), y.reshape(-1)
    n = ps.shape[0]
    chunks = min(n, 64)
    one = np.float32(1)
    for chunk in prange(chunks):
        start, end = chunk * n // chunks, (chunk + 1) * n // chunks
        # The power's base in y, overwritten after (LRN never works in place): powers in
        # place would leave LLVM's vectorized loop (its overlap check fails) for the scalar
        # one, 1.6x the time.
        for i in range(start, end):
            ys[i] = ps[i] * alpha + one
        powers(ys[start:end], neg_beta, ws[start:end])
        for i in range(start, end):
            ys[i] = xs[i] * ws[i]


@jit()
def _by_pixels(a):
    """An (N, C, H, W) array as (N, C, H*W)."""
    return a.reshape(a.shape[0], a.shape[1], a.shape[2] * a.shape[3])


@jit()
def _block_width(n_img, plane):
    """Pixels per block: PIXELS, or fewer (a multiple of 16) to make MIN_BLOCKS blocks."""
    per_image = -(-MIN_BLOCKS // n_img)
    return min(PIXELS, max(16, -(-plane // (16 * per_image)) * 16))


@jit()
def _block(b, blocks, width, plane):
    """(image, first pixel, end pixel) of block b (`blocks` of `width` pixels an image)."""
    p0 = (b % blocks) * width
    return b // blocks, p0, min(plane, p0 + width)


@jit()
def _add_squares(s, v, factor, add):
    """s += factor * v^2, or s -= factor * v^2 (Caffe's subtraction of the window's tail, in
    its rounding)."""
    if add:
        for q in range(s.shape[0]):
            s[q] += factor * (v[q] * v[q])
    else:
        for q in range(s.shape[0]):
            s[q] -= factor * (v[q] * v[q])


@jit(parallel=True, min_elements=LRN_PARALLEL_MIN_ELEMENTS)
def lrn_across_backward(x, y, scale, dy, size, neg_beta, cache_ratio, dx):
    """Caffe's CrossChannelBackward: dx = dy scale^-beta
    - 2 alpha beta / size * x * sum over the window of dy y / scale. `dx` must not alias
    `dy`. Parallel over blocks of pixels as the forward."""
    n_img, channels = x.shape[:2]
    pre_pad = (size - 1) // 2
    xs, ys, ss = _by_pixels(x), _by_pixels(y), _by_pixels(scale)
    dys, dxs = _by_pixels(dy), _by_pixels(dx)
    width = _block_width(n_img, xs.shape[2])
    blocks = -(-xs.shape[2] // width)
    for b in prange(n_img * blocks):
        n, p0, p1 = _block(b, blocks, width, xs.shape[2])
        accum = np.zeros(p1 - p0, np.float32)
        power = np.empty(p1 - p0, np.float32)
        for c in range(min(pre_pad, channels)):
            _add_ratio(accum, dys[n, c, p0:p1], ys[n, c, p0:p1], ss[n, c, p0:p1], True)
        for c in range(channels):
            head = c + pre_pad
            if head < channels:
                _add_ratio(accum, dys[n, head, p0:p1], ys[n, head, p0:p1],
                           ss[n, head, p0:p1], True)
            xc, sc, dyc, dxc = xs[n, c, p0:p1], ss[n, c, p0:p1], dys[n, c, p0:p1], \
                dxs[n, c, p0:p1]
            powers(sc, neg_beta, power)
            for q in range(p1 - p0):
                dxc[q] = dyc[q] * power[q] - cache_ratio * (xc[q] * accum[q])
            tail = c - pre_pad
            if tail >= 0:
                _add_ratio(accum, dys[n, tail, p0:p1], ys[n, tail, p0:p1],
                           ss[n, tail, p0:p1], False)


@jit()
def _add_ratio(accum, dy, y, scale, add):
    """accum += dy * y / scale (or -=, for the window's tail)."""
    if add:
        for q in range(accum.shape[0]):
            accum[q] += dy[q] * y[q] / scale[q]
    else:
        for q in range(accum.shape[0]):
            accum[q] -= dy[q] * y[q] / scale[q]
