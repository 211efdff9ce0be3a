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
    """Threads for numba's parallel loops (BLAS threads follow OMP/OPENBLAS env variables)."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


prange = numba.prange
