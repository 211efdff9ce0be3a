"""Direct convolution for small channel counts: no column matrix, one kernel for the forward,
the weight gradient and (stride 1) the data gradient.

All three are the same product, "gathered" on one side:

    out[r, :] += sum_u src[rows[r] + cols[u]] * b[u, :]

- forward: r an output pixel, u an input (c, i, j) of the window, src an image (zero-padded),
  b the weights as (C*kh*kw, M), out the image's outputs pixel-major (P, M);
- weight gradient: r an input (c, i, j), u an output pixel, b the top diff pixel-major (P, M),
  out the weight gradient as (C*kh*kw, M);
- data gradient at stride 1: a convolution of the zero-padded top diff with the flipped
  weights, r a bottom pixel, u an (m, i, j), b the weights as (M*kh*kw, C).

The innermost loop runs along b's rows and out's rows (contiguous, width a multiple of LANES:
the matrices are padded with zero columns), for a tile of 4 r x 4 u whose 16 src values stay
in registers: LLVM vectorizes it as 16-float multiplies and adds (zmm, or ymm pairs where it
prefers 256-bit vectors), 4 rows of out loaded and stored per 16 multiply-adds. Summation
order per output element: u ascending in blocks of 4, fixed, so an image's result does not
depend on its batch.

The planner (conv_plan.py) says when: CIFAR-10's conv2 and conv3 (K = 800, 32 and 64 outputs)
run 1.3-1.4x the im2col + GEMM path's speed; layers/conv.py holds one DirectConvolution per
layer (its offsets) and calls its forward / backward.
"""
from __future__ import annotations

import numpy as np

from ._jit import jit, prange

# Floats per vector register on AVX-512; b's and out's widths are padded to a multiple.
LANES = 16


def padded_width(n: int) -> int:
    return -(-n // LANES) * LANES


@jit(contract=True)
def gathered_matmul(src, rows, cols, b, out):
    """out[r, :] += sum_u src[rows[r] + cols[u]] * b[u, :] (see the module docstring).

    rows and cols are uint64: with signed offsets numba tests every gathered index for
    wraparound (negative indices), which cost a quarter of the time at 32 columns.
    Multiply-adds contracted into FMAs (jit(contract=True): the sums keep their order):
    CIFAR-10's conv2 and conv3, batch 100, 1 thread, CPU time, 3 alternating runs: forward
    18.2 against 19.7 ms and 7.4 against 8.6, backward 37.0 against 41.4 and 17.1 against
    18.7. Tiles of 4 x 4 ran fastest of 4x4, 6x4, 8x4, 8x2, 4x8 (more spill registers); looping
    over m in fixed blocks of 16 did not vectorize at all (7-10 GFLOP/s: LLVM's SLP
    vectorizer cannot rule out that out and b overlap, where the loop vectorizer checks it
    at run time).
    """
    n_rows = rows.shape[0]
    n_cols = cols.shape[0]
    width = b.shape[1]
    r4 = n_rows - n_rows % 4
    u4 = n_cols - n_cols % 4
    for r in range(0, r4, 4):
        s0 = rows[r]
        s1 = rows[r + 1]
        s2 = rows[r + 2]
        s3 = rows[r + 3]
        o0 = out[r]
        o1 = out[r + 1]
        o2 = out[r + 2]
        o3 = out[r + 3]
        for u in range(0, u4, 4):
            c0 = cols[u]
            c1 = cols[u + 1]
            c2 = cols[u + 2]
            c3 = cols[u + 3]
            a00, a01, a02, a03 = src[s0 + c0], src[s0 + c1], src[s0 + c2], src[s0 + c3]
            a10, a11, a12, a13 = src[s1 + c0], src[s1 + c1], src[s1 + c2], src[s1 + c3]
            a20, a21, a22, a23 = src[s2 + c0], src[s2 + c1], src[s2 + c2], src[s2 + c3]
            a30, a31, a32, a33 = src[s3 + c0], src[s3 + c1], src[s3 + c2], src[s3 + c3]
            b0 = b[u]
            b1 = b[u + 1]
            b2 = b[u + 2]
            b3 = b[u + 3]
            # Independent lanes and no reduction across them: vectorized without fastmath.
            for m in range(width):
                w0 = b0[m]
                w1 = b1[m]
                w2 = b2[m]
                w3 = b3[m]
                o0[m] += a00 * w0 + a01 * w1 + a02 * w2 + a03 * w3
                o1[m] += a10 * w0 + a11 * w1 + a12 * w2 + a13 * w3
                o2[m] += a20 * w0 + a21 * w1 + a22 * w2 + a23 * w3
                o3[m] += a30 * w0 + a31 * w1 + a32 * w2 + a33 * w3
        for u in range(u4, n_cols):
            c0 = cols[u]
            a0, a1, a2, a3 = src[s0 + c0], src[s1 + c0], src[s2 + c0], src[s3 + c0]
            b0 = b[u]
            for m in range(width):
                w0 = b0[m]
                o0[m] += a0 * w0
                o1[m] += a1 * w0
                o2[m] += a2 * w0
                o3[m] += a3 * w0
    for r in range(r4, n_rows):
        s0 = rows[r]
        o0 = out[r]
        for u in range(n_cols):
            a0 = src[s0 + cols[u]]
            b0 = b[u]
            for m in range(width):
                o0[m] += a0 * b0[m]


@jit()
def _pad_into(x, top, left, dst):
    """dst[c, top + y, left + x] = x[c, y, x], zero elsewhere (top/left may be negative:
    then x is cropped)."""
    channels, height, width = x.shape
    for c in range(channels):
        for y in range(dst.shape[1]):
            sy = y - top
            for xx in range(dst.shape[2]):
                sx = xx - left
                if sy >= 0 and sy < height and sx >= 0 and sx < width:
                    dst[c, y, xx] = x[c, sy, sx]
                else:
                    dst[c, y, xx] = 0.0


def window_offsets(channels: int, kh: int, kw: int, dh: int, dw: int, height: int,
                   width: int, flip: bool = False):
    """Flat offsets of a window's inputs (c, i, j) in a (channels, height, width) image;
    with flip, of (c, kh-1-i, kw-1-j)."""
    c, i, j = np.meshgrid(np.arange(channels), np.arange(kh), np.arange(kw), indexing="ij")
    if flip:
        i, j = kh - 1 - i, kw - 1 - j
    return (c * height * width + i * dh * width + j * dw).reshape(-1).astype(np.uint64)


def pixel_offsets(ho: int, wo: int, sh: int, sw: int, width: int):
    """Flat offsets of each output pixel's window corner in an image `width` wide."""
    oy, ox = np.meshgrid(np.arange(ho), np.arange(wo), indexing="ij")
    return (oy * sh * width + ox * sw).reshape(-1).astype(np.uint64)


@jit()
def forward_images(x, ph, pw, padded_shape, pixels, window, weights_t, bias, out):
    """out[n] (M, P) = convolution of x[n] (C, H, W): weights_t (K, Mp) the weights as
    (c*kh*kw, m) with zero columns up to Mp; bias (M,) or empty; pixels/window the offsets
    (pixel_offsets, window_offsets) in the padded image. The data gradient is this too: dy
    padded by the kernel's reach less the pad, convolved with the flipped weights. Split between threads by images
    only: at batch 1 splitting the pixels cost more in waking a thread than it saved
    (CIFAR-10's conv3: 153 against 109 us on 2 threads)."""
    m_out = out.shape[1]
    n_pix = pixels.shape[0]
    image = np.empty(padded_shape, np.float32)
    flat = image.reshape(-1)
    result = np.empty((n_pix, weights_t.shape[1]), np.float32)
    for n in range(x.shape[0]):
        _pad_into(x[n], ph, pw, image)
        result[:] = 0.0
        if bias.shape[0]:
            for p in range(n_pix):
                result[p, :m_out] = bias
        gathered_matmul(flat, pixels, window, weights_t, result)
        for m in range(m_out):
            for p in range(n_pix):
                out[n, m, p] = result[p, m]


@jit()
def weight_grad_images(x, dy, ph, pw, padded_shape, pixels, window, grad_t):
    """grad_t (K, Mp) += sum over images of x's windows times dy (N, M, P), pixel-major."""
    m_out = dy.shape[1]
    n_pix = pixels.shape[0]
    image = np.empty(padded_shape, np.float32)
    flat = image.reshape(-1)
    dy_t = np.zeros((n_pix, grad_t.shape[1]), np.float32)
    for n in range(x.shape[0]):
        _pad_into(x[n], ph, pw, image)
        for p in range(n_pix):
            for m in range(m_out):
                dy_t[p, m] = dy[n, m, p]
        gathered_matmul(flat, window, pixels, dy_t, grad_t)


@jit(parallel=True)
def forward_blocks(x, ph, pw, padded_shape, pixels, window, weights_t, bias, out, blocks):
    """forward_images of each block (s, e) of images (blocks (B, 2)), the blocks shared by
    numba's threads (one region per pass)."""
    for b in prange(blocks.shape[0]):
        s, e = blocks[b, 0], blocks[b, 1]
        forward_images(x[s:e], ph, pw, padded_shape, pixels, window, weights_t, bias, out[s:e])


@jit(parallel=True)
def backward_blocks(x, dy, ph, pw, padded_shape, pixels, window, grads, dy_images, diff_pad_h,
                    diff_pad_w, diff_padded_shape, bottom_pixels, flipped_window, flipped,
                    dx_planes, blocks):
    """Per block (s, e) of images (blocks (B, 2)), on numba's threads: block b's share of
    the weight gradient into grads[b] (grads None: not wanted), and the data gradient of its
    images into dx_planes (None: not wanted) as forward_images of the padded top diff with
    the flipped weights."""
    for b in prange(blocks.shape[0]):
        s, e = blocks[b, 0], blocks[b, 1]
        if grads is not None:
            weight_grad_images(x[s:e], dy[s:e], ph, pw, padded_shape, pixels, window, grads[b])
        if dx_planes is not None:
            forward_images(dy_images[s:e], diff_pad_h, diff_pad_w, diff_padded_shape,
                           bottom_pixels, flipped_window, flipped, np.empty(0, np.float32),
                           dx_planes[s:e])


class DirectConvolution:
    """One convolution's offsets for the kernels above (made when its shapes are known), and
    the passes over a batch, split between numba's threads by blocks of images (one region per
    pass: each thread pads, multiplies and lays out its images; the backward runs the weight
    and data gradients of a block together)."""

    def __init__(self, geometry, bottom_shape, top_shape) -> None:
        self.shapes = (geometry, bottom_shape, top_shape)
        kh, kw, ph, pw, sh, sw, dh, dw = geometry
        if sh != 1 or sw != 1:
            raise ValueError("the direct convolution runs stride 1 only")
        channels, height, width = bottom_shape
        outputs, ho, wo = top_shape
        self.pad = (ph, pw)
        self.top_shape = (outputs, ho, wo)
        self.padded = (channels, height + 2 * ph, width + 2 * pw)
        self.pixels = pixel_offsets(ho, wo, 1, 1, self.padded[2])
        self.window = window_offsets(channels, kh, kw, dh, dw, *self.padded[1:])
        # The data gradient: the top diff padded so that every bottom pixel sees a whole
        # (flipped) window; negative pads crop it.
        self.diff_pad = (dh * (kh - 1) - ph, dw * (kw - 1) - pw)
        self.diff_padded = (outputs, height + dh * (kh - 1), width + dw * (kw - 1))
        self.bottom_pixels = pixel_offsets(height, width, 1, 1, self.diff_padded[2])
        self.flipped_window = window_offsets(outputs, kh, kw, dh, dw, *self.diff_padded[1:],
                                             flip=True)

    def forward(self, x, weight, bias, out, plan) -> None:
        """out (N, M, P) = x (N, C, H, W) convolved with weight (M, K) (+ bias (M,) or None)."""
        outputs = weight.shape[0]
        weights_t = np.zeros((weight.shape[1], padded_width(outputs)), np.float32)
        weights_t[:, :outputs] = weight.T
        bias = np.empty(0, np.float32) if bias is None else bias

        blocks = plan.block_array(x.shape[0])
        forward_blocks.over(len(blocks))(x, *self.pad, self.padded, self.pixels, self.window,
                                         weights_t, bias, out, blocks)

    def backward(self, x, dy, weight, weight_diff, dx, plan) -> None:
        """weight_diff (M, K) += the weight gradient (if not None); dx (N, C, H, W) = the
        data gradient (if not None); dy (N, M, P) the top diff, weight (M, C, kh, kw)."""
        outputs, channels = weight.shape[:2]
        blocks = plan.block_array(x.shape[0])
        grads = flipped = dy_images = dx_planes = None
        if weight_diff is not None:
            grads = np.zeros((len(blocks), weight_diff.shape[1], padded_width(outputs)),
                             np.float32)
        if dx is not None:
            flipped = np.zeros((outputs * weight.shape[2] * weight.shape[3],
                                padded_width(channels)), np.float32)
            flipped[:, :channels] = weight.transpose(0, 2, 3, 1).reshape(-1, channels)
            dy_images = dy.reshape(dy.shape[0], *self.top_shape)
            dx_planes = dx.reshape(dx.shape[0], channels, -1)   # a view: dx is contiguous
        backward_blocks.over(len(blocks))(
            x, dy, *self.pad, self.padded, self.pixels, self.window, grads, dy_images,
            *self.diff_pad, self.diff_padded, self.bottom_pixels, self.flipped_window, flipped,
            dx_planes, blocks)
        if weight_diff is not None:
            # Pieces summed in a fixed order.
            weight_diff += grads.sum(axis=0)[:, :outputs].T
