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
    """Give the cores to BLAS and run numba's loops on one thread, unless told otherwise.

    Two thread pools on the same cores fight: OpenBLAS's threads spin after each GEMM while
    numba's wait. Measured with `protonet time --model models/lenet_train_test.prototxt
    --iterations 40` on 2 cores (ms per forward-backward of 64 images): both pools at 2
    threads 92; BLAS 1 + numba 2 16.7; BLAS 2 + numba 1 16.1-16.9; both 1 20.5; GEMMs split
    by hand over 2 Python threads with BLAS 1 20.2-20.7. So BLAS keeps its threads and numba
    gets one. PROTONET_NUMBA_THREADS and PROTONET_BLAS_THREADS override; applied once, when
    the first Net is built.
    """
    global _configured
    if _configured:
        return
    _configured = True
    set_num_threads(int(os.environ.get("PROTONET_NUMBA_THREADS", "1")))
    blas = os.environ.get("PROTONET_BLAS_THREADS")
    if blas:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=int(blas), user_api="blas")


prange = numba.prange
