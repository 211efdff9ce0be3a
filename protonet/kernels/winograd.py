"""Winograd convolution F(2x2, 3x3) for stride-1, undilated 3x3 convolutions (Lavin and
Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).

The output is cut into 2 x 2 tiles; each reads a 4 x 4 patch of the padded input. In the
transformed domain a tile's output is 16 elementwise products summed over the input
channels, which for all tiles at once are 16 matrix products,
U[e] (K, C) @ V[e] (C, tiles) -> M[e] (K, tiles), run by BLAS:

    U[e = (i, j), k, c] = (G g[k, c] G^T)[i, j]                      weight_transform
    V[e = (i, j), c, tile] = (B^T d[c, tile] B)[i, j]                input_transform
    y[k, tile] = A^T M[:, k, tile] A + bias[k]                       output_transform

4 multiplications per output against im2col's 9, at the price of the transforms, which
read and write each input and output a few times.

F(4x4, 3x3) (2.25 multiplications per output) is not offered: in float32 its error against
a float64 convolution reached 1.1e-5 of the largest output on VGG-16's layers (F(2x2, 3x3)
and im2col: 3e-7 to 7e-7) and 0.1-0.3% of the outputs left the layer tests' tolerance
(|error| <= 1e-5 + 1e-5 |reference|); tools/bench_winograd.py measured both.

The transforms are scalar code along each row of tiles. Written as one-store loops along the
row so that they vectorize, they ran 2-7x slower (the patches' stride-2 loads; 16
short loops per row of tiles).

Layout: tiles are numbered (image, tile row, tile column), row-major; V is (16, C, tiles)
and M is (16, K, tiles), their 16 matrices SET_PAD floats further apart than their size.
"""
from __future__ import annotations

import numpy as np

from ._jit import jit, prange

# G, from the interpolation points 0, 1, -1 and infinity (_g_rows spells its rows out; B^T
# and A^T, whose entries are 0 and +-1, are additions in _bt and _at).
G = np.array([[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]])

# Floats between the end of one of V's (or M's) 16 matrices and the start of the next. The
# transforms read or write all 16 at once; a matrix's size is often a multiple of 4 KB
# (512 channels x an even tile count), which put the 16 streams in the same cache sets:
# VGG-16's conv4 input transform ran 5-8x slower without it.
SET_PAD = 16


def tile_counts(ho: int, wo: int) -> tuple[int, int]:
    """Tiles down and across an ho x wo output (the last ones may stick out by one)."""
    return -(-ho // 2), -(-wo // 2)


def scratch_sizes(tiles: int, channels: int, outputs: int):
    """Floats of V and of M for `tiles` tiles."""
    return 16 * (tiles * channels + SET_PAD), 16 * (tiles * outputs + SET_PAD)


def weights_size(group: int, outputs_g: int, channels_g: int) -> int:
    """Floats of the transformed weights U (16, group, K / group, C / group), its 16 matrices
    SET_PAD floats apart as V's and M's (transformed_weights views them)."""
    return 16 * (group * outputs_g * channels_g + SET_PAD)


@jit()
def _g_rows(w0, w1, w2):
    """G (w0, w1, w2), G's rows being (1, 0, 0), (1/2, 1/2, 1/2), (1/2, -1/2, 1/2), (0, 0, 1):
    the products by G's zeros and ones left out (they change no finite value but the sign of
    a zero)."""
    h0, h1, h2 = 0.5 * w0, 0.5 * w1, 0.5 * w2
    return w0, h0 + h1 + h2, h0 - h1 + h2, w2


@jit(parallel=True)
def weight_transform(weights, u):
    """u[i*4 + j, g, k, c] = (G w G^T)[i, j] for w = weights[g * K/group + k, c] (3 x 3),
    u (16, group, K / group, C / group) float32 (transformed_weights' view: its 16 matrices
    apart, else their rows fall into the same cache sets and the transform runs 2-3x
    slower), each sum in float64 so that the only rounding is the final one; no temporaries
    (VGG-16's conv5 in float64 at once was 50 MB more at the peak).

    TEST nets run it at every forward for their biggest layers (kernels/conv_plan.py):
    VGG-16's conv5 (512 x 512) takes 2.3 ms on a busy machine, against 14-21 ms for loops
    over G's entries with a 4 x 3 temporary into unpadded matrices. Those loops also
    multiplied by G's zeros: their values differ from these only in the sign of a zero, and
    in NaN where an infinite weight met a zero."""
    _, group, kg, cg = u.shape
    taps = weights.reshape(group * kg, cg * 9)
    for gk in prange(group * kg):
        g = gk // kg
        k = gk - g * kg
        row = taps[gk]
        out = u[:, g, k]
        for c in range(cg):
            s = 9 * c
            # G w, column by column (the columns of the 4 x 3 G w) ...
            left = _g_rows(np.float64(row[s]), np.float64(row[s + 3]), np.float64(row[s + 6]))
            middle = _g_rows(np.float64(row[s + 1]), np.float64(row[s + 4]),
                             np.float64(row[s + 7]))
            right = _g_rows(np.float64(row[s + 2]), np.float64(row[s + 5]),
                            np.float64(row[s + 8]))
            for i in range(4):
                # ... then (G w) G^T, row by row
                gwg = _g_rows(left[i], middle[i], right[i])
                for j in range(4):
                    out[4 * i + j, c] = gwg[j]


@jit()
def _bt(d0, d1, d2, d3):
    """B^T times the 4-vector d: B^T's rows are (1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0),
    (0, 1, 0, -1)."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@jit()
def _at(m0, m1, m2, m3):
    """A^T times the 4-vector m: A^T's rows are (1, 1, 1, 0) and (0, 1, -1, -1)."""
    return m0 + m1 + m2, m1 - m2 - m3


@jit(parallel=True)
def input_transform(x, ph, pw, first_row, tile_rows, tiles_w, v):
    """v[i*4 + j, c, (n*tile_rows + r)*tiles_w + tx] = (B^T d B)[i, j], d the 4 x 4 patch of
    channel c of image n at rows 2 ty - ph .., columns 2 tx - pw .. (0 outside the image), for
    the tile rows ty = first_row + r, r < tile_rows.

    Parallel over channels: each writes its own rows of v. B^T's entries are 0 and +-1: 32
    additions per patch.
    """
    n_img, channels, height, width = x.shape
    span = 2 * tiles_w + 2            # padded input columns a row of tiles reads
    for c in prange(channels):
        rows = np.zeros((4, span), np.float32)
        for n in range(n_img):
            for tr in range(tile_rows):
                for r in range(4):
                    iy = 2 * (first_row + tr) - ph + r
                    rows[r, :] = 0.0
                    if 0 <= iy < height:
                        rows[r, pw:pw + width] = x[n, c, iy]
                first = (n * tile_rows + tr) * tiles_w
                for tx in range(tiles_w):
                    s, t = 2 * tx, first + tx
                    # d B, row by row, then B^T (d B), column by column.
                    a0 = _bt(rows[0, s], rows[0, s + 1], rows[0, s + 2], rows[0, s + 3])
                    a1 = _bt(rows[1, s], rows[1, s + 1], rows[1, s + 2], rows[1, s + 3])
                    a2 = _bt(rows[2, s], rows[2, s + 1], rows[2, s + 2], rows[2, s + 3])
                    a3 = _bt(rows[3, s], rows[3, s + 1], rows[3, s + 2], rows[3, s + 3])
                    for j in range(4):
                        column = _bt(a0[j], a1[j], a2[j], a3[j])
                        for i in range(4):
                            v[i * 4 + j, c, t] = column[i]


@jit(parallel=True)
def output_transform(products, bias, first_row, tile_rows, tiles_w, y):
    """y[n, k, 2 ty + p, 2 tx + q] = (A^T M A)[p, q] + bias[k] for the outputs inside y,
    M[i, j] = products[i*4 + j, k, (n*tile_rows + r)*tiles_w + tx], for the tile rows
    ty = first_row + r, r < tile_rows; `bias` has one value per output channel (zeros when
    the layer has none).

    Parallel over output channels: each writes its own planes of y.
    """
    n_img, outputs, ho, wo = y.shape
    for k in prange(outputs):
        b = bias[k]
        for n in range(n_img):
            for tr in range(tile_rows):
                first = (n * tile_rows + tr) * tiles_w
                oy = 2 * (first_row + tr)
                two_rows = oy + 1 < ho
                for tx in range(tiles_w):
                    t, ox = first + tx, 2 * tx
                    # A^T M, column by column, then (A^T M) A, row by row.
                    m0 = _at(products[0, k, t], products[4, k, t], products[8, k, t],
                             products[12, k, t])
                    m1 = _at(products[1, k, t], products[5, k, t], products[9, k, t],
                             products[13, k, t])
                    m2 = _at(products[2, k, t], products[6, k, t], products[10, k, t],
                             products[14, k, t])
                    m3 = _at(products[3, k, t], products[7, k, t], products[11, k, t],
                             products[15, k, t])
                    for p in range(2 if two_rows else 1):
                        left, right = _at(m0[p], m1[p], m2[p], m3[p])
                        y[n, k, oy + p, ox] = left + b
                        if ox + 1 < wo:
                            y[n, k, oy + p, ox + 1] = right + b

def _matrices(buffer, count: int, rows: int, columns: int):
    """16 (count, rows, columns) matrices from a flat buffer, SET_PAD floats apart."""
    size = count * rows * columns
    return buffer[:16 * (size + SET_PAD)].reshape(16, size + SET_PAD)[:, :size].reshape(
        16, count, rows, columns)


def transformed_weights(buffer, group: int, outputs_g: int, channels_g: int):
    """U (16, group, K / group, C / group) in a flat buffer of weights_size(...) floats."""
    return _matrices(buffer, group, outputs_g, channels_g)


def convolve(x, u, bias, ph: int, pw: int, first_row: int, tile_rows: int, v_buffer,
             m_buffer, y, threads: int):
    """The 3x3 stride-1 convolution of x (N, C, H, W) with pad (ph, pw) into y's output rows
    of tile rows first_row .. first_row + tile_rows - 1, from the transformed weights u
    (16, group, K / group, C / group) (weight_transform) and bias (K,) float32. v_buffer and
    m_buffer are flat float32 work arrays of at least scratch_sizes(...) floats for the
    N x tile_rows x tiles across tiles. The 16 x group products are shared between
    `threads` threads (threads.grouped_matmul)."""
    from . import threads as compute   # the pool, imported where used: no cycle at import
    n, channels = x.shape[:2]
    _, group, kg, cg = u.shape
    tiles_w = tile_counts(*y.shape[2:])[1]
    tiles = n * tile_rows * tiles_w
    v = _matrices(v_buffer, group, cg, tiles)
    products = _matrices(m_buffer, group, kg, tiles)
    input_transform(x, ph, pw, first_row, tile_rows, tiles_w, v.reshape(16, channels, tiles))
    compute.grouped_matmul(u, v, products, threads)
    output_transform(products.reshape(16, group * kg, tiles), bias, first_row, tile_rows,
                     tiles_w, y)
