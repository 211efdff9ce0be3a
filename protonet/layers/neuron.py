"""Elementwise layers (one bottom, one top of its shape; in place allowed unless noted).

Backward formulas use the top where Caffe does (Sigmoid, TanH, ELU), so in-place use is exact.
"""
from __future__ import annotations

import numpy as np

from .. import rng
from ..errors import NetDefinitionError
from ..kernels.neuron import relu_backward, relu_forward
from ..registry import register_layer
from .base import NeuronLayer


def sigmoid(x, out=None):
    """1 / (1 + exp(-x)) as 0.5 tanh(0.5 x) + 0.5: the overflow-free form Caffe uses too.
    `out` may be x itself (in place)."""
    out = np.multiply(x, np.float32(0.5), out=out)
    np.tanh(out, out=out)
    out *= np.float32(0.5)
    out += np.float32(0.5)
    return out


@register_layer("ReLU")
class ReLU(NeuronLayer):
    """y = max(0, x) + negative_slope * min(0, x), Caffe "ReLU" (V1 RELU).
    Reads relu_param.negative_slope (0)."""

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    negative_slope: float

    def setup(self, bottom, top):
        self.negative_slope = np.float32(self.param.relu_param.negative_slope)

    def forward(self, bottom, top):
        relu_forward(bottom[0].data.reshape(-1), self.negative_slope, top[0].data.reshape(-1))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            relu_backward(bottom[0].data.reshape(-1), top[0].diff.reshape(-1), self.negative_slope,
                          bottom[0].diff.reshape(-1))


@register_layer("Sigmoid")
class Sigmoid(NeuronLayer):
    """y = 1 / (1 + exp(-x)), Caffe "Sigmoid" (V1 SIGMOID); dy/dx = y (1 - y)."""

    def forward(self, bottom, top):
        sigmoid(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * y * (1 - y)


@register_layer("TanH")
class TanH(NeuronLayer):
    """y = tanh(x), Caffe "TanH" (V1 TANH); dy/dx = 1 - y^2."""

    def forward(self, bottom, top):
        np.tanh(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * (1 - y * y)


@register_layer("AbsVal")
class AbsVal(NeuronLayer):
    """y = |x|, Caffe "AbsVal" (V1 ABSVAL). Not in place (backward needs x)."""

    in_place = False

    def forward(self, bottom, top):
        np.abs(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * np.sign(bottom[0].data)


@register_layer("BNLL")
class BNLL(NeuronLayer):
    """y = log(1 + exp(x)) (binomial normal log likelihood), Caffe "BNLL" (V1 BNLL)."""

    def forward(self, bottom, top):
        np.logaddexp(0, bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            e = np.exp(-np.abs(bottom[0].data))
            s = np.where(bottom[0].data > 0, 1 / (1 + e), e / (1 + e))
            bottom[0].diff[...] = top[0].diff * s


@register_layer("ELU")
class ELU(NeuronLayer):
    """y = x if x > 0 else alpha (exp(x) - 1), Caffe "ELU". Reads elu_param.alpha (1)."""

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    alpha: float

    def setup(self, bottom, top):
        self.alpha = np.float32(self.param.elu_param.alpha)

    def forward(self, bottom, top):
        x = bottom[0].data
        top[0].data[...] = np.where(x > 0, x, self.alpha * np.expm1(np.minimum(x, 0)))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * np.where(y > 0, 1, y + self.alpha)


@register_layer("Swish")
class Swish(NeuronLayer):
    """y = x sigmoid(beta x), Caffe "Swish". Reads swish_param.beta (1). In place allowed:
    backward needs only y and the sigmoid kept from forward."""

    def setup(self, bottom, top):
        self.beta = np.float32(self.param.swish_param.beta)
        self.sig = None

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.scratch("sig", bottom[0].shape)

    def forward(self, bottom, top):
        np.multiply(bottom[0].data, self.beta, out=self.sig)
        sigmoid(self.sig, out=self.sig)
        np.multiply(bottom[0].data, self.sig, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y, s = top[0].data, self.sig   # Caffe's form: dy (beta y + s (1 - beta y))
            bottom[0].diff[...] = top[0].diff * (self.beta * y + s * (1 - self.beta * y))


@register_layer("Clip")
class Clip(NeuronLayer):
    """y = min(max(x, min), max), Caffe "Clip". Reads clip_param.min and max (required);
    the gradient passes where min <= x <= max. Not in place (backward needs x)."""

    def setup(self, bottom, top):
        p = self.param.clip_param
        if not (p.HasField("min") and p.HasField("max")) or p.min > p.max:
            raise self.error("clip_param needs min <= max", NetDefinitionError)
        self.low, self.high = np.float32(p.min), np.float32(p.max)

    def forward(self, bottom, top):
        np.clip(bottom[0].data, self.low, self.high, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = bottom[0].data
            bottom[0].diff[...] = top[0].diff * ((x >= self.low) & (x <= self.high))


@register_layer("Power")
class Power(NeuronLayer):
    """y = (shift + scale x)^power, Caffe "Power" (V1 POWER). Reads power_param.power (1),
    scale (1), shift (0). Not in place."""

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    power: float
    scale: float
    shift: float

    def setup(self, bottom, top):
        p = self.param.power_param
        self.power, self.scale, self.shift = p.power, p.scale, p.shift

    def forward(self, bottom, top):
        top[0].data[...] = (self.shift + self.scale * bottom[0].data) ** self.power

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            base = self.shift + self.scale * bottom[0].data
            grad = self.power * self.scale * base ** (self.power - 1) if self.power != 1 \
                else np.full_like(base, self.scale)
            bottom[0].diff[...] = top[0].diff * grad


def _log_base(layer, base: float) -> float:
    """ln(base), 1 for Caffe's -1 (base e); a base Caffe rejects (not positive, infinite,
    NaN) is an error."""
    if base == -1:
        return 1.0
    if not 0 < base < np.inf:
        raise layer.error(f"base must be positive and finite, or -1 (e), got {base:g}",
                          NetDefinitionError)
    return float(np.log(base))


@register_layer("Exp")
class Exp(NeuronLayer):
    """y = base^(shift + scale x) (base -1 means e), Caffe "Exp" (V1 EXP). Reads exp_param."""

    def setup(self, bottom, top):
        p = self.param.exp_param
        self.inner = _log_base(self, p.base) * p.scale
        self.outer_shift = _log_base(self, p.base) * p.shift

    def forward(self, bottom, top):
        top[0].data[...] = np.exp(self.outer_shift + self.inner * bottom[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * top[0].data * self.inner


@register_layer("Log")
class Log(NeuronLayer):
    """y = log_base(shift + scale x) (base -1 means e), Caffe "Log". Reads log_param.
    Not in place."""

    def setup(self, bottom, top):
        p = self.param.log_param
        self.scale, self.shift, self.denom = p.scale, p.shift, _log_base(self, p.base)
        if self.denom == 0:   # base 1: Caffe's CHECK that 1 / ln(base) is finite
            raise self.error("base 1 has no logarithm", NetDefinitionError)

    def forward(self, bottom, top):
        top[0].data[...] = np.log(self.shift + self.scale * bottom[0].data) / self.denom

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * self.scale / (
                (self.shift + self.scale * bottom[0].data) * self.denom)


@register_layer("Threshold")
class Threshold(NeuronLayer):
    """y = 1 if x > threshold else 0, Caffe "Threshold" (V1 THRESHOLD); no gradient."""

    def setup(self, bottom, top):
        self.threshold = self.param.threshold_param.threshold

    def forward(self, bottom, top):
        np.greater(bottom[0].data, self.threshold, out=top[0].data, casting="unsafe")


@register_layer("Dropout")
class Dropout(NeuronLayer):
    """TRAIN: y = x * mask / (1 - ratio), mask ~ Bernoulli(1 - ratio); TEST: y = x.
    Caffe "Dropout" (V1 DROPOUT). Reads dropout_param.dropout_ratio (0.5) and Fast R-CNN's
    scale_train (true): false keeps x * mask while training and scales by 1 - ratio in TEST."""

    def setup(self, bottom, top):
        p = self.param.dropout_param
        self.ratio = p.dropout_ratio
        if not 0 <= self.ratio < 1:
            raise self.error(f"dropout_ratio must be in [0, 1), got {self.ratio}",
                             NetDefinitionError)
        self.scale = np.float32(1.0 / (1.0 - self.ratio) if p.scale_train else 1.0)
        self.test_scale = np.float32(1.0 if p.scale_train else 1.0 - self.ratio)
        self.train = self.phase == 0

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.scratch("mask", bottom[0].shape)

    def forward(self, bottom, top):
        if not self.train:
            if self.test_scale != 1:
                np.multiply(bottom[0].data, self.test_scale, out=top[0].data)
            elif top[0] is not bottom[0]:
                top[0].data[...] = bottom[0].data
            return
        keep = rng.generator().random(bottom[0].shape, dtype=np.float32) >= self.ratio
        np.multiply(keep, self.scale, out=self.mask)
        np.multiply(bottom[0].data, self.mask, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            if self.train:
                np.multiply(top[0].diff, self.mask, out=bottom[0].diff)
            elif self.test_scale != 1:
                np.multiply(top[0].diff, self.test_scale, out=bottom[0].diff)
            elif top[0] is not bottom[0]:
                bottom[0].diff[...] = top[0].diff


@register_layer("PReLU")
class PReLU(NeuronLayer):
    """y = max(0, x) + a_c min(0, x) with a learned slope per channel (or one shared),
    Caffe "PReLU". Reads prelu_param.filler (constant 0.25), channel_shared (false).
    Blob: slopes (C,) or (1,). Not in place (backward needs x)."""

    def setup(self, bottom, top):
        p = self.param.prelu_param
        if bottom[0].num_axes < 2:
            raise self.error(f"bottom needs a channel axis, got shape {bottom[0].shape}")
        self.channel_shared = p.channel_shared
        shape = (1,) if p.channel_shared else (bottom[0].shape[1],)
        if self.blobs:
            self.check_blob_shape(0, shape)
        else:
            filler = p.filler if p.HasField("filler") else None
            if filler is None:
                from .. import caffe_pb2
                filler = caffe_pb2.FillerParameter(type="constant", value=0.25)
            self.blobs = [self.make_blob(shape, filler, 0)]

    def _slope(self, x):
        a = self.blobs[0].data
        return a.reshape((1, -1) + (1,) * (x.ndim - 2)) if not self.channel_shared else a[0]

    def forward(self, bottom, top):
        x = bottom[0].data
        top[0].data[...] = np.where(x > 0, x, x * self._slope(x))

    def backward(self, top, propagate_down, bottom):
        x, dy = bottom[0].data, top[0].diff
        if self.param_propagate_down[0]:
            g = dy * np.minimum(x, 0)
            if self.channel_shared:
                self.blobs[0].diff += g.sum(dtype=np.float32)
            else:
                axes = (0,) + tuple(range(2, x.ndim))
                self.blobs[0].diff += g.sum(axis=axes, dtype=np.float32)
        if propagate_down[0]:
            bottom[0].diff[...] = np.where(x > 0, dy, dy * self._slope(x))


