"""Greedy non-maximum suppression over boxes already sorted by score (the SSD fork's
ApplyNMSFast, and Faster R-CNN's Proposal through pixel-inclusive boxes): float32
arithmetic, as the fork's NormalizedBBox fields are floats."""
from __future__ import annotations

from ._jit import jit


@jit()
def greedy_nms(boxes, areas, order, threshold, eta, keep, limit=-1):
    """Walk `order` (candidate indices, best first); keep a box when its overlap (intersection
    over union) with every box kept so far is at most the threshold. With eta < 1 the
    threshold shrinks by eta after each kept box while it is above 0.5 (adaptive NMS).
    boxes (P, 4) xmin, ymin, xmax, ymax; areas (P,) (0 for an inverted box). Writes the kept
    indices to keep[:n] and returns n; stops once `limit` boxes are kept (-1: no limit).
    Pixel boxes whose corners both count (x1 - x0 + 1 wide) go in with x1 + 1 and y1 + 1."""
    n_kept = 0
    adaptive = threshold
    for t in range(order.shape[0]):
        if n_kept == limit:
            break
        i = order[t]
        kept = True
        for k in range(n_kept):
            j = keep[k]
            if (boxes[j, 0] > boxes[i, 2] or boxes[j, 2] < boxes[i, 0]
                    or boxes[j, 1] > boxes[i, 3] or boxes[j, 3] < boxes[i, 1]):
                continue  # disjoint: overlap 0
            width = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
            height = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
            if width > 0 and height > 0:
                inter = width * height
                if inter / (areas[i] + areas[j] - inter) > adaptive:
                    kept = False
                    break
        if kept:
            keep[n_kept] = i
            n_kept += 1
            if eta < 1 and adaptive > 0.5:
                adaptive *= eta
    return n_kept
