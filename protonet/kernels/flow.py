"""Optical-flow kernels (FlowNet): correlation of two feature maps and warping by a flow.

Correlation works on channels-last padded maps a, b (N, Hp, Wp, C); y (N, D*D, Ho, Wo) holds
for each displacement (dy, dx) on the D x D grid the mean over a k x k patch and the channels
of a[patch at (y s1 + m, x s1 + m)] * b[the same patch moved by (dy, dx)], m the maximum
displacement. Parallel over output rows; each row is written by one thread.
"""
from __future__ import annotations

import math

from ._jit import jit, prange


@jit(parallel=True)
def correlation_forward(a, b, kernel, max_displacement, stride_1, stride_2, y):
    radius = max_displacement // stride_2
    grid = 2 * radius + 1
    channels = a.shape[3]
    norm = kernel * kernel * channels
    for row in prange(y.shape[0] * y.shape[2]):
        n, oy = row // y.shape[2], row % y.shape[2]
        y1 = oy * stride_1 + max_displacement
        for ox in range(y.shape[3]):
            x1 = ox * stride_1 + max_displacement
            for d in range(grid * grid):
                dx = (d % grid - radius) * stride_2
                dy = (d // grid - radius) * stride_2
                total = 0.0
                for j in range(kernel):
                    for i in range(kernel):
                        for c in range(channels):
                            total += a[n, y1 + j, x1 + i, c] * b[n, y1 + dy + j, x1 + dx + i, c]
                y[n, d, oy, ox] = total / norm


@jit(parallel=True)
def flow_warp_forward(image, flow, y):
    """y[n, c, i, j] = image sampled bilinearly at (i + flow_y, j + flow_x); 0 where that
    point lies outside the image (FlowNet2's FlowWarp, fill ZERO)."""
    height, width = image.shape[2], image.shape[3]
    for row in prange(image.shape[0] * height):
        n, i = row // height, row % height
        for j in range(width):
            px = j + flow[n, 0, i, j]
            py = i + flow[n, 1, i, j]
            if not (px >= 0 and py >= 0 and px < width and py < height):
                for c in range(image.shape[1]):
                    y[n, c, i, j] = 0
                continue
            left, top = int(math.floor(px)), int(math.floor(py))
            a, b = px - left, py - top
            right, bottom = min(left + 1, width - 1), min(top + 1, height - 1)
            for c in range(image.shape[1]):
                y[n, c, i, j] = ((1 - a) * (1 - b) * image[n, c, top, left]
                                 + (1 - a) * b * image[n, c, bottom, left]
                                 + a * (1 - b) * image[n, c, top, right]
                                 + a * b * image[n, c, bottom, right])
