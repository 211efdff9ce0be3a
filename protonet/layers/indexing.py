"""Layers that pick rows of a batch by index or by flag: BatchReindex and Filter."""
from __future__ import annotations

import numpy as np

from ..errors import NetDefinitionError, ShapeError
from ..registry import register_layer
from .base import Layer


@register_layer("BatchReindex")
class BatchReindex(Layer):
    """top[i] = bottom[0][index[i]], Caffe "BatchReindex": bottom[1] holds the indices
    (any length; repeats allowed). Gradients of repeated rows add up; none to the indices."""

    num_bottom = 2

    def reshape(self, bottom, top):
        if bottom[1].num_axes != 1:
            raise self.error(f"indices must be a 1-axis blob, got shape {bottom[1].shape}")
        top[0].reshape(bottom[1].shape[0], *bottom[0].shape[1:])

    def _indices(self, bottom):
        index = bottom[1].data.astype(np.int64)
        if index.size and (index.min() < 0 or index.max() >= bottom[0].shape[0]):
            raise self.error(f"index out of range for a batch of {bottom[0].shape[0]}: "
                             f"{index.min()}..{index.max()}", ShapeError)
        return index

    def forward(self, bottom, top):
        np.take(bottom[0].data, self._indices(bottom), axis=0, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to the indices", NetDefinitionError)
        if propagate_down[0]:
            bottom[0].diff[...] = 0
            np.add.at(bottom[0].diff, self._indices(bottom), top[0].diff)

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0


@register_layer("Filter")
class Filter(Layer):
    """The rows whose selector is non-zero, Caffe "Filter": bottoms are K blobs with the same
    first axis and, last, the selector (N values); tops are the K blobs' selected rows, in
    order. Rows left out get zero gradient; none to the selector."""

    num_bottom = (2, None)
    num_top = (1, None)
    reshape_reads_only_shapes = False   # the tops' row count is the selector's non-zeros

    def setup(self, bottom, top):
        self.num_filtered = len(bottom) - 1

    def reshape(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise self.error(f"needs one top per filtered bottom: {len(bottom) - 1} bottoms "
                             f"before the selector, {len(top)} tops", NetDefinitionError)
        selector = bottom[-1]
        if selector.count != selector.shape[0]:
            raise self.error(f"the selector must hold one value per row, got shape "
                             f"{selector.shape}")
        for blob in bottom[:-1]:
            if blob.shape[0] != selector.shape[0]:
                raise self.error(f"bottom '{blob.name}' has {blob.shape[0]} rows, the selector "
                                 f"{selector.shape[0]}")
        self.rows = np.flatnonzero(selector.data.reshape(-1))
        for blob, out in zip(bottom, top):
            out.reshape(len(self.rows), *blob.shape[1:])

    def forward(self, bottom, top):
        for blob, out in zip(bottom, top):
            np.take(blob.data, self.rows, axis=0, out=out.data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            raise self.error("cannot backpropagate to the selector", NetDefinitionError)
        for blob, out, down in zip(bottom, top, propagate_down):
            if down:
                blob.diff[...] = 0
                blob.diff[self.rows] = out.diff

    def allow_force_backward(self, bottom_index):
        return bottom_index < self.num_filtered
