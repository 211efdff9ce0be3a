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

import contextlib
import functools
import os
import types

import numba

CACHE = os.environ.get("PROTONET_NUMBA_CACHE", "1") != "0"


# Below this many elements in a kernel's first array, a parallel kernel runs its serial
# compile: waking the idle (yielding) thread pool costs more than the work.
PARALLEL_MIN_ELEMENTS = 1 << 16


def _njit(fn, parallel: bool):
    return numba.njit(parallel=parallel, cache=CACHE, fastmath=False, nogil=True,
                      error_model="numpy")(fn)


class _ParallelKernel:
    """A `parallel=True` kernel compiled twice from the one source: threads for big arrays,
    serial for small ones (LeNet's ip1 ReLU: 32K elements, 0.10 ms parallel)."""

    def __init__(self, fn) -> None:
        self.parallel = _njit(fn, parallel=True)
        # A copy under its own name, so the on-disk cache keeps the two compiles apart.
        twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                  fn.__defaults__, fn.__closure__)
        twin.__qualname__ = fn.__qualname__ + "_serial"
        twin.__module__ = fn.__module__
        self.serial = _njit(twin, parallel=False)
        functools.update_wrapper(self, fn)

    def __call__(self, *args):
        kernel = self.parallel if args[0].size >= PARALLEL_MIN_ELEMENTS else self.serial
        return kernel(*args)


def jit(parallel: bool = False):
    """Decorator for a kernel; `parallel=True` lets its `numba.prange` loops run on threads
    (when its first argument is big enough to repay waking them)."""
    def decorate(fn):
        return _ParallelKernel(fn) if parallel else _njit(fn, parallel=False)
    return decorate


def set_num_threads(n: int) -> None:
    """Threads for numba's parallel loops."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


_blas_libraries = None


@contextlib.contextmanager
def one_blas_thread():
    """BLAS on one thread inside the block, for GEMMs that compute threads call side by side:
    two workers each waking a second BLAS thread on 2 cores took LeNet's batch-64 forward
    from 4.6 ms to 41 ms. Setting the count directly costs about 1.5 us (threadpoolctl's
    limit() context, 13 us)."""
    global _blas_libraries
    if _blas_libraries is None:
        from threadpoolctl import ThreadpoolController
        _blas_libraries = ThreadpoolController().select(user_api="blas").lib_controllers
    before = [lib.get_num_threads() for lib in _blas_libraries]
    for lib in _blas_libraries:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(_blas_libraries, before):
            lib.set_num_threads(n)


_configured = False


def configure_threads() -> None:
    """Let BLAS and numba's loops each use every core, taking turns.

    The two pools run one after the other (a GEMM, then an im2col), so they share the cores
    well only if neither spins when idle; protonet/_thread_env.py sees to that when protonet
    is imported before numpy. Measured on 2 cores with `python tools/bench.py --worker
    --framework protonet --net lenet --mode train --threads 2` (LeNet training images/s,
    alternating runs on a shared, noisy machine): numba on 1 thread beside spinning BLAS
    threads 3,848-4,174 in one session and 2,765-3,854 (mean 3,386) in another; numba on 2
    threads, both pools yielding, 4,285-4,469 and 2,937-3,686 (mean 3,456): the same or up
    to 10% faster. Numba on 2 threads beside spinning BLAS threads (with `protonet time`)
    was 5x slower: 92 ms per iteration instead of 16. So numba gets every core only when
    BLAS yields, else one thread. OMP_NUM_THREADS caps both; PROTONET_NUMBA_THREADS and
    PROTONET_BLAS_THREADS set each. Applied once, when the first Net is built.
    """
    global _configured
    if _configured:
        return
    _configured = True
    from .._thread_env import BLAS_YIELDS
    # numba itself reads only NUMBA_NUM_THREADS; OMP_NUM_THREADS caps it as it caps BLAS.
    default = os.environ.get("OMP_NUM_THREADS", numba.config.NUMBA_NUM_THREADS)
    if not BLAS_YIELDS:
        default = 1
    set_num_threads(int(os.environ.get("PROTONET_NUMBA_THREADS", default)))
    blas = os.environ.get("PROTONET_BLAS_THREADS")
    if blas:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=int(blas), user_api="blas")


prange = numba.prange
