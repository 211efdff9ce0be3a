"""Channel rearrangements and per-channel mixes from Caffe forks: ShuffleNet's ShuffleChannel
and SENet's Axpy."""
from __future__ import annotations

import numpy as np

from ..errors import NetDefinitionError
from ..registry import register_layer
from .base import Layer


@register_layer("ShuffleChannel")
class ShuffleChannel(Layer):
    """ShuffleNet's channel shuffle (farmingyard/ShuffleNet): the C channels, seen as a
    (group, C / group) grid, are read out column by column, so channel g * (C / group) + k
    goes to k * group + g.

    Reads shuffle_channel_param.group (1). Bottom: (N, C, ...) with C a multiple of group.
    Top: the bottom's shape.
    """

    in_place = False   # the top is written while the bottom is still read

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    group: int

    def setup(self, bottom, top):
        self.group = self.param.shuffle_channel_param.group
        if self.group < 1:
            raise self.error("shuffle_channel_param.group must be at least 1",
                             NetDefinitionError)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if bottom[0].num_axes < 2 or shape[1] % self.group:
            raise self.error(f"channels of bottom {shape} must be a multiple of group "
                             f"{self.group}")
        top[0].reshape(shape)
        n, c = shape[0], shape[1]
        # (N, group, C / group, rest) <-> (N, C / group, group, rest)
        self.grid = (n, self.group, c // self.group, -1)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.grid)
        top[0].data.reshape(self.grid[0], self.grid[2], self.grid[1], -1)[...] = \
            x.transpose(0, 2, 1, 3)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy = top[0].diff.reshape(self.grid[0], self.grid[2], self.grid[1], -1)
            bottom[0].diff.reshape(self.grid)[...] = dy.transpose(0, 2, 1, 3)


@register_layer("Axpy")
class Axpy(Layer):
    """SENet's y = a * x + y (hujie-frank/SENet): a per-channel scale a times the feature map
    x, plus the residual y.

    Bottom: a (N, C) or (N, C, 1, 1); x (N, C, H, W); y of x's shape. Top: x's shape.
    As SENet's axpy_layer.cpp: the scale multiplies the second bottom (SE-ResNet's residual
    branch) and the third is added. OpenCV 4.14 reads the layer as a * bottom[2] + bottom[1]
    instead, so its SE-ResNet outputs differ from the fork's and from protonet's.
    """

    in_place = False   # the top is written while the bottom is still read

    num_bottom = 3

    def reshape(self, bottom, top):
        a, x, y = bottom
        n, c = x.shape[:2]
        if a.count != n * c or a.shape[:2] != (n, c):
            raise self.error(f"the scale '{a.name}' {a.shape} must hold one value per sample "
                             f"and channel of '{x.name}' {x.shape}")
        if y.shape != x.shape:
            raise self.error(f"'{y.name}' {y.shape} must have the shape of '{x.name}' {x.shape}")
        top[0].reshape(x.shape)
        self.view = (n, c, -1)

    def forward(self, bottom, top):
        a, x, y = bottom
        scale = a.data.reshape(self.view[0], self.view[1], 1)
        out = top[0].data.reshape(self.view)
        # y may be top itself (in place): read it before writing.
        np.add(scale * x.data.reshape(self.view), y.data.reshape(self.view), out=out)

    def backward(self, top, propagate_down, bottom):
        a, x, y = bottom
        dtop = top[0].diff.reshape(self.view)
        if propagate_down[0]:
            a.diff.reshape(self.view[:2])[...] = np.einsum(
                "ncp,ncp->nc", dtop, x.data.reshape(self.view))
        if propagate_down[1]:
            np.multiply(dtop, a.data.reshape(self.view[0], self.view[1], 1),
                        out=x.diff.reshape(self.view))
        if propagate_down[2] and y.diff is not top[0].diff:
            y.diff[...] = top[0].diff
