"""Depthwise convolution done directly: each channel with its own k x k filter, no im2col.

x (N, C, H, W), w (C, KH, KW), y (N, C, Ho, Wo); geometry (ph, pw, sh, sw, dh, dw) as in
Caffe's convolution: input row oy * sh - ph + i * dh for filter row i (0 outside). 3x3
filters with a pad of 1 on wide rows read the planes in place (depthwise_3x3_in_place);
otherwise the forward works on a zero-padded copy of each plane: row by row for 3x3 filters
at stride 1, split by stride phase (kernels/phases.py) for other wide outputs, or of 16
planes at once, channel-last (kernels/lanes.py), for narrow ones and, with AVX-512, strided
ones; depthwise_forward picks. The backward loop
nests run tap by tap over the output positions whose input lies inside the map (_valid), a
strided multiply-add without bounds tests.
"""
from __future__ import annotations

import numpy as np

from ._jit import jit, prange
from .epilogue import NONE, finish_channel_plane, finish_channel_row
from .lanes import (LANES, compiles_for_avx512, load_channel_block, prefer_wide_vectors,
                    stack_lanes, store_channel_block)
from .phases import CHUNKS, phase_shape, tap_sums, write_phases


@jit()
def _valid(out_size, in_size, pad, stride, offset):
    """(first, end) of the outputs o with 0 <= o * stride - pad + offset < in_size."""
    start = pad - offset
    first = 0 if start <= 0 else (start + stride - 1) // stride
    last = (in_size - 1 + pad - offset)
    end = 0 if last < 0 else min(out_size, last // stride + 1)
    return first, max(first, end)


# Floats of one block of output rows accumulated at a time (8 KB: stays in L1).
BLOCK_FLOATS = 2048


def by_channel_blocks(out_width: int, stride: tuple) -> bool:
    """Whether depthwise_forward runs on channel blocks (depthwise_forward_by_channel_blocks)
    rather than phase planes: for output rows up to 40 wide, and with AVX-512 for strided
    layers at any width. Per kernel, 2 threads, blocks' time / phase planes' (MobileNet's and
    MobileNet-SSD's 3x3 layers), on an AMD Zen 3 (AVX2): 7 wide 0.28-0.54, 10 wide 0.47, 14
    wide 0.63-0.84, 19 wide 0.48-0.58; 28 wide 0.70-0.71 (batch 1 and 16), 38 wide 0.91-0.98;
    strided 56 and 75 wide 0.82 and 0.92 at batch 1 but 1.35 for 112 -> 56 at batch 16; at
    stride 1 56 wide 1.21, 75 1.09-1.10, 112 1.15, 150 2.1 (most of those run row by row,
    by_rows_3x3). On an AMD Zen 4 (AVX-512, a block of 16 lanes one register), strided:
    112 -> 56 0.56 at batch 1 and 0.51 at 16, 150 -> 75 0.60 and 0.62, 56 -> 28 0.43,
    75 -> 38 0.52; at stride 1 112 wide still 1.18."""
    return out_width <= 40 or (tuple(stride) != (1, 1) and compiles_for_avx512())


def by_rows_3x3(kernel: tuple, stride: tuple, dilation: tuple, out_width: int) -> bool:
    """Whether depthwise_forward runs depthwise_3x3_forward: 3x3 filters at stride 1,
    undilated (MobileNet's and MobileNet-SSD's stride-1 layers), on rows over 16 wide. Per
    kernel, 2 threads, its time / the best of channel blocks and phase planes: 150 wide 0.65,
    112 0.61, 75 0.63, 56 0.57, 38 0.76, 28 0.78-0.79 (batch 1 and 16), 19 0.98; 14 wide
    1.17-1.43 and 10 wide 1.05 (channel blocks win); at stride 2 1.3-1.4 (phase planes and
    channel blocks keep those)."""
    return (tuple(kernel) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)
            and out_width > 16)


def in_place_3x3(kernel: tuple, stride: tuple, pad: tuple, dilation: tuple,
                 out_width: int) -> bool:
    """Whether depthwise_forward runs depthwise_3x3_in_place: 3x3 filters, pad 1, undilated
    (MobileNet's and MobileNet-SSD's), at stride 2 on output rows at least 28 wide and at
    stride 1 at least 64 wide. Per kernel, 2 threads, its time / the kernel taken before
    (an AMD Zen 5, AVX-512; batch 1 and 16), stride 2: 150 -> 75 0.21 and 0.42-0.47, 112 ->
    56 0.20 and 0.48, 75 -> 38 0.42-0.46, 56 -> 28 0.99-1.04, 38 -> 19 0.93-1.04, 28 -> 14
    1.04-1.24; stride 1 (against depthwise_3x3_forward): 150 wide 0.52-0.60, 112 0.84-1.06,
    75 0.74-0.77, 56 0.91-0.96, 38 1.01-1.41, 19 1.43-1.51. Narrow rows lose: the loop's
    vector part is short, its remainder scalar."""
    if (tuple(kernel) != (3, 3) or tuple(pad) != (1, 1) or tuple(dilation) != (1, 1)
            or stride[0] != stride[1]):
        return False
    return (stride[0] == 2 and out_width >= 28) or (stride[0] == 1 and out_width >= 64)


def depthwise_forward(x, w, ph, pw, sh, sw, dh, dw, y,
                      epilogue=(NONE, NONE, False, np.float32(0))):
    """y = the channel's filter over the channel, each output summed over the taps in (i, j)
    order from 0, padding contributing tap * 0, as Caffe's im2col + GEMM: 3x3 filters in
    place (in_place_3x3) or row by row (by_rows_3x3), or on channel blocks or phase planes
    (by_channel_blocks), the same bits every way. Then the output pass `epilogue` (scale,
    shift, relu, negative_slope: kernels/epilogue.py), each plane's while it is in cache: the
    bits of a pass of its own, without its read and write of the whole top. On
    MobileNet-SSD's depthwise shapes at batch 16 that pass alone took 25-98% of the kernel's
    time; in its forward, its 13 depthwise layers took 0.94 of the time with it fused (an
    AMD Zen 3, 2 threads, interleaved layer by layer)."""
    if in_place_3x3(w.shape[1:], (sh, sw), (ph, pw), (dh, dw), y.shape[3]):
        depthwise_3x3_in_place(x, w, sh, y, *epilogue)
        return
    if by_rows_3x3(w.shape[1:], (sh, sw), (dh, dw), y.shape[3]):
        depthwise_3x3_forward(x, w, ph, pw, y, *epilogue)
        return
    kernel = (depthwise_forward_by_channel_blocks if by_channel_blocks(y.shape[3], (sh, sw))
              else depthwise_forward_on_phases)
    kernel(x, w, ph, pw, sh, sw, dh, dw, y, *epilogue)


@jit()
def _taps_3x3(taps):
    """The nine weights of a 3x3 filter (3, 3) as a tuple, read once before a row's loop."""
    return (taps[0, 0], taps[0, 1], taps[0, 2], taps[1, 0], taps[1, 1], taps[1, 2],
            taps[2, 0], taps[2, 1], taps[2, 2])


@jit()
def _window_3x3(t, x00, x01, x02, x10, x11, x12, x20, x21, x22):
    """A 3x3 window's sum: each of the nine weights t (_taps_3x3) times its input, added in
    the (i, j) order from 0 to a float32 zero, each product rounded (no FMA): Caffe's order,
    the same bits in every depthwise forward. LLVM inlines it into the row loops."""
    total = np.float32(0.0)
    total += t[0] * x00
    total += t[1] * x01
    total += t[2] * x02
    total += t[3] * x10
    total += t[4] * x11
    total += t[5] * x12
    total += t[6] * x20
    total += t[7] * x21
    total += t[8] * x22
    return total


@jit(parallel=True)
def depthwise_3x3_in_place(x, w, stride, y, scale, shift, relu, negative_slope):
    """depthwise_forward of 3x3 filters with a pad of 1 at stride 1 or 2, undilated, reading
    each plane where it is: no padded copy. An output row is one loop over its outputs with
    the nine taps' weights in registers (_row_3x3, _row_3x3_stride_2); a padding row is a
    row of zeros, and the padding column left of the plane a zero the loop starts from, so
    every padding tap is still multiplied in (tap * 0, as Caffe's). Parallel over chunks of
    planes."""
    n_img, channels, height, width = x.shape
    out_h = y.shape[2]
    n_planes = n_img * channels
    chunks = min(n_planes, CHUNKS)
    for chunk in prange(chunks):
        zeros = np.zeros(width, np.float32)
        for p in range(chunk * n_planes // chunks, (chunk + 1) * n_planes // chunks):
            n, c = p // channels, p % channels
            plane = x[n, c]
            for oy in range(out_h):
                iy = oy * stride - 1   # the window's top row
                above = plane[iy] if iy >= 0 else zeros
                below = plane[iy + 2] if iy + 2 < height else zeros
                if stride == 1:
                    _row_3x3(above, plane[iy + 1], below, w[c], y[n, c, oy])
                else:
                    _row_3x3_stride_2(above, plane[iy + 1], below, w[c], y[n, c, oy])
                finish_channel_row(y[n, c, oy], c, scale, shift, relu, negative_slope)


@jit()
def _row_3x3(r0, r1, r2, taps, out):
    """out (W,) = taps (3, 3) over the rows r0, r1, r2 (W,) at stride 1, pad 1, in the (i, j)
    order from 0. Each row's value left of the output is the one the iteration before read
    at the output (a recurrence LLVM vectorizes with a shuffle), 0 at the first: the loads
    are the rows themselves, no padded copy."""
    prefer_wide_vectors()
    t = _taps_3x3(taps)
    width = out.shape[0]
    left0 = left1 = left2 = np.float32(0.0)
    for ox in range(width - 1):
        at0, at1, at2 = r0[ox], r1[ox], r2[ox]
        out[ox] = _window_3x3(t, left0, at0, r0[ox + 1], left1, at1, r1[ox + 1],
                              left2, at2, r2[ox + 1])
        left0, left1, left2 = at0, at1, at2
    # The last output: the padding column on its right.
    ox = width - 1
    zero = np.float32(0.0)
    if ox > 0:
        left0, left1, left2 = r0[ox - 1], r1[ox - 1], r2[ox - 1]
    out[ox] = _window_3x3(t, left0, r0[ox], zero, left1, r1[ox], zero, left2, r2[ox], zero)


@jit()
def _row_3x3_stride_2(r0, r1, r2, taps, out):
    """out (Wo,) = taps (3, 3) over the rows r0, r1, r2 at stride 2, pad 1, in the (i, j)
    order from 0: output ox reads columns 2 ox - 1, 2 ox, 2 ox + 1. The even and odd columns
    are read as pairs (LLVM splits two vectors' worth with permutes), and column 2 ox - 1 is
    the odd column the iteration before read (0 at the first: the padding). Reading it
    again as r[2 ox - 1] made LLVM gather it instead."""
    prefer_wide_vectors()
    t = _taps_3x3(taps)
    out_w = out.shape[0]
    # Outputs whose windows end inside the row; an odd-width row's last reaches the padding.
    inside = min(out_w, r0.shape[0] // 2)
    left0 = left1 = left2 = np.float32(0.0)
    for ox in range(inside):
        even0, odd0 = r0[2 * ox], r0[2 * ox + 1]
        even1, odd1 = r1[2 * ox], r1[2 * ox + 1]
        even2, odd2 = r2[2 * ox], r2[2 * ox + 1]
        out[ox] = _window_3x3(t, left0, even0, odd0, left1, even1, odd1, left2, even2, odd2)
        left0, left1, left2 = odd0, odd1, odd2
    zero = np.float32(0.0)
    for ox in range(inside, out_w):
        if ox > 0:
            left0, left1, left2 = r0[2 * ox - 1], r1[2 * ox - 1], r2[2 * ox - 1]
        out[ox] = _window_3x3(t, left0, r0[2 * ox], zero, left1, r1[2 * ox], zero,
                              left2, r2[2 * ox], zero)


@jit(parallel=True)
def depthwise_3x3_forward(x, w, ph, pw, y, scale, shift, relu, negative_slope):
    """depthwise_forward of 3x3 filters at stride 1, undilated: each plane copied into a
    zero-padded one (the thread's, whose padding stays 0), then each output row one loop
    over the row's outputs with the nine taps' weights in registers and their inputs at
    fixed offsets in three padded rows, which LLVM vectorizes along the row. Parallel over
    chunks of planes."""
    n_img, channels, height, width = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    rows = max(height + 2 * ph, out_h + 2)
    columns = max(width + 2 * pw, out_w + 2)
    n_planes = n_img * channels
    chunks = min(n_planes, CHUNKS)
    for chunk in prange(chunks):
        padded = np.zeros((rows, columns), np.float32)
        for p in range(chunk * n_planes // chunks, (chunk + 1) * n_planes // chunks):
            n, c = p // channels, p % channels
            for iy in range(height):
                source = x[n, c, iy]
                row = padded[iy + ph]
                for ix in range(width):
                    row[pw + ix] = source[ix]
            _rows_3x3(padded, w[c], y[n, c])
            finish_channel_plane(y[n, c], c, scale, shift, relu, negative_slope)


@jit()
def _rows_3x3(padded, taps, out):
    """out (Ho, Wo) = taps (3, 3) over padded at stride 1, in the (i, j) order from 0."""
    t = _taps_3x3(taps)
    for oy in range(out.shape[0]):
        r0, r1, r2 = padded[oy], padded[oy + 1], padded[oy + 2]
        row = out[oy]
        for ox in range(out.shape[1]):
            row[ox] = _window_3x3(t, r0[ox], r0[ox + 1], r0[ox + 2], r1[ox], r1[ox + 1],
                                  r1[ox + 2], r2[ox], r2[ox + 1], r2[ox + 2])


# Output pixels along a row per register tile of the channel-block forward.
TILE = 4


@jit()
def _depthwise_block(block, taps, sh, sw, dh, dw, out):
    """out (Ho, Wo, LANES) = the 16 channels' filters taps (KH, KW, LANES) over block (the
    zero-padded planes, channel-last), TILE output pixels of a row at a time in registers. A
    row's last tile is the row's last TILE pixels (overlapping the one before: the same sums
    again); block is wide enough for a tile on rows narrower than TILE."""
    out_h, out_w = out.shape[0], out.shape[1]
    kh, kw = taps.shape[0], taps.shape[1]
    for oy in range(out_h):
        for ox in range(0, out_w, TILE):
            x0 = max(0, min(ox, out_w - TILE))
            acc = stack_lanes(4)   # TILE x LANES
            for t in range(TILE):
                for lane in range(LANES):
                    acc[t, lane] = 0.0
            for i in range(kh):
                row = oy * sh + i * dh
                for j in range(kw):
                    col = x0 * sw + j * dw
                    # Written out pixel by pixel: with a loop over the tile LLVM kept the
                    # accumulators in memory, and with one pixel it unrolled the lanes into
                    # scalar multiplies.
                    for lane in range(LANES):
                        tap = taps[i, j, lane]
                        acc[0, lane] += tap * block[row, col, lane]
                        acc[1, lane] += tap * block[row, col + sw, lane]
                        acc[2, lane] += tap * block[row, col + 2 * sw, lane]
                        acc[3, lane] += tap * block[row, col + 3 * sw, lane]
            for t in range(min(TILE, out_w)):
                pixel = out[oy, x0 + t]
                for lane in range(LANES):
                    pixel[lane] = acc[t, lane]


# Floats of a channel block's padded input rows at a time (256 KB): a band of output rows
# whose block and outputs stay in a core's L2. MobileNet-SSD's conv2/dw (150 -> 75, stride 2)
# took its planes whole: 1.5 MB a block, written by the load and read back from memory.
BAND_FLOATS = 1 << 16


@jit()
def channel_block_bands(out_h, columns, reach, stride):
    """(output rows a band, bands) for blocks `columns` wide whose output row needs `reach`
    input rows, `stride` apart: bands of at most BAND_FLOATS (one band when a plane fits)."""
    rows = BAND_FLOATS // (columns * LANES)
    band = max(1, min(out_h, (rows - reach) // stride + 1))
    return band, -(-out_h // band)


@jit(parallel=True)
def depthwise_forward_by_channel_blocks(x, w, ph, pw, sh, sw, dh, dw, y, scale, shift, relu,
                                        negative_slope):
    """depthwise_forward on blocks of 16 channels (kernels/lanes.py): each block's planes
    zero-padded channel-last, every tap of every output pixel one multiply-add of 16 lanes.
    Parallel over chunks of (image, block, band of output rows: channel_block_bands)."""
    n_img, channels, height, width = x.shape
    kh, kw = w.shape[1], w.shape[2]
    out_h, out_w = y.shape[2], y.shape[3]
    columns = max(width + 2 * pw, (max(out_w, TILE) - 1) * sw + (kw - 1) * dw + 1)
    band, bands = channel_block_bands(out_h, columns, (kh - 1) * dh + 1, sh)
    rows = (band - 1) * sh + (kh - 1) * dh + 1
    blocks = -(-channels // LANES)
    taps = np.zeros((blocks, kh, kw, LANES), np.float32)
    # Element by element: a slice assignment here would be a parallel region of its own,
    # started once per channel.
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                taps[c // LANES, i, j, c % LANES] = w[c, i, j]
    tasks = n_img * blocks * bands
    chunks = min(tasks, CHUNKS)
    # Chunks of tasks, so each thread allocates its block and outputs once.
    for chunk in prange(chunks):
        block = np.empty((rows, columns, LANES), np.float32)
        outputs = np.empty((band, out_w, LANES), np.float32)
        for task in range(chunk * tasks // chunks, (chunk + 1) * tasks // chunks):
            n, b, k = task // (blocks * bands), (task // bands) % blocks, task % bands
            oy0 = k * band
            height_k = min(band, out_h - oy0)
            out = outputs[:height_k]
            load_channel_block(x[n], b * LANES, ph, pw, np.float32(0), block, oy0 * sh)
            _depthwise_block(block, taps[b], sh, sw, dh, dw, out)
            store_channel_block(out, b * LANES, y[n, :, oy0:oy0 + height_k])
            for c in range(b * LANES, min(channels, (b + 1) * LANES)):
                finish_channel_plane(y[n, c, oy0:oy0 + height_k], c, scale, shift, relu,
                                     negative_slope)


@jit(parallel=True)
def depthwise_forward_on_phases(x, w, ph, pw, sh, sw, dh, dw, y, scale, shift, relu,
                                negative_slope):
    """depthwise_forward on phase planes. Parallel over chunks of planes (n, c).

    On the plane's phase planes (kernels/phases.py) every tap is a stride-1 shift, so a block
    of output rows is one flat multiply-add per tap that LLVM vectorizes (the per-row loop
    with a run-time stride it replaced stayed scalar: 2-4x slower on MobileNet's layers).
    Each output is summed over the taps in (i, j) order from 0, padding contributing
    tap * 0, as Caffe's im2col + GEMM.
    """
    n_img, channels, height, width = x.shape
    kh, kw = w.shape[1], w.shape[2]
    out_h, out_w = y.shape[2], y.shape[3]
    shape = phase_shape(height, width, kh, kw, ph, pw, sh, sw, dh, dw, out_h, out_w)
    pitch = shape[3]
    block = max(1, min(out_h, BLOCK_FLOATS // pitch))
    n_planes = n_img * channels
    # Chunks of planes, so each thread zeroes its phase planes once (their padding stays 0).
    chunks = min(n_planes, CHUNKS)
    for chunk in prange(chunks):
        planes = np.zeros(shape, np.float32)
        acc = np.empty(block * pitch, np.float32)
        for p in range(chunk * n_planes // chunks, (chunk + 1) * n_planes // chunks):
            n, c = p // channels, p % channels
            write_phases(x[n, c], ph, pw, planes)
            for r0 in range(0, out_h, block):
                rows = min(block, out_h - r0)
                tap_sums(planes, w[c], dh, dw, r0, (rows - 1) * pitch + out_w, acc)
                for k in range(rows):
                    y[n, c, r0 + k] = acc[k * pitch:k * pitch + out_w]
                    finish_channel_row(y[n, c, r0 + k], c, scale, shift, relu,
                                       negative_slope)


@jit(parallel=True)
def depthwise_backward_data(dy, w, ph, pw, sh, sw, dh, dw, dx):
    """dx (overwritten) = the transpose of depthwise_forward applied to dy. Parallel over
    the planes: a plane's dx gathers from its own dy only."""
    channels = dx.shape[1]
    kh, kw = w.shape[1], w.shape[2]
    for p in prange(dx.shape[0] * channels):
        n, c = p // channels, p % channels
        dx[n, c] = 0
        for i in range(kh):
            oy0, oy1 = _valid(dy.shape[2], dx.shape[2], ph, sh, i * dh)
            for j in range(kw):
                ox0, ox1 = _valid(dy.shape[3], dx.shape[3], pw, sw, j * dw)
                tap = w[c, i, j]
                for oy in range(oy0, oy1):
                    iy = oy * sh - ph + i * dh
                    for ox in range(ox0, ox1):
                        dx[n, c, iy, ox * sw - pw + j * dw] += tap * dy[n, c, oy, ox]


@jit(parallel=True)
def depthwise_backward_weight(x, dy, ph, pw, sh, sw, dh, dw, dw_out):
    """dw_out (ADDED to) += sum over images and positions of dy * x under each tap.
    Parallel over channels: each channel's filter gradient is summed by one thread."""
    kh, kw = dw_out.shape[1], dw_out.shape[2]
    for c in prange(x.shape[1]):
        for i in range(kh):
            oy0, oy1 = _valid(dy.shape[2], x.shape[2], ph, sh, i * dh)
            for j in range(kw):
                ox0, ox1 = _valid(dy.shape[3], x.shape[3], pw, sw, j * dw)
                total = 0.0
                for n in range(x.shape[0]):
                    for oy in range(oy0, oy1):
                        iy = oy * sh - ph + i * dh
                        for ox in range(ox0, ox1):
                            total += dy[n, c, oy, ox] * x[n, c, iy, ox * sw - pw + j * dw]
                dw_out[c, i, j] += total
