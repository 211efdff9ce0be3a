"""Convolution and Deconvolution over one base: Caffe's BaseConvolutionLayer geometry, im2col,
and one BLAS GEMM per group over the whole batch."""
from __future__ import annotations

import numpy as np

from ..errors import NetDefinitionError
from ..kernels.conv import (channels_first, channels_first_add_bias, channels_last, col2im,
                            conv_output_size, im2col)
from ..registry import register_layer
from .base import Layer, canonical_axis


def _pair(layer, p, name: str, default: int) -> tuple[int, int]:
    """Caffe's reading of kernel/stride/pad/dilation: `name_h`/`name_w`, or the repeated field
    with 0 values (default), 1 value (both axes) or 2 values (h, w)."""
    h_field, w_field = f"{name}_h", f"{name}_w"
    repeated = {"kernel": "kernel_size"}.get(name, name)
    values = list(getattr(p, repeated))
    if h_field in p.DESCRIPTOR.fields_by_name and (p.HasField(h_field) or p.HasField(w_field)):
        if values:
            raise layer.error(f"give either {repeated} or {h_field}/{w_field}, not both",
                              NetDefinitionError)
        if name == "kernel" and not (p.HasField(h_field) and p.HasField(w_field)):
            raise layer.error("kernel_h and kernel_w must be given together", NetDefinitionError)
        return getattr(p, h_field), getattr(p, w_field)
    if not values:
        if name == "kernel":
            raise layer.error("kernel_size (or kernel_h and kernel_w) is required",
                              NetDefinitionError)
        return default, default
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise layer.error(f"{repeated} has {len(values)} values; protonet runs 2 spatial axes",
                      NetDefinitionError)


class _BaseConvolution(Layer):
    """Shared set-up of Convolution and Deconvolution (fields of convolution_param).

    Reads num_output, bias_term (true), kernel_size or kernel_h/kernel_w, pad (0), stride (1),
    dilation (1) and their _h/_w forms, group (1), axis (1), weight_filler, bias_filler.
    """

    def setup(self, bottom, top):
        p = self.param.convolution_param
        if canonical_axis(p.axis, bottom[0].num_axes, self) != 1 or bottom[0].num_axes != 4:
            raise self.error(f"protonet convolves (N, C, H, W) blobs along axis 1; bottom has "
                             f"shape {bottom[0].shape} and axis {p.axis}")
        self.kh, self.kw = _pair(self, p, "kernel", 0)
        self.sh, self.sw = _pair(self, p, "stride", 1)
        self.ph, self.pw = _pair(self, p, "pad", 0)
        self.dh, self.dw = _pair(self, p, "dilation", 1)
        if min(self.kh, self.kw, self.sh, self.sw, self.dh, self.dw) < 1:
            raise self.error("kernel, stride and dilation must be positive", NetDefinitionError)
        self.num_output = p.num_output
        self.group = p.group
        self.bias_term = p.bias_term
        self.channels = bottom[0].shape[1]
        if self.num_output < 1:
            raise self.error("num_output must be positive", NetDefinitionError)
        if self.channels % self.group or self.num_output % self.group:
            raise self.error(f"channels ({self.channels}) and num_output ({self.num_output}) "
                             f"must both be multiples of group ({self.group})")
        shapes = [self.weight_shape()] + ([(self.num_output,)] if self.bias_term else [])
        if self.blobs:
            if len(self.blobs) != len(shapes):
                raise self.error(f"has {len(self.blobs)} blobs, expected {len(shapes)}")
            for i, shape in enumerate(shapes):
                self.check_blob_shape(i, shape)
        else:
            self.blobs = [self.make_blob(shapes[0], p.weight_filler, 0)]
            if self.bias_term:
                self.blobs.append(self.make_blob(shapes[1], p.bias_filler, 1))

    def check_channels(self, bottom):
        if bottom[0].num_axes != 4 or bottom[0].shape[1] != self.channels:
            raise self.error(f"bottom shape {bottom[0].shape} does not have the {self.channels} "
                             "channels the weights were made for")

    def geometry(self):
        return (self.kh, self.kw, self.ph, self.pw, self.sh, self.sw, self.dh, self.dw)


@register_layer("Convolution")
class Convolution(_BaseConvolution):
    """y = W * x + b, Caffe "Convolution" (V1 CONVOLUTION).

    Bottom: (N, C, H, W). Top: (N, num_output, Ho, Wo) with
    Ho = floor((H + 2 pad_h - dilation_h (kernel_h - 1) - 1) / stride_h) + 1 (likewise Wo).
    Blobs: weights (num_output, C / group, kernel_h, kernel_w), bias (num_output,).
    """

    def weight_shape(self):
        return (self.num_output, self.channels // self.group, self.kh, self.kw)

    def reshape(self, bottom, top):
        self.check_channels(bottom)
        n, c, h, w = bottom[0].shape
        self.ho = conv_output_size(h, self.kh, self.ph, self.sh, self.dh)
        self.wo = conv_output_size(w, self.kw, self.pw, self.sw, self.dw)
        if self.ho < 1 or self.wo < 1:
            raise self.error(f"kernel larger than the padded input {bottom[0].shape}")
        top[0].reshape(n, self.num_output, self.ho, self.wo)
        k = c * self.kh * self.kw
        p = self.ho * self.wo
        if getattr(self, "_col_shape", None) != (k, n, p):
            self._col_shape = (k, n, p)
            self.col = np.empty((k, n, p), np.float32)
            self.col_diff = np.empty((k, n, p), np.float32)
            self.y2 = np.empty((self.num_output, n, p), np.float32)
            self.w_grad = np.empty((self.num_output // self.group, k // self.group), np.float32)

    def forward(self, bottom, top):
        n = bottom[0].shape[0]
        im2col(bottom[0].data, *self.geometry(), self.ho, self.wo, self.col)
        weight = self.blobs[0].data.reshape(self.group, self.num_output // self.group, -1)
        k_g = weight.shape[2]
        col = self.col.reshape(self.group, k_g, -1)
        y2 = self.y2.reshape(self.group, self.num_output // self.group, -1)
        for g in range(self.group):
            np.matmul(weight[g], col[g], out=y2[g])
        out = top[0].data.reshape(n, self.num_output, -1)
        if self.bias_term:
            channels_first_add_bias(self.y2, self.blobs[1].data, out)
        else:
            channels_first(self.y2, out)

    def backward(self, top, propagate_down, bottom):
        n = bottom[0].shape[0]
        top_diff = top[0].diff.reshape(n, self.num_output, -1)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += top_diff.sum(axis=(0, 2), dtype=np.float32)
        if not (self.param_propagate_down[0] or propagate_down[0]):
            return
        channels_last(top_diff, self.y2)
        mg = self.num_output // self.group
        dy = self.y2.reshape(self.group, mg, -1)
        weight = self.blobs[0].data.reshape(self.group, mg, -1)
        k_g = weight.shape[2]
        if self.param_propagate_down[0]:
            w_diff = self.blobs[0].diff.reshape(self.group, mg, k_g)
            col = self.col.reshape(self.group, k_g, -1)
            for g in range(self.group):
                np.matmul(dy[g], col[g].T, out=self.w_grad)
                w_diff[g] += self.w_grad
        if propagate_down[0]:
            col_diff = self.col_diff.reshape(self.group, k_g, -1)
            for g in range(self.group):
                np.matmul(weight[g].T, dy[g], out=col_diff[g])
            col2im(self.col_diff, *self.geometry(), self.ho, self.wo, bottom[0].diff)


@register_layer("Deconvolution")
class Deconvolution(_BaseConvolution):
    """The transpose of Convolution (its backward as forward), Caffe "Deconvolution"
    (V1 DECONVOLUTION). Fields as Convolution's.

    Bottom: (N, C, H, W). Top: (N, num_output, Ho, Wo) with
    Ho = stride_h (H - 1) + dilation_h (kernel_h - 1) + 1 - 2 pad_h (likewise Wo).
    Blobs: weights (C, num_output / group, kernel_h, kernel_w), bias (num_output,).
    """

    def weight_shape(self):
        return (self.channels, self.num_output // self.group, self.kh, self.kw)

    def reshape(self, bottom, top):
        self.check_channels(bottom)
        n, c, h, w = bottom[0].shape
        self.h, self.w = h, w
        self.ho = self.sh * (h - 1) + self.dh * (self.kh - 1) + 1 - 2 * self.ph
        self.wo = self.sw * (w - 1) + self.dw * (self.kw - 1) + 1 - 2 * self.pw
        if self.ho < 1 or self.wo < 1:
            raise self.error(f"padding larger than the output for bottom {bottom[0].shape}")
        top[0].reshape(n, self.num_output, self.ho, self.wo)
        k = self.num_output * self.kh * self.kw
        if getattr(self, "_col_shape", None) != (k, n, h * w):
            self._col_shape = (k, n, h * w)
            self.col = np.empty((k, n, h * w), np.float32)
            self.x2 = np.empty((c, n, h * w), np.float32)
            self.w_grad = np.empty((c // self.group, k // self.group), np.float32)

    def forward(self, bottom, top):
        n, c = bottom[0].shape[:2]
        channels_last(bottom[0].data.reshape(n, c, -1), self.x2)
        cg = c // self.group
        weight = self.blobs[0].data.reshape(self.group, cg, -1)
        x2 = self.x2.reshape(self.group, cg, -1)
        col = self.col.reshape(self.group, weight.shape[2], -1)
        for g in range(self.group):
            np.matmul(weight[g].T, x2[g], out=col[g])
        # Convolution's geometry with input and output swapped: scatter the columns.
        col2im(self.col, *self.geometry(), self.h, self.w, top[0].data)
        if self.bias_term:
            top[0].data += self.blobs[1].data[None, :, None, None]

    def backward(self, top, propagate_down, bottom):
        n, c = bottom[0].shape[:2]
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += top[0].diff.sum(axis=(0, 2, 3), dtype=np.float32)
        if not (self.param_propagate_down[0] or propagate_down[0]):
            return
        im2col(top[0].diff, *self.geometry(), self.h, self.w, self.col)
        cg = c // self.group
        weight = self.blobs[0].data.reshape(self.group, cg, -1)
        col = self.col.reshape(self.group, weight.shape[2], -1)
        if self.param_propagate_down[0]:
            channels_last(bottom[0].data.reshape(n, c, -1), self.x2)
            x2 = self.x2.reshape(self.group, cg, -1)
            w_diff = self.blobs[0].diff.reshape(self.group, cg, -1)
            for g in range(self.group):
                np.matmul(x2[g], col[g].T, out=self.w_grad)
                w_diff[g] += self.w_grad
        if propagate_down[0]:
            dx2 = self.x2.reshape(self.group, cg, -1)
            for g in range(self.group):
                np.matmul(weight[g], col[g], out=dx2[g])
            channels_first(self.x2, bottom[0].diff.reshape(n, c, -1))
