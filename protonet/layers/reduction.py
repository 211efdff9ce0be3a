"""Layers that reduce a blob: ArgMax (top-k indices or values) and Reduction (sum, mean,
sum of absolute values or squares over trailing axes)."""
from __future__ import annotations

import numpy as np

from .. import caffe_pb2
from ..errors import NetDefinitionError
from ..registry import register_layer
from .base import Layer, canonical_axis, count

RP = caffe_pb2.ReductionParameter


@register_layer("ArgMax")
class ArgMax(Layer):
    """The top_k largest values' indices (and optionally the values), Caffe "ArgMax" (V1 ARGMAX).
    No backward (Caffe's is NOT_IMPLEMENTED).

    Reads argmax_param: out_max_val (false), top_k (1), axis (none).
    Without axis, each sample's features are searched as one vector: top (N, 1, top_k), or
    (N, 2, top_k) with out_max_val (indices in channel 0, values in channel 1), padded with
    trailing 1s to the bottom's number of axes as in Caffe (a 4-d bottom gives (N, 1, k, 1)).
    With axis: the bottom's shape with that axis replaced by top_k, holding the indices, or only
    the values with out_max_val. Equal values rank the larger index first (Caffe's sort of
    (value, index) pairs).
    """

    def setup(self, bottom, top):
        p = self.param.argmax_param
        self.out_max_val, self.top_k = p.out_max_val, p.top_k
        self.axis_param = p.axis if p.HasField("axis") else None
        if self.top_k < 1:
            raise self.error("argmax_param.top_k must be at least 1", NetDefinitionError)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if self.axis_param is not None:
            axis = canonical_axis(self.axis_param, len(shape), self)
            self.view = (count(shape, 0, axis), shape[axis], count(shape, axis + 1))
            searched = f"axis {axis} of bottom '{bottom[0].name}' {shape}"
            top_shape = shape[:axis] + (self.top_k,) + shape[axis + 1:]
        else:
            if not shape:
                raise self.error(f"bottom '{bottom[0].name}' has no axes; ArgMax needs (N, ...)")
            self.view = (shape[0], count(shape, 1), 1)
            searched = f"the per-sample values of bottom '{bottom[0].name}' {shape}"
            top_shape = [1] * max(len(shape), 3)
            top_shape[0], top_shape[1], top_shape[2] = shape[0], 1 + self.out_max_val, self.top_k
        if self.top_k > self.view[1]:
            raise self.error(f"top_k {self.top_k} is more than the {self.view[1]} values of "
                             f"{searched}")
        top[0].reshape(top_shape)

    def forward(self, bottom, top):
        outer, dim, inner = self.view
        k = self.top_k
        x = bottom[0].data.reshape(self.view)
        # A stable sort of the reversed axis ranks equal values by larger index first, which
        # is the order of Caffe's std::greater on (value, index) pairs.
        index = dim - 1 - np.argsort(-x[:, ::-1, :], axis=1, kind="stable")[:, :k, :]
        if self.axis_param is not None:
            out = top[0].data.reshape(outer, k, inner)
            out[...] = np.take_along_axis(x, index, axis=1) if self.out_max_val else index
        else:
            out = top[0].data.reshape(outer, 1 + self.out_max_val, k)
            out[:, 0, :] = index[:, :, 0]
            if self.out_max_val:
                out[:, 1, :] = np.take_along_axis(x, index, axis=1)[:, :, 0]


@register_layer("Reduction")
class Reduction(Layer):
    """y = coeff * op(x) over all axes from reduction_param.axis on, Caffe "Reduction".

    Reads reduction_param: operation (SUM; ASUM = sum |x|, SUMSQ = sum x^2, MEAN), axis (0),
    coeff (1). Bottom: (d0, ..., dn). Top: (d0, ..., d_{axis-1}); a scalar when axis is 0.
    """

    def setup(self, bottom, top):
        p = self.param.reduction_param
        self.operation, self.axis_param, self.coeff_param = p.operation, p.axis, p.coeff

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        axis = canonical_axis(self.axis_param, len(shape), self)
        top[0].reshape(shape[:axis])
        self.view = (count(shape, 0, axis), count(shape, axis))
        self.coeff = self.coeff_param / (self.view[1] if self.operation == RP.MEAN else 1)
        if self.operation in (RP.ASUM, RP.SUMSQ):
            self.scratch("work", self.view)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view)
        if self.operation == RP.ASUM:
            x = np.abs(x, out=self.work)
        elif self.operation == RP.SUMSQ:
            x = np.square(x, out=self.work)
        top[0].data.reshape(-1)[...] = x.sum(axis=1, dtype=np.float64) * self.coeff

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        top_coeff = (top[0].diff.reshape(-1) * np.float32(self.coeff))[:, None]
        diff = bottom[0].diff.reshape(self.view)
        if self.operation == RP.ASUM:
            np.sign(bottom[0].data.reshape(self.view), out=diff)
            diff *= top_coeff
        elif self.operation == RP.SUMSQ:
            np.multiply(bottom[0].data.reshape(self.view), 2 * top_coeff, out=diff)
        else:
            diff[...] = top_coeff
