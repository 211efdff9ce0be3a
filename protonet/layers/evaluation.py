"""Accuracy: the share of samples whose label is among the top_k scores."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..registry import register_layer
from .base import Layer, canonical_axis, count


@register_layer("Accuracy")
class Accuracy(Layer):
    """Caffe "Accuracy" (V1 ACCURACY): top-k classification accuracy, no backward.

    A sample counts as right when fewer than top_k classes score at least as high as its
    label's class, the label's own class included (Caffe's rule: ties count against).
    Reads accuracy_param: top_k (1), axis (1), ignore_label (none).
    Bottom: scores (N, C, ...), labels with N x (...) values. Top: accuracy (scalar); optional
    second top: per-class accuracy (C,).
    """

    num_bottom = 2
    num_top = (1, 2)

    def setup(self, bottom, top):
        p = self.param.accuracy_param
        self.top_k = p.top_k
        self.axis_param = p.axis
        self.has_ignore = p.HasField("ignore_label")
        self.ignore_label = p.ignore_label

    def reshape(self, bottom, top):
        self.axis = canonical_axis(self.axis_param, bottom[0].num_axes, self)
        self.view = (count(bottom[0].shape, 0, self.axis), bottom[0].shape[self.axis],
                     count(bottom[0].shape, self.axis + 1))
        if self.top_k > self.view[1]:
            raise self.error(f"top_k {self.top_k} is more than the {self.view[1]} classes")
        if bottom[1].count != self.view[0] * self.view[2]:
            raise self.error(f"{bottom[1].count} labels for {self.view[0] * self.view[2]} "
                             f"predictions of shape {bottom[0].shape}", ShapeError)
        top[0].reshape(())
        if len(top) == 2:
            top[1].reshape(self.view[1])

    def forward(self, bottom, top):
        outer, classes, inner = self.view
        scores = bottom[0].data.reshape(self.view)
        labels = bottom[1].data.reshape(outer, inner).astype(np.int64)
        keep = labels != self.ignore_label if self.has_ignore else np.ones_like(labels, bool)
        lab = np.where(keep, labels, 0)
        if np.any((lab < 0) | (lab >= classes)):
            bad = lab[(lab < 0) | (lab >= classes)][0]
            raise self.error(f"label {bad} out of range: {classes} classes", ShapeError)
        true_score = np.take_along_axis(scores, lab[:, None, :], axis=1)
        at_least = (scores >= true_score).sum(axis=1)
        right = (at_least <= self.top_k) & keep
        n = int(keep.sum())
        top[0].data[...] = right.sum() / n if n else 0.0
        if len(top) == 2:
            per_class = np.bincount(lab[keep], minlength=classes)
            hits = np.bincount(lab[right], minlength=classes)
            top[1].data[...] = np.where(per_class > 0, hits / np.maximum(per_class, 1), 0.0)
