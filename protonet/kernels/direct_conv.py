"""Direct convolution for small channel counts or strided first layers: no column matrix, one
kernel for the forward and the weight gradient (any stride: an output pixel's window starts
stride apart) and the data gradient (stride 1).

All three are the same product, "gathered" on one side:

    out[r, :] += sum_u src[rows[r] + cols[u]] * b[u, :]

- forward: r an output pixel, u an input (c, i, j) of the window, src an image (zero-padded),
  b the weights as (C*kh*kw, M), out the image's outputs pixel-major (P, M);
- weight gradient: r an input (c, i, j), u an output pixel, b the top diff pixel-major (P, M),
  out the weight gradient as (C*kh*kw, M);
- data gradient at stride 1: a convolution of the zero-padded top diff with the flipped
  weights, r a bottom pixel, u an (m, i, j), b the weights as (M*kh*kw, C).

b and out are held in blocks of LANES columns (lane_blocks: (W / LANES, rows, LANES), the last
block padded with zeros), so that a block's row is one vector. A register tile is TILE_ROWS
rows r by 32 columns: per u, the rows' gathered src values broadcast, two vectors of b, a fused
multiply-add into each of the tile's accumulators, which stay in registers over every u, then
added into out once: 8 rows in 16 zmm on AVX-512 (lanes.prefer_wide_vectors), 3 rows in 12 ymm
on AVX2. Summation order per output element: u ascending from 0, each product fused into the
running sum, the sum added to out: fixed, so an image's result does not depend on its batch
(nor on the tile's shape). One thread, CIFAR-10's conv2 / conv3 shapes: 89-102 GMAC/s on an
Intel Sapphire Rapids core against 35-50 for the 4 x 4 tiles of u that loaded and stored out at
every step; on an AMD Zen 3 core (AVX2) 31-33 against 13 for the 8-row tiles, which spilled.

At stride 1, where the output rows fill runs of 16 pixels (run_lanes_used), the forward
and the data gradient put the pixels in the lanes instead (forward_image_rows): a tile is
TILE_ROWS outputs by two runs, each u broadcasts the outputs' weights and reads a run's inputs
as one vector, and the sums land in out's (M, P) rows, with the same order and bits; no
pixel-major block to fill with the bias before and to lay out as planes after.

A gathered tile skips the u whose inputs are padding for every one of its rows (live_taps,
in runs of u): their products are zeros, and adding a zero changes no sum (but a -0 sum's
sign, or the NaN an infinite weight times a padding zero would make, where Caffe multiplies
the zeros). Over an 8 x 8 image, 5 x 5 window, pad 2 (CIFAR-10's conv3), a tile of an output
row sums over 0.85 of the window: its forward and its backward at batch 100 took 0.83-0.84 of
the time on one core, 0.79-0.93 on two (alternating in one process). oneDNN skips them too.

The planner (conv_plan.py) says when (CIFAR-10's conv layers; the strided conv1s of
CaffeNet, GoogLeNet and ResNet-50); layers/conv.py holds one DirectConvolution per layer
(its offsets) and calls its forward / backward. run_tiles also serves the per-image forward
of narrow rows over kernel-column shifts (kernels/conv.per_image_forward: LeNet's conv2 in a
TEST net).
"""
from __future__ import annotations

import numpy as np

from ._jit import jit, prange
from .digest import KeptLayout
from .lanes import LANES, compiles_for_avx512, prefer_wide_vectors, stack_lanes


def padded_width(n: int) -> int:
    return -(-n // LANES) * LANES


# A register tile is TILE_ROWS rows of out by two lane blocks (32 columns), its
# 2 x TILE_ROWS accumulators of LANES floats held in registers over every u, with the tile's
# gathered src values broadcast and b read per u. With AVX-512 (32 zmm registers of 16
# floats) 8 rows: 16 accumulators. With AVX2 (16 ymm registers of 8 floats) an accumulator
# takes two registers: 8 rows spilled (13 GMAC/s on one AMD Zen 3 core, CIFAR-10's conv2),
# 4 rows x 16 columns ran 28, 6 x 16 17, 2 x 32 26, 3 x 32 (12 registers of sums) 31-32.
# The shape changes the work per tile, never an output's summation order.
TILE_ROWS = 8 if compiles_for_avx512() else 3
TILE_SUMS = 2 * TILE_ROWS
# A tile of one block (the last of an odd number) with AVX2's 3 rows: LLVM unrolls its 48
# multiply-adds and leaves them scalar (1.9 GMAC/s for 16 outputs); it runs instead as a pair
# of that block with itself, the second sums thrown away.
ONE_BLOCK_TILES = compiles_for_avx512()


@jit(contract=True)
def gathered_matmul(src, rows, cols, taps, counts, b, out):
    """out[v, r, :] += sum_u src[rows[r] + cols[u]] * b[v, u, :] (see the module docstring):
    b (V, U, LANES) and out (V, R, LANES) in blocks of LANES columns. The tile of rows from
    row i * TILE_ROWS sums over the spans of u taps[i, :counts[i]] only (live_taps: the other
    u read padding zeros for all of its rows).

    A tile of TILE_ROWS rows by two blocks (32 columns) sums over every u in registers,
    then adds into out once. rows and cols are uint64: with signed offsets numba tests every
    gathered index for wraparound (negative indices). Multiply-adds are contracted into FMAs
    (jit(contract=True): the sums keep their order)."""
    prefer_wide_vectors()
    n_rows = rows.shape[0]
    blocks = b.shape[0]
    # Where a lone block is tiled as a pair with itself, the second sums land here.
    paired_alone = not ONE_BLOCK_TILES and blocks % 2 == 1
    spare = np.empty((1 if paired_alone else 0, n_rows, LANES), np.float32)
    for start in range(0, n_rows, TILE_ROWS):
        # The last tile ends at the last row, overlapping the one before: the rows it shares
        # with it are summed again but not added.
        first = max(0, min(start, n_rows - TILE_ROWS))
        tile = start // TILE_ROWS
        for v in range(0, blocks - 1, 2):
            _tile(src, rows, cols, taps, counts, tile, first, start, b, v, v + 1, out, v, out,
                  v + 1, True)
        if blocks % 2:   # the last block alone
            v = blocks - 1
            if ONE_BLOCK_TILES:
                _tile(src, rows, cols, taps, counts, tile, first, start, b, v, v, out, v, out,
                      v, False)
            else:
                _tile(src, rows, cols, taps, counts, tile, first, start, b, v, v, out, v, spare,
                      0, True)


@jit(contract=True)
def _tile(src, rows, cols, taps, counts, tile, first, start, b, v0, v1, out0, i0, out1, i1,
          pair):
    """out0[i0] (and out1[i1] if pair) [r] += sum over u of src[rows[r] + cols[u]] * b[v0]
    (b[v1]) [u], u over the spans taps[tile, :counts[tile]] (each [first, end)), for the rows
    r of the tile from `first` (TILE_ROWS of them, the last row repeated past the end of rows)
    that are not before `start`. Each product is fused into its row's running sum, u ascending
    over the spans (which depend on the geometry alone): the same order in any tile, so an
    image's result does not depend on its batch or its place in it. gathered_matmul passes
    pair as a constant, and numba compiles the tile for each literal value: two loops, neither
    testing it. On AVX-512 the one without the pair (the last of an odd number of blocks) ran
    about 10% slower than a tile of one block written on its own did.

    Whole arrays and indices, not views (b[v], out[v], a row of taps): making a view of an
    array counts a reference on it, an atomic add on a line of memory every thread writes when
    the array is shared (the weights, the offsets). At five views a tile, both threads
    queued on that line: CIFAR-10's conv3 forward at batch 100 took 2.2-2.4 ms on 2 threads
    against 1.5 ms for half the batch on one thread; 1.6-1.8 ms with indices."""
    prefer_wide_vectors()
    last = rows.shape[0] - 1
    acc = stack_lanes(TILE_SUMS)   # TILE_ROWS x 2 blocks
    gathered = stack_lanes(1)      # the tile's src values at one u (TILE_ROWS <= LANES)
    for t in range(TILE_SUMS):
        for lane in range(LANES):
            acc[t, lane] = 0.0
    for span in range(counts[tile]):
        for u in range(taps[tile, span, 0], taps[tile, span, 1]):
            c = cols[u]
            for t in range(TILE_ROWS):
                gathered[0, t] = src[rows[min(first + t, last)] + c]
            # Loops over the tile's rows of constant length, inside the loop over lanes: LLVM
            # unrolls them and vectorizes the lanes, one vector of lanes (a register, or two
            # on AVX2) per row, the stack arrays in registers.
            for lane in range(LANES):
                w0 = b[v0, u, lane]
                for t in range(TILE_ROWS):
                    acc[t, lane] += gathered[0, t] * w0
                if pair:
                    w1 = b[v1, u, lane]
                    for t in range(TILE_ROWS):
                        acc[TILE_ROWS + t, lane] += gathered[0, t] * w1
    # Indices, not row views (a view per row cost a reference count), and a trip count LLVM
    # does not know (out's width is LANES): a loop of LANES is unrolled into scalar adds
    # before the loop vectorizer sees it, and the vectorizer after cannot tell out from b.
    width = out0.shape[2]
    for t in range(TILE_ROWS):
        if start <= first + t <= last:
            for lane in range(width):
                out0[i0, first + t, lane] += acc[t, lane]
            if pair:
                for lane in range(width):
                    out1[i1, first + t, lane] += acc[TILE_ROWS + t, lane]


def lane_blocks(matrix):
    """matrix (U, W) as (ceil(W / LANES), U, LANES): its columns in blocks of LANES, the last
    padded with zeros (gathered_matmul's b)."""
    u, w = matrix.shape
    padded = np.zeros((u, padded_width(w)), np.float32)
    padded[:, :w] = matrix
    return np.ascontiguousarray(padded.reshape(u, -1, LANES).transpose(1, 0, 2))


@jit()
def live_taps(mask, reads, cols):
    """(spans (G, S, 2) uint64, counts (G,) int64): for each group g of reads (reads (G, R):
    flat offsets into mask, a padded image's zeros and ones), the runs [first, end) of u, in
    ascending order, at which some read reads[g, r] + cols[u] lands on a one, in
    spans[g, :counts[g]]. Runs, so that a tile's loop over each is a plain range (a list of
    u to look up cost more in address arithmetic than the skipped zeros saved)."""
    groups, n_cols = reads.shape[0], cols.shape[0]
    live = np.zeros((groups, n_cols + 1), np.bool_)
    counts = np.zeros(groups, np.int64)
    for g in range(groups):
        for u in range(n_cols):
            for r in range(reads.shape[1]):
                if mask[reads[g, r] + cols[u]] != 0:
                    live[g, u] = True
                    break
            if live[g, u] and (u == 0 or not live[g, u - 1]):
                counts[g] += 1
    spans = np.zeros((groups, max(1, counts.max() if groups else 1), 2), np.uint64)
    for g in range(groups):
        k = 0
        for u in range(n_cols):
            if live[g, u] and (u == 0 or not live[g, u - 1]):
                spans[g, k, 0] = u
            if live[g, u] and not live[g, u + 1]:
                spans[g, k, 1] = u + 1
                k += 1
    return spans, counts


def tile_reads(rows):
    """The reads of each of gathered_matmul's tiles of TILE_ROWS rows (the last tile's
    first row at most len(rows) - TILE_ROWS, the last row repeated past the end)."""
    n_rows = len(rows)
    firsts = [max(0, min(start, n_rows - TILE_ROWS)) for start in range(0, n_rows, TILE_ROWS)]
    index = np.minimum(np.add.outer(firsts, np.arange(TILE_ROWS)), n_rows - 1)
    return rows[index]


def padding_mask(shape, pad_h, pad_w, padded_shape):
    """A padded image of an input of shape (C, H, W) that is 1 at the input's values and 0
    at the padding, flat (_pad_into's layout; negative pads crop)."""
    mask = np.empty(padded_shape, np.float32)
    _pad_into(np.ones(shape, np.float32), pad_h, pad_w, mask)
    return mask.reshape(-1)


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
def forward_images(x, ph, pw, padded_shape, pixels, window, taps, counts, weights_t, bias,
                   out):
    """out[n] (M, P) = convolution of x[n] (C, H, W): weights_t the weights (M, K) transposed
    in lane blocks (lane_blocks); bias (M,) or empty; pixels/window the offsets
    (pixel_offsets, window_offsets) in the padded image, taps and counts each tile's live u
    (live_taps). The data gradient is this too: dy
    padded by the kernel's reach less the pad, convolved with the flipped weights. Split
    between threads by images only: at batch 1 splitting the pixels cost more in waking a
    thread than it saved (CIFAR-10's conv3: 153 against 109 us on 2 threads)."""
    m_out = out.shape[1]
    n_pix = pixels.shape[0]
    # Unpadded (LeNet's conv2): the windows read the image itself, no padded copy is made.
    unpadded = ph == 0 and pw == 0 and x.shape[1:] == padded_shape
    image = np.empty((0 if unpadded else padded_shape[0], padded_shape[1], padded_shape[2]),
                     np.float32)
    flat = image.reshape(-1)
    result = np.empty((weights_t.shape[0], n_pix, LANES), np.float32)
    for n in range(x.shape[0]):
        if unpadded:
            flat = x[n].reshape(-1)
        else:
            _pad_into(x[n], ph, pw, image)
        result[:] = 0.0
        if bias.shape[0]:
            for m in range(m_out):
                result[m // LANES, :, m % LANES] = bias[m]
        gathered_matmul(flat, pixels, window, taps, counts, weights_t, result)
        for m in range(m_out):
            block, lane = m // LANES, m % LANES
            for p in range(n_pix):
                out[n, m, p] = result[block, p, lane]


# forward_image_rows takes rows whose runs of LANES pixels (one vector) hold at least this
# share of outputs (run_lanes_used): the rest of their lanes are computed and thrown away.
# One core, against forward_images: 32 wide (CIFAR-10's conv1) 0.50-0.58 of the time, 16
# wide (its conv2) 0.92-0.95, 29 wide 0.45, 13 wide (3 outputs) 0.53; 8 wide (its conv3,
# half the lanes) 1.73-1.85, LeNet's conv2 (8 wide) 1.58.
RUN_MIN_LANES_USED = 0.8


def run_lanes_used(out_width: int) -> float:
    """The share of forward_image_rows' lanes that hold outputs, for rows out_width wide."""
    return out_width / (-(-out_width // LANES) * LANES)


def by_runs(stride: tuple, out_width: int) -> bool:
    """Whether a direct pass of this stride onto rows out_width wide runs forward_image_rows
    (stride 1, runs at least RUN_MIN_LANES_USED full) rather than forward_images: the one
    rule for DirectConvolution's passes and for the planner."""
    return tuple(stride) == (1, 1) and run_lanes_used(out_width) >= RUN_MIN_LANES_USED


def row_runs(ho: int, wo: int, padded_width: int):
    """(first output pixel, its window corner's flat offset in the padded image, length) of
    each run of up to LANES pixels along the output rows, at stride 1."""
    runs = [(oy * wo + ox, oy * padded_width + ox, min(LANES, wo - ox))
            for oy in range(ho) for ox in range(0, wo, LANES)]
    # uint64, as the offsets: with signed ones numba tests every read index for wraparound
    return np.array(runs, np.uint64).reshape(-1, 3)


@jit(contract=True)
def _run_tile(src, runs, r0, r1, cols, wt, first, start, out, pair):
    """out[m, p + l] += sum_u wt[u, m] * src[corner + cols[u] + l] for the runs r0 and r1
    (if pair) of runs (p, corner, length; l < length) and the TILE_ROWS outputs m from
    `first` (the last output repeated past the end) that are not before `start`. The same
    sums as _tile's, in the same order, with the pixels in the lanes: each u broadcasts the
    tile's weights and reads a run's inputs as one vector, and the sums land in out's rows
    (M, P) with no layout pass after."""
    prefer_wide_vectors()
    last = wt.shape[1] - 1
    acc = stack_lanes(TILE_SUMS)   # TILE_ROWS outputs x 2 runs
    weights = stack_lanes(1)       # the tile's weights at one u (TILE_ROWS <= LANES)
    for t in range(TILE_SUMS):
        for lane in range(LANES):
            acc[t, lane] = 0.0
    corner0, corner1 = runs[r0, 1], runs[r1, 1]
    for u in range(cols.shape[0]):
        c = cols[u]
        for t in range(TILE_ROWS):
            weights[0, t] = wt[u, min(first + t, last)]
        a0, a1 = corner0 + c, corner1 + c
        # uint64 lanes: uint64 plus int64 is float64 in numba
        for lane in range(np.uint64(LANES)):
            x0 = src[a0 + lane]
            for t in range(TILE_ROWS):
                acc[t, lane] += weights[0, t] * x0
            if pair:
                x1 = src[a1 + lane]
                for t in range(TILE_ROWS):
                    acc[TILE_ROWS + t, lane] += weights[0, t] * x1
    p0, n0, p1, n1 = runs[r0, 0], runs[r0, 2], runs[r1, 0], runs[r1, 2]
    for t in range(TILE_ROWS):
        m = first + t
        if start <= m <= last:
            for lane in range(n0):
                out[m, p0 + lane] += acc[t, lane]
            if pair:
                for lane in range(n1):
                    out[m, p1 + lane] += acc[TILE_ROWS + t, lane]


@jit()
def run_tiles(src, runs, window, wt, out):
    """out (M, P) += the sums of _run_tile over every run of `runs` (in pairs, the last
    alone if odd) and every tile of TILE_ROWS outputs: each output's sum over u of
    wt[u, m] * src[corner + window[u] + lane]. src holds LANES readable floats past the last
    run's inputs (a short run's spare lanes read them, their sums thrown away)."""
    m_out = out.shape[0]
    n_runs = runs.shape[0]
    for r in range(0, n_runs - 1, 2):
        for start in range(0, m_out, TILE_ROWS):
            first = max(0, min(start, m_out - TILE_ROWS))
            _run_tile(src, runs, r, r + 1, window, wt, first, start, out, True)
    if n_runs % 2:
        for start in range(0, m_out, TILE_ROWS):
            first = max(0, min(start, m_out - TILE_ROWS))
            _run_tile(src, runs, n_runs - 1, n_runs - 1, window, wt, first, start, out,
                      False)


@jit()
def forward_image_rows(x, ph, pw, padded_shape, runs, window, wt, bias, out):
    """forward_images at stride 1 with the output pixels in the lanes: runs (row_runs) of up
    to LANES pixels of an output row, each u one vector read of the padded image; wt the
    weights (K, M). Each output is bias + its sum over u (ascending, fused multiply-adds):
    the same bits as forward_images. Taken where the runs fill their lanes
    (run_lanes_used): forward_images' layout around its product (its bias written into
    pixel-major blocks, the blocks turned into out's planes) took 44% of its time for
    CIFAR-10's conv1 (32 x 32 outputs, K 75), 8-10% for its conv2 and conv3. Its tiles sum
    over every u: skipping the padding's (live_taps) gained nothing on CIFAR-10's conv1 and
    conv2 (their runs' pairs span two output rows) and made conv1's forward 1.0-1.19x the
    time."""
    m_out = out.shape[1]
    size = padded_shape[0] * padded_shape[1] * padded_shape[2]
    # LANES zeros past the image: a short run's spare lanes read them.
    flat = np.zeros(size + LANES, np.float32)
    image = flat[:size].reshape(padded_shape)
    for n in range(x.shape[0]):
        _pad_into(x[n], ph, pw, image)
        planes = out[n]
        for m in range(m_out):
            value = bias[m] if bias.shape[0] else np.float32(0.0)
            for p in range(planes.shape[1]):
                planes[m, p] = value
        run_tiles(flat, runs, window, wt, planes)


# Floats of padded images and pixel-major top diff the weight gradient sums over at once
# (256 KB: with the gradient's tile rows they stay in a core's L2).
WEIGHT_GRAD_FLOATS = 1 << 16


@jit()
def _lane_blocks_of_rows(rows, blocks, offset):
    """blocks[m // LANES, offset + p, m % LANES] = rows[m, p] (rows (M, P)): squares of
    LANES rows by LANES pixels at a time, the whole rows of a block's last pixels after.
    Row by row, each write took a new cache line of a block bigger than L1 for wide images
    (64 KB for CIFAR-10's conv1): 30% of its weight gradient's time, the squares half that."""
    m_out, n_pix = rows.shape
    full = m_out - m_out % LANES
    whole = n_pix - n_pix % LANES
    for block in range(full // LANES):
        for p0 in range(0, whole, LANES):
            for lane in range(LANES):
                row = rows[block * LANES + lane]
                for q in range(LANES):
                    blocks[block, offset + p0 + q, lane] = row[p0 + q]
    for m in range(m_out):
        block, lane = m // LANES, m % LANES
        for p in range(whole if m < full else 0, n_pix):
            blocks[block, offset + p, lane] = rows[m, p]


@jit()
def weight_grad_images(x, dy, ph, pw, padded_shape, pixels, window, pixel_taps, pixel_counts,
                       grad_t):
    """grad_t (K, Mp) in lane blocks (Mp / LANES, K, LANES) += sum over images of x's windows
    times dy (N, M, P). A few images at a time (WEIGHT_GRAD_FLOATS) are one sum: their padded
    images side by side, u running over every pixel of each, so that a register tile sums
    over hundreds of u (an image of LeNet's conv2 or CIFAR-10's conv3 has 64 pixels). A tile
    of window entries sums over the pixels pixel_taps and pixel_counts name (live_taps over
    one image), in each image of the group."""
    m_out = dy.shape[1]
    n_img = x.shape[0]
    n_pix = pixels.shape[0]
    size = padded_shape[0] * padded_shape[1] * padded_shape[2]
    # A power of two: a batch split at multiples of it (between MPI ranks, or the threads'
    # blocks) makes the same groups, so the same partial sums, as the whole batch.
    fits = max(1, WEIGHT_GRAD_FLOATS // (size + n_pix * grad_t.shape[0] * LANES))
    group = 1
    while group * 2 <= fits:
        group *= 2
    group = min(n_img, group)
    images = np.empty((group, *padded_shape), np.float32)
    flat = images.reshape(-1)
    dy_t = np.zeros((grad_t.shape[0], group * n_pix, LANES), np.float32)
    cols = np.empty(group * n_pix, np.uint64)
    for g in range(group):
        for p in range(n_pix):
            cols[g * n_pix + p] = g * size + pixels[p]
    # Each tile's spans of live pixels, image after image of the group: ascending u, and
    # those of the first `count` images a prefix.
    tiles = pixel_taps.shape[0]
    taps = np.empty((tiles, group * pixel_taps.shape[1], 2), np.uint64)
    counts = np.empty(tiles, np.int64)
    for t in range(tiles):
        live = pixel_counts[t]
        for g in range(group):
            for k in range(live):
                for end in range(2):
                    taps[t, g * live + k, end] = g * n_pix + pixel_taps[t, k, end]
    for first in range(0, n_img, group):
        count = min(group, n_img - first)
        for g in range(count):
            n = first + g
            _pad_into(x[n], ph, pw, images[g])
            _lane_blocks_of_rows(dy[n], dy_t, g * n_pix)
        for t in range(tiles):
            counts[t] = count * pixel_counts[t]
        if count == group:
            gathered_matmul(flat, window, cols, taps, counts, dy_t, grad_t)
        else:   # the last images: contiguous copies (a slice would compile a strided kernel)
            used = count * n_pix
            gathered_matmul(flat, window, cols[:used].copy(), taps, counts,
                            np.ascontiguousarray(dy_t[:, :used]), grad_t)


# Stand-ins for the weight layout a pass does not use (forward_blocks, backward_blocks).
NO_LANE_BLOCKS = np.zeros((0, 0, LANES), np.float32)
NO_MATRIX = np.zeros((0, 0), np.float32)
NO_RUNS = np.zeros((0, 3), np.uint64)
NO_TAPS = (np.zeros((0, 1, 2), np.uint64), np.zeros(0, np.int64))


@jit()
def _convolve_images(x, ph, pw, padded_shape, pixels, runs, window, taps, counts, weights_t,
                     wt, bias, out):
    """forward_image_rows where there are runs (wt its weights), else forward_images (taps
    and counts: its tiles' live u)."""
    if runs.shape[0]:
        forward_image_rows(x, ph, pw, padded_shape, runs, window, wt, bias, out)
    else:
        forward_images(x, ph, pw, padded_shape, pixels, window, taps, counts, weights_t, bias,
                       out)


@jit(parallel=True)
def forward_blocks(x, ph, pw, padded_shape, pixels, runs, window, taps, counts, weights_t, wt,
                   bias, out, blocks):
    """_convolve_images of each block (s, e) of images (blocks (B, 2)), the blocks shared by
    numba's threads (one region per pass)."""
    for b in prange(blocks.shape[0]):
        s, e = blocks[b, 0], blocks[b, 1]
        _convolve_images(x[s:e], ph, pw, padded_shape, pixels, runs, window, taps, counts,
                         weights_t, wt, bias, out[s:e])


@jit(parallel=True)
def backward_blocks(x, dy, ph, pw, padded_shape, pixels, window, pixel_taps, pixel_counts,
                    grads, dy_images, diff_pad_h, diff_pad_w, diff_padded_shape, bottom_pixels,
                    bottom_runs, flipped_window, flipped_taps, flipped_counts, flipped,
                    flipped_rows, dx_planes, blocks):
    """Per block (s, e) of images (blocks (B, 2)), on numba's threads: block b's share of
    the weight gradient into grads[b] (grads None: not wanted), and the data gradient of its
    images into dx_planes (None: not wanted) as _convolve_images of the padded top diff with
    the flipped weights (flipped in lane blocks, flipped_rows as a matrix for the runs)."""
    for b in prange(blocks.shape[0]):
        s, e = blocks[b, 0], blocks[b, 1]
        if grads is not None:
            weight_grad_images(x[s:e], dy[s:e], ph, pw, padded_shape, pixels, window,
                               pixel_taps, pixel_counts, grads[b])
        if dx_planes is not None:
            _convolve_images(dy_images[s:e], diff_pad_h, diff_pad_w, diff_padded_shape,
                             bottom_pixels, bottom_runs, flipped_window, flipped_taps,
                             flipped_counts, flipped, flipped_rows, np.empty(0, np.float32),
                             dx_planes[s:e])


class DirectConvolution:
    """One convolution's offsets for the kernels above (made when its shapes are known), and
    the passes over a batch, split between numba's threads by blocks of images (one region per
    pass: each thread pads, multiplies and lays out its images; the backward runs the weight
    and data gradients of a block together)."""

    def __init__(self, geometry, bottom_shape, top_shape) -> None:
        self.shapes = (geometry, bottom_shape, top_shape)
        kh, kw, ph, pw, sh, sw, dh, dw = geometry
        channels, height, width = bottom_shape
        outputs, ho, wo = top_shape
        self.pad = (ph, pw)
        self.top_shape = (outputs, ho, wo)
        self.padded = (channels, height + 2 * ph, width + 2 * pw)
        self.pixels = pixel_offsets(ho, wo, sh, sw, self.padded[2])
        self.window = window_offsets(channels, kh, kw, dh, dw, *self.padded[1:])
        # The data gradient (stride 1 only): the top diff padded so that every bottom pixel
        # sees a whole (flipped) window; negative pads crop it.
        self.stride = (sh, sw)
        self.diff_pad = (dh * (kh - 1) - ph, dw * (kw - 1) - pw)
        self.diff_padded = (outputs, height + dh * (kh - 1), width + dw * (kw - 1))
        self.bottom_pixels = pixel_offsets(height, width, 1, 1, self.diff_padded[2])
        self.flipped_window = window_offsets(outputs, kh, kw, dh, dw, *self.diff_padded[1:],
                                             flip=True)
        # Output rows whose runs fill their lanes go pixels-in-lanes (forward_image_rows),
        # the forward at stride 1 and the data gradient (always a stride-1 convolution).
        self.runs = row_runs(ho, wo, self.padded[2]) if by_runs((sh, sw), wo) else None
        self.bottom_runs = (row_runs(height, width, self.diff_padded[2])
                            if by_runs((1, 1), width) else None)
        # Each gathered tile's live u (live_taps): the forward's (tiles of pixels, over the
        # window), the weight gradient's (tiles of the window, over an image's pixels) and
        # the data gradient's (as the forward's, in the padded top diff).
        mask = padding_mask(bottom_shape, ph, pw, self.padded)
        self.forward_taps = (NO_TAPS if self.runs is not None
                             else live_taps(mask, tile_reads(self.pixels), self.window))
        self.pixel_taps = live_taps(mask, tile_reads(self.window), self.pixels)
        self.flipped_taps = NO_TAPS
        if (sh, sw) == (1, 1) and self.bottom_runs is None:
            diff_mask = padding_mask(top_shape, *self.diff_pad, self.diff_padded)
            self.flipped_taps = live_taps(diff_mask, tile_reads(self.bottom_pixels),
                                          self.flipped_window)
        self.weights_t = KeptLayout()   # the forward's weights in lane blocks or as (K, M)

    def forward(self, x, weight, bias, out, plan) -> None:
        """out (N, M, P) = x (N, C, H, W) convolved with weight (M, K) (+ bias (M,) or None)."""
        # The weights in lane blocks, laid out again only when they changed (CIFAR-10's conv3
        # at batch 1: 29 of its 74 us were the layout).
        if self.runs is None:
            weights_t = self.weights_t.of(weight, lambda weight: lane_blocks(weight.T))
            wt, runs = NO_MATRIX, NO_RUNS
        else:
            wt = self.weights_t.of(weight, lambda weight: np.ascontiguousarray(weight.T))
            weights_t, runs = NO_LANE_BLOCKS, self.runs
        bias = np.empty(0, np.float32) if bias is None else bias

        blocks = plan.direct_block_array(x.shape[0])
        forward_blocks.over(len(blocks))(x, *self.pad, self.padded, self.pixels, runs,
                                         self.window, *self.forward_taps, weights_t, wt, bias,
                                         out, blocks)

    def backward(self, x, dy, weight, weight_diff, dx, plan) -> None:
        """weight_diff (M, K) += the weight gradient (if not None); dx (N, C, H, W) = the
        data gradient (if not None); dy (N, M, P) the top diff, weight (M, C, kh, kw)."""
        outputs, channels = weight.shape[:2]
        if dx is not None and self.stride != (1, 1):
            raise ValueError("the direct convolution's data gradient runs at stride 1 only")
        blocks = plan.direct_block_array(x.shape[0])
        grads = dy_images = dx_planes = None
        flipped, flipped_rows, bottom_runs = NO_LANE_BLOCKS, NO_MATRIX, NO_RUNS
        if weight_diff is not None:
            grads = np.zeros((len(blocks), padded_width(outputs) // LANES, weight_diff.shape[1],
                              LANES), np.float32)
        if dx is not None:
            rows = np.ascontiguousarray(weight.transpose(0, 2, 3, 1).reshape(-1, channels))
            if self.bottom_runs is None:
                flipped = lane_blocks(rows)
            else:
                flipped_rows, bottom_runs = rows, self.bottom_runs
            dy_images = dy.reshape(dy.shape[0], *self.top_shape)
            dx_planes = dx.reshape(dx.shape[0], channels, -1)   # a view: dx is contiguous
        backward_blocks.over(len(blocks))(
            x, dy, *self.pad, self.padded, self.pixels, self.window, *self.pixel_taps, grads,
            dy_images, *self.diff_pad, self.diff_padded, self.bottom_pixels, bottom_runs,
            self.flipped_window, *self.flipped_taps, flipped, flipped_rows, dx_planes, blocks)
        if weight_diff is not None:
            # Pieces summed in a fixed order; (Mp / LANES, K, LANES) back to (M, K).
            total = grads.sum(axis=0)
            weight_diff += total.transpose(1, 0, 2).reshape(total.shape[1], -1)[:, :outputs].T
