"""Convolution and Deconvolution over one base: Caffe's BaseConvolutionLayer geometry, im2col,
and BLAS GEMMs per group, over the whole batch at once or (few inputs per output) image by
image; stride-1 3x3 Convolutions with enough channels run their forward by Winograd
F(2x2, 3x3) (kernels/winograd.py). kernels/conv_plan.py decides which."""
from __future__ import annotations

import math

import numpy as np

from ..blob import Blob
from ..errors import NetDefinitionError
from ..kernels import blas, threads, winograd
from ..kernels.conv import (NO_TILES, ShiftTiles, channels_first, channels_last, col2im,
                            conv_output_size, im2col, per_image_backward, per_image_forward,
                            per_image_weight_grads)
from ..kernels.conv_plan import TUNING, plan_convolution
from ..kernels.depthwise import (depthwise_backward_data, depthwise_backward_weight,
                                 depthwise_forward)
from ..kernels.digest import fingerprint
from ..kernels.direct_conv import DirectConvolution
from ..kernels.epilogue import (NONE, channel_epilogue, channel_planes,
                                 channels_first_epilogue)
from ..registry import register_layer
from ..scratch import shared_buffer, shared_contents
from .base import TEST, Layer, canonical_axis

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

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    group: int
    bias_term: bool

    # The thresholds the layer plans with; a test or experiment may give one layer its own.
    tuning = TUNING
    takes_epilogue = True

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
        if self.num_output < 1 or self.group < 1:
            raise self.error(f"num_output and group must be positive, got {self.num_output} "
                             f"and {self.group}", NetDefinitionError)
        if self.channels < 1:   # Caffe's fillers CHECK a non-empty weight blob
            raise self.error(f"bottom {bottom[0].shape} has no channels")
        if self.channels % self.group or self.num_output % self.group:
            raise self.error(f"channels ({self.channels}) and num_output ({self.num_output}) "
                             f"must both be multiples of group ({self.group})")
        self.learnable_blobs([self.weight_shape(), (self.num_output,)][:1 + self.bias_term],
                             [p.weight_filler, p.bias_filler])

    def check_channels(self, bottom):
        if bottom[0].num_axes != 4 or bottom[0].shape[1] != self.channels:
            raise self.error(f"bottom shape {bottom[0].shape} does not have the {self.channels} "
                             "channels the weights were made for")

    def geometry(self):
        return (self.kh, self.kw, self.ph, self.pw, self.sh, self.sw, self.dh, self.dw)

    def make_plan(self, n: int, k: int, pixels: int, **shape) -> None:
        """self.plan for a batch of n images (kernels/conv_plan.py), from self.tuning."""
        self.plan = plan_convolution(n, k, pixels, self.group, threads.compute_threads(),
                                     self.tuning, **shape)


def _view(buffer, shape):
    """The leading part of a flat buffer as a contiguous array of `shape`."""
    return buffer[:math.prod(shape)].reshape(shape)


# Floats added to each row of a column matrix. Rows a power of two apart (LeNet's conv2: 64
# images x 64 pixels) fall into the same few cache sets, so an image's columns leave the cache
# before its GEMM reads them. LeNet's conv2 alone, batch 64, forward + backward: 6.23 against
# 6.96 ms at 2 threads, 9.44 against 11.46 ms at 1 thread.
COL_ROW_PAD = 16


def _column_matrix(layer, rows: int, images: int, pixels: int):
    """The (rows, L) column matrix in the layer's growing work array `col`, for `images`
    images of `pixels` outputs each, L = images * pixels + COL_ROW_PAD (see kernels/conv.py)."""
    shape = (rows, images * pixels + COL_ROW_PAD)
    return _view(layer.scratch("col", shape, grow=True), shape)


class _SingleConvolution(_BaseConvolution):
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
        k, p = c * self.kh * self.kw, self.ho * self.wo
        self.make_plan(n, k, p, geometry=self.geometry(), outputs=self.num_output,
                       out_shape=(self.ho, self.wo), forward_only=self.phase == TEST)
        if self.plan.depthwise:   # no column matrix
            self.shares_scratch = False
            return
        if self.plan.direct:
            shapes = (self.geometry(), (c, h, w), (self.num_output, self.ho, self.wo))
            # The Net reshapes before every forward: build the offsets once per shape
            # (about 0.1 ms, as long as CIFAR-10's conv3 at batch 1).
            if getattr(self, "direct", None) is None or self.direct.shapes != shapes:
                self.direct = DirectConvolution(*shapes)
            if self.plan.direct_data_grad:   # no column matrix at all
                self.shares_scratch = False
                return
        if self.plan.tiles:
            shapes = (self.geometry(), (c, h, w), (self.num_output, self.ho, self.wo))
            if getattr(self, "shift_tiles", None) is None or self.shift_tiles.shapes != shapes:
                self.shift_tiles = ShiftTiles(*shapes)
        self.col_shape = (k, self.plan.chunk * p + COL_ROW_PAD)
        self.y2_size = self.num_output * self.plan.chunk * p
        # A TEST net's convolutions share one column buffer (protonet/scratch.py).
        self.shares_scratch = self.phase == TEST
        if self.plan.winograd:
            # Winograd's V and M live where im2col's columns and y2 do (the backward builds
            # its columns again).
            tiles = max((e - s) * rows for s, e, _, rows in self.plan.winograd_blocks)
            tiles *= winograd.tile_counts(self.ho, self.wo)[1]
            self.winograd_sizes = winograd.scratch_sizes(tiles, c, self.num_output)
            if not self.shares_scratch:
                self.scratch("col", (self.winograd_sizes[0],), grow=True)
                self.scratch("y2", (self.winograd_sizes[1],), grow=True)
        if not self.shares_scratch:
            self.col_matrix = _column_matrix(self, k, self.plan.chunk, p)
            self.scratch("y2", (self.y2_size,), grow=True)

    def _buffers(self):
        """(column matrix, y2 buffer) for this pass: the layer's own, or in a TEST net the
        shared ones."""
        if not self.shares_scratch:
            return self.col_matrix, self.y2
        what = f"layer '{self.name}' ({self.type}): shared work array"
        return (_view(shared_buffer("conv.columns", math.prod(self.col_shape), what),
                      self.col_shape),
                shared_buffer("conv.y2", self.y2_size, what))

    def _gradient_buffers(self, k_g, m_g):
        """The weight-gradient scratch, made at the first backward (TEST nets never need it)."""
        self.scratch("w_grad_t", (self.group, k_g, m_g))
        if self.plan.per_image_weight_grad:
            # Per-image weight gradients, summed after the GEMMs.
            self.scratch("w_grads", (self.group, self.plan.chunk, m_g, k_g))

    def _images_of(self, col, s, e):
        """Columns of images s..e of the chunk as (group, images, K/group, P): image by image,
        the GEMMs' right-hand sides (views of the column matrix)."""
        p = self.ho * self.wo
        return col[:, s * p:e * p].reshape(self.group, -1, e - s, p).transpose(0, 2, 1, 3)

    def _winograd_weights(self):
        """The weights in Winograd's domain, transformed again only after they changed
        (whatever changed them: a solver, net.params, copy_from; their fingerprint tells). A
        TEST net's big layers (kernels/conv_plan.py) transform into one buffer they share:
        each finds its own there only when no other layer transformed since."""
        weights = self.blobs[0].data
        shape = (self.group, self.num_output // self.group, self.channels // self.group)
        size = winograd.weights_size(*shape)

        def key():
            return fingerprint(weights.reshape(-1).view(np.uint32))

        def fill(buffer):
            winograd.weight_transform(weights, winograd.transformed_weights(buffer, *shape))

        if self.shares_scratch and not self.plan.winograd_weights_kept:
            self.winograd_weights = self.winograd_key = None   # kept under another plan
            what = f"layer '{self.name}' ({self.type}): shared work array"
            buffer = shared_contents("conv.winograd_weights", size, what,
                                     (id(self), weights.shape, self.group), key, fill)
        else:
            buffer = self.scratch("winograd_weights", (size,))
            digest = key()
            if getattr(self, "winograd_key", None) != digest:
                self.winograd_key = None   # not valid while fill writes
                fill(buffer)
                self.winograd_key = digest
        return winograd.transformed_weights(buffer, *shape)

    def _split_epilogue(self):
        """For the Winograd and direct kernels, which add a bias themselves: (the bias they
        add or None, the rest of the output pass or None). A fold (protonet/fusion.py) is
        all done in the pass; a fused ReLU alone after the kernel's own bias, as the ReLU
        layer would see it."""
        scale, shift, relu, negative_slope = self.output_epilogue()
        if scale.size:
            return None, (scale, shift, relu, negative_slope)
        return (shift if shift.size else None,
                (NONE, NONE, relu, negative_slope) if relu else None)

    def _forward_winograd(self, x, y):
        bias, rest = self._split_epilogue()
        if bias is None:
            bias = self.scratch("zero_bias", (self.num_output,))
            bias[...] = 0
        u = self._winograd_weights()
        if self.shares_scratch:
            what = f"layer '{self.name}' ({self.type}): shared work array"
            v, m = (shared_buffer(name, size, what)
                    for name, size in zip(("conv.columns", "conv.y2"), self.winograd_sizes))
        else:
            v, m = self.col, self.y2
        for n0, n1, first_row, rows in self.plan.winograd_blocks:
            winograd.convolve(x[n0:n1], u, bias, self.ph, self.pw, first_row, rows, v, m,
                              y[n0:n1], self.plan.threads)
        if rest:
            channel_epilogue(channel_planes(y), *rest)

    def forward(self, bottom, top):
        if self.plan.winograd:
            self._forward_winograd(bottom[0].data, top[0].data)
            return
        if self.plan.depthwise:
            depthwise_forward(bottom[0].data, self.blobs[0].data.reshape(-1, self.kh, self.kw),
                              *self.geometry()[2:], top[0].data, self.output_epilogue())
            return
        mg = self.num_output // self.group
        weight = self.blobs[0].data.reshape(self.group, mg, -1)
        epilogue = self.output_epilogue()   # the bias, or what the net fused in
        x = bottom[0].data
        out = channel_planes(top[0].data)
        if self.plan.direct:
            bias, rest = self._split_epilogue()
            self.direct.forward(x, weight[0], bias, out, self.plan)
            if rest:
                channel_epilogue(out, *rest)
            return
        col, y2_buffer = self._buffers()
        # A TEST net's backward builds its columns again (its matrix is shared), so a 1x1
        # convolution's forward need not copy the bottom into them (ResNet-50's 1x1 layers at
        # batch 1: 0.1-3 MB each).
        bottom_as_columns = self.plan.columns_are_input and self.shares_scratch
        for n0, n1 in self.plan.bounds:
            if self.plan.per_image_forward and self._per_image_on_numba(col, out):
                blocks = self.plan.forward_block_array(n1 - n0, self.ho)
                tiles = NO_TILES
                if self.plan.tiles:
                    tiles = (self.shift_tiles.weights(weight[0]), self.shift_tiles.window,
                             self.shift_tiles.runs)
                with threads.one_blas_thread():
                    per_image_forward.over(len(blocks))(
                        x[n0:n1], *self.geometry(), self.ho, self.wo, col, weight, blocks,
                        out[n0:n1], *blas.function(), *epilogue, bottom_as_columns, *tiles)
                continue
            if self.plan.per_image_forward and (self.plan.bands == 1
                                                or n1 - n0 >= self.plan.threads):
                # Each thread builds a block of images' columns (into the chunk's matrix,
                # where backward finds them) and multiplies them while they are in its
                # cache; the products land in the top without a layout move. (Bands are for
                # numba's threads: here whole images, and a lone image's GEMM is split
                # below.)
                def images(s, e, shared, x=x[n0:n1], out=out[n0:n1]):
                    if bottom_as_columns:
                        cols = channel_planes(x[s:e]).reshape(e - s, self.group, -1, out.shape[2])
                        cols = cols.transpose(1, 0, 2, 3)
                    else:
                        (im2col.serial if shared else im2col)(x[s:e], *self.geometry(),
                                                              self.ho, self.wo, col, s, 0,
                                                              self.ho)
                        cols = self._images_of(col, s, e)
                    for g in range(self.group):
                        np.matmul(weight[g], cols[g], out=out[s:e, g * mg:(g + 1) * mg])
                    (channel_epilogue.serial if shared else channel_epilogue)(out[s:e],
                                                                              *epilogue)

                threads.run_pieces(images, self.plan.blocks(n1 - n0), self.plan.threads)
                continue
            if bottom_as_columns and n1 - n0 == 1:   # one image: its planes are the matrix
                col_g = x[n0].reshape(self.group, weight.shape[2], -1)
            else:
                im2col(x[n0:n1], *self.geometry(), self.ho, self.wo, col, 0, 0, self.ho)
                col_g = col[:, :(n1 - n0) * out.shape[2]].reshape(self.group, weight.shape[2],
                                                                   -1)
            # One image: the GEMM's (M, 1, P) output is laid out as the top's (1, M, P), so
            # it lands there and the output pass runs in place, instead of a copy of the
            # whole output (GoogLeNet at batch 1: 57 convolutions) - unless the top is the
            # bottom the GEMM reads.
            in_top = n1 - n0 == 1 and not np.may_share_memory(out, x)
            y2 = (out[n0:n1].reshape(self.num_output, 1, -1) if in_top else
                  _view(y2_buffer, (self.num_output, n1 - n0, out.shape[2])))
            threads.grouped_matmul(weight, col_g, y2.reshape(self.group, mg, -1),
                                   self.plan.threads)
            if in_top:
                channel_epilogue(out[n0:n1], *epilogue)
            else:
                channels_first_epilogue(y2, out[n0:n1], *epilogue)

    def _per_image_on_numba(self, col, out) -> bool:
        """Whether the per-image forward runs as one kernel on numba's threads
        (kernels/conv.per_image_forward): numpy's BLAS callable from a kernel, and operands
        laid out as cblas takes them."""
        return (blas.available() and col.strides[1] == 4 and out.flags.c_contiguous
                and self.blobs[0].data.flags.c_contiguous)

    def backward(self, top, propagate_down, bottom):
        top_diff = channel_planes(top[0].diff)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += top_diff.sum(axis=(0, 2), dtype=np.float32)
        if not (self.param_propagate_down[0] or propagate_down[0]):
            return
        if self.plan.depthwise:
            taps = (-1, self.kh, self.kw)
            if self.param_propagate_down[0]:
                depthwise_backward_weight(bottom[0].data, top[0].diff, *self.geometry()[2:],
                                          self.blobs[0].diff.reshape(taps))
            if propagate_down[0]:
                depthwise_backward_data(top[0].diff, self.blobs[0].data.reshape(taps),
                                        *self.geometry()[2:], bottom[0].diff)
            return
        mg = self.num_output // self.group
        weight = self.blobs[0].data.reshape(self.group, mg, -1)
        k_g = weight.shape[2]
        w_diff = self.blobs[0].diff.reshape(self.group, mg, k_g)
        x = bottom[0].data
        plan = self.plan
        weight_grad, data_grad = self.param_propagate_down[0], propagate_down[0]
        if plan.direct:
            # The weight gradient direct, the data gradient too or as below.
            direct_data = data_grad and plan.direct_data_grad
            self.direct.backward(x, top_diff, self.blobs[0].data,
                                 w_diff[0] if weight_grad else None,
                                 bottom[0].diff if direct_data else None, plan)
            if direct_data or not data_grad:
                return
            weight_grad = False
        col, y2_buffer = self._buffers()
        if plan.blocked_backward:
            self._blocked_backward(x, top_diff, weight, w_diff if weight_grad else None,
                                   bottom[0].diff if data_grad else None, col)
            return
        self._gradient_buffers(k_g, mg)
        for n0, n1 in plan.bounds:
            if weight_grad and (len(plan.bounds) > 1 or self.shares_scratch or plan.winograd):
                # With one chunk in its own matrix the forward's columns are still there;
                # with several chunks, a matrix other layers share, or Winograd's forward,
                # they were overwritten (or never made).
                im2col(x[n0:n1], *self.geometry(), self.ho, self.wo, col, 0, 0, self.ho)
            col_g = col[:, :(n1 - n0) * top_diff.shape[2]].reshape(self.group, k_g, -1)
            dy2 = _view(y2_buffer, (self.num_output, n1 - n0, top_diff.shape[2]))
            dy = dy2.reshape(self.group, mg, -1)
            if data_grad or not plan.per_image_weight_grad:
                channels_last(top_diff[n0:n1], dy2)
            if (weight_grad and plan.per_image_weight_grad
                    and self._per_image_on_numba(col, top_diff)):
                blocks = plan.block_array(n1 - n0)
                with threads.one_blas_thread():
                    per_image_weight_grads.over(len(blocks))(
                        top_diff[n0:n1], col, blocks, *blas.function(), self.w_grads)
                w_diff += self.w_grads[:, :n1 - n0].sum(axis=1)
            elif weight_grad and plan.per_image_weight_grad:
                def images(s, e, shared, top_diff=top_diff[n0:n1]):
                    cols = self._images_of(col, s, e)
                    for g in range(self.group):
                        np.matmul(top_diff[s:e, g * mg:(g + 1) * mg],
                                  cols[g].transpose(0, 2, 1), out=self.w_grads[g, s:e])

                threads.run_pieces(images, plan.blocks(n1 - n0), plan.threads)
                w_diff += self.w_grads[:, :n1 - n0].sum(axis=1)
            elif weight_grad:
                # The transposed product, col @ dy.T: OpenBLAS runs it 20-25% faster than
                # dy @ col.T on LeNet's shapes (conv2 at 2 threads: 1.35 against 1.75-1.84
                # ms; conv1 0.77 against 1.07 ms).
                threads.grouped_matmul(col_g, dy.transpose(0, 2, 1), self.w_grad_t,
                                       plan.threads)
                w_diff += self.w_grad_t.transpose(0, 2, 1)
            if data_grad:
                # The column gradient overwrites the columns, which the weight gradient has
                # used: one buffer instead of two keeps the step's memory in cache (conv2's
                # columns are 8 MB at batch 64).
                threads.grouped_matmul(weight.transpose(0, 2, 1), dy, col_g, plan.threads)
                col2im(col, *self.geometry(), self.ho, self.wo, bottom[0].diff[n0:n1], 0)

    def _blocked_backward(self, x, top_diff, weight, w_diff, dx, col):
        """w_diff += the weight gradient (if not None), dx = the data gradient (if not None),
        block by block of images on their forward's columns (plan.blocked_backward): each
        piece in one pass on one thread, its column gradient scattered while in cache."""
        group, mg, k_g = weight.shape
        p = self.ho * self.wo
        pieces = [(s, e, i) for i, (s, e) in enumerate(self.plan.blocks(x.shape[0]))]
        if w_diff is not None:
            grads = self.scratch("block_grads", (len(pieces), group, k_g, mg))
        # The top diff as the GEMMs' (M, images x P), each piece writing its own columns.
        dy_all = self.scratch("block_dy", (group * mg, x.shape[0] * p))
        # The columns were overwritten by other layers; the data gradient alone (after a
        # direct weight gradient) overwrites them unread.
        rebuild = self.shares_scratch and w_diff is not None
        if self._per_image_on_numba(col, top_diff) and dy_all.flags.c_contiguous:
            blocks = self.plan.block_array(x.shape[0])
            with threads.one_blas_thread():
                per_image_backward.over(len(blocks))(
                    x, *self.geometry(), self.ho, self.wo, col, weight, top_diff, dy_all,
                    blocks, *blas.function(), None if w_diff is None else grads, dx, rebuild)
            if w_diff is not None:
                w_diff += grads.sum(axis=0).transpose(0, 2, 1)   # pieces in a fixed order
            return

        def images(s, e, index, shared):
            if rebuild:
                (im2col.serial if shared else im2col)(x[s:e], *self.geometry(), self.ho,
                                                      self.wo, col, s, 0, self.ho)
            dy = dy_all[:, s * p:e * p]
            dy.reshape(group * mg, e - s, p)[...] = top_diff[s:e].transpose(1, 0, 2)
            for g in range(group):
                cols = col[g * k_g:(g + 1) * k_g, s * p:e * p]
                dy_g = dy[g * mg:(g + 1) * mg]
                if w_diff is not None:
                    np.matmul(cols, dy_g.T, out=grads[index, g])
                if dx is not None:   # the columns are used: their gradient overwrites them
                    np.matmul(weight[g].T, dy_g, out=cols)
            if dx is not None:
                (col2im.serial if shared else col2im)(col, *self.geometry(), self.ho,
                                                      self.wo, dx[s:e], s)

        threads.run_pieces(images, pieces, self.plan.threads)
        if w_diff is not None:
            w_diff += grads.sum(axis=0).transpose(0, 2, 1)   # pieces in a fixed order


class _SingleDeconvolution(_BaseConvolution):
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
        self.make_plan(n, k, h * w)
        self.col_matrix = _column_matrix(self, k, self.plan.chunk, h * w)
        self.scratch("x2", (c, self.plan.chunk, h * w), grow=True)

    def forward(self, bottom, top):
        n, c = bottom[0].shape[:2]
        cg = c // self.group
        weight = self.blobs[0].data.reshape(self.group, cg, -1)
        x = channel_planes(bottom[0].data)
        for n0, n1 in self.plan.bounds:
            x2 = _view(self.x2, (c, n1 - n0, x.shape[2]))
            channels_last(x[n0:n1], x2)
            col_g = (self.col_matrix[:, :(n1 - n0) * x.shape[2]]
                     .reshape(self.group, weight.shape[2], -1))
            threads.grouped_matmul(weight.transpose(0, 2, 1), x2.reshape(self.group, cg, -1),
                                   col_g, self.plan.threads)
            # Convolution's geometry with input and output swapped: scatter the columns.
            col2im(self.col_matrix, *self.geometry(), self.h, self.w, top[0].data[n0:n1],
                   0)
        channel_epilogue(channel_planes(top[0].data), *self.output_epilogue())

    def backward(self, top, propagate_down, bottom):
        n, c = bottom[0].shape[:2]
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += top[0].diff.sum(axis=(0, 2, 3), dtype=np.float32)
        if not (self.param_propagate_down[0] or propagate_down[0]):
            return
        cg = c // self.group
        weight = self.blobs[0].data.reshape(self.group, cg, -1)
        x = channel_planes(bottom[0].data)
        dx = channel_planes(bottom[0].diff)
        for n0, n1 in self.plan.bounds:
            im2col(top[0].diff[n0:n1], *self.geometry(), self.h, self.w, self.col_matrix, 0, 0,
                   self.h)
            col_g = (self.col_matrix[:, :(n1 - n0) * x.shape[2]]
                     .reshape(self.group, weight.shape[2], -1))
            x2 = _view(self.x2, (c, n1 - n0, x.shape[2]))
            x2_g = x2.reshape(self.group, cg, -1)
            if self.param_propagate_down[0]:
                channels_last(x[n0:n1], x2)
                # Made at the first backward (TEST nets never need it).
                w_grad = self.scratch("w_grad", (self.group, cg, weight.shape[2]))
                threads.grouped_matmul(x2_g, col_g.transpose(0, 2, 1), w_grad,
                                       self.plan.threads)
                self.blobs[0].diff.reshape(self.group, cg, -1)[...] += w_grad
            if propagate_down[0]:
                threads.grouped_matmul(weight, col_g, x2_g, self.plan.threads)
                channels_first(x2, dx[n0:n1])


class _EachPair:
    """Caffe's BaseConvolutionLayer takes any number of (bottom i, top i) pairs of one shape
    and applies the one set of weights to each. The single-pair layer it is mixed into does the
    work pair by pair; its weight gradients add up over the pairs."""

    num_bottom = (1, None)
    num_top = (1, None)

    def reshape(self, bottom, top):
        if len(bottom) != len(top):
            raise self.error(f"takes one top per bottom, got {len(bottom)} bottoms and "
                             f"{len(top)} tops", NetDefinitionError)
        for blob in bottom[1:]:
            if blob.shape != bottom[0].shape:
                raise self.error(f"all bottoms must have one shape: '{blob.name}' is "
                                 f"{blob.shape}, '{bottom[0].name}' {bottom[0].shape}")
        super().reshape(bottom[:1], top[:1])
        for blob in top[1:]:
            blob.reshape(top[0].shape)

    def forward(self, bottom, top):
        for b, t in zip(bottom, top):
            super().forward([b], [t])

    def backward(self, top, propagate_down, bottom):
        for b, t, down in zip(bottom, top, propagate_down):
            if len(bottom) > 1:
                # The single-pair backward reads what its forward left in the layer (the
                # columns), which the later pairs' forwards overwrote: rebuild it, writing
                # into scratch so the top (maybe changed in place since) stays as it is.
                if getattr(self, "scratch_top", None) is None:
                    self.scratch_top = Blob(name=f"{self.name} scratch")
                self.scratch_top.reshape(t.shape)
                super().forward([b], [self.scratch_top])
            super().backward([t], [down], [b])


@register_layer("Convolution")
class Convolution(_EachPair, _SingleConvolution):
    __doc__ = _SingleConvolution.__doc__ + """
    Several bottoms (one shape) with as many tops: the weights are applied to each pair.
    """


@register_layer("Deconvolution")
class Deconvolution(_EachPair, _SingleDeconvolution):
    __doc__ = _SingleDeconvolution.__doc__ + """
    Several bottoms (one shape) with as many tops: the weights are applied to each pair.
    """


@register_layer("Im2col")
class Im2col(Layer):
    """Each output position's receptive field as a column, Caffe "Im2col" (V1 IM2COL).

    Reads convolution_param kernel, pad, stride, dilation (as Convolution). Bottom:
    (N, C, H, W). Top: (N, C * kernel_h * kernel_w, Ho, Wo), channel (c, i, j) holding
    x[c, oy * stride_h - pad_h + i * dilation_h, ox * stride_w - pad_w + j * dilation_w].
    """

    def setup(self, bottom, top):
        p = self.param.convolution_param
        self.kh, self.kw = _pair(self, p, "kernel", 0)
        self.sh, self.sw = _pair(self, p, "stride", 1)
        self.ph, self.pw = _pair(self, p, "pad", 0)
        self.dh, self.dw = _pair(self, p, "dilation", 1)

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error(f"bottom must be (N, C, H, W), got shape {bottom[0].shape}")
        n, c, h, w = bottom[0].shape
        self.ho = conv_output_size(h, self.kh, self.ph, self.sh, self.dh)
        self.wo = conv_output_size(w, self.kw, self.pw, self.sw, self.dw)
        if self.ho < 1 or self.wo < 1:
            raise self.error(f"kernel larger than the padded input {bottom[0].shape}")
        k = c * self.kh * self.kw
        top[0].reshape(n, k, self.ho, self.wo)
        self.scratch("col", (k, n * self.ho * self.wo), grow=True)

    def geometry(self):
        return (self.kh, self.kw, self.ph, self.pw, self.sh, self.sw, self.dh, self.dw)

    def forward(self, bottom, top):
        n, k = top[0].shape[:2]
        col = _view(self.col, (k, n * self.ho * self.wo))
        im2col(bottom[0].data, *self.geometry(), self.ho, self.wo, col, 0, 0, self.ho)
        channels_first(col.reshape(k, n, self.ho * self.wo), channel_planes(top[0].data))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            n, k = top[0].shape[:2]
            col = _view(self.col, (k, n * self.ho * self.wo))
            channels_last(channel_planes(top[0].diff), col.reshape(k, n, self.ho * self.wo))
            col2im(col, *self.geometry(), self.ho, self.wo, bottom[0].diff, 0)
