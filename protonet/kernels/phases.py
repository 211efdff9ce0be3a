"""A plane split by stride phase, so that a strided window op becomes stride-1 shifts.

For strides (sh, sw), phase (qy, qx) of a plane padded by (ph, pw) holds
    planes[qy, qx, r, t] = padded[r * sh + qy, t * sw + qx],
and the input under tap (i, j) of output (oy, ox), padded row oy * sh + i, column ox * sw + j,
is planes[i % sh, j % sw] at (oy + i // sh, ox + j // sw). With the outputs laid out at the
planes' row pitch, a block of output rows is then one flat, contiguous loop per tap, which LLVM
vectorizes; a loop along an output row with a run-time stride stays scalar. The depthwise
convolution and the pooling kernels work this way.
"""
from __future__ import annotations

from ._jit import jit

# Pieces of the planes a kernel hands its threads (each zeroes its phase planes once): a fixed
# count, as numba.get_num_threads() in a kernel keeps numba from caching it on disk.
CHUNKS = 64


@jit()
def phase_shape(height, width, kh, kw, ph, pw, sh, sw, dh, dw, out_h, out_w):
    """(sh, sw, rows, pitch) of phase planes holding the padded input and every position a
    window reaches (a ceil-rounded pooling window may pass the padding)."""
    rows = max(height + 2 * ph, (out_h - 1) * sh + (kh - 1) * dh + 1)
    cols = max(width + 2 * pw, (out_w - 1) * sw + (kw - 1) * dw + 1)
    return sh, sw, -(-rows // sh), -(-cols // sw)


@jit()
def write_phases(plane, ph, pw, planes):
    """Write a (H, W) plane into its phase planes (see the module docstring), strides from
    planes' shape. Only the input's positions are written: the padding keeps what the caller
    filled in once (0 for sums, -inf for maxima), the same positions for every plane."""
    sh, sw, rows_q, pitch = planes.shape
    height, width = plane.shape
    for iy in range(height):
        qy = (iy + ph) % sh
        ry = (iy + ph) // sh
        row = plane[iy]
        for qx in range(sw):
            t0 = 0 if qx >= pw else (pw - qx + sw - 1) // sw
            t1 = min(pitch, (width - 1 + pw - qx) // sw + 1)
            if t1 <= t0:
                continue
            first = t0 * sw + qx - pw
            src = row[first:first + (t1 - t0 - 1) * sw + 1]
            dst = planes[qy, qx, ry, t0:t1]
            # Strides 1 and 2 as literals: LLVM vectorizes those copies (2 as interleaved
            # loads); a run-time stride stays scalar.
            if sw == 1:
                for t in range(t1 - t0):
                    dst[t] = src[t]
            elif sw == 2:
                for t in range(t1 - t0):
                    dst[t] = src[2 * t]
            else:
                for t in range(t1 - t0):
                    dst[t] = src[sw * t]


@jit()
def tap_source(planes, i, j, dh, dw, first_row, length):
    """The flat run of `length` phase-plane values that tap (i, j) (dilation dh, dw) reads
    for the outputs from row first_row on, laid out at the planes' pitch."""
    sh, sw, rows_q, pitch = planes.shape
    start = (first_row + (i * dh) // sh) * pitch + (j * dw) // sw
    return planes[(i * dh) % sh, (j * dw) % sw].reshape(-1)[start:start + length]


@jit()
def tap_sums(planes, taps, dh, dw, first_row, length, out):
    """out[:length] = the sum over taps (i, j), in that order from 0, of taps[i, j] times the
    run tap (i, j) reads for the outputs from row first_row on (tap_source): a depthwise
    convolution's block, or with taps of ones an average pooling's window sums (x * 1 is x,
    so the same bits as adding x)."""
    block = out[:length]
    block[:] = 0
    for i in range(taps.shape[0]):
        for j in range(taps.shape[1]):
            src = tap_source(planes, i, j, dh, dw, first_row, length)
            tap = taps[i, j]
            for e in range(length):
                block[e] += tap * src[e]
