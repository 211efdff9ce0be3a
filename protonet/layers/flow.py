"""FlowNet2's layers (lmb-freiburg/flownet2) as OpenCV runs them: Correlation, FlowWarp and
Accum. Forward only."""
from __future__ import annotations

import math

import numpy as np

from .. import caffe_pb2
from ..errors import NetDefinitionError
from ..kernels.flow import correlation_forward, flow_warp_forward
from ..kernels.pooling import planes
from ..kernels.resize import bilinear_forward
from ..registry import register_layer
from .base import Layer


def _check_4d(layer, blob):
    if blob.num_axes != 4:
        raise layer.error(f"bottom '{blob.name}' must be (N, C, H, W), got shape {blob.shape}")


@register_layer("Correlation")
class Correlation(Layer):
    """FlowNet's correlation: for each output position and each displacement (dy, dx) in
    -max_displacement..max_displacement (step stride_2), the mean over a kernel_size square
    patch and the channels of a * b, b's patch moved by (dy, dx). Both maps are zero-padded
    by pad first.

    Reads correlation_param pad (0), kernel_size (odd), max_displacement, stride_1 (1),
    stride_2 (1); correlation_type MULTIPLY. Bottom: a, b (N, C, H, W). Top: (N, D * D, Ho, Wo),
    D = 2 (max_displacement / stride_2) + 1, Ho = ceil((H + 2 pad - 2 border) / stride_1),
    border = max_displacement + (kernel_size - 1) / 2 (likewise Wo).
    """

    in_place = False   # the top is written while the bottom is still read

    num_bottom = 2

    def setup(self, bottom, top):
        p = self.param.correlation_param
        if not (p.HasField("kernel_size") and p.HasField("max_displacement")):
            raise self.error("correlation_param needs kernel_size and max_displacement",
                             NetDefinitionError)
        if p.kernel_size % 2 == 0 or min(p.stride_1, p.stride_2) < 1:
            raise self.error("kernel_size must be odd and the strides positive",
                             NetDefinitionError)
        if (p.correlation_type != caffe_pb2.CorrelationParameter.MULTIPLY or p.do_abs
                or p.single_direction):
            raise self.error("only correlation_type MULTIPLY in both directions runs (as in "
                             "OpenCV)", NetDefinitionError)
        self.pad, self.kernel = p.pad, p.kernel_size
        self.max_displacement, self.strides = p.max_displacement, (p.stride_1, p.stride_2)

    def reshape(self, bottom, top):
        a, b = bottom
        _check_4d(self, a)
        if b.shape != a.shape:
            raise self.error(f"'{b.name}' {b.shape} must have the shape of '{a.name}' {a.shape}")
        n, c, h, w = a.shape
        border = self.max_displacement + (self.kernel - 1) // 2
        ho = math.ceil((h + 2 * self.pad - 2 * border) / self.strides[0])
        wo = math.ceil((w + 2 * self.pad - 2 * border) / self.strides[0])
        if ho < 1 or wo < 1:
            raise self.error(f"the displacement range does not fit bottom {a.shape}")
        grid = 2 * (self.max_displacement // self.strides[1]) + 1
        top[0].reshape(n, grid * grid, ho, wo)
        # Both maps channels-last, zero-padded (forward fills the inside only).
        self.scratch("padded", (2, n, h + 2 * self.pad, w + 2 * self.pad, c))[...] = 0

    def forward(self, bottom, top):
        p, (h, w) = self.pad, bottom[0].shape[2:]
        for k, blob in enumerate(bottom):
            self.padded[k, :, p:p + h, p:p + w] = blob.data.transpose(0, 2, 3, 1)
        correlation_forward(self.padded[0], self.padded[1], self.kernel, self.max_displacement,
                            *self.strides, top[0].data)


@register_layer("FlowWarp")
class FlowWarp(Layer):
    """FlowNet2's warp: each output pixel (i, j) samples the image bilinearly at
    (i + flow_y, j + flow_x), 0 outside the image.

    Reads flow_warp_param.fill_value (ZERO; NOT_A_NUMBER is not run). Bottom: image
    (N, C, H, W); flow (N, 2, H, W), x displacement first. Top: the image's shape.
    """

    in_place = False   # the top is written while the bottom is still read

    num_bottom = 2

    def setup(self, bottom, top):
        if self.param.flow_warp_param.fill_value != caffe_pb2.FlowWarpParameter.ZERO:
            raise self.error("only fill_value ZERO is supported", NetDefinitionError)

    def reshape(self, bottom, top):
        image, flow = bottom
        _check_4d(self, image)
        n, _, h, w = image.shape
        if flow.shape != (n, 2, h, w):
            raise self.error(f"flow '{flow.name}' {flow.shape} must be ({n}, 2, {h}, {w})")
        top[0].reshape(image.shape)

    def forward(self, bottom, top):
        flow_warp_forward(bottom[0].data, bottom[1].data, top[0].data)


@register_layer("Accum")
class Accum(Layer):
    """FlowNet2's Accum: the bottoms joined along the channels, each first resized
    bilinearly (corners aligned) to the output size.

    The output size is the largest bottom's, or top_height x top_width, or that size rounded
    up to a multiple of size_divisible_by, when larger in both directions; with
    have_reference the last bottom only gives the size. Reads accum_param top_height,
    top_width, size_divisible_by (0), have_reference (false). Bottom: (N, Ci, Hi, Wi), ...
    Top: (N, sum Ci, Ho, Wo).
    """

    in_place = False   # the top is written while the bottom is still read

    num_bottom = (1, None)

    def setup(self, bottom, top):
        p = self.param.accum_param
        self.reference = p.have_reference
        self.fixed = (p.top_height, p.top_width)
        self.divisor = p.size_divisible_by
        if self.reference and len(bottom) < 2:
            raise self.error("have_reference needs a last bottom giving the size",
                             NetDefinitionError)

    def reshape(self, bottom, top):
        for blob in bottom:
            _check_4d(self, blob)
            if blob.shape[0] != bottom[0].shape[0]:
                raise self.error(f"bottom '{blob.name}' {blob.shape} has another batch size "
                                 f"than '{bottom[0].name}' {bottom[0].shape}")
        joined = bottom[:-1] if self.reference else bottom
        if self.reference:
            size = bottom[-1].shape[2:]
        else:
            largest = (max(b.shape[2] for b in joined), max(b.shape[3] for b in joined))
            if self.divisor:
                size = tuple(-(-s // self.divisor) * self.divisor for s in largest)
            else:
                size = self.fixed
            if size[0] <= largest[0] or size[1] <= largest[1]:
                size = largest
        self.joined = len(joined)
        top[0].reshape(bottom[0].shape[0], sum(b.shape[1] for b in joined), *size)

    def forward(self, bottom, top):
        out, start = top[0].data, 0
        for blob in bottom[:self.joined]:
            part = out[:, start:start + blob.shape[1]]
            start += blob.shape[1]
            if blob.shape[2:] == out.shape[2:]:
                part[...] = blob.data
                continue
            resized = np.empty(part.shape, np.float32)
            bilinear_forward(planes(blob.data), planes(resized))
            part[...] = resized
