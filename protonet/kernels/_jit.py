"""The one numba configuration every kernel is compiled with.

- cache: compiled machine code is kept on disk beside the module (or in NUMBA_CACHE_DIR), so
  a second process starts fast. PROTONET_NUMBA_CACHE=0 turns it off.
- fastmath off: Caffe parity needs IEEE order of operations (results within 1e-5 relative of
  the references).
- nogil: the Data layer's prefetch thread decodes while kernels run.
- Kernels compile lazily, at first call with a given argument type, so importing protonet
  compiles nothing.
"""
from __future__ import annotations

import os

import numba

CACHE = os.environ.get("PROTONET_NUMBA_CACHE", "1") != "0"


def jit(parallel: bool = False):
    """Decorator for a kernel; `parallel=True` lets its `numba.prange` loops run on threads."""
    return numba.njit(parallel=parallel, cache=CACHE, fastmath=False, nogil=True,
                      error_model="numpy")


def set_num_threads(n: int) -> None:
    """Threads for numba's parallel loops."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


_configured = False


def configure_threads() -> None:
    """Let BLAS and numba's loops each use every core, taking turns.

    The two pools run one after the other (a GEMM, then an im2col), so they share the cores
    well only if neither spins when idle: protonet sets OPENBLAS_THREAD_TIMEOUT=4 and
    OMP_WAIT_POLICY=PASSIVE when it is imported (before numpy loads). Measured on 2 cores
    with `python tools/bench.py --worker --framework protonet --net lenet --mode train
    --threads 2` (LeNet training images/s, 4 runs each, alternating): numba 1 thread with
    spinning pools 3,848-4,174; numba 2 threads with yielding pools 4,285-4,469. With both
    pools spinning, 2 numba threads were 5x slower (92 ms per iteration instead of 16).
    OMP_NUM_THREADS caps both; PROTONET_NUMBA_THREADS and PROTONET_BLAS_THREADS set each; once,
    when the first Net is built.
    """
    global _configured
    if _configured:
        return
    _configured = True
    # OMP_NUM_THREADS caps numba as it caps BLAS (numba itself only reads NUMBA_NUM_THREADS).
    default = os.environ.get("OMP_NUM_THREADS", numba.config.NUMBA_NUM_THREADS)
    set_num_threads(int(os.environ.get("PROTONET_NUMBA_THREADS", default)))
    blas = os.environ.get("PROTONET_BLAS_THREADS")
    if blas:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=int(blas), user_api="blas")


prange = numba.prange
