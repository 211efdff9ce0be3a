"""Loss layers other than SoftmaxWithLoss (which lives with Softmax)."""
from __future__ import annotations

import numpy as np

from .. import caffe_pb2
from ..errors import ShapeError
from ..registry import register_layer
from .base import LossLayer


@register_layer("EuclideanLoss")
class EuclideanLoss(LossLayer):
    """loss = sum (a - b)^2 / 2N, Caffe "EuclideanLoss" (V1 EUCLIDEAN_LOSS); gradients to both
    bottoms (N = first axis)."""

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise self.error(f"bottoms need the same count: {bottom[0].shape} vs "
                             f"{bottom[1].shape}", ShapeError)
        if getattr(self, "delta", np.empty(0)).shape != bottom[0].shape:
            self.delta = np.empty(bottom[0].shape, np.float32)

    def allow_force_backward(self, bottom_index):
        return True

    def forward(self, bottom, top):
        np.subtract(bottom[0].data, bottom[1].data.reshape(bottom[0].shape), out=self.delta)
        top[0].data[...] = np.dot(self.delta.ravel(), self.delta.ravel()) / bottom[0].shape[0] / 2

    def backward(self, top, propagate_down, bottom):
        scale = float(top[0].diff.reshape(-1)[0]) / bottom[0].shape[0]
        for i, (blob, down) in enumerate(zip(bottom, propagate_down)):
            if down:
                np.multiply(self.delta, scale if i == 0 else -scale,
                            out=blob.diff.reshape(self.delta.shape))


LP = caffe_pb2.LossParameter


@register_layer("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(LossLayer):
    """loss = -sum [t log s(x) + (1 - t) log(1 - s(x))] / normalizer, s the sigmoid, Caffe
    "SigmoidCrossEntropyLoss" (V1 SIGMOID_CROSS_ENTROPY_LOSS). Reads loss_param.ignore_label,
    normalization (VALID) or normalize; targets in [0, 1] of the predictions' count."""

    def setup(self, bottom, top):
        lp = self.param.loss_param
        self.has_ignore, self.ignore_label = lp.HasField("ignore_label"), lp.ignore_label
        if not lp.HasField("normalization") and lp.HasField("normalize"):
            self.normalization = LP.VALID if lp.normalize else LP.BATCH_SIZE
        else:
            self.normalization = lp.normalization

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise self.error(f"predictions {bottom[0].shape} and targets {bottom[1].shape} need "
                             "the same count", ShapeError)

    def _normalizer(self, valid):
        n = {LP.FULL: self.count, LP.VALID: valid, LP.BATCH_SIZE: self.outer, LP.NONE: 1}
        return max(1.0, float(n[self.normalization]))

    def forward(self, bottom, top):
        x = bottom[0].data.astype(np.float64).ravel()
        t = bottom[1].data.astype(np.float64).ravel()
        self.count, self.outer = x.size, bottom[0].shape[0]
        keep = t != self.ignore_label if self.has_ignore else np.ones_like(t, bool)
        # Stable: x (t - [x >= 0]) - log(1 + exp(x - 2 x [x >= 0])) is -(per-element loss).
        pos = (x >= 0).astype(np.float64)
        per = -(x * (t - pos) - np.log1p(np.exp(x - 2 * x * pos)))
        self.keep, self.valid = keep, int(keep.sum())
        top[0].data[...] = (per * keep).sum() / self._normalizer(self.valid)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to the targets")
        if propagate_down[0]:
            s = 0.5 * np.tanh(0.5 * bottom[0].data) + 0.5
            scale = float(top[0].diff.reshape(-1)[0]) / self._normalizer(self.valid)
            grad = (s - bottom[1].data.reshape(s.shape)) * scale
            bottom[0].diff[...] = grad * self.keep.reshape(s.shape)
