"""GEMM pieces run on numba's thread pool, through numpy's own OpenBLAS.

A product split between threads (kernels/threads.py) pays for waking the threads that take
its pieces. protonet's Python threads sleep when idle and take 30-70 us to wake on a 2-vCPU
VM, so a split only paid from about 20M multiply-adds. numba's OpenMP threads are usually
still spinning from the loop before (protonet/_thread_env.py), so the same pieces called from
a parallel loop split products down to about 1M: a 32 x 800 x 256 product (CIFAR-10's conv2 at
batch 1) took 125 us on one thread, 191 us on the Python threads and 65 us here.

The pieces call cblas_sgemm in the very library numpy's matmul calls (found through
threadpoolctl), so a piece's values are the same as np.matmul's on the same operands. Its
address is an argument of the kernel, not a constant in it, so the kernel caches on disk like
the others. available() is False where numpy's BLAS is not an OpenBLAS with a CBLAS interface
(MKL, Accelerate); kernels/threads.py then keeps its Python threads.
"""
from __future__ import annotations

import ctypes
import functools
import itertools
import logging
import os

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from ._jit import jit

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
# Columns of a piece's row in gemm_pieces' table.
FIELDS = ("trans_a", "trans_b", "m", "n", "k", "a", "lda", "b", "ldb", "c", "ldc", "beta")

# (address of cblas_sgemm, bits of its integers) once looked up; (0, 0) when there is none.
_found: tuple | None = None
# Symbol names numpy's OpenBLAS builds export, with the width of their integers: numpy 2's
# scipy-openblas (64-bit integers, prefixed and suffixed), older numpy's openblas64_, and a
# plain OpenBLAS.
_SYMBOLS = (("scipy_cblas_sgemm64_", 64), ("cblas_sgemm64_", 64), ("scipy_cblas_sgemm", 32),
            ("cblas_sgemm", 32))


def _lookup():
    global _found
    if _found is None:
        _found = _numpy_cblas()[1:]
    return _found


@functools.cache
def _numpy_cblas() -> tuple:
    """(threadpoolctl's controller of the OpenBLAS whose cblas_sgemm numpy calls, that
    function's address, the bits of its integers), or (None, 0, 0).

    numpy's own BLAS: the symbol as numpy's extension module sees it (a process holds others,
    scipy's among them, loaded with numba's import; they are not held to one thread while
    they are not found by threadpoolctl, and an OpenBLAS that runs on two threads spins).
    Taken only if it is an OpenBLAS that threadpoolctl controls."""
    from threadpoolctl import ThreadpoolController
    numpy_side = ctypes.CDLL(_numpy_core_file())
    for library in ThreadpoolController().select(user_api="blas").lib_controllers:
        if library.internal_api != "openblas":
            continue
        for name, bits in _SYMBOLS:
            address = _address(numpy_side, name)
            if address and address == _address(library.dynlib, name):
                return library, address, bits
    return None, 0, 0


def _numpy_core_file() -> str:
    try:
        from numpy._core import _multiarray_umath as numpy_core
    except ImportError:   # numpy 1
        from numpy.core import _multiarray_umath as numpy_core
    return numpy_core.__file__


# OpenBLAS's names of the cores whose kernels use AVX2 at most (lower case).
AVX2_CORES = frozenset({"haswell", "zen", "sandybridge", "nehalem", "prescott", "core2",
                        "penryn", "dunnington", "atom", "barcelona", "bulldozer",
                        "piledriver", "steamroller", "excavator", "opteron"})
AVX512 = ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")


def pinned_kernels_note(pinned: str | None, core: str | None, features) -> str | None:
    """The warning for an environment that pins numpy's OpenBLAS (OPENBLAS_CORETYPE =
    `pinned`) to `core`, a core of AVX2 kernels at most, on a CPU whose `features` (LLVM's
    names, true or false) include AVX-512; else None. Some machine images pin Haswell's
    kernels for old OpenBLAS builds that crash on newer CPUs; a current OpenBLAS left to
    itself takes its AVX-512 (SkylakeX) kernels there, and pinned it multiplies at about
    half speed (an AMD Zen 5: a 2048^3 product 105 against 203 GFLOP/s on one thread)."""
    if not pinned or not core or core.lower() not in AVX2_CORES:
        return None
    if not all(features.get(name, False) for name in AVX512):
        return None
    return (f"OPENBLAS_CORETYPE={pinned} holds numpy's OpenBLAS to its {core} kernels (AVX2) "
            "on a CPU with AVX-512: protonet's convolutions and InnerProducts multiply at about "
            "half speed. Unset OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE) unless your OpenBLAS "
            "needs it.")


@functools.cache
def warn_if_pinned() -> str | None:
    """Log pinned_kernels_note's warning for this process, once (the first Net built)."""
    library = _numpy_cblas()[0]
    if library is None:
        return None
    from llvmlite import binding
    note = pinned_kernels_note(os.environ.get("OPENBLAS_CORETYPE"), library.architecture,
                               binding.get_host_cpu_features())
    if note:
        logging.getLogger("protonet").warning(note)
    return note


def _address(library, name):
    """The address of symbol `name` as `library` resolves it, or None."""
    try:
        return ctypes.cast(getattr(library, name), ctypes.c_void_p).value
    except AttributeError:
        return None


def available() -> bool:
    """Whether gemm_pieces can run (numpy's BLAS is an OpenBLAS with cblas_sgemm)."""
    return _lookup()[0] != 0


def _layout(x):
    """(transposed, leading dimension) of the matrices of a float32 stack x (..., rows,
    columns) as cblas sees them, or None when neither of their axes is unit-stride with the
    other a whole row apart."""
    (rows, columns), (s0, s1) = x.shape[-2:], x.strides[-2:]
    if s1 == 4 and s0 >= 4 * max(1, columns):
        return NO_TRANS, s0 // 4
    if s0 == 4 and s1 >= 4 * max(1, rows):
        return TRANS, s1 // 4
    return None


def piece_table(a, b, out, axis: int, bounds, accumulate: bool = False) -> np.ndarray | None:
    """The table gemm_pieces runs for out[i] = a[i] @ b[i] (out[i] += a[i] @ b[i] with
    accumulate: cblas's beta 1), every matrix i of the stacks a (..., m, k), b (..., k, n),
    out (..., m, n) (the same leading axes), each product cut into its rows (axis 0) or
    columns (axis 1) start..end for every (start, end) of bounds: one row (FIELDS) a piece,
    matrix by matrix. None when an operand has a layout cblas cannot take (then np.matmul
    does it). Python integers throughout: it runs at every forward (numpy operations on
    these few numbers cost twice as much)."""
    if any(x.dtype != np.float32 or x.ndim < 2 for x in (a, b, out)):
        return None
    layouts = _layout(a), _layout(b), _layout(out)
    if None in layouts or layouts[2][0] != NO_TRANS:
        return None
    (ta, lda), (tb, ldb), (_, ldc) = layouts
    k = a.shape[-1]
    m, n = out.shape[-2:]
    lead = out.shape[:-2]
    bases = [(x.__array_interface__["data"][0], x.strides[:-2]) for x in (a, b, out)]
    rows, beta = [], int(accumulate)
    for index in itertools.product(*map(range, lead)):
        pa, pb, pc = (base + sum(i * stride for i, stride in zip(index, strides))
                      for base, strides in bases)
        for start, end in bounds:
            if axis == 0:    # rows start..end of a and of out
                rows.append((ta, tb, end - start, n, k, pa + start * a.strides[-2], lda, pb,
                             ldb, pc + start * out.strides[-2], ldc, beta))
            else:            # columns start..end of b and of out
                rows.append((ta, tb, m, end - start, k, pa, lda, pb + start * b.strides[-1],
                             ldb, pc + start * out.strides[-1], ldc, beta))
    return np.array(rows, np.int64)


def _sgemm_intrinsic(beta: float):
    """An intrinsic calling cblas_sgemm(RowMajor, trans_a, trans_b, m, n, k, 1, a, lda, b,
    ldb, beta, c, ldc) through the function at `address`, whose integers are `bits` (64 or
    32) wide."""

    def sgemm(typingctx, address, bits, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
        def codegen(context, builder, signature, args):
            i32, i64, f32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
            ptr = ir.IntType(8).as_pointer()
            ta, tb, mm, nn, kk, pa, la, pb, lb, pc, lc = args[2:]
            wide = builder.icmp_signed("==", args[1], ir.Constant(args[1].type, 64))
            with builder.if_else(wide) as (ilp64, lp64):
                for branch, iw in ((ilp64, i64), (lp64, i32)):
                    with branch:
                        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, iw, iw, iw, f32,
                                                               ptr, iw, ptr, iw, f32, ptr, iw])
                        fn = builder.inttoptr(args[0], fnty.as_pointer())
                        size = (lambda v: v) if iw is i64 else (lambda v: builder.trunc(v, i32))
                        builder.call(fn, [ir.Constant(i32, ROW_MAJOR), builder.trunc(ta, i32),
                                          builder.trunc(tb, i32), size(mm), size(nn), size(kk),
                                          ir.Constant(f32, 1.0), builder.inttoptr(pa, ptr),
                                          size(la), builder.inttoptr(pb, ptr), size(lb),
                                          ir.Constant(f32, beta), builder.inttoptr(pc, ptr),
                                          size(lc)])
            return context.get_dummy_value()

        return types.void(*([types.int64] * 13)), codegen

    return sgemm


# c = a @ b, and c += a @ b (a layer's weight gradient added into its diff, as Caffe's own
# GEMMs do: no product in a buffer of its own to add after).
sgemm = intrinsic(_sgemm_intrinsic(0.0))
sgemm_accumulate = intrinsic(_sgemm_intrinsic(1.0))


@jit(parallel=True, min_elements=1)
def _run_table(table, address, bits):
    """Every row of the table (FIELDS) one cblas_sgemm call, the rows shared by the threads."""
    for p in prange(table.shape[0]):
        r = table[p]
        if r[11]:
            sgemm_accumulate(address, bits, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7],
                             r[8], r[9], r[10])
        else:
            sgemm(address, bits, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9],
                  r[10])


def gemm_pieces(table: np.ndarray, in_turn: bool = False) -> None:
    """Run every piece of a piece_table at once on numba's threads (BLAS itself must be held
    to one thread: kernels/threads.one_blas_thread); with in_turn, or a table of one piece,
    one after the other on this thread."""
    _run_table.over(1 if in_turn else len(table))(table, *function())


def function() -> tuple:
    """(address, bits) of numpy's cblas_sgemm as int64s, the first arguments of sgemm in a
    kernel (available() must be True)."""
    address, bits = _lookup()
    return np.int64(address), np.int64(bits)
