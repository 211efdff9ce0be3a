"""Layers from Caffe forks that change the spatial size: SegNet's Upsample (max-unpooling by
the indices a Pooling layer's second top saved), PSPNet's Interp (bilinear, corners aligned)
and FlowNet2's Resample (nearest)."""
from __future__ import annotations

import numpy as np

from .. import caffe_pb2
from ..errors import NetDefinitionError
from ..kernels.pooling import planes
from ..kernels.resize import (bilinear_backward, bilinear_forward, nearest_forward,
                              unpool_backward, unpool_forward)
from ..registry import register_layer
from .base import Layer


def _check_4d(layer, blob):
    if blob.num_axes != 4:
        raise layer.error(f"bottom '{blob.name}' must be (N, C, H, W), got shape {blob.shape}")


@register_layer("Upsample")
class Upsample(Layer):
    """SegNet's max-unpooling: each input value goes to the position its max-pooling window
    took it from (the mask, h * W + w), every other output is 0.

    Reads upsample_param: upsample_h and upsample_w (the output size), else the deprecated
    scale (2) or scale_h/scale_w with pad_out_h/pad_out_w: Ho = H * scale_h - pad_out_h.
    Bottom: x (N, C, H, W); the mask of x's shape (a MAX Pooling's second top).
    Top: (N, C, Ho, Wo). Gradient to x only.
    """

    in_place = False   # the top is written while the bottom is still read

    num_bottom = 2

    def setup(self, bottom, top):
        p = self.param.upsample_param
        if p.HasField("upsample_h") != p.HasField("upsample_w"):
            raise self.error("give upsample_h and upsample_w together", NetDefinitionError)
        self.size = (p.upsample_h, p.upsample_w) if p.HasField("upsample_h") else None
        if p.HasField("scale_h") != p.HasField("scale_w") or (
                p.HasField("scale_h") and p.HasField("scale")):
            raise self.error("give scale, or scale_h and scale_w", NetDefinitionError)
        self.scale = (p.scale_h, p.scale_w) if p.HasField("scale_h") else (p.scale, p.scale)
        self.pad_out = (int(p.pad_out_h), int(p.pad_out_w))
        if self.size is None and min(self.scale) < 2:
            raise self.error("the upsampling scale must be at least 2", NetDefinitionError)

    def reshape(self, bottom, top):
        x, mask = bottom
        _check_4d(self, x)
        if mask.shape != x.shape:
            raise self.error(f"the mask '{mask.name}' {mask.shape} must have the shape of "
                             f"'{x.name}' {x.shape}")
        n, c, h, w = x.shape
        ho, wo = self.size or (h * self.scale[0] - self.pad_out[0],
                               w * self.scale[1] - self.pad_out[1])
        top[0].reshape(n, c, ho, wo)

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def forward(self, bottom, top):
        x, mask = bottom
        index = planes(mask.data)
        out = top[0].shape[2] * top[0].shape[3]
        if index.size and (index.min() < 0 or index.max() >= out):
            raise self.error(f"mask index {int(index.max())} is outside the {top[0].shape[2]} x "
                             f"{top[0].shape[3]} output: the scale does not match the pooling "
                             "that made the mask")
        unpool_forward(planes(x.data), index, planes(top[0].data))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            unpool_backward(planes(top[0].diff), planes(bottom[1].data), planes(bottom[0].diff))


@register_layer("Interp")
class Interp(Layer):
    """PSPNet's bilinear resize with the corners aligned (hszhao/PSPNet, DeepLab v2).

    The input is first cropped by -pad_beg / -pad_end (both <= 0) on each spatial side, to
    Hi x Wi. Reads interp_param: shrink_factor then zoom_factor, Ho = (Hi - 1) / shrink + 1
    and Ho = Hi + (Hi - 1) (zoom - 1); or height and width; or the size of a second bottom.
    Bottom: (N, C, H, W) [, a blob of the wanted size]. Top: (N, C, Ho, Wo).
    """

    in_place = False   # the top is written while the bottom is still read

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    pad: tuple

    num_bottom = (1, 2)

    def setup(self, bottom, top):
        p = self.param.interp_param
        self.pad = (p.pad_beg, p.pad_end)
        if p.pad_beg > 0 or p.pad_end > 0:
            raise self.error("pad_beg and pad_end must be 0 or negative (a crop)",
                             NetDefinitionError)
        self.shrink = p.shrink_factor if p.HasField("shrink_factor") else None
        self.zoom = p.zoom_factor if p.HasField("zoom_factor") else None
        self.fixed = (p.height, p.width) if p.HasField("height") or p.HasField("width") else None
        specs = ((self.shrink is not None or self.zoom is not None) + (self.fixed is not None)
                 + (len(bottom) == 2))
        if specs != 1:
            raise self.error("give one output size: shrink_factor and/or zoom_factor, height "
                             "and width, or a second bottom", NetDefinitionError)
        if min(self.shrink or 1, self.zoom or 1) < 1 or (self.fixed and min(self.fixed) < 1):
            raise self.error("factors and sizes must be positive", NetDefinitionError)

    def reshape(self, bottom, top):
        _check_4d(self, bottom[0])
        n, c, h, w = bottom[0].shape
        hi, wi = h + self.pad[0] + self.pad[1], w + self.pad[0] + self.pad[1]
        if hi < 1 or wi < 1:
            raise self.error(f"the crop leaves nothing of bottom {bottom[0].shape}")
        if self.fixed:
            ho, wo = self.fixed
        elif len(bottom) == 2:
            ho, wo = bottom[1].shape[-2:]
        else:
            ho, wo = hi, wi
            if self.shrink:
                ho, wo = (ho - 1) // self.shrink + 1, (wo - 1) // self.shrink + 1
            if self.zoom:
                ho, wo = ho + (ho - 1) * (self.zoom - 1), wo + (wo - 1) * (self.zoom - 1)
        top[0].reshape(n, c, ho, wo)
        b = -self.pad[0]
        self.window = (slice(b, b + hi), slice(b, b + wi))

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def forward(self, bottom, top):
        x = bottom[0].data[:, :, self.window[0], self.window[1]]
        bilinear_forward(planes(x), planes(top[0].data))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        if self.pad == (0, 0):
            bilinear_backward(planes(top[0].diff), planes(dx))
            return
        window = dx[:, :, self.window[0], self.window[1]]
        grad = np.empty(window.shape, np.float32)
        bilinear_backward(planes(top[0].diff), planes(grad))
        dx[...] = 0
        window[...] = grad


@register_layer("Resample")
class Resample(Layer):
    """FlowNet2's resize (lmb-freiburg/flownet2), nearest neighbour as OpenCV runs it:
    y[i, j] = x[floor(i H / Ho), floor(j W / Wo)].

    Reads resample_param: type (only NEAREST runs), width and height (the output size), else
    factor: Ho = H * factor; or the size of a second bottom. Bottom: (N, C, H, W) [, a blob
    of the wanted size]. Top: (N, C, Ho, Wo). Forward only.
    """

    in_place = False   # the top is written while the bottom is still read

    num_bottom = (1, 2)

    def setup(self, bottom, top):
        p = self.param.resample_param
        if p.type != caffe_pb2.ResampleParameter.NEAREST:
            name = caffe_pb2.ResampleParameter.ResampleType.Name(p.type)
            raise self.error(f"resample type {name} is not supported (NEAREST is)",
                             NetDefinitionError)
        self.size = (p.height, p.width) if p.HasField("height") or p.HasField("width") else None
        self.factor = p.factor
        if (self.size and min(self.size) < 1) or self.factor <= 0:
            raise self.error("the output size and factor must be positive", NetDefinitionError)

    def reshape(self, bottom, top):
        _check_4d(self, bottom[0])
        n, c, h, w = bottom[0].shape
        if len(bottom) == 2:
            ho, wo = bottom[1].shape[-2:]
        else:
            ho, wo = self.size or (int(h * self.factor), int(w * self.factor))
        top[0].reshape(n, c, ho, wo)

    def forward(self, bottom, top):
        nearest_forward(planes(bottom[0].data), planes(top[0].data))
