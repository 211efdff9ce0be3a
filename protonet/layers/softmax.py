"""Softmax and SoftmaxWithLoss (the softmax and the multinomial log loss fused)."""
from __future__ import annotations

import numpy as np

from ..errors import NetDefinitionError, ShapeError
from ..kernels.softmax import (softmax_backward, softmax_forward, softmax_loss_backward,
                               softmax_loss_forward)
from ..registry import register_layer
from .base import Layer, LossLayer, canonical_axis, count



def _split(layer, shape, axis):
    return count(shape, 0, axis), shape[axis], count(shape, axis + 1)


@register_layer("Softmax")
class Softmax(Layer):
    """y = exp(x - max) / sum exp(x - max) along softmax_param.axis (1), Caffe "Softmax"
    (V1 SOFTMAX). Bottom and top have the same shape."""

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    axis: int

    def setup(self, bottom, top):
        self.axis_param = self.param.softmax_param.axis

    def reshape(self, bottom, top):
        self.axis = canonical_axis(self.axis_param, bottom[0].num_axes, self)
        self.view = _split(self, bottom[0].shape, self.axis)
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        softmax_forward(bottom[0].data.reshape(self.view), top[0].data.reshape(self.view))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            softmax_backward(top[0].data.reshape(self.view), top[0].diff.reshape(self.view),
                             bottom[0].diff.reshape(self.view))


@register_layer("SoftmaxWithLoss")
class SoftmaxWithLoss(LossLayer):
    """loss = -sum log softmax(x)[label] / normalizer, Caffe "SoftmaxWithLoss" (V1 SOFTMAX_LOSS).

    Reads softmax_param.axis (1), loss_param.ignore_label (none), loss_param.normalization
    (VALID: the count of labels not ignored; FULL: all labels; BATCH_SIZE: the outer count;
    NONE: 1) or the legacy loss_param.normalize (true = VALID, false = BATCH_SIZE).
    Bottom: predictions (N, C, ...), labels with N x (...) values. Top: the scalar loss, and
    optionally the probabilities (the shape of the predictions).
    """

    num_top = (1, 2)

    def setup(self, bottom, top):
        lp = self.param.loss_param
        self.has_ignore = lp.HasField("ignore_label")
        self.ignore_label = lp.ignore_label
        self.read_normalization()
        self.axis_param = self.param.softmax_param.axis

    def reshape(self, bottom, top):
        self.axis = canonical_axis(self.axis_param, bottom[0].num_axes, self)
        self.view = _split(self, bottom[0].shape, self.axis)
        outer, _, inner = self.view
        if bottom[1].count != outer * inner:
            raise self.error(f"{bottom[1].count} labels (bottom '{bottom[1].name}', shape "
                             f"{bottom[1].shape}) for {outer * inner} predictions (bottom "
                             f"'{bottom[0].name}', shape {bottom[0].shape}, softmax axis "
                             f"{self.axis})", ShapeError)
        top[0].reshape(())
        if len(top) == 2:
            top[1].reshape(bottom[0].shape)
        self.scratch("prob", self.view)
        self.scratch("losses", (outer, inner))

    def forward(self, bottom, top):
        outer, _, inner = self.view
        labels = bottom[1].data.reshape(outer, inner)
        softmax_loss_forward(bottom[0].data.reshape(self.view), labels, self.has_ignore,
                             self.ignore_label, self.prob, self.losses)
        bad = np.flatnonzero(self.losses.ravel() < 0)
        if bad.size:
            raise self.error(f"label {labels.ravel()[bad[0]]:g} out of range: predictions have "
                             f"{self.view[1]} classes (0 to {self.view[1] - 1})", ShapeError)
        valid = labels.size - (int((labels == self.ignore_label).sum()) if self.has_ignore
                               else 0)
        self.valid = valid
        top[0].data[...] = (self.losses.sum(dtype=np.float64)
                            / self.normalizer(outer, inner, valid))
        if len(top) == 2:
            top[1].data.reshape(self.view)[...] = self.prob

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to label inputs", NetDefinitionError)
        if not propagate_down[0]:
            return
        outer, _, inner = self.view
        scale = self.loss_weight(top) / self.normalizer(outer, inner, self.valid)
        softmax_loss_backward(self.prob, bottom[1].data.reshape(outer, inner), self.has_ignore,
                              self.ignore_label, np.float32(scale),
                              bottom[0].diff.reshape(self.view))
