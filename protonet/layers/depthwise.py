"""ConvolutionDepthwise (yonghenglh6/DepthwiseConvolution, used by ShuffleNet and MobileNet
ports): a convolution with one filter per channel, computed directly."""
from __future__ import annotations

import numpy as np

from ..errors import NetDefinitionError
from ..kernels.conv import conv_output_size
from ..kernels.depthwise import (depthwise_backward_data, depthwise_backward_weight,
                                 depthwise_forward)
from ..registry import register_layer
from .base import Layer
from .conv import _pair


@register_layer("ConvolutionDepthwise")
class ConvolutionDepthwise(Layer):
    """y[n, c] = w[c] * x[n, c] + b[c]: Convolution with group = channels = num_output, as
    OpenCV reads it, without im2col.

    Reads convolution_param num_output (the channel count), bias_term (true), kernel, pad,
    stride, dilation as Convolution, weight_filler, bias_filler.
    Bottom: (N, C, H, W). Top: (N, C, Ho, Wo), Ho as Convolution's.
    Blobs: weights (C, 1, kernel_h, kernel_w), bias (C,).
    """

    in_place = False   # the top is written while the bottom is still read
    takes_epilogue = True

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    bias_term: bool

    def setup(self, bottom, top):
        p = self.param.convolution_param
        if bottom[0].num_axes != 4:
            raise self.error(f"bottom must be (N, C, H, W), got shape {bottom[0].shape}")
        self.kh, self.kw = _pair(self, p, "kernel", 0)
        self.sh, self.sw = _pair(self, p, "stride", 1)
        self.ph, self.pw = _pair(self, p, "pad", 0)
        self.dh, self.dw = _pair(self, p, "dilation", 1)
        if min(self.kh, self.kw, self.sh, self.sw, self.dh, self.dw) < 1:
            raise self.error("kernel, stride and dilation must be positive", NetDefinitionError)
        channels = bottom[0].shape[1]
        if p.num_output != channels:
            raise self.error(f"num_output ({p.num_output}) must equal the bottom's channels "
                             f"({channels}): one filter per channel", NetDefinitionError)
        self.bias_term = p.bias_term
        shapes = [(channels, 1, self.kh, self.kw), (channels,)][:1 + self.bias_term]
        self.learnable_blobs(shapes, [p.weight_filler, p.bias_filler])

    def reshape(self, bottom, top):
        n, c, h, w = bottom[0].shape
        if bottom[0].num_axes != 4 or c != self.blobs[0].shape[0]:
            raise self.error(f"bottom shape {bottom[0].shape} does not have the "
                             f"{self.blobs[0].shape[0]} channels the filters were made for")
        ho = conv_output_size(h, self.kh, self.ph, self.sh, self.dh)
        wo = conv_output_size(w, self.kw, self.pw, self.sw, self.dw)
        if ho < 1 or wo < 1:
            raise self.error(f"kernel larger than the padded input {bottom[0].shape}")
        top[0].reshape(n, c, ho, wo)

    def geometry(self):
        return (self.ph, self.pw, self.sh, self.sw, self.dh, self.dw)

    def forward(self, bottom, top):
        weight = self.blobs[0].data.reshape(-1, self.kh, self.kw)
        depthwise_forward(bottom[0].data, weight, *self.geometry(), top[0].data,
                          self.output_epilogue())

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=(0, 2, 3), dtype=np.float32)
        if self.param_propagate_down[0]:
            depthwise_backward_weight(bottom[0].data, dy, *self.geometry(),
                                      self.blobs[0].diff.reshape(-1, self.kh, self.kw))
        if propagate_down[0]:
            depthwise_backward_data(dy, self.blobs[0].data.reshape(-1, self.kh, self.kw),
                                    *self.geometry(), bottom[0].diff)
