"""Local response normalisation (Caffe's LRN), across channels and within a channel.

ACROSS_CHANNELS: the window sum over channels runs as Caffe's does (add the head channel,
subtract the tail), so rounding matches its order. WITHIN_CHANNEL: Caffe composes it of
layers (square, AVE pooling, Power, Eltwise PROD); lrn_within_forward and
lrn_within_backward run those steps in their float32 order, fused in one pass over blocks of
planes.

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
from .phases import CHUNKS, tap_sums


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


# Planes of a within-channel LRN stacked in one zero-padded buffer (see _stack_plan): as
# many as fill about this many floats, so each tap's sum is one long vector loop over them
# (CIFAR-10 full's 8 x 8 planes one at a time left short loops and their remainders).
STACK_FLOATS = 4096


@jit()
def _stack_plan(n_planes, height, width, size):
    """(planes a stack, row pitch, buffer rows, blocks, chunks) for windows of size x size at
    pad (size - 1) / 2: planes stacked pad zero rows apart (a window at stride 1 reaches pad
    rows past its plane, and the gap serves the planes on both sides) and padded by pad zero
    columns each side, so every output's window is a fixed set of offsets from its own
    position in the buffer; the planes in blocks of a stack, the blocks in chunks for the
    threads."""
    pad = (size - 1) // 2
    pitch = width + 2 * pad
    stack = max(1, STACK_FLOATS // ((height + pad) * pitch))
    blocks = -(-n_planes // stack)
    return stack, pitch, pad + stack * (height + pad) + pad, blocks, min(blocks, CHUNKS)


@jit()
def _window_sums(planes, count, taps, buf, sums, out):
    """out[:count] = each of planes[:count]'s sums over the taps' size x size windows at
    stride 1, pad (size - 1) / 2, in Caffe's order (row by row, from 0; the padding adds +0):
    the planes stacked into buf (1, 1, rows, pitch; its padding zero, see _stack_plan) and
    each tap one vector loop over the stack into sums (kernels/phases.tap_sums)."""
    height, width = planes.shape[1], planes.shape[2]
    pad = (taps.shape[0] - 1) // 2
    pitch = buf.shape[3]
    stride = height + pad
    _write_stack(planes, pad, pitch, stride, count, height, width, buf.reshape(-1))
    tap_sums(buf, taps, 1, 1, 0, ((count - 1) * stride + height - 1) * pitch + width, sums)
    _read_stack(sums, pitch, stride, count, height, width, out)


@jit()
def _write_stack(values, pad, pitch, stride, count, height, width, buf):
    """The planes values[:count], each (height, width), into the stack buffer's interior:
    plane k's row h at buffer row pad + k * stride + h, from column pad on."""
    for k in range(count):
        for h in range(height):
            row = values[k, h]
            start = (pad + k * stride + h) * pitch + pad
            dst = buf[start:start + width]
            for w in range(width):
                dst[w] = row[w]


@jit()
def _read_stack(sums, pitch, stride, count, height, width, out):
    """out (count, height, width) = the stacked tap sums at each plane's outputs."""
    for k in range(count):
        for h in range(height):
            start = (k * stride + h) * pitch
            src, row = sums[start:start + width], out[k, h]
            for w in range(width):
                row[w] = src[w]


@jit(parallel=True, min_elements=LRN_PARALLEL_MIN_ELEMENTS)
def lrn_within_forward(x, size, alpha, neg_beta, pool, power, y):
    """WITHIN_CHANNEL LRN forward as Caffe's composed layers compute it, in one pass on the
    threads: square (x * x), AVE pooling of the squares over size x size windows with pad
    (size - 1) / 2 (summed in Caffe's row-by-row order, zero padding adding +0, divided by
    size^2: at that pad every window's divisor), Power (pool * alpha + 1)^-beta, Eltwise PROD
    with x. pool and power are kept for the backward. Blocks of planes are stacked in one
    zero-padded buffer that stays in L1, so each tap is one vector loop (kernels/phases.py's
    tap_sums); the elementwise steps run flat over the block's contiguous planes.
    CIFAR-10 full's norm1 at batch 100, 2 threads: 1.1 against 3.5-3.7 ms for the square,
    AVE pooling and power kernels in turn."""
    n_img, channels, height, width = x.shape
    n_planes = n_img * channels
    xs, ps = x.reshape(n_planes, height, width), pool.reshape(n_planes, height, width)
    ws, ys = power.reshape(n_planes, height, width), y.reshape(n_planes, height, width)
    stack, pitch, rows, blocks, chunks = _stack_plan(n_planes, height, width, size)
    divisor = np.float32(size * size)
    one = np.float32(1)
    taps = np.ones((size, size), np.float32)
    plane = height * width
    for chunk in prange(chunks):
        buf = np.zeros((1, 1, rows, pitch), np.float32)
        sums = np.empty(rows * pitch, np.float32)
        squares = np.empty((stack, height, width), np.float32)
        for b in range(chunk * blocks // chunks, (chunk + 1) * blocks // chunks):
            first = b * stack
            count = min(stack, n_planes - first)
            here = count * plane
            xb = xs[first:first + count].reshape(-1)
            sq = squares.reshape(-1)[:here]
            for i in range(here):
                sq[i] = xb[i] * xb[i]
            _window_sums(squares, count, taps, buf, sums, ps[first:first + count])
            pb = ps[first:first + count].reshape(-1)
            wb = ws[first:first + count].reshape(-1)
            yb = ys[first:first + count].reshape(-1)
            for i in range(here):
                pb[i] = pb[i] / divisor
            # The power's base in y, overwritten after (see powers: not in place).
            for i in range(here):
                yb[i] = pb[i] * alpha + one
            powers(yb, neg_beta, wb)
            for i in range(here):
                yb[i] = xb[i] * wb[i]


@jit(parallel=True, min_elements=LRN_PARALLEL_MIN_ELEMENTS)
def lrn_within_backward(x, dy, pool, power, size, alpha, diff_scale, dx):
    """The backward of lrn_within_forward in Caffe's steps: the gradient reaching the Power
    output (dy * x) times Power's derivative (power / (pool * alpha + 1) * diff_scale, with
    diff_scale = -beta * alpha in float32), spread by AVE pooling's backward (each output's
    share, divided by size^2, gathered by every input in Caffe's scatter order: outputs row
    by row), then the square's (x * 2) times that, added to the Eltwise PROD's dy * power
    (Split's sum). Blocks of planes as the forward."""
    n_img, channels, height, width = x.shape
    n_planes = n_img * channels
    xs, dys = x.reshape(n_planes, height, width), dy.reshape(n_planes, height, width)
    ps, ws = pool.reshape(n_planes, height, width), power.reshape(n_planes, height, width)
    dxs = dx.reshape(n_planes, height, width)
    stack, pitch, rows, blocks, chunks = _stack_plan(n_planes, height, width, size)
    divisor = np.float32(size * size)
    one, two = np.float32(1), np.float32(2)
    taps = np.ones((size, size), np.float32)
    plane = height * width
    for chunk in prange(chunks):
        buf = np.zeros((1, 1, rows, pitch), np.float32)
        sums = np.empty(rows * pitch, np.float32)
        work = np.empty((stack, height, width), np.float32)
        grad = np.empty(stack * plane, np.float32)
        for b in range(chunk * blocks // chunks, (chunk + 1) * blocks // chunks):
            first = b * stack
            count = min(stack, n_planes - first)
            here = count * plane
            xb = xs[first:first + count].reshape(-1)
            dyb = dys[first:first + count].reshape(-1)
            pb = ps[first:first + count].reshape(-1)
            wb = ws[first:first + count].reshape(-1)
            t, g = work.reshape(-1)[:here], grad[:here]
            for i in range(here):
                t[i] = pb[i] * alpha
            for i in range(here):
                t[i] = t[i] + one
            for i in range(here):
                t[i] = wb[i] / t[i]
            for i in range(here):
                t[i] = t[i] * diff_scale
            for i in range(here):
                g[i] = dyb[i] * xb[i]          # the gradient reaching the Power output
            for i in range(here):
                t[i] = (t[i] * g[i]) / divisor  # an output's share of its window
            _window_sums(work, count, taps, buf, sums, work)
            dxb = dxs[first:first + count].reshape(-1)
            for i in range(here):
                dxb[i] = dyb[i] * wb[i] + (xb[i] * two) * t[i]


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
