"""Region-of-interest max pooling (Fast R-CNN) and the box arithmetic of region proposals
(Faster R-CNN): anchors, decoding, non-maximum suppression.

x is a feature map (N, C, H, W); rois (R, 5) rows (batch index, x1, y1, x2, y2) in image
coordinates; y (R, C, PH, PW); argmax the flat position h * W + w of each bin's maximum in
its plane (-1 for an empty bin).
"""
from __future__ import annotations

import math

import numpy as np

from ._jit import jit, prange


@jit()
def _round(v):
    """C's round(): halves away from zero (Fast R-CNN rounds ROI corners with it)."""
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


@jit(parallel=True)
def roi_pool_forward(x, rois, spatial_scale, y, argmax):
    """Each ROI split into PH x PW bins of size (roi size / bins), each bin's max (0 if empty).
    Parallel over the ROIs: each writes its own y[r]."""
    height, width = x.shape[2], x.shape[3]
    ph_n, pw_n = y.shape[2], y.shape[3]
    for r in prange(rois.shape[0]):
        n = int(rois[r, 0])
        x0 = int(_round(rois[r, 1] * spatial_scale))
        y0 = int(_round(rois[r, 2] * spatial_scale))
        x1 = int(_round(rois[r, 3] * spatial_scale))
        y1 = int(_round(rois[r, 4] * spatial_scale))
        bin_h = max(y1 - y0 + 1, 1) / ph_n
        bin_w = max(x1 - x0 + 1, 1) / pw_n
        for ph in range(ph_n):
            hs = min(max(int(math.floor(ph * bin_h)) + y0, 0), height)
            he = min(max(int(math.ceil((ph + 1) * bin_h)) + y0, 0), height)
            for pw in range(pw_n):
                ws = min(max(int(math.floor(pw * bin_w)) + x0, 0), width)
                we = min(max(int(math.ceil((pw + 1) * bin_w)) + x0, 0), width)
                for c in range(x.shape[1]):
                    if he <= hs or we <= ws:
                        y[r, c, ph, pw] = 0
                        argmax[r, c, ph, pw] = -1
                        continue
                    best = np.float32(-3.4028234663852886e38)
                    at = -1
                    for h in range(hs, he):
                        for w in range(ws, we):
                            v = x[n, c, h, w]
                            if v > best:
                                best = v
                                at = h * width + w
                    y[r, c, ph, pw] = best
                    argmax[r, c, ph, pw] = at


@jit(parallel=True)
def roi_pool_backward(dy, rois, argmax, dx):
    """dx (overwritten) sums each bin's gradient at its maximum. Parallel over channels: ROIs
    of one image may overlap, so each thread owns whole channels."""
    width = dx.shape[3]
    for c in prange(dx.shape[1]):
        for n in range(dx.shape[0]):
            dx[n, c] = 0
        for r in range(rois.shape[0]):
            n = int(rois[r, 0])
            for ph in range(dy.shape[2]):
                for pw in range(dy.shape[3]):
                    at = argmax[r, c, ph, pw]
                    if at >= 0:
                        dx[n, c, at // width, at % width] += dy[r, c, ph, pw]


def anchor_sizes(base_size: int, ratios, scales) -> np.ndarray:
    """Faster R-CNN's anchor (width, height) pairs, ratio by ratio and scale by scale: the
    base_size square reshaped to each height/width ratio (area kept, sides rounded), then
    scaled (OpenCV's ProposalLayer; py-faster-rcnn's generate_anchors gives the same)."""
    sizes = []
    for ratio in ratios:
        width = math.floor(base_size / math.sqrt(ratio) + 0.5)
        height = math.floor(width * ratio + 0.5)
        sizes.extend((scale * width, scale * height) for scale in scales)
    return np.array(sizes, np.float32)
