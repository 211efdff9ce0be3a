"""im2col / col2im and the convolution output size: the only copies, shared by Convolution,
Deconvolution and shape inference.

Layout: x is (N, C, H, W); col is a (C*kh*kw, L) matrix whose columns n*P .. (n+1)*P - 1 are
image n's (P = Ho*Wo, L >= N*P): a whole batch convolves with one GEMM,
W (M, C*kh*kw) @ col[:, :N*P] -> (M, N*P), which BLAS runs on all threads, and image n alone
with W @ col[:, n*P:(n+1)*P], for layers that multiply image by image (layers/conv.py says
when). L may exceed N*P so that the rows of col do not lie a power of two apart.
Names: kh, kw kernel; ph, pw pad; sh, sw stride; dh, dw dilation; ho, wo output size.
"""
from __future__ import annotations

import numpy as np

from ._jit import jit, prange
from .blas import NO_TRANS, TRANS, sgemm
from .digest import KeptLayout
from .direct_conv import run_tiles
from .epilogue import finish_channel_row
from .lanes import LANES


def conv_output_size(size: int, kernel: int, pad: int, stride: int, dilation: int) -> int:
    """floor((size + 2 pad - dilation (kernel - 1) - 1) / stride) + 1 (Caffe's formula)."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


# Output rows narrower than this go through by_shifts' copies (stride_h 1, at least two
# images): one core, 16 images' columns against the row-by-row loop below, alternating:
# LeNet's conv2 (8 wide) 0.70-0.76 of the time, CIFAR-10's conv3 (8) 0.70-0.73, 13 wide
# (CaffeNet's conv3-5) 0.49-0.55, 7 wide (GoogLeNet's inception 5) 0.40-0.53; at 16 wide
# (CIFAR-10's conv2) 1.05-1.12, slower. With col2im's shifts too, whole training steps, 2
# threads, old and new kernels alternating in one process: CaffeNet at batch 32 0.954 of the
# time (8 rounds), LeNet at 64 0.961 (20 rounds).
SHIFTS_BELOW_WIDTH = 16
# Pieces of the batch im2col's threads take on that path, each with its own shifts buffer
# (a fixed count, as numba.get_num_threads() in a kernel keeps numba from caching it).
SHIFT_PIECES = 8


@jit()
def by_shifts(n_img, sh, wo, oy0, oy1, ho):
    """Whether im2col builds each image's columns from its kernel-column shifts
    (_image_columns_by_shifts) rather than row by row: narrow output rows at stride_h 1,
    whole images, two or more (one image keeps the rows' loop, which its threads share)."""
    return sh == 1 and wo < SHIFTS_BELOW_WIDTH and oy0 == 0 and oy1 == ho and n_img > 1


def shift_offsets(channels: int, height: int, kh: int, kw: int, ph: int, dh: int, wo: int):
    """Where each column row (c, i, j) starts in an image's shifts (image_shifts), uint64:
    the window offsets of run_tiles (kernels/direct_conv.py) over the shifts."""
    c, i, j = np.meshgrid(np.arange(channels), np.arange(kh), np.arange(kw), indexing="ij")
    return (((c * kw + j) * (height + 2 * ph) + i * dh) * wo).reshape(-1).astype(np.uint64)


class ShiftTiles:
    """What per_image_forward's register tiles over kernel-column shifts (ConvPlan.tiles)
    take besides the image: the shifts' offsets of every column row (made once per shape),
    the pixels in runs of LANES, and the weights as (K, M), laid out again only when they
    change."""

    def __init__(self, geometry, bottom_shape, top_shape) -> None:
        self.shapes = (geometry, bottom_shape, top_shape)
        kh, kw, ph, _, _, _, dh, _ = geometry
        channels, height, _ = bottom_shape
        _, ho, wo = top_shape
        self.window = shift_offsets(channels, height, kh, kw, ph, dh, wo)
        p = ho * wo
        # (first pixel, its offset in the shifts, length): an image's pixels are the shifts'
        # run of rows from the window's offset on, as the columns hold them
        self.runs = np.array([(q, q, min(LANES, p - q)) for q in range(0, p, LANES)],
                             np.uint64).reshape(-1, 3)
        self._weights = KeptLayout()

    def weights(self, weight):
        """weight (M, K) as (K, M), C-contiguous."""
        return self._weights.of(weight, lambda weight: np.ascontiguousarray(weight.T))


NO_TILES = (np.zeros((0, 0), np.float32), np.zeros(0, np.uint64), np.zeros((0, 3), np.uint64))


@jit()
def _inside_span(shift, sw, width, wo):
    """(lo, hi): the outputs lo <= ox < hi whose input column ox*sw + shift lies in a row
    `width` wide (lo = hi when none does)."""
    lo = min(wo, max(0, (sw - 1 - shift) // sw))
    hi = max(lo, min(wo, (width - shift + sw - 1) // sw))
    return lo, hi


@jit()
def image_shifts(x, n, kw, ph, pw, sw, dw, wo, shifts):
    """Image n shifted by each kernel column j and cropped to the output's width:
    shifts[c, j, y, ox] = x[n, c, y - ph, ox*sw + j*dw - pw] (0 in the padding), y over the
    padded rows, flat."""
    _, channels, height, width = x.shape
    hp = height + 2 * ph
    flat = x.reshape(-1)
    for c in range(channels):
        plane = np.uint64((n * channels + c) * height * width)
        for j in range(kw):
            shift = j * dw - pw
            lo, hi = _inside_span(shift, sw, width, wo)
            for y in range(hp):
                # unsigned offsets: numba tests signed ones for wraparound at every access
                d = np.uint64(((c * kw + j) * hp + y) * wo)
                sy = y - ph
                if sy < 0 or sy >= height:
                    for ox in range(np.uint64(wo)):
                        shifts[d + ox] = 0.0
                    continue
                source = plane + np.uint64(sy * width)
                for ox in range(np.uint64(lo)):
                    shifts[d + ox] = 0.0
                if sw == 1:
                    source += np.uint64(shift)
                    for ox in range(np.uint64(lo), np.uint64(hi)):
                        shifts[d + ox] = flat[source + ox]
                else:
                    for ox in range(lo, hi):
                        shifts[d + np.uint64(ox)] = flat[source + np.uint64(ox * sw + shift)]
                for ox in range(np.uint64(hi), np.uint64(wo)):
                    shifts[d + ox] = 0.0


@jit()
def _image_columns_by_shifts(x, n, kh, kw, ph, pw, sw, dh, dw, ho, wo, col, first, shifts):
    """Image n's columns at stride_h 1, in two passes of long copies instead of one short
    copy per output row and kernel tap: its kernel-column shifts (image_shifts), then each
    column row (c, i, j) as one run of P = ho*wo values, shifts[c, j, i*dh : i*dh + ho, :],
    the output rows one after the other as the columns hold them. Every value lands where
    the row loop puts it: the same columns, bit for bit."""
    image_shifts(x, n, kw, ph, pw, sw, dw, wo, shifts)
    channels, hp = x.shape[1], x.shape[2] + 2 * ph
    p = ho * wo
    out = col.reshape(-1)
    pitch = col.strides[0] // 4
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                d = np.uint64(((c * kh + i) * kw + j) * pitch + (first + n) * p)
                s = np.uint64(((c * kw + j) * hp + i * dh) * wo)
                for q in range(np.uint64(p)):
                    out[d + q] = shifts[s + q]


@jit(parallel=True)
def im2col(x, kh, kw, ph, pw, sh, sw, dh, dw, ho, wo, col, first, oy0, oy1):
    """col[(c, i, j), (first + n)*P + oy*wo + ox] = x[n, c, oy*sh - ph + i*dh, ox*sw - pw + j*dw]
    (0 outside), for output rows oy0 <= oy < oy1 (0, ho: all of them; fewer: a band of a
    lone image's, kernels/conv_plan.py): `first` places a slice of the batch in a whole
    batch's columns.

    Narrow output rows (by_shifts) go image by image, the batch's pieces shared by the
    threads. Otherwise parallel over the rows of col; each row is written by one thread
    only. Rows partly in the padding keep a bounds test per element: copying each row's
    valid span, computed once per kernel column, ran 2-6x slower in numba on LeNet's and
    CIFAR-10's shapes (rows of 8 to 32 outputs). One loop nest in one function: with a row's
    loops in a function of their own the serial compile ran 1.4-2.8x slower.
    """
    n_img, channels, height, width = x.shape
    flat = x.reshape(-1)
    if by_shifts(n_img, sh, wo, oy0, oy1, ho):
        pieces = min(n_img, SHIFT_PIECES)
        for piece in prange(pieces):
            shifts = np.empty(channels * kw * (height + 2 * ph) * wo, np.float32)
            for n in range(piece * n_img // pieces, (piece + 1) * n_img // pieces):
                _image_columns_by_shifts(x, n, kh, kw, ph, pw, sw, dh, dw, ho, wo, col,
                                         first, shifts)
        return
    for r in prange(channels * kh * kw):
        c = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        # A row whose kernel column reads inside the input all along (stride 1; every
        # column unpadded): a plain copy, with unsigned offsets into the flat input (numba
        # tests signed ones for wraparound): 1.3-2x faster on LeNet's, GoogLeNet's and
        # ResNet-50's shapes. Others element by element, with the bounds test.
        shift = j * dw - pw
        inside = sw == 1 and shift >= 0 and shift + wo <= width
        for n in range(n_img):
            # Through a view of the image's part of the row: indexing col[r, ...] directly
            # ran 2.5-4x slower (numba kept the index arithmetic in the inner loop).
            dst = col[r, (first + n) * ho * wo:(first + n + 1) * ho * wo]
            plane = (n * channels + c) * height * width
            # range(ho) with the band's rows picked out: numba's index arithmetic over
            # range(oy0, oy1) ran this loop 1.5-2x slower.
            for oy in range(ho):
                if oy < oy0 or oy >= oy1:
                    continue
                iy = oy * sh - ph + i * dh
                base = oy * wo
                if iy < 0 or iy >= height:
                    for ox in range(wo):
                        dst[base + ox] = 0.0
                    continue
                if inside:
                    source, target = np.uint64(plane + iy * width + shift), np.uint64(base)
                    for ox in range(wo):
                        dst[target + np.uint64(ox)] = flat[source + np.uint64(ox)]
                    continue
                for ox in range(wo):
                    ix = ox * sw - pw + j * dw
                    if ix >= 0 and ix < width:
                        dst[base + ox] = x[n, c, iy, ix]
                    else:
                        dst[base + ox] = 0.0


@jit()
def _image_from_columns_by_shifts(col, n, kh, kw, ph, pw, sw, dh, dw, ho, wo, x, first,
                                  shifts):
    """col2im of image n at stride_h 1 through its kernel-column shifts, the reverse of
    _image_columns_by_shifts: each column row (c, i, j) added as one run of P values into
    shifts[c, j, i*dh : i*dh + ho, :], then each shift's rows added into x[n] where they
    came from. An input value is the sum over j of its sums over i (the row loop adds i by
    i, j by j: the same terms, rounded in another order)."""
    _, channels, height, width = x.shape
    hp = height + 2 * ph
    p = ho * wo
    flat = x.reshape(-1)
    source = col.reshape(-1)
    pitch = col.strides[0] // 4
    shifts[:] = 0.0
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                s = np.uint64(((c * kh + i) * kw + j) * pitch + (first + n) * p)
                d = np.uint64(((c * kw + j) * hp + i * dh) * wo)
                for q in range(np.uint64(p)):
                    shifts[d + q] += source[s + q]
    for c in range(channels):
        plane = np.uint64((n * channels + c) * height * width)
        for q in range(np.uint64(height * width)):
            flat[plane + q] = 0.0
        for j in range(kw):
            shift = j * dw - pw
            lo, hi = _inside_span(shift, sw, width, wo)
            for y in range(height):
                d = np.uint64(((c * kw + j) * hp + y + ph) * wo)
                target = plane + np.uint64(y * width)
                if sw == 1:
                    target += np.uint64(shift)
                    for ox in range(np.uint64(lo), np.uint64(hi)):
                        flat[target + ox] += shifts[d + ox]
                else:
                    for ox in range(lo, hi):
                        flat[target + np.uint64(ox * sw + shift)] += shifts[d + np.uint64(ox)]


@jit(parallel=True)
def col2im(col, kh, kw, ph, pw, sh, sw, dh, dw, ho, wo, x, first):
    """The adjoint of im2col: x (overwritten) = sum of col entries over the windows, image n
    of x from the columns of image first + n (as im2col places them: a whole column matrix is
    passed, never a slice of its columns, which numba would compile for any strides and run
    1.3x slower).

    Parallel over images: each image's slice of x is written by one thread only. Narrow
    output rows (by_shifts) gather each image's column rows into its kernel-column shifts
    first (_image_from_columns_by_shifts).
    """
    n_img, channels, height, width = x.shape
    flat = x.reshape(-1)
    if by_shifts(n_img, sh, wo, 0, ho, ho):
        pieces = min(n_img, SHIFT_PIECES)
        for piece in prange(pieces):
            shifts = np.empty(channels * kw * (height + 2 * ph) * wo, np.float32)
            for n in range(piece * n_img // pieces, (piece + 1) * n_img // pieces):
                _image_from_columns_by_shifts(col, n, kh, kw, ph, pw, sw, dh, dw, ho, wo, x,
                                              first, shifts)
        return
    for n in prange(n_img):
        for c in range(channels):
            for y in range(height):
                for xx in range(width):
                    x[n, c, y, xx] = 0.0
            plane = (n * channels + c) * height * width
            for i in range(kh):
                for j in range(kw):
                    src = col[(c * kh + i) * kw + j,
                              (first + n) * ho * wo:(first + n + 1) * ho * wo]
                    # Rows wholly inside the input as in im2col: one vector add each.
                    shift = j * dw - pw
                    inside = sw == 1 and shift >= 0 and shift + wo <= width
                    for oy in range(ho):
                        iy = oy * sh - ph + i * dh
                        if iy < 0 or iy >= height:
                            continue
                        base = oy * wo
                        if inside:
                            target = np.uint64(plane + iy * width + shift)
                            source = np.uint64(base)
                            for ox in range(wo):
                                flat[target + np.uint64(ox)] += src[source + np.uint64(ox)]
                            continue
                        for ox in range(wo):
                            ix = ox * sw - pw + j * dw
                            if ix >= 0 and ix < width:
                                x[n, c, iy, ix] += src[base + ox]


@jit(parallel=True)
def channels_first(y2, out):
    """out[n, m, p] = y2[m, n, p]: GEMM output (M, N, P) to the blob's (N, M, P)."""
    m_out, n_img, p = y2.shape
    for n in prange(n_img):
        for m in range(m_out):
            for k in range(p):
                out[n, m, k] = y2[m, n, k]


@jit(parallel=True)
def channels_last(dy, out):
    """out[m, n, p] = dy[n, m, p]: a top diff to the GEMM layout; the inverse of channels_first."""
    n_img, m_out, p = dy.shape
    for m in prange(m_out):
        for n in range(n_img):
            for k in range(p):
                out[m, n, k] = dy[n, m, k]


# The serial compiles, called from the per-image kernels' parallel loops (numba types a
# dispatcher held in a global, not an attribute of one).
_im2col_serial = im2col.serial
_col2im_serial = col2im.serial


@jit(parallel=True)
def per_image_forward(x, kh, kw, ph, pw, sh, sw, dh, dw, ho, wo, col, weight, blocks,
                      out, address, bits, scale, shift, relu, negative_slope, from_input,
                      wt, window, runs):
    """The per-image path's forward on numba's threads (layers/conv.py): each block
    (s, e, oy0, oy1) of blocks (B, 4) builds the columns of output rows oy0..oy1 of images
    s..e (im2col, into col as the whole chunk's), then multiplies weight[g] (M/group,
    K/group) by each image's group-g columns into out[n]'s group-g channels (a cblas_sgemm
    each, through the function at `address`, integers `bits` wide: kernels/blas.py; BLAS held
    to one thread), then runs the epilogue on those outputs, while they are in the thread's
    cache. Whole images (rows 0..ho) make the same calls in the same order as the Python
    threads' path: the same bits; a lone image's bands of rows (ConvPlan.bands) share it
    between threads. out (N, M, P) C-contiguous. from_input: a 1x1 stride-1 unpadded
    convolution whose columns are the bottom's own planes (x C-contiguous): no im2col, col
    unused.

    With weights wt (K, M) (ConvPlan.tiles; else wt is empty), each image's products are
    run_tiles' register tiles (kernels/direct_conv.py) over its kernel-column shifts
    (image_shifts: window their offsets, runs the image's pixels in runs of LANES), which
    stay in L1 where the columns would not. No columns are written: a TEST net's only (its
    backward builds them again)."""
    group, mg, kg = weight.shape
    p = ho * wo
    pitch = col.strides[0] // 4
    m_out = out.shape[1]
    channels = x.shape[1]
    tiles = wt.shape[0] > 0
    for b in prange(blocks.shape[0]):
        s, e, oy0, oy1 = blocks[b, 0], blocks[b, 1], blocks[b, 2], blocks[b, 3]
        q0, width = oy0 * wo, (oy1 - oy0) * wo   # the band's first output, its outputs
        if tiles:
            # LANES floats past the shifts: the last run's spare lanes read them.
            shifts = np.empty(channels * kw * (x.shape[2] + 2 * ph) * wo + LANES, np.float32)
            for n in range(s, e):
                image_shifts(x, n, kw, ph, pw, sw, dw, wo, shifts)
                planes = out[n]
                planes[:] = 0.0
                run_tiles(shifts, runs, window, wt, planes)
                for m in range(m_out):
                    finish_channel_row(planes[m], m, scale, shift, relu, negative_slope)
            continue
        if not from_input:
            _im2col_serial(x[s:e], kh, kw, ph, pw, sh, sw, dh, dw, ho, wo, col, s, oy0, oy1)
        for g in range(group):
            for n in range(s, e):
                if from_input:   # image n's planes, group g's rows
                    columns, ld = x.ctypes.data + 4 * ((n * channels + g * kg) * p + q0), p
                else:
                    columns, ld = col.ctypes.data + 4 * (g * kg * pitch + n * p + q0), pitch
                sgemm(address, bits, NO_TRANS, NO_TRANS, mg, width, kg,
                      weight.ctypes.data + 4 * g * mg * kg, kg, columns, ld,
                      out.ctypes.data + 4 * ((n * m_out + g * mg) * p + q0), p)
        for n in range(s, e):
            for m in range(m_out):
                finish_channel_row(out[n, m, q0:q0 + width], m, scale, shift, relu,
                                   negative_slope)


@jit(parallel=True)
def per_image_backward(x, kh, kw, ph, pw, sh, sw, dh, dw, ho, wo, col, weight, top_diff,
                       dy_all, blocks, address, bits, grads, dx, rebuild):
    """The per-image path's blocked backward on numba's threads (layers/conv.py): each block
    b = (s, e) of images builds their columns again if `rebuild` (other layers overwrote
    them), lays their top diff out as the GEMMs' (M, images x P) in dy_all, then per group
    g: grads[b, g] (K/group, M/group) = columns @ top diff.T (grads None: no weight
    gradient), and the columns' gradient weight[g].T @ top diff over the columns, which
    col2im scatters into dx[s:e] (dx None: no data gradient), while in the thread's cache.
    The same cblas calls as np.matmul makes on the Python threads' path."""
    group, mg, kg = weight.shape
    p = ho * wo
    pitch = col.strides[0] // 4
    dy_pitch = dy_all.strides[0] // 4
    for b in prange(blocks.shape[0]):
        s, e = blocks[b, 0], blocks[b, 1]
        if rebuild:
            _im2col_serial(x[s:e], kh, kw, ph, pw, sh, sw, dh, dw, ho, wo, col, s, 0, ho)
        for m in range(group * mg):
            for n in range(s, e):
                row = dy_all[m, n * p:(n + 1) * p]
                source = top_diff[n, m]
                for q in range(p):
                    row[q] = source[q]
        width = (e - s) * p
        for g in range(group):
            columns = col.ctypes.data + 4 * (g * kg * pitch + s * p)
            dy = dy_all.ctypes.data + 4 * (g * mg * dy_pitch + s * p)
            if grads is not None:
                sgemm(address, bits, NO_TRANS, TRANS, kg, mg, width, columns, pitch, dy,
                      dy_pitch, grads.ctypes.data + 4 * (b * group + g) * kg * mg, mg)
            if dx is not None:   # the columns are used: their gradient overwrites them
                sgemm(address, bits, TRANS, NO_TRANS, kg, width, mg,
                      weight.ctypes.data + 4 * g * mg * kg, kg, dy, dy_pitch, columns, pitch)
        if dx is not None:
            _col2im_serial(col, kh, kw, ph, pw, sh, sw, dh, dw, ho, wo, dx[s:e], s)


@jit(parallel=True)
def per_image_weight_grads(top_diff, col, blocks, address, bits, grads):
    """grads[g, n] (M/group, K/group) = top diff of image n's group-g channels (M/group, P) @
    its group-g columns.T, one cblas_sgemm each, blocks (s, e) of images shared by numba's
    threads (summed after by the caller, in a fixed order)."""
    group, chunk, mg, kg = grads.shape
    m_out, p = top_diff.shape[1], top_diff.shape[2]
    pitch = col.strides[0] // 4
    for b in prange(blocks.shape[0]):
        for n in range(blocks[b, 0], blocks[b, 1]):
            for g in range(group):
                sgemm(address, bits, NO_TRANS, TRANS, mg, kg, p,
                      top_diff.ctypes.data + 4 * (n * m_out + g * mg) * p, p,
                      col.ctypes.data + 4 * (g * kg * pitch + n * p), pitch,
                      grads.ctypes.data + 4 * (g * chunk + n) * mg * kg, kg)
