"""InnerProduct (a fully connected layer: kernels/dense.py forward, BLAS GEMMs backward) and
Embed (its one-hot-input twin: a row lookup)."""
from __future__ import annotations

import numpy as np

from ..errors import NetDefinitionError, ShapeError
from ..kernels import threads
from ..kernels.dense import dense
from ..kernels.digest import KeptLayout
from ..kernels.epilogue import rows_epilogue
from ..registry import register_layer
from .base import Layer, canonical_axis, count

# A sample's output must be bitwise the same alone or in any batch (as in Caffe): the forward
# runs kernels/dense.py's lane kernel, whose summation order is written in its code, the same
# for every row, tile and thread count. It reads weights in Caffe's (num_output, K) layout;
# transposed weights (K, num_output) are kept transposed for it, laid out again only when
# their fingerprint changes. (They went through BLAS, in blocks of rows padded to one shape,
# and BLAS's kernels depend on the CPU: on an AMD Zen 3 a sample's output there differed
# between batch sizes.) tests/test_pycaffe_api.py checks the property bitwise for both layouts
# at many batch sizes.


@register_layer("InnerProduct")
class InnerProduct(Layer):
    """y = x W^T + b over the flattened trailing axes, Caffe "InnerProduct" (V1 INNER_PRODUCT).

    Reads inner_product_param: num_output, bias_term (true), axis (1: axes from here on are
    flattened into K inputs), transpose (false: weights (num_output, K); true: (K, num_output)),
    weight_filler, bias_filler.
    Bottom: (d0, ..., d_{axis-1}, ...K). Top: (d0, ..., d_{axis-1}, num_output).
    """

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    axis: int
    bias_term: bool
    transpose: bool

    takes_epilogue = True

    def setup(self, bottom, top):
        p = self.param.inner_product_param
        self.num_output = p.num_output
        if self.num_output < 1:
            raise self.error("num_output must be positive", NetDefinitionError)
        self.bias_term = p.bias_term
        self.transpose = p.transpose
        self.axis = canonical_axis(p.axis, bottom[0].num_axes, self)
        k = count(bottom[0].shape, self.axis)
        w_shape = (k, self.num_output) if self.transpose else (self.num_output, k)
        if self.blobs:
            self._check_inputs(bottom, k)
        self.learnable_blobs([w_shape, (self.num_output,)][:1 + self.bias_term],
                             [p.weight_filler, p.bias_filler])
        self.k = k
        self.weight_rows = KeptLayout()   # transposed weights as (num_output, K)

    def _check_inputs(self, bottom, k):
        expected = self.blobs[0].count // self.num_output
        if k != expected:
            raise self.error(f"bottom '{bottom[0].name}' has {k} inputs per sample, weights "
                             f"expect {expected}")

    def reshape(self, bottom, top):
        k = count(bottom[0].shape, self.axis)
        if k != self.k:
            raise self.error(f"bottom '{bottom[0].name}' has {k} inputs per sample, weights "
                             f"expect {self.k}")
        self.m = count(bottom[0].shape, 0, self.axis)
        top[0].reshape(*bottom[0].shape[:self.axis], self.num_output)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.m, self.k)
        y = top[0].data.reshape(self.m, self.num_output)
        w = self.blobs[0].data
        dense(self.weight_rows.of(w, lambda w: np.ascontiguousarray(w.T)) if self.transpose
              else w, x, y)
        if self.epilogue is not None:   # what the net fused in (protonet/fusion.py)
            rows_epilogue(y, *self.epilogue)
        elif self.bias_term:   # numpy's add: a kernel call costs more at batch 1 (1 vs 7 us)
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.m, self.num_output)
        x = bottom[0].data.reshape(self.m, self.k)
        if self.param_propagate_down[0]:
            # Added into the diff by the GEMM itself (Caffe's beta 1): no gradient-sized
            # buffer (VGG-16's fc6: 411 MB) and no pass adding it after.
            threads.matmul(*((x.T, dy) if self.transpose else (dy.T, x)), self.blobs[0].diff,
                           accumulate=True)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=0, dtype=np.float32)
        if propagate_down[0]:
            w = self.blobs[0].data
            threads.matmul(dy, w.T if self.transpose else w, bottom[0].diff.reshape(self.m, self.k))


@register_layer("Embed")
class Embed(Layer):
    """y[..., :] = W[x[...], :] + b, a lookup table, Caffe "Embed".

    Reads embed_param: num_output, input_dim (the number of indices), bias_term (true),
    weight_filler, bias_filler. Weights (input_dim, num_output), bias (num_output,).
    Bottom: integer indices in [0, input_dim), any shape. Top: bottom's shape + (num_output,).
    Gradients go to the weights and bias only (indices have none).
    """

    def setup(self, bottom, top):
        p = self.param.embed_param
        self.num_output, self.input_dim, self.bias_term = p.num_output, p.input_dim, p.bias_term
        if self.num_output < 1 or self.input_dim < 1:
            raise self.error(f"embed_param.num_output ({self.num_output}) and input_dim "
                             f"({self.input_dim}) must be positive", NetDefinitionError)
        self.learnable_blobs([(self.input_dim, self.num_output), (self.num_output,)]
                             [:1 + self.bias_term], [p.weight_filler, p.bias_filler])

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape + (self.num_output,))
        self.scratch("index", (bottom[0].count,), np.int64)

    def allow_force_backward(self, bottom_index):
        return False

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(-1)
        np.copyto(self.index, x, casting="unsafe")
        # Caffe only DCHECKs these; a bad index would read outside the table.
        bad = (self.index < 0) | (self.index >= self.input_dim) | (self.index != x)
        if bad.any():
            raise self.error(f"index {x[bad][0]:g} in bottom '{bottom[0].name}' is not an "
                             f"integer in [0, {self.input_dim}) (embed_param.input_dim "
                             f"{self.input_dim})", ShapeError)
        y = top[0].data.reshape(-1, self.num_output)
        np.take(self.blobs[0].data, self.index, axis=0, out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("cannot backpropagate to the indices", NetDefinitionError)
        dy = top[0].diff.reshape(-1, self.num_output)
        if self.param_propagate_down[0]:
            # add.at, not +=: an index that appears twice must add both rows.
            np.add.at(self.blobs[0].diff, self.index, dy)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=0, dtype=np.float32)
