"""Max and average pooling of a stack of planes (P, H, W): a blob's (N, C, H, W) through
planes(), with Caffe's windows.

A window starts at o*s - p and ends at min(start + k, H + p) (average: the divisor is that
clipped-to-padding size) and is then clipped to the input. Output sizes round up (ceil; or
down, round_mode FLOOR), and a last window that would start inside the padding only is
dropped (pool_output_size). Parallel over chunks of planes; each plane is read and written by
one thread. Masks hold the flat index h*W + w of each window's maximum within its plane. Two
AVE forwards: on phase planes and window by window (forward_on_phases picks, in ave_pool). The
MAX forward: on blocks of 16 planes, channel-last; 2x2 windows tiling the plane on their own.
"""
from __future__ import annotations

import numpy as np

from ._jit import jit, prange
from .lanes import (LANES, load_channel_block, stack_int_lanes, stack_lanes,
                    store_channel_block)
from .phases import CHUNKS, phase_shape, tap_sums, write_phases


def planes(a):
    """An (N, C, H, W) array as the (N*C, H, W) stack of its planes (a view of a blob)."""
    return a.reshape(-1, a.shape[-2], a.shape[-1])


def pool_output_size(size: int, kernel: int, pad: int, stride: int, ceil: bool = True) -> int:
    """ceil((size + 2 pad - kernel) / stride) + 1 (floor with ceil=False: round_mode FLOOR),
    minus 1 if the last window starts in the pad."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def forward_on_phases(sh: int, sw: int, out_width: int) -> bool:
    """Whether an AVE forward runs on phase planes (ave_pool_forward) rather than window by
    window (ave_pool_windows_forward): at stride 1 on rows wider than 28 only. Phase time /
    window time (four planes at a time), an AMD Zen 3, 2 threads (1 thread), 3 x 3 windows,
    pad 1: 56 wide 0.77 (0.80), 28 wide 1.08 (1.17), 14 wide 1.75 (1.90); strided 2.2-13, a
    7x7 global pool 130x. (MAX forwards run on channel blocks: max_pool_forward.)"""
    return (sh, sw) == (1, 1) and out_width > 28


def ave_pool(x, kh, kw, ph, pw, sh, sw, y):
    """y = Caffe's AVE pooling of the planes x, on phase planes or window by window as
    forward_on_phases says (the Pooling layer's and WITHIN_CHANNEL LRN's sums of squares)."""
    kernel = (ave_pool_forward if forward_on_phases(sh, sw, y.shape[-1])
              else ave_pool_windows_forward)
    kernel(x, kh, kw, ph, pw, sh, sw, y)


# Output floats of one block of rows at a time (8 KB of maxima or sums: stays in L1).
BLOCK_FLOATS = 2048
LOWEST = np.float32(-3.4028234663852886e38)   # Caffe's -FLT_MAX start


# Output pixels along a row per register tile of the channel-block forward.
TILE = 4


@jit()
def _max_pool_block(block, kh, kw, ph, pw, sh, sw, width, best, won):
    """best (Ho, Wo, LANES) = the window maxima of 16 planes held channel-last in block
    (padded by ph, pw with -inf: never a maximum), won = the flat index h*width + w of each
    first maximum (-1 where nothing beats -FLT_MAX; won None: not wanted): the windows'
    taps row by row, strict > (Caffe's first maximum). TILE output pixels of a row at a time in
    registers; a row's last tile is its last TILE pixels (overlapping: the same comparisons
    again)."""
    out_h, out_w = best.shape[0], best.shape[1]
    for oy in range(out_h):
        for ox in range(0, out_w, TILE):
            x0 = max(0, min(ox, out_w - TILE))
            top = stack_lanes(4)            # TILE x LANES maxima
            if won is not None:
                arg = stack_int_lanes(4)    # and their indices
            for t in range(TILE):
                for lane in range(LANES):
                    top[t, lane] = LOWEST
                    if won is not None:
                        arg[t, lane] = -1
            for i in range(kh):
                row = oy * sh + i
                for j in range(kw):
                    col = x0 * sw + j
                    # The input index under this tap for the tile's first pixel (the next
                    # ones are sw further); a padding tap's is never taken.
                    at = np.int32((row - ph) * width + col - pw)
                    step = np.int32(sw)
                    for lane in range(LANES):
                        v0 = block[row, col, lane]
                        v1 = block[row, col + sw, lane]
                        v2 = block[row, col + 2 * sw, lane]
                        v3 = block[row, col + 3 * sw, lane]
                        g0 = v0 > top[0, lane]
                        g1 = v1 > top[1, lane]
                        g2 = v2 > top[2, lane]
                        g3 = v3 > top[3, lane]
                        top[0, lane] = v0 if g0 else top[0, lane]
                        top[1, lane] = v1 if g1 else top[1, lane]
                        top[2, lane] = v2 if g2 else top[2, lane]
                        top[3, lane] = v3 if g3 else top[3, lane]
                        if won is not None:
                            arg[0, lane] = at if g0 else arg[0, lane]
                            arg[1, lane] = at + step if g1 else arg[1, lane]
                            arg[2, lane] = at + 2 * step if g2 else arg[2, lane]
                            arg[3, lane] = at + 3 * step if g3 else arg[3, lane]
            for t in range(min(TILE, out_w)):
                for lane in range(LANES):
                    best[oy, x0 + t, lane] = top[t, lane]
                    if won is not None:
                        won[oy, x0 + t, lane] = arg[t, lane]


@jit(parallel=True)
def max_pool_forward(x, kh, kw, ph, pw, sh, sw, y, mask):
    """y = window max; mask = flat index h*W + w of the first maximum (Caffe's scan order,
    row by row, strict > from -FLT_MAX: -1 where nothing beats it), or None when no backward
    will read it (the selects of the indices then go).

    On blocks of 16 planes (kernels/lanes.py): each block's planes padded with -inf
    channel-last, every tap of every output pixel one compare and two selects of 16 lanes.
    Parallel over the blocks. Since load_channel_block copies rows (d9aa5af) this beats the
    phase planes the wide rows ran on before at every width measured, with AVX-512 too
    (an AMD Zen 4, 2 threads, blocks' time / phase planes', TEST and TRAIN): ResNet-50's
    pool1 (112 -> 56, 3x3 stride 2) 0.59-0.64 at batch 1, 0.58 at 16; GoogLeNet's pool1
    0.66-0.67 and 0.59-0.60; 2x2 windows with a pad (VGG-16's shapes, 224 wide) 0.88-0.89 at
    batch 1, 0.90-1.01 at 16; 128 x 112 x 112 0.77-0.83; 3x3 stride 1 on 56 wide 0.87-0.91.
    (On an AMD Zen 3, AVX2: 0.26 for ResNet-50's pool1, 0.21 for GoogLeNet's pool2.)"""
    n_planes, height, width = x.shape
    ho, wo = y.shape[1], y.shape[2]
    rows = max(height + 2 * ph, (ho - 1) * sh + kh)
    columns = max(width + 2 * pw, (max(wo, TILE) - 1) * sw + kw)
    for b in prange(-(-n_planes // LANES)):
        block = np.empty((rows, columns, LANES), np.float32)
        best = np.empty((ho, wo, LANES), np.float32)
        load_channel_block(x, b * LANES, ph, pw, np.float32(-np.inf), block)
        if mask is None:
            _max_pool_block(block, kh, kw, ph, pw, sh, sw, width, best, None)
        else:
            won = np.empty((ho, wo, LANES), np.int32)
            _max_pool_block(block, kh, kw, ph, pw, sh, sw, width, best, won)
            store_channel_block(won, b * LANES, mask)
        store_channel_block(best, b * LANES, y)


@jit(parallel=True)
def max_pool_backward(dy, mask, dx):
    """dx (overwritten) gets each dy at its window's argmax (outputs row by row). Parallel
    over chunks of planes, each run by a serial function of its own on the chunk's flat
    arrays: the same loops inside the parallel loop's body ran 1.4x slower, and a view per
    plane cost more than the plane's work on small ones (LeNet's pool2, 3,200 planes of 8 x 8:
    25 against 220 us). Zeroing the plane and adding each dy at its index ran faster than
    writing each input once by the 2x2 windows' geometry (LeNet's pool1, 1 thread: 0.17
    against 0.40 ms; CIFAR-10's pool1: 0.9 against 2.4 ms)."""
    n_planes = dx.shape[0]
    plane, outputs = dx.shape[1] * dx.shape[2], dy.shape[1] * dy.shape[2]
    dx_flat, dy_flat, mask_flat = dx.reshape(-1), dy.reshape(-1), mask.reshape(-1)
    chunks = min(n_planes, CHUNKS)
    for chunk in prange(chunks):
        first, end = chunk * n_planes // chunks, (chunk + 1) * n_planes // chunks
        _max_pool_planes_backward(dy_flat[first * outputs:end * outputs],
                                  mask_flat[first * outputs:end * outputs],
                                  dx_flat[first * plane:end * plane], plane, outputs)


@jit()
def _max_pool_planes_backward(dy, mask, dx, plane, outputs):
    """max_pool_backward of a chunk of planes, flat: plane p's inputs at p * plane, its
    outputs at p * outputs. Unsigned offsets: numba tests signed ones for wraparound."""
    dx[:] = 0.0
    for p in range(dy.shape[0] // outputs):
        base = np.uint64(p * plane)
        for o in range(p * outputs, (p + 1) * outputs):
            idx = mask[o]
            if idx >= 0:
                dx[base + np.uint64(idx)] += dy[o]


@jit(parallel=True)
def max_pool_2x2_forward(x, y, mask):
    """max_pool_forward for 2x2 windows at stride 2 that tile the input exactly (no pad, even
    H and W): the window most Caffe nets pool with. With the geometry fixed, LLVM vectorizes
    along the output row; measured 0.16 ms against 1.5 ms for LeNet's pool1 on one thread.
    Same values, same first-maximum indices and the same -FLT_MAX start as the general kernel.
    """
    width = x.shape[2]
    ho, wo = y.shape[1], y.shape[2]
    for p in prange(x.shape[0]):
        for oy in range(ho):
            upper = x[p, 2 * oy]
            lower = x[p, 2 * oy + 1]
            out = y[p, oy]
            top_left = 2 * oy * width
            for ox in range(wo):
                # Caffe's scan order (row by row) with strict >, as selects rather than
                # branches so the loop vectorizes.
                best = np.float32(-3.4028234663852886e38)
                idx = -1
                for v, at in ((upper[2 * ox], top_left + 2 * ox),
                              (upper[2 * ox + 1], top_left + 2 * ox + 1),
                              (lower[2 * ox], top_left + width + 2 * ox),
                              (lower[2 * ox + 1], top_left + width + 2 * ox + 1)):
                    gt = v > best
                    best = v if gt else best
                    idx = at if gt else idx
                out[ox] = best
                if mask is not None:
                    mask[p, oy, ox] = idx


@jit(parallel=True)
def ave_pool_forward(x, kh, kw, ph, pw, sh, sw, y):
    """y = window sum / the window's size clipped to the padding (not to the input), Caffe's
    divisor. Summed tap by tap in Caffe's order (row by row) on zero-padded phase planes
    (kernels/phases.py), each tap one flat loop over a block of output rows: the padding adds
    +0."""
    n_planes, height, width = x.shape
    ho, wo = y.shape[1], y.shape[2]
    shape = phase_shape(height, width, kh, kw, ph, pw, sh, sw, 1, 1, ho, wo)
    pitch = shape[3]
    block = max(1, min(ho, BLOCK_FLOATS // pitch))
    chunks = min(n_planes, CHUNKS)
    ones = np.ones((kh, kw), np.float32)
    for chunk in prange(chunks):
        phased = np.zeros(shape, np.float32)
        sums = np.empty(block * pitch, np.float32)
        for p in range(chunk * n_planes // chunks, (chunk + 1) * n_planes // chunks):
            write_phases(x[p], ph, pw, phased)
            for r0 in range(0, ho, block):
                rows = min(block, ho - r0)
                tap_sums(phased, ones, 1, 1, r0, (rows - 1) * pitch + wo, sums)
                for k in range(rows):
                    hs = (r0 + k) * sh - ph
                    window_h = min(hs + kh, height + ph) - hs
                    for ox in range(wo):
                        ws = ox * sw - pw
                        size = window_h * (min(ws + kw, width + pw) - ws)
                        y[p, r0 + k, ox] = sums[k * pitch + ox] / size


# Planes whose same window ave_pool_windows_forward and ave_pool_backward take at once: a
# window's taps are a chain of dependent adds (3 cycles each); four planes' are four in flight.
WINDOWS = 4


@jit()
def _windows(kh, kw, ph, pw, sh, sw, height, width, ho, wo):
    """Each output's window clipped to the plane, outputs row by row: (flat offset of its
    first input, its taps, Caffe's AVE divisor, offsets) where offsets[o, :taps[o]] hold each
    input's offset from the first, row by row (Caffe's scan order)."""
    outputs = ho * wo
    starts, counts = np.empty(outputs, np.int64), np.empty(outputs, np.int64)
    sizes = np.empty(outputs, np.float32)
    offsets = np.zeros((outputs, kh * kw), np.uint64)
    for oy in range(ho):
        for ox in range(wo):
            o = oy * wo + ox
            hs, ws = oy * sh - ph, ox * sw - pw
            # The divisor counts the window clipped to the padding, not to the input.
            sizes[o] = (min(hs + kh, height + ph) - hs) * (min(ws + kw, width + pw) - ws)
            he, we = min(hs + kh, height), min(ws + kw, width)
            hs, ws = max(hs, 0), max(ws, 0)
            starts[o] = hs * width + ws
            count = 0
            for iy in range(he - hs):
                for ix in range(we - ws):
                    offsets[o, count] = iy * width + ix
                    count += 1
            counts[o] = count
    return starts, counts, sizes, offsets


@jit()
def _window_chunks(n_planes):
    """(chunks, groups of WINDOWS planes): chunks of whole groups, for numba's threads."""
    groups = -(-n_planes // WINDOWS)
    return min(groups, CHUNKS), groups


@jit(parallel=True)
def ave_pool_windows_forward(x, kh, kw, ph, pw, sh, sw, y):
    """ave_pool_forward window by window, for short output rows (forward_on_phases), where
    writing the phase planes costs more than their vector loops save: each window's taps one
    flat loop (_windows, unsigned offsets: numba tests signed ones for wraparound), the same
    window of four planes at a time, summed in Caffe's order and divided by Caffe's divisor
    in float32.
    CIFAR-10's 3 x 3 stride-2 pools, one thread, against a loop per window row over one
    plane at a time: 16 x 16 planes 0.33-0.35 of the time, 8 x 8 0.22, 32 x 32 0.8-0.85
    (an AMD Zen 3)."""
    n_planes, height, width = x.shape
    ho, wo = y.shape[1], y.shape[2]
    outputs = ho * wo
    starts, counts, sizes, offsets = _windows(kh, kw, ph, pw, sh, sw, height, width, ho, wo)
    flat, out = x.reshape(-1), y.reshape(-1)
    plane = np.uint64(height * width)
    chunks, groups = _window_chunks(n_planes)
    for chunk in prange(chunks):
        end = min(n_planes, (chunk + 1) * groups // chunks * WINDOWS)
        for p in range(chunk * groups // chunks * WINDOWS, end, WINDOWS):
            for o in range(outputs):
                taps, count, size = offsets[o], counts[o], sizes[o]
                base = np.uint64(p) * plane + np.uint64(starts[o])
                at = p * outputs + o
                if end - p < WINDOWS:   # the last planes, one at a time
                    for k in range(end - p):
                        first = base + np.uint64(k) * plane
                        total = np.float32(0.0)
                        for t in range(count):
                            total += flat[first + taps[t]]
                        out[at + k * outputs] = total / size
                    continue
                t0 = t1 = t2 = t3 = np.float32(0.0)
                for t in range(count):
                    a = base + taps[t]
                    t0 += flat[a]
                    t1 += flat[a + plane]
                    t2 += flat[a + 2 * plane]
                    t3 += flat[a + 3 * plane]
                out[at], out[at + outputs] = t0 / size, t1 / size
                out[at + 2 * outputs], out[at + 3 * outputs] = t2 / size, t3 / size


@jit(parallel=True)
def ave_pool_backward(dy, kh, kw, ph, pw, sh, sw, dx):
    """dx (overwritten) = each dy spread evenly over its window, in float32 and Caffe's order
    of the sums: Caffe adds dy / divisor into the window's inputs output by output (row by
    row), so an input's sum runs over the outputs whose windows hold it in that order. Here
    each input gathers them so (_input_windows) and is written once, four planes at a time
    as ave_pool_windows_forward, from their dy / divisor. 2 threads, batch 100, against the
    scatter plane by plane: CIFAR-10 full's norm1 (3 x 3 at stride 1 over 16 x 16 planes)
    0.35-0.48 of the time, its norm2 (8 x 8) 0.30-0.38, CIFAR-10's pool2 (stride 2) 0.55-0.60,
    its pool3 0.38-0.41 (an AMD Zen 3)."""
    n_planes, height, width = dx.shape
    ho, wo = dy.shape[1], dy.shape[2]
    outputs, inputs = ho * wo, height * width
    sizes = _windows(kh, kw, ph, pw, sh, sw, height, width, ho, wo)[2]
    counts, holders = _input_windows(kh, kw, ph, pw, sh, sw, height, width, ho, wo)
    dy_flat, dx_flat = dy.reshape(-1), dx.reshape(-1)
    chunks, groups = _window_chunks(n_planes)
    for chunk in prange(chunks):
        share = np.empty((outputs, WINDOWS), np.float32)   # dy / divisor of the planes at hand
        end = min(n_planes, (chunk + 1) * groups // chunks * WINDOWS)
        for p in range(chunk * groups // chunks * WINDOWS, end, WINDOWS):
            here = min(WINDOWS, end - p)
            for k in range(here):
                for o in range(outputs):
                    share[o, k] = dy_flat[(p + k) * outputs + o] / sizes[o]
            if here < WINDOWS:   # the last planes, one at a time
                for k in range(here):
                    for i in range(inputs):
                        total = np.float32(0.0)
                        for c in range(counts[i]):
                            total += share[holders[i, c], k]
                        dx_flat[(p + k) * inputs + i] = total
                continue
            for i in range(inputs):
                t0 = t1 = t2 = t3 = np.float32(0.0)
                for c in range(counts[i]):
                    o = holders[i, c]
                    t0 += share[o, 0]
                    t1 += share[o, 1]
                    t2 += share[o, 2]
                    t3 += share[o, 3]
                at = p * inputs + i
                dx_flat[at], dx_flat[at + inputs] = t0, t1
                dx_flat[at + 2 * inputs], dx_flat[at + 3 * inputs] = t2, t3


@jit()
def _input_windows(kh, kw, ph, pw, sh, sw, height, width, ho, wo):
    """(counts, holders): holders[i, :counts[i]] are the outputs (oy * wo + ox, row by row)
    whose windows hold input i (h * width + w); none for an input no window reaches."""
    most = -(-kh // sh) * -(-kw // sw)
    counts = np.zeros(height * width, np.int64)
    holders = np.zeros((height * width, max(most, 1)), np.int64)
    for h in range(height):
        # The outputs oy with oy * sh - ph <= h < oy * sh - ph + kh.
        oy0, oy1 = max(0, -(-(h + ph - kh + 1) // sh)), min(ho - 1, (h + ph) // sh)
        for w in range(width):
            ox0, ox1 = max(0, -(-(w + pw - kw + 1) // sw)), min(wo - 1, (w + pw) // sw)
            i = h * width + w
            for oy in range(oy0, oy1 + 1):
                for ox in range(ox0, ox1 + 1):
                    holders[i, counts[i]] = oy * wo + ox
                    counts[i] += 1
    return counts, holders
