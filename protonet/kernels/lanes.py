"""Sixteen values at once (one zmm register on AVX-512, or two ymm where LLVM prefers 256-bit
vectors, as on Intel's cores): stack tiles that LLVM keeps in registers, and blocks of 16
channels laid out channel-last.

A numba array lives on the heap, where LLVM cannot tell it apart from a kernel's inputs: it
keeps every accumulator in memory and leaves the loop scalar. A small array on the stack
(stack_lanes, stack_int_lanes) is known to alias nothing, so its rows become registers and a
loop over their LANES entries becomes packed instructions (inspect the assembly: vmulps,
vaddps, vmaxps on zmm or ymm).

Channel blocks are for window ops on small planes (kernels/depthwise.py, kernels/pooling.py):
along a 7- or 14-wide row a vectorized loop is mostly set-up and remainder, while a block of
16 planes transposed to (rows, columns, 16) gives every output pixel and tap one full vector,
whatever the plane's size or the stride.

LLVM on Intel's AVX-512 cores prefers 256-bit vectors ("prefer-vector-width"=256) for every
function: a 16-float loop becomes two ymm halves, and a tile of accumulators that would fill
16 zmm registers needs all 32 ymm and spills. prefer_wide_vectors() lets one kernel use zmm.
"""
from __future__ import annotations

import llvmlite.binding
import numba
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._jit import jit

LANES = 16


def compiles_for_avx512() -> bool:
    """Whether numba compiles for a CPU with AVX-512 (32 vector registers of 16 floats; else,
    with AVX2, 16 of 8): the features it compiles for, NUMBA_CPU_FEATURES or the host's. A
    register tile's shape follows (kernels/direct_conv.py). numba's disk cache is kept per
    CPU and features, so a kernel compiled with one shape is never loaded for the other."""
    features = numba.config.CPU_FEATURES or llvmlite.binding.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


@intrinsic
def prefer_wide_vectors(typingctx):
    """Called first in a kernel: its function may use 512-bit vectors (LLVM's
    "prefer-vector-width" and "min-legal-vector-width" attributes on it). The loop vectorizer
    then makes a 16-float loop one zmm operation, and the backend keeps them whole when LLVM
    inlines the kernel into a caller without the attribute. Where the CPU has no AVX-512 the
    widest vectors it has are used, as without the call. A register tile in zmm ran 2.0-2.2x
    the speed of the same tile in ymm pairs (kernels/direct_conv.py, CIFAR-10's conv2 and
    conv3 on one thread)."""
    def codegen(context, builder, signature, args):
        attributes = builder.function.attributes
        # llvmlite's AttributeSet (a set) accepts LLVM's enum attributes only; string
        # attributes are written into the IR as they are. Should it stop being a set, the
        # kernel compiles as without the call.
        if isinstance(attributes, set):
            for attribute in WIDE_VECTOR_ATTRIBUTES:
                set.add(attributes, attribute)
        return context.get_dummy_value()
    return types.none(), codegen


WIDE_VECTOR_ATTRIBUTES = ('"prefer-vector-width"="512"', '"min-legal-vector-width"="512"')


def _stack_array(dtype):
    @intrinsic
    def stack(typingctx, rows):
        if not isinstance(rows, types.IntegerLiteral):
            return None
        n_rows = rows.literal_value
        array_type = types.Array(dtype, 2, "C")
        itemsize = dtype.bitwidth // 8

        def codegen(context, builder, signature, args):
            intp = lambda v: context.get_constant(types.intp, v)   # noqa: E731
            data = cgutils.alloca_once(builder, context.get_data_type(dtype),
                                       size=n_rows * LANES)
            array = context.make_array(array_type)(context, builder)
            context.populate_array(array, data=data, shape=[intp(n_rows), intp(LANES)],
                                   strides=[intp(itemsize * LANES), intp(itemsize)],
                                   itemsize=intp(itemsize), meminfo=None)
            return array._getvalue()

        return array_type(rows), codegen
    return stack


# stack_lanes(rows): a (rows, LANES) float32 array on the stack, rows a literal; it lives
# until the function that made it returns (never return or keep it).
stack_lanes = _stack_array(types.float32)
# The same of int32 (a max pooling's argmax indices beside its maxima).
stack_int_lanes = _stack_array(types.int32)


@jit()
def load_channel_block(image, first, top, left, fill, block):
    """block[top + y, left + x, l] = image[first + l, y, x] for the channels first ..
    first + LANES - 1 that image (C, H, W) has; every other entry of block (rows, columns,
    LANES) is `fill` (the padding around the planes, and the lanes past the last channel)."""
    channels, height, width = image.shape
    rows, columns = block.shape[0], block.shape[1]
    lanes = min(LANES, channels - first)
    for r in range(rows):
        for q in range(columns):
            for lane in range(LANES):
                block[r, q, lane] = fill
    # Pixel by pixel, its LANES channels gathered into one contiguous vector: 2.2-3x faster
    # than plane by plane with every store LANES floats apart (CIFAR-10's pool1: 7 against
    # 22 us a block). A fixed trip count for a full block lets LLVM use a vector gather.
    for y in range(height):
        row = block[top + y]
        for x in range(width):
            pixel = row[left + x]
            if lanes == LANES:
                for lane in range(LANES):
                    pixel[lane] = image[first + lane, y, x]
            else:
                for lane in range(lanes):
                    pixel[lane] = image[first + lane, y, x]


@jit()
def store_channel_block(block, first, out):
    """out[first + l, y, x] = block[y, x, l] for the channels first .. that out (C, Ho, Wo)
    has (block (Ho, Wo, LANES))."""
    lanes = min(LANES, out.shape[0] - first)
    for lane in range(lanes):
        plane = out[first + lane]
        for y in range(block.shape[0]):
            row = plane[y]
            for x in range(block.shape[1]):
                row[x] = block[y, x, lane]
