"""Normalization layers: LRN, BatchNorm, Scale, Bias, MVN.

Statistics are taken in float32 as Caffe does. Cross-channel LRN runs the kernels of
protonet/kernels/normalization.py; within-channel LRN runs Caffe's composition of square, AVE
pooling, Power and Eltwise PROD fused there too.
"""
from __future__ import annotations

import numpy as np

from .. import caffe_pb2
from ..errors import NetDefinitionError
from ..kernels.normalization import (lrn_across_backward, lrn_across_forward,
                                     lrn_within_backward, lrn_within_forward)
from ..registry import register_layer
from .base import TEST, Layer, canonical_axis, count


# -- LRN -------------------------------------------------------------------------------------
LRNP = caffe_pb2.LRNParameter


@register_layer("LRN")
class LRN(Layer):
    """Local response normalization, Caffe "LRN" (V1 LRN): y = x * scale^-beta.

    ACROSS_CHANNELS: scale = k + alpha/n * sum of x^2 over the n channels centred on c.
    WITHIN_CHANNEL: scale = 1 + alpha/n^2 * sum of x^2 over the n x n window centred on (h, w)
    (Caffe builds it from AVE pooling with pad (n-1)/2 and a Power layer with shift 1, so k
    is not used). Windows are zero padded.
    Reads lrn_param: local_size n (5, odd), alpha (1), beta (0.75), k (1), norm_region
    (ACROSS_CHANNELS). Bottom: (N, C, H, W). Top: same shape. Not in place.
    """

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    across: bool
    size: int
    alpha: float
    beta: float
    k: float

    def setup(self, bottom, top):
        p = self.param.lrn_param
        if p.local_size % 2 == 0:
            raise self.error(f"local_size must be odd, got {p.local_size}", NetDefinitionError)
        self.size = p.local_size
        self.alpha, self.beta, self.k = np.float32(p.alpha), np.float32(p.beta), np.float32(p.k)
        self.across = p.norm_region == LRNP.ACROSS_CHANNELS
        self.alpha_over_size = self.alpha / np.float32(self.size)
        # Caffe computes this one in double, then stores it as float.
        self.cache_ratio = np.float32(2.0 * float(self.alpha) * float(self.beta) / self.size)
        # Power's derivative factor in Caffe's within-channel backward, a float32 product
        self.diff_scale = -self.beta * self.alpha
        self.scale = self.pool = self.power = None

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error(f"bottom must be (N, C, H, W), got shape {bottom[0].shape}")
        if top[0] is bottom[0]:
            raise self.error("cannot work in place: backward needs both bottom and top",
                             NetDefinitionError)
        shape = bottom[0].shape
        top[0].reshape(shape)
        if self.across:
            self.scratch("scale", shape)
        else:
            self.scratch("pool", shape)
            self.scratch("power", shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.across:
            lrn_across_forward(x, self.size, self.alpha_over_size, self.k, -self.beta,
                                self.scale, top[0].data)
            return
        lrn_within_forward(x, self.size, self.alpha, -self.beta, self.pool, self.power,
                           top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, dy, dx = bottom[0].data, top[0].diff, bottom[0].diff
        if self.across:
            lrn_across_backward(x, top[0].data, self.scale, dy, self.size, -self.beta,
                                 self.cache_ratio, dx)
            return
        # Caffe's composed backward: Eltwise PROD, Power, AVE pooling, square, Split.
        lrn_within_backward(x, dy, self.pool, self.power, self.size, self.alpha,
                            self.diff_scale, dx)


# -- BatchNorm -------------------------------------------------------------------------------
@register_layer("BatchNorm")
class BatchNorm(Layer):
    """y = (x - mean) / sqrt(var + eps) per channel, Caffe "BatchNorm" (no V1 type).

    Statistics over every axis but the channel axis 1 (a 1-axis bottom is one channel).
    Training (use_global_stats false) uses the batch mean and biased variance and updates the
    running sums: s = s * maf + 1, mean_sum = mean_sum * maf + mean,
    var_sum = var_sum * maf + m / (m - 1) * var, m = count / C. Global stats use
    mean_sum / s and var_sum / s (0 when s is 0).
    Reads batch_norm_param: use_global_stats (true in TEST, false in TRAIN),
    moving_average_fraction maf (0.999), eps (1e-5).
    Blobs: mean_sum (C,), var_sum (C,), s (1,), all 0 at first; never learned (lr_mult 0).
    Bottom: (N, C, ...). Top: same shape; in place allowed.
    """

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    eps: float

    def setup(self, bottom, top):
        p = self.param.batch_norm_param
        self.use_global_stats = (p.use_global_stats if p.HasField("use_global_stats")
                                 else self.phase == TEST)
        self.moving_average_fraction = np.float32(p.moving_average_fraction)
        self.eps = np.float32(p.eps)
        self.channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        shapes = [(self.channels,), (self.channels,), (1,)]
        # Blobs: mean sum, variance sum, moving-average factor.
        self.learnable_blobs(shapes, [caffe_pb2.FillerParameter(type="constant", value=0)] * 3)
        # Caffe parity: batch_norm_layer.cpp hides the statistics from the solver by giving
        # them lr_mult 0 in the layer's own param specs (which the net reads), and refuses any
        # other lr_mult.
        for i in range(3):
            if i < len(self.param.param):
                if self.param.param[i].lr_mult != 0:
                    raise self.error(f"param {i} has lr_mult {self.param.param[i].lr_mult}: "
                                     "the statistics cannot be learned (use lr_mult 0)",
                                     NetDefinitionError)
            else:
                self.param.param.add().lr_mult = 0
        self.param_propagate_down = [False] * 3
        self.x_norm = self.temp = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if not shape:
            raise self.error("bottom must have at least one axis, got a scalar")
        channels = shape[1] if len(shape) > 1 else 1
        if channels != self.channels:
            raise self.error(f"bottom shape {shape} has {channels} channels, the layer was set "
                             f"up for {self.channels}")
        if top[0] is not bottom[0]:
            top[0].reshape(shape)
        self.dims = (shape[0], self.channels, count(shape, 2))
        if not self.use_global_stats:   # the batch's statistics and their gradient need them
            self.scratch("x_norm", self.dims)
            self.scratch("temp", self.dims)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.dims)
        y = top[0].data.reshape(self.dims)
        mean_sum, var_sum, factor = (b.data for b in self.blobs)
        if self.use_global_stats:
            scale = np.float32(0) if factor[0] == 0 else np.float32(1) / factor[0]
            mean, var = mean_sum * scale, var_sum * scale
        else:
            mean = x.mean(axis=(0, 2), dtype=np.float32)
        np.subtract(x, mean[:, None], out=y)
        if not self.use_global_stats:
            np.multiply(y, y, out=self.temp)
            var = self.temp.mean(axis=(0, 2), dtype=np.float32)
            maf = self.moving_average_fraction
            factor *= maf
            factor += np.float32(1)
            mean_sum *= maf
            mean_sum += mean
            m = x.size // self.channels
            correction = np.float32(m) / np.float32(m - 1) if m > 1 else np.float32(1)
            var_sum *= maf
            var_sum += correction * var
        self.std = np.sqrt(var + self.eps)
        y /= self.std[:, None]
        if not self.use_global_stats:
            # Kept for backward: a later in-place layer may overwrite the top.
            self.x_norm[...] = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.dims)
        dx = bottom[0].diff.reshape(self.dims)
        std = self.std[:, None]
        if self.use_global_stats:
            np.divide(dy, std, out=dx)
            return
        # dx = (dy - mean(dy) - mean(dy * y) * y) / std, means over all but the channel axis;
        # every read of dy comes before dx is written, so in place works.
        y, t = self.x_norm, self.temp
        np.multiply(dy, y, out=t)
        sum_dy_y = t.sum(axis=(0, 2), dtype=np.float32)
        sum_dy = dy.sum(axis=(0, 2), dtype=np.float32)
        np.multiply(y, sum_dy_y[:, None], out=t)
        t += sum_dy[:, None]
        t *= np.float32(-1.0 / (self.dims[0] * self.dims[2]))
        t += dy
        np.divide(t, std, out=dx)


# -- Scale and Bias --------------------------------------------------------------------------
def _operand_shape(layer, shape, axis, num_axes):
    """The learned operand's shape: shape[axis:axis + num_axes], num_axes -1 = to the end."""
    axis = canonical_axis(axis, len(shape), layer)
    if num_axes < -1:
        raise layer.error(f"num_axes must be non-negative, or -1 to extend to the end of "
                          f"bottom[0]; got {num_axes}", NetDefinitionError)
    if num_axes >= 0 and axis + num_axes > len(shape):
        raise layer.error(f"axis {axis} with num_axes {num_axes} extends past bottom[0]'s "
                          f"shape {shape}")
    return tuple(shape[axis:]) if num_axes == -1 else tuple(shape[axis:axis + num_axes])


def _broadcast_dims(layer, shape, operand, axis, what):
    """(outer, dim, inner): bottom[0] seen as (outer, dim, inner) with the operand along dim
    (Caffe's Scale/Bias Reshape). A scalar operand is applied at axis 0 whatever `axis` says."""
    axis = 0 if len(operand) == 0 else canonical_axis(axis, len(shape), layer)
    if tuple(shape[axis:axis + len(operand)]) != tuple(operand):
        raise layer.error(f"{what} shape {tuple(operand)} does not match bottom[0] shape "
                          f"{tuple(shape)} from axis {axis}")
    return count(shape, 0, axis), count(operand), count(shape, axis + len(operand))


def _operand_sum(diff, dims):
    """Sum of a top-shaped array over the outer and inner axes: the operand's gradient."""
    return diff.reshape(dims).sum(axis=(0, 2), dtype=np.float32)


def _add_bias(top, bias, dims):
    y = top.data.reshape(dims)
    y += bias.data.reshape(dims[1], 1)


@register_layer("Scale")
class Scale(Layer):
    """y = x * s (+ b), s broadcast along bottom[0] from `axis`, Caffe "Scale" (no V1 type).

    One bottom: s is a learned blob of shape bottom[0].shape[axis:axis + num_axes]
    (num_axes -1: to the end; 0: a scalar). Two bottoms: s is bottom[1], whose shape must
    match bottom[0] from `axis`. With bias_term, a learned bias of s's shape (Caffe's inner
    Bias layer) is the last blob.
    Reads scale_param: axis (1), num_axes (1), filler (constant 1), bias_term (false),
    bias_filler (constant 0). Top: bottom[0]'s shape; in place allowed.
    """

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    axis: int
    bias_term: bool
    scale_is_param: bool

    num_bottom = (1, 2)

    def setup(self, bottom, top):
        p = self.param.scale_param
        self.axis, self.bias_term = p.axis, p.bias_term
        self.scale_is_param = len(bottom) == 1
        if self.scale_is_param and not self.blobs:
            filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(
                type="constant", value=1)
            shape = _operand_shape(self, bottom[0].shape, p.axis, p.num_axes)
            self.blobs.append(self.make_blob(shape, filler, 0))
        if self.bias_term and len(self.blobs) + len(bottom) < 3:
            num_axes = bottom[1].num_axes if len(bottom) > 1 else p.num_axes
            shape = _operand_shape(self, bottom[0].shape, p.axis, num_axes)
            self.blobs.append(self.make_blob(shape, p.bias_filler, len(self.blobs)))
        expected = int(self.scale_is_param) + int(self.bias_term)
        if len(self.blobs) != expected:
            raise self.error(f"has {len(self.blobs)} blobs, expected {expected}")
        self.bottom_copy = self.product = None

    def _scale(self, bottom):
        return self.blobs[0] if self.scale_is_param else bottom[1]

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.dims = _broadcast_dims(self, shape, self._scale(bottom).shape, self.axis, "scale")
        if self.bias_term:
            self.bias_dims = _broadcast_dims(self, shape, self.blobs[-1].shape, self.axis, "bias")
        if top[0] is bottom[0]:
            self.scratch("bottom_copy", shape)
        else:
            top[0].reshape(shape)
        self.scratch("product", shape)

    def forward(self, bottom, top):
        if top[0] is bottom[0]:
            self.bottom_copy[...] = bottom[0].data  # backward needs x for the scale gradient
        s = self._scale(bottom).data.reshape(self.dims[1], 1)
        np.multiply(bottom[0].data.reshape(self.dims), s, out=top[0].data.reshape(self.dims))
        if self.bias_term:
            _add_bias(top[0], self.blobs[-1], self.bias_dims)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        if self.bias_term and self.param_propagate_down[-1]:
            bias = self.blobs[-1]
            bias.diff += _operand_sum(dy, self.bias_dims).reshape(bias.shape)
        scale = self._scale(bottom)
        scale_needs_grad = (self.param_propagate_down[0] if self.scale_is_param
                            else propagate_down[1])
        if scale_needs_grad:
            x = self.bottom_copy if top[0] is bottom[0] else bottom[0].data
            np.multiply(dy, x, out=self.product)
            grad = _operand_sum(self.product, self.dims).reshape(scale.shape)
            if self.scale_is_param:
                scale.diff += grad
            else:
                scale.diff[...] = grad
        if propagate_down[0]:
            s = scale.data.reshape(self.dims[1], 1)
            np.multiply(dy.reshape(self.dims), s, out=bottom[0].diff.reshape(self.dims))


@register_layer("Bias")
class Bias(Layer):
    """y = x + b, b broadcast along bottom[0] from `axis`, Caffe "Bias" (no V1 type).

    One bottom: b is a learned blob of shape bottom[0].shape[axis:axis + num_axes]
    (num_axes -1: to the end; 0: a scalar). Two bottoms: b is bottom[1].
    Reads bias_param: axis (1), num_axes (1), filler (constant 0).
    Top: bottom[0]'s shape; in place allowed.
    """

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    axis: int
    bias_is_param: bool

    num_bottom = (1, 2)

    def setup(self, bottom, top):
        p = self.param.bias_param
        self.axis = p.axis
        self.bias_is_param = len(bottom) == 1
        if self.bias_is_param and not self.blobs:
            shape = _operand_shape(self, bottom[0].shape, p.axis, p.num_axes)
            self.blobs = [self.make_blob(shape, p.filler, 0)]
        expected = int(self.bias_is_param)
        if len(self.blobs) != expected:
            raise self.error(f"has {len(self.blobs)} blobs, expected {expected}")

    def _bias(self, bottom):
        return self.blobs[0] if self.bias_is_param else bottom[1]

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.dims = _broadcast_dims(self, shape, self._bias(bottom).shape, self.axis, "bias")
        if top[0] is not bottom[0]:
            top[0].reshape(shape)

    def forward(self, bottom, top):
        if top[0] is not bottom[0]:
            top[0].data[...] = bottom[0].data
        _add_bias(top[0], self._bias(bottom), self.dims)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0] and top[0] is not bottom[0]:
            bottom[0].diff[...] = top[0].diff
        bias = self._bias(bottom)
        bias_needs_grad = self.param_propagate_down[0] if self.bias_is_param else propagate_down[1]
        if bias_needs_grad:
            grad = _operand_sum(top[0].diff, self.dims).reshape(bias.shape)
            if self.bias_is_param:
                bias.diff += grad
            else:
                bias.diff[...] = grad


# -- MVN -------------------------------------------------------------------------------------
@register_layer("MVN")
class MVN(Layer):
    """Mean-variance normalization, Caffe "MVN" (V1 MVN): y = (x - mean) / (std + eps).

    Statistics per (n, c) plane, or per image (over C, H, W) with across_channels; the
    variance is E[(x - mean)^2] and eps is added after the square root (Caffe's order).
    Reads mvn_param: normalize_variance (true; false: y = x - mean), across_channels (false),
    eps (1e-9). Bottom: up to 4 axes. Top: the bottom's (N, C, H, W) form, missing trailing
    axes as 1 (Caffe reshapes the top to num, channels, height, width); in place allowed.
    """

    def setup(self, bottom, top):
        p = self.param.mvn_param
        self.normalize_variance = p.normalize_variance
        self.across_channels = p.across_channels
        self.eps = np.float32(p.eps)
        self.temp = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if not 1 <= len(shape) <= 4:
            raise self.error(f"bottom must have 1 to 4 axes, got shape {shape}")
        legacy = tuple(shape) + (1,) * (4 - len(shape))
        top[0].reshape(legacy)
        num = legacy[0] if self.across_channels else legacy[0] * legacy[1]
        self.dims = (num, count(legacy) // num if num else 0)
        self.scratch("temp", self.dims)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.dims)
        y = top[0].data.reshape(self.dims)
        mean = x.mean(axis=1, dtype=np.float32)
        np.subtract(x, mean[:, None], out=y)
        if self.normalize_variance:
            np.multiply(y, y, out=self.temp)
            self.std = np.sqrt(self.temp.mean(axis=1, dtype=np.float32))
            self.std += self.eps
            y /= self.std[:, None]

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.dims)
        dx = bottom[0].diff.reshape(self.dims)
        t = self.temp
        if not self.normalize_variance:
            mean_dy = dy.mean(axis=1, dtype=np.float32)
            np.subtract(dy, mean_dy[:, None], out=dx)
            return
        # Caffe's formula (exact for eps = 0): dx = (dy - mean(dy) - mean(dy y) y) / (std + eps).
        # All reads of dy come before dx is written, so in place works.
        y = top[0].data.reshape(self.dims)
        np.multiply(dy, y, out=t)
        sum_dy_y = t.sum(axis=1, dtype=np.float32)
        sum_dy = dy.sum(axis=1, dtype=np.float32)
        np.multiply(y, sum_dy_y[:, None], out=t)
        t += sum_dy[:, None]
        t *= np.float32(-1.0 / self.dims[1])
        t += dy
        np.divide(t, self.std[:, None], out=dx)
