"""y = x @ w.T for a fully connected layer (w stored (N, K), Caffe's InnerProduct layout), with
every output's summation order written in the code, so a sample's output is bitwise the same
alone or in any batch, on any number of threads.

The order, for every y[r, n] whatever tile it falls in: sixteen lane sums, lane l adding
x[r, k] * w[n, k] for k = l, l + 16, l + 32, ... in ascending k (products rounded to float32,
then added: no fused multiply-add), then y = lane 0 + lane 1 + ... + lane 15 left to right.

How it runs: register tiles of TILE_ROWS batch rows x TILE weight rows (on AVX-512 16
accumulators of 16 lanes, one zmm register each, asked for where LLVM prefers ymm pairs:
1.3-1.45x their speed at batch 16-1000, lanes.prefer_wide_vectors; on AVX2 1 x 4) on a small
array on the stack
(kernels/lanes.py), which LLVM keeps in registers; lanes are independent, so it vectorizes
them without reassociating anything (inspect the assembly: packed vmulps / vaddps). Rows left
over at the batch's or the weights' end go through the same tile code with one row instead
of TILE_ROWS, so they add in the same order. Threads take pieces of weight rows, each computing
its outputs whole, so the thread count changes nothing either; a tile of weight rows visits
the batch (in bands of rows when the weights fit in cache) while it stays in cache, so at
batch 1 the weights are read once, as a matrix-vector product would.

Against BLAS (one core, an AMD EPYC with AVX-512): at batch 1 as fast as numpy's
matrix-vector product (CaffeNet's fc7: 2.8 against 2.9 ms); at batch 16-64 1.1-2.6x a BLAS GEMM
(CaffeNet's fc6 at 16: 18.3 against 47.5 ms); from batch 256 up about 0.85x one GEMM over the
batch (fc6 at 256: 253 against 217 ms). InnerProduct runs it for every layer and batch
(transposed weights from a transposed copy): a path chosen by the batch would give a sample
different bits in different batches.
"""
from __future__ import annotations

import functools

import numpy as np

from . import threads
from ._jit import jit, prange
from .lanes import LANES, compiles_for_avx512, prefer_wide_vectors, stack_lanes

# A register tile is TILE_ROWS batch rows by TILE weight rows, a sum of 16 lanes for each
# pair: 4 x 4 in 16 zmm with AVX-512. With AVX2 a sum takes two ymm of its 16 registers and
# 4 x 4 spilled (LeNet's ip1 at batch 64, 2 threads: 2.37 ms, one BLAS GEMM 1.09); one core of
# an AMD Zen 3, alternating, time against 4 x 4: 1 x 4 0.68-0.82 at batch 64-1000, 0.90-0.94
# at 16 (CaffeNet's fc6), 0.95-1.08 at 1; 2 x 4 (which still spilled) 0.87-1.03.
TILE_ROWS = 4 if compiles_for_avx512() else 1
TILE = 4
TILE_SUMS = TILE_ROWS * TILE
# Floats of input rows a block of weight rows meets at a time (256 KB, a quarter of L2), for
# weights of at most RESIDENT_WEIGHTS floats (8 MB, a quarter of L3): the whole batch at once
# read it from L3 for every tile of weight rows (one core, 256 x 4096 by 1000 outputs: 61.0
# ms, in bands 36.5 ms).
BAND_FLOATS = 1 << 16
RESIDENT_WEIGHTS = 1 << 21
# Weights from which the threads share a layer even when its multiply-adds are few (a small
# batch): each weight is then read once, from memory, and two cores read it faster than one.
# CaffeNet's fc8 (4096 x 1000) and GoogLeNet's loss3 (1024 x 1000) at batch 1.
SPLIT_MIN_WEIGHTS = 1 << 20


@jit()
def _dot_tile(x, w, y, first, r, n, rows):
    """y[r + i, first + n + q] = x[r + i] . w[n + q] for i < rows (1 or TILE_ROWS), q < TILE,
    in the module's order. Weight rows past the end repeat the last one (the same sums,
    computed twice; at most TILE - 1 per layer).

    The tile's rows are loops of constant length inside the loop over lanes: LLVM unrolls
    them and vectorizes the lanes, the accumulators on the stack kept in registers."""
    prefer_wide_vectors()
    k = x.shape[1]
    last = w.shape[0] - 1
    whole = k - k % LANES
    acc = stack_lanes(TILE_SUMS)   # TILE_ROWS x TILE lanes
    for t in range(rows * TILE):
        for lane in range(LANES):
            acc[t, lane] = 0
    if rows == TILE_ROWS:
        for j in range(0, whole, LANES):
            for lane in range(LANES):
                c = j + lane
                for i in range(TILE_ROWS):
                    a = x[r + i, c]
                    for q in range(TILE):
                        acc[i * TILE + q, lane] += a * w[min(n + q, last), c]
    else:
        for j in range(0, whole, LANES):
            for lane in range(LANES):
                c = j + lane
                a = x[r, c]
                for q in range(TILE):
                    acc[q, lane] += a * w[min(n + q, last), c]
    for i in range(rows):
        for q in range(TILE):
            for lane in range(k - whole):
                acc[i * TILE + q, lane] += x[r + i, whole + lane] * w[min(n + q, last),
                                                                      whole + lane]
    # lane 0 + lane 1 + ... for all the tile's outputs at once: one output after the other
    # waited on every add (720 cycles a tile, more than K = 800's products).
    total = stack_lanes(1)
    for t in range(rows * TILE):
        total[0, t] = acc[t, 0]
    for lane in range(1, LANES):
        for t in range(rows * TILE):
            total[0, t] += acc[t, lane]
    for i in range(rows):
        for q in range(TILE):
            y[r + i, first + min(n + q, last)] = total[0, i * TILE + q]


@jit()
def dense_forward(w, x, y, first):
    """y[:, first:first + n] = x (M, K) @ w (n, K).T, C-contiguous float32 (see the module
    docstring): w holds the layer's weight rows first, first + 1, ..., y is the layer's whole
    output (so a thread's piece and the whole layer share one compile)."""
    n_out, k = w.shape
    m = x.shape[0]
    # Weights that fit in L3 are swept once per band of input rows (each band read once, in
    # L2); bigger ones are read once, each block meeting the whole batch.
    band = max(m, TILE_ROWS)
    if n_out * k <= RESIDENT_WEIGHTS:
        band = max(TILE_ROWS, BAND_FLOATS // k // TILE_ROWS * TILE_ROWS)
    for start in range(0, m, band):
        end = min(start + band, m)
        whole = start + (end - start) // TILE_ROWS * TILE_ROWS
        for n in range(0, n_out, TILE):
            for r in range(start, whole, TILE_ROWS):
                _dot_tile(x, w, y, first, r, n, TILE_ROWS)
            for r in range(whole, end):
                _dot_tile(x, w, y, first, r, n, 1)


@jit(parallel=True)
def _dense_pieces(w, x, y, bounds):
    """dense_forward of each piece of weight rows (bounds: (start, end) rows), the pieces
    shared by numba's threads."""
    for p in prange(bounds.shape[0]):
        start, end = bounds[p, 0], bounds[p, 1]
        dense_forward(w[start:end], x, y, start)


def dense(w, x, y) -> None:
    """dense_forward on numba's threads in pieces of weight rows (numba's threads are usually
    still spinning from the layer before, where protonet's Python threads would sleep), one
    thread when the product is too small to repay waking another. A
    piece computes its outputs whole, so the thread count and the pieces do not change the
    bits."""
    n_threads = threads.compute_threads()
    if n_threads == 1 or (x.shape[0] * w.size < threads.SPLIT_MIN_MACS
                          and w.size < SPLIT_MIN_WEIGHTS):
        dense_forward(w, x, y, 0)
        return
    _dense_pieces(w, x, y, _piece_bounds(w.shape[0], n_threads * threads.PIECES_PER_THREAD))


@functools.lru_cache(maxsize=256)   # asked at every forward, for a few shapes
def _piece_bounds(rows: int, pieces: int):
    """threads.split(rows, pieces, align=TILE) as a read-only (B, 2) int64 array, made once
    per size rather than at every forward."""
    bounds = np.array(threads.split(rows, pieces, align=TILE), np.int64).reshape(-1, 2)
    bounds.flags.writeable = False
    return bounds


def lane_ordered_reference(x, w):
    """The module's order in numpy (for tests): float32 products and sums, element by element
    as the kernel adds them (a float64 product would differ)."""
    k = x.shape[1]
    whole = k - k % LANES
    lanes = np.zeros((x.shape[0], w.shape[0], LANES), np.float32)
    for j in range(0, whole, LANES):
        lanes += x[:, None, j:j + LANES] * w[None, :, j:j + LANES]
    lanes[:, :, :k - whole] += x[:, None, whole:] * w[None, :, whole:]
    total = lanes[:, :, 0]
    for lane in range(1, LANES):
        total = total + lanes[:, :, lane]
    return total
