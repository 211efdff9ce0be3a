"""BN: SegNet's batch normalization with its own scale and shift (alexgkendall/caffe-segnet)."""
from __future__ import annotations

import numpy as np

from .. import caffe_pb2
from ..errors import NetDefinitionError
from ..registry import register_layer
from .base import Layer

BN_MODE = caffe_pb2.BNParameter
# Caffe parity: bn_layer.cpp's var_eps_, fixed.
VAR_EPS = 1e-9


@register_layer("BN")
class BN(Layer):
    """SegNet's "BN". bn_mode LEARN: y = scale * (x - mean) / sqrt(var + 1e-9) + shift with
    the batch's per-channel mean and variance (over N, H, W; var = E[x^2] - E[x]^2);
    INFERENCE: y = scale * x + shift (SegNet's compute_bn_statistics.py folds the dataset's
    statistics into scale and shift first).

    Reads bn_param.bn_mode (LEARN), scale_filler, shift_filler. Bottom: (N, C, ...).
    Top: the bottom's shape; in LEARN two optional tops, the batch mean and variance
    (1, C, 1, 1). Blobs: scale, shift, each (1, C, 1, 1).
    """

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    learn: bool

    num_top = (1, 3)

    def setup(self, bottom, top):
        p = self.param.bn_param
        self.learn = p.bn_mode == BN_MODE.LEARN
        if len(top) > 1 and not self.learn:
            raise self.error("the mean and variance tops need bn_mode LEARN", NetDefinitionError)
        channels = bottom[0].shape[1]
        shape = (1, channels, 1, 1)
        self.learnable_blobs([shape, shape], [p.scale_filler, p.shift_filler])

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if bottom[0].num_axes < 2 or shape[1] != self.blobs[0].count:
            raise self.error(f"bottom {shape} does not have the {self.blobs[0].count} channels "
                             "the scale and shift were made for")
        top[0].reshape(shape)
        for blob in top[1:]:
            blob.reshape(1, shape[1], 1, 1)
        self.view = (shape[0], shape[1], -1)
        self.channel = (1, shape[1], 1)
        flat = (shape[0], shape[1], bottom[0].count // max(1, shape[0] * shape[1]))
        # LEARN: the normalized input; INFERENCE: a copy of the input when in place.
        self.scratch("x_norm", flat)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view)
        scale = self.blobs[0].data.reshape(self.channel)
        shift = self.blobs[1].data.reshape(self.channel)
        y = top[0].data.reshape(self.view)
        if not self.learn:
            if top[0] is bottom[0]:
                np.copyto(self.x_norm, x)   # backward needs x for the scale's gradient
            np.multiply(x, scale, out=y)
            y += shift
            return
        mean = x.mean(axis=(0, 2), dtype=np.float64)
        var = np.einsum("ncp,ncp->c", x, x, dtype=np.float64) / (x.size // x.shape[1]) - mean ** 2
        self.std = np.sqrt(var + VAR_EPS).astype(np.float32).reshape(self.channel)
        np.subtract(x, mean.astype(np.float32).reshape(self.channel), out=self.x_norm)
        self.x_norm /= self.std
        np.multiply(self.x_norm, scale, out=y)
        y += shift
        if len(top) > 1:
            top[1].data.reshape(-1)[...] = mean
        if len(top) > 2:
            top[2].data.reshape(-1)[...] = var

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.view)
        in_place = top[0] is bottom[0]
        x_hat = self.x_norm if self.learn or in_place else bottom[0].data.reshape(self.view)
        if self.param_propagate_down[0]:
            self.blobs[0].diff.reshape(-1)[...] += np.einsum("ncp,ncp->c", dy, x_hat)
        if self.param_propagate_down[1]:
            self.blobs[1].diff.reshape(-1)[...] += dy.sum(axis=(0, 2))
        if not propagate_down[0]:
            return
        dx_hat = dy * self.blobs[0].data.reshape(self.channel)
        dx = bottom[0].diff.reshape(self.view)
        if not self.learn:
            dx[...] = dx_hat
            return
        # d/dx of (x - mean) / std with the batch's mean and std.
        mean_dx_hat = dx_hat.mean(axis=(0, 2), keepdims=True)
        mean_proj = (dx_hat * self.x_norm).mean(axis=(0, 2), keepdims=True)
        dx[...] = (dx_hat - mean_dx_hat - self.x_norm * mean_proj) / self.std
