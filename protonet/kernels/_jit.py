"""The one numba configuration every kernel is compiled with.

- cache: compiled machine code is kept on disk beside the module (or in NUMBA_CACHE_DIR), so
  a second process starts fast. PROTONET_NUMBA_CACHE=0 turns it off.
- fastmath off: Caffe parity needs IEEE order of operations (results within 1e-5 relative of
  the references). A kernel may allow contraction alone (jit(contract=True)): a multiply and
  the add of its product become one FMA, rounded once; the order of the sums is unchanged.
- nogil: the Data layer's prefetch thread decodes while kernels run.
- Kernels compile lazily, at first call with a given argument type, so importing protonet
  compiles nothing.
"""
from __future__ import annotations

import functools
import os
import types

import numba

CACHE = os.environ.get("PROTONET_NUMBA_CACHE", "1") != "0"


# Below this many elements in a kernel's first array, a parallel kernel runs its serial
# compile: waking the idle (yielding) thread pool costs more than the work.
PARALLEL_MIN_ELEMENTS = 1 << 16


def _njit(fn, parallel: bool, contract: bool = False):
    return numba.njit(parallel=parallel, cache=CACHE, fastmath={"contract"} if contract else False,
                      nogil=True, error_model="numpy")(fn)


class _ParallelKernel:
    """A `parallel=True` kernel compiled twice from the one source: threads for big arrays,
    serial for small ones (LeNet's ip1 ReLU: 32K elements, 0.10 ms parallel)."""

    def __init__(self, fn, min_elements: int) -> None:
        self.min_elements = min_elements
        self.parallel = _njit(fn, parallel=True)
        # A copy under its own name, so the on-disk cache keeps the two compiles apart.
        twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                  fn.__defaults__, fn.__closure__)
        twin.__qualname__ = fn.__qualname__ + "_serial"
        twin.__module__ = fn.__module__
        self.serial = _njit(twin, parallel=False)
        functools.update_wrapper(self, fn)

    def __call__(self, *args):
        kernel = self.parallel if args[0].size >= self.min_elements else self.serial
        return kernel(*args)

    def over(self, pieces: int):
        """The compile for a loop over `pieces` pieces a plan has already sized for the
        threads: parallel if there are two or more, whatever the size of the arrays."""
        return self.parallel if pieces > 1 else self.serial


def jit(parallel: bool = False, contract: bool = False,
        min_elements: int = PARALLEL_MIN_ELEMENTS):
    """Decorator for a kernel; `parallel=True` lets its `numba.prange` loops run on threads
    when its first argument has at least `min_elements` (enough work to repay waking them:
    fewer for kernels that spend more per element). `contract=True` (serial kernels only)
    lets LLVM fuse a multiply and the add of its product into one FMA."""
    def decorate(fn):
        if parallel:
            return _ParallelKernel(fn, min_elements)
        return _njit(fn, parallel=False, contract=contract)
    return decorate


def set_num_threads(n: int) -> None:
    """Threads for numba's parallel loops."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


_configured = False


def configure_threads() -> None:
    """One thread count for everything protonet computes: numba's parallel loops and
    protonet's own GEMM threads (kernels/threads.py; BLAS itself stays on one thread). The
    count is every core, or OMP_NUM_THREADS, or PROTONET_THREADS; it does not depend on
    whether numpy was imported first. Applied once, when the first Net is built.
    """
    global _configured
    if _configured:
        return
    _configured = True
    # numba itself reads only NUMBA_NUM_THREADS; OMP_NUM_THREADS caps it as it caps BLAS.
    default = os.environ.get("OMP_NUM_THREADS", numba.config.NUMBA_NUM_THREADS)
    set_num_threads(int(os.environ.get("PROTONET_THREADS", default)))


prange = numba.prange
