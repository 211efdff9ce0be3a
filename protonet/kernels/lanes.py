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
import numpy as np
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


# Pixels of a row load_channel_block copies per channel at a time: one vector load of the
# plane's row, then a store into each pixel's lane. 8 was measured with AVX2 (an AMD Zen 3).
# With AVX-512 (an AMD Zen 5), 4 against 8, alternating in one process, kernel time:
# MobileNet-SSD's conv2/dw (64 x 150 x 150, stride 2) 0.67 at batch 16 and 0.93 at 1, its
# conv4/dw 0.91, ResNet-50's pool1 at batch 1 0.76, CIFAR-10's pool1 at batch 100 0.98, a
# 14 x 14 depthwise layer 1.00; 2 ran as 4, 16 slower than 8.
LOAD_PIXELS = 4 if compiles_for_avx512() else 8


@jit()
def load_channel_block(image, first, top, left, fill, block, skip=0):
    """block[r, left + x, l] = image[first + l, skip + r - top, x] for the channels first ..
    first + LANES - 1 that image (C, H, W) has and the rows it has; every other entry of
    block (rows, columns, LANES) is `fill` (the padding around the planes, and the lanes past
    the last channel). With skip 0 the block holds the whole padded planes from their top
    (`top` rows of padding); with skip > 0 it starts `skip` rows further down them: a band of
    rows, for an output band whose planes would not stay in L2 whole.

    LOAD_PIXELS pixels of a row at a time, channel by channel: a contiguous load from each
    plane, each value stored into its pixel's lane, the pixels' LANES x 4 bytes staying in
    L1. A block of 16 planes, against gathering each pixel's 16 channels (one vector gather a
    pixel), on an AMD Zen 3: 32 x 32 0.33 of the time (16 planes 4 KB apart share 8 ways of
    L1), 27 x 27 0.62, 56 x 56 0.59, 112 x 112 0.57, 150 x 150 0.58, 16 x 16 0.71."""
    channels, height, width = image.shape
    rows, columns = block.shape[0], block.shape[1]
    src, dst = image.reshape(-1), block.reshape(-1)
    pitch = np.uint64(columns * LANES)
    shift = skip - top   # the image row of block row r is r + shift
    for r in range(rows):   # the padding: whole rows above and below, the sides between
        at = r * columns * LANES
        if r + shift < 0 or r + shift >= height:
            dst[at:at + columns * LANES] = fill
        else:
            dst[at:at + left * LANES] = fill
            dst[at + (left + width) * LANES:at + columns * LANES] = fill
    # Always LANES lanes (a fixed trip count: LLVM unrolls the copy), past the last channel
    # from the last channel, and then those lanes filled.
    plane = np.uint64(height * width)
    whole = width - width % LOAD_PIXELS
    last = channels - 1
    for y in range(max(0, shift), min(height, rows + shift)):
        out = np.uint64(y - shift) * pitch + np.uint64(left * LANES)
        row = np.uint64(y * width)
        for x0 in range(0, whole, LOAD_PIXELS):
            for lane in range(LANES):
                at = row + np.uint64(min(first + lane, last)) * plane + np.uint64(x0)
                to = out + np.uint64(x0 * LANES + lane)
                for k in range(LOAD_PIXELS):
                    dst[to + np.uint64(k * LANES)] = src[at + np.uint64(k)]
        for x in range(whole, width):
            for lane in range(LANES):
                dst[out + np.uint64(x * LANES + lane)] = src[
                    row + np.uint64(min(first + lane, last)) * plane + np.uint64(x)]
        for x in range(width if channels - first < LANES else 0):
            for lane in range(channels - first, LANES):
                dst[out + np.uint64(x * LANES + lane)] = fill


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
