"""protonet's compute threads: how GEMMs and per-image work share the cores.

protonet never lets BLAS start threads of its own. Every GEMM runs with BLAS held to one
thread, and protonet splits the big ones between threads itself.
Why: OpenBLAS's threads wait for each other by spinning. On a busy machine a spinning thread
burns the time slice its partner needs, and a step collapses: LeNet's training step with
BLAS on 2 threads ran at 19-46 images/s on this 2-core VM with 7 other jobs running, against
930-1,860 with BLAS on one thread (alternating runs). Holding BLAS to one thread is done at
run time through threadpoolctl, so it works whatever was imported first; OpenBLAS's own idle
timeout (OPENBLAS_THREAD_TIMEOUT, read only when numpy loads) no longer matters.

The threads are numba's: a split GEMM's pieces (grouped_matmul), the per-image convolution
(kernels/conv.py) and the direct one (kernels/direct_conv.py) are parallel loops that call
numpy's own cblas_sgemm (kernels/blas.py), beside numba's other loops (im2col, pooling).
numba's threads spin a moment between loops (protonet/_thread_env.py), so a layer's pieces
start without waking a sleeping thread. Where numpy's BLAS is not an OpenBLAS that cblas can
be called in (MKL, Accelerate) or an operand's layout does not suit cblas, run_pieces hands
the same pieces to a pool of Python threads that sleep in the kernel when idle (numpy's GEMMs
and numba's kernels let go of the GIL), each thread taking the next piece when it finishes
one.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from . import blas

_pool = ThreadPoolExecutor(thread_name_prefix="protonet")
_blas_libraries = None
_held = 0


def compute_threads() -> int:
    """Threads protonet computes on (numba's setting, which configure_threads makes the one
    setting for everything)."""
    return numba.get_num_threads()


def _blas():
    global _blas_libraries
    if _blas_libraries is None:
        from threadpoolctl import ThreadpoolController
        _blas_libraries = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas_libraries


@contextlib.contextmanager
def one_blas_thread():
    """BLAS on one thread inside the block (nested blocks cost nothing). Setting the count
    directly costs about 1.5 us a library (threadpoolctl's limit() context: 13 us); the
    user's own setting comes back after the block."""
    global _held
    if _held:
        _held += 1
        try:
            yield
        finally:
            _held -= 1
        return
    libraries = _blas()
    before = [lib.get_num_threads() for lib in libraries]
    for lib in libraries:
        lib.set_num_threads(1)
    _held = 1
    try:
        yield
    finally:
        _held = 0
        for lib, n in zip(libraries, before):
            lib.set_num_threads(n)


def run_pieces(work, pieces, threads: int) -> None:
    """work(*piece, shared) for every piece, on `threads` threads taking pieces in turn.

    `shared` is True when other threads run beside this one: work must then call serial numba
    kernels. BLAS is held to one thread throughout. The calling thread works too; it returns
    when every piece is done, re-raising the first error a piece raised.
    """
    pieces = list(pieces)
    threads = max(1, min(threads, len(pieces)))
    if threads == 1 and _held:   # inside a net's pass, BLAS already on one thread
        for piece in pieces:
            work(*piece, False)
        return
    with one_blas_thread():
        if threads == 1:
            for piece in pieces:
                work(*piece, False)
            return
        taken, finished = itertools.count(), itertools.count(1)
        all_done, errors = threading.Event(), []

        def take():
            # next() on an itertools.count is atomic under the GIL.
            while (i := next(taken)) < len(pieces):
                try:
                    work(*pieces[i], True)
                except BaseException as error:  # noqa: BLE001  (re-raised by the caller)
                    errors.append(error)
                finally:
                    if next(finished) == len(pieces):
                        all_done.set()

        for _ in range(threads - 1):
            # A helper that starts after the pieces are gone finds none and returns.
            _pool.submit(take)
        take()
        all_done.wait()
    if errors:
        raise errors[0]


def split(n: int, parts: int, align: int = 1):
    """(start, end) bounds of `parts` near-equal slices of range(n), starts multiples of
    `align` (the last slice takes the rest); fewer slices when n is small."""
    parts = max(1, min(parts, -(-n // align)))
    bounds = sorted({min(n, (n * p // parts) // align * align) for p in range(parts)} | {n})
    return list(zip(bounds[:-1], bounds[1:]))


# A GEMM is split between threads when it has at least this many multiply-adds: about 60 us
# on one thread here, the price of waking a sleeping thread and joining it (50-70 us on this
# VM).
SPLIT_MIN_MACS = 1 << 22
# Pieces per thread where work is handed out in blocks of images (conv_plan.py): more pieces
# let the threads even out a slow one.
PIECES_PER_THREAD = 2


# A product of few inputs per output (K up to ROW_SPLIT_MAX_K), at least ROW_SPLIT_MIN_ROWS
# rows and under ROW_SPLIT_MAX_COLUMNS columns is split along its rows even where its columns
# are more. Cut into columns, such outputs ran no faster on two threads than on one
# (OpenBLAS, Intel Sapphire Rapids VM, 2 threads, us): LeNet's ip1 weight gradient (500 x 800,
# K 64) 351 in columns against 189 in rows, 256 x 800 180 against 107, 1000 x 1000 656
# against 428, 500 x 800 at K 128 478 against 349. With more inputs per output, or wider,
# columns ran as fast or 2-7% faster (CaffeNet's conv3 at batch 16, 384 x 2704 x 2304: 23.8
# against 24.8 ms; 256 x 784 x 2304 4.5 against 4.8; 128 x 12544 x 64 1.27 against 1.35).
ROW_SPLIT_MIN_ROWS = 128
ROW_SPLIT_MAX_K = 256
ROW_SPLIT_MAX_COLUMNS = 4096


def plan_gemm(m: int, n: int, k: int, threads: int, groups: int = 1):
    """How out[g] (m, n) = a[g] (m, k) @ b[g] (k, n), for each of `groups` products, is split:
    (axis, [(start, end), ...]), each product cut the same way along its output's rows (axis
    0) or columns (axis 1), whichever is longer, but rows for the shapes ROW_SPLIT_* name.
    One piece per product for small work or one thread.

    Each thread gets the same share and no more pieces than that takes: groups whole where
    they go evenly (a grouped convolution's two groups on two threads), else each product in
    threads / gcd(groups, threads) pieces. Every piece of a split packs its operand again, so
    fewer, wider pieces run faster; on an Intel Sapphire Rapids VM, 2 threads, one piece a
    thread against two: 0.88-0.96 of the time on CaffeNet's, GoogLeNet's, ResNet-50's and
    VGG-16's batch-1 shapes (35-462M multiply-adds); CaffeNet's grouped conv5 (2 x 128 x 1728 x
    169) in 0.72 ms a group a thread, 1.31 ms split within each group, 1.17 ms on one thread."""
    axis = 0 if m > n or (m >= ROW_SPLIT_MIN_ROWS and k <= ROW_SPLIT_MAX_K
                          and n < ROW_SPLIT_MAX_COLUMNS) else 1
    if threads <= 1 or groups * m * n * k < SPLIT_MIN_MACS:
        return axis, [(0, (m, n)[axis])]
    return axis, split((m, n)[axis], threads // math.gcd(groups, threads), align=16)


def grouped_matmul(a, b, out, threads: int | None = None, accumulate: bool = False) -> None:
    """out[i] = a[i] @ b[i] (with accumulate, out[i] += a[i] @ b[i]) for every matrix i of
    the float32 stacks a (..., m, k), b (..., k, n) and out (..., m, n) (the same leading
    axes: a convolution's groups, Winograd's 16 x groups), each out[i] C-contiguous or a slice
    of rows or columns of such, on protonet's threads with BLAS on one thread (see the module
    docstring). Accumulating is cblas's beta 1 where numpy's BLAS is called directly: into an
    out of zeros the same bits as the product alone."""
    threads = compute_threads() if threads is None else threads
    lead = out.shape[:-2]
    m, n = out.shape[-2:]
    # One thread, or too little work to repay waking another: the products in turn.
    in_turn = threads <= 1 or out.size * a.shape[-1] < SPLIT_MIN_MACS
    axis, bounds = (1, [(0, n)]) if in_turn else plan_gemm(m, n, a.shape[-1], threads,
                                                          math.prod(lead))
    if blas.available() and (accumulate or not in_turn):
        table = blas.piece_table(a, b, out, axis, bounds, accumulate)
        if table is not None:
            with one_blas_thread():
                blas.gemm_pieces(table, in_turn)
            return

    def product(i, rows, columns):
        if accumulate:
            out[i][rows, columns] += np.matmul(a[i][rows], b[i][:, columns])
        else:
            np.matmul(a[i][rows], b[i][:, columns], out=out[i][rows, columns])

    if in_turn:
        with one_blas_thread():
            for i in np.ndindex(lead):
                product(i, slice(None), slice(None))
        return
    if axis == 1:
        def work(i, s, e, shared):
            product(i, slice(None), slice(s, e))
    else:
        def work(i, s, e, shared):
            product(i, slice(s, e), slice(None))
    run_pieces(work, [(i, s, e) for i in np.ndindex(lead) for s, e in bounds], threads)


def matmul(a, b, out, threads: int | None = None, accumulate: bool = False) -> None:
    """out[...] = a @ b (with accumulate, out += a @ b; 2D float32, out C-contiguous or a
    slice of rows or columns of such), on protonet's threads with BLAS on one thread:
    grouped_matmul of one matrix."""
    grouped_matmul(a[None], b[None], out[None], threads, accumulate)
