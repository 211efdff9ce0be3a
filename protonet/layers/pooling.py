"""Pooling: MAX and AVE with Caffe's ceil-rounded output and clipped windows."""
from __future__ import annotations

import numpy as np

from .. import caffe_pb2
from ..blob import Blob
from ..errors import NetDefinitionError
from ..kernels.pooling import (ave_pool, ave_pool_backward, max_pool_2x2_forward,
                               max_pool_backward, max_pool_forward, planes,
                               pool_output_size)
from ..registry import register_layer
from .base import Layer

P = caffe_pb2.PoolingParameter


@register_layer("Pooling")
class Pooling(Layer):
    """Window max or mean, Caffe "Pooling" (V1 POOLING).

    Reads pooling_param: pool (MAX; AVE; STOCHASTIC is not run on the CPU), kernel_size or
    kernel_h/kernel_w, pad (0) or pad_h/pad_w, stride (1) or stride_h/stride_w,
    global_pooling (false: true pools the whole plane), round_mode (CEIL; FLOOR) or the forks'
    ceil_mode (true; false = FLOOR).
    Bottom: (N, C, H, W). Top: (N, C, Ho, Wo), Ho = ceil((H + 2 pad - kernel) / stride) + 1
    (floor with FLOOR), less one when the last window would start in the padding; MAX may add
    a second top, the argmax index of each window (h * W + w) as a float.
    """

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    is_max: bool
    ceil: bool

    num_top = (1, 2)
    # Whether the last forward wrote the argmax planes (a MAX pooling's backward reads them).
    mask_is_current = False

    def setup(self, bottom, top):
        p = self.param.pooling_param
        if p.pool not in (P.MAX, P.AVE):
            raise self.error(f"pool method {P.PoolMethod.Name(p.pool)} is not supported "
                             "(MAX and AVE are; Caffe runs STOCHASTIC on GPUs only)",
                             NetDefinitionError)
        if len(top) == 2 and p.pool != P.MAX:
            raise self.error("only MAX pooling has a second (mask) top", NetDefinitionError)
        # round_mode (BVLC) and the forks' ceil_mode say the same thing; both given, they
        # must agree.
        self.ceil = p.round_mode == P.CEIL
        if p.HasField("ceil_mode"):
            if p.HasField("round_mode") and p.ceil_mode != self.ceil:
                raise self.error(f"ceil_mode: {str(p.ceil_mode).lower()} contradicts "
                                 f"round_mode: {P.RoundMode.Name(p.round_mode)}",
                                 NetDefinitionError)
            self.ceil = p.ceil_mode
        self.is_max = p.pool == P.MAX
        self.global_pooling = p.global_pooling
        if p.global_pooling:
            if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
                raise self.error("with global_pooling, kernel size cannot be given",
                                 NetDefinitionError)
        elif p.HasField("kernel_size") == (p.HasField("kernel_h") or p.HasField("kernel_w")):
            raise self.error("give kernel_size, or kernel_h and kernel_w", NetDefinitionError)
        elif not p.HasField("kernel_size") and not (p.HasField("kernel_h") and
                                                    p.HasField("kernel_w")):
            raise self.error("kernel_h and kernel_w must be given together", NetDefinitionError)
        self.kh = p.kernel_h if p.HasField("kernel_h") else p.kernel_size
        self.kw = p.kernel_w if p.HasField("kernel_w") else p.kernel_size
        self.ph = p.pad_h if p.HasField("pad_h") else p.pad
        self.pw = p.pad_w if p.HasField("pad_w") else p.pad
        self.sh = p.stride_h if p.HasField("stride_h") else p.stride
        self.sw = p.stride_w if p.HasField("stride_w") else p.stride
        if self.global_pooling and (self.ph or self.pw or self.sh != 1 or self.sw != 1):
            raise self.error("with global_pooling, pad must be 0 and stride 1",
                             NetDefinitionError)

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error(f"bottom must be (N, C, H, W), got shape {bottom[0].shape}")
        n, c, h, w = bottom[0].shape
        if self.global_pooling:
            self.kh, self.kw = h, w
        if self.kh < 1 or self.kw < 1 or self.sh < 1 or self.sw < 1:
            raise self.error("kernel and stride must be positive", NetDefinitionError)
        if self.ph >= self.kh or self.pw >= self.kw:
            raise self.error(f"pad ({self.ph}, {self.pw}) must be smaller than the kernel "
                             f"({self.kh}, {self.kw})", NetDefinitionError)
        ho = pool_output_size(h, self.kh, self.ph, self.sh, self.ceil)
        wo = pool_output_size(w, self.kw, self.pw, self.sw, self.ceil)
        if ho < 1 or wo < 1:
            raise self.error(f"kernel larger than the padded input {bottom[0].shape}")
        for blob in top:
            blob.reshape(n, c, ho, wo)
        # 2x2 windows at stride 2 tiling the plane exactly: the vectorized forward.
        self.tiles_2x2 = (self.is_max and (self.kh, self.kw, self.sh, self.sw) == (2, 2, 2, 2)
                          and not (self.ph or self.pw) and (h, w) == (2 * ho, 2 * wo))

    def _mask(self, top):
        """The argmax planes a MAX forward writes, made at the first forward that needs them:
        None when neither a backward nor a second top reads them (a TEST net's pooling)."""
        if not (self.backward_runs or len(top) == 2):
            return None
        return planes(self.scratch("mask", top[0].shape, np.int32))

    def forward(self, bottom, top):
        window = (self.kh, self.kw, self.ph, self.pw, self.sh, self.sw)
        x, y = planes(bottom[0].data), planes(top[0].data)
        if not self.is_max:
            ave_pool(x, *window, y)
            return
        mask = self._mask(top)
        self.mask_is_current = mask is not None
        if self.tiles_2x2:
            max_pool_2x2_forward(x, y, mask)
        else:
            max_pool_forward(x, *window, y, mask)
        if len(top) == 2:
            top[1].data[...] = self.mask

    def keep_argmax(self, bottom, top) -> None:
        """Make sure the argmax of the last forward on `bottom` is there for a MAX backward:
        a backward called although the net said none would run (a layer driven by hand)
        runs the forward again, this time keeping it (the same top)."""
        if self.is_max and not self.mask_is_current:
            self.backward_runs = True
            self.forward(bottom, top)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        self.keep_argmax(bottom, top)
        dy, dx = planes(top[0].diff), planes(bottom[0].diff)
        if self.is_max:
            max_pool_backward(dy, planes(self.mask), dx)
        else:
            ave_pool_backward(dy, self.kh, self.kw, self.ph, self.pw, self.sh, self.sw, dx)


@register_layer("SPP")
class SPP(Layer):
    """Spatial pyramid pooling, Caffe "SPP": level l pools each plane into 2^l x 2^l bins
    (kernel ceil(H / bins), stride = kernel, pad (kernel * bins - H + 1) / 2, likewise W),
    and the levels' outputs are flattened and joined along axis 1.

    Reads spp_param pyramid_height, pool (MAX or AVE). Bottom: (N, C, H, W). Top:
    (N, C * sum of 4^l) (pyramid_height 1: the single level's (N, C, 1, 1), as Caffe).
    """

    def setup(self, bottom, top):
        p = self.param.spp_param
        if p.pyramid_height < 1:
            raise self.error("spp_param.pyramid_height must be at least 1", NetDefinitionError)
        self.height, self.pool = int(p.pyramid_height), p.pool
        self.shape = None

    def _levels(self, h, w):
        self.levels = []
        for level in range(self.height):
            bins = 2 ** level
            kh, kw = -(-h // bins), -(-w // bins)
            lp = caffe_pb2.LayerParameter(name=f"{self.name}/level{level}", type="Pooling")
            q = lp.pooling_param
            q.pool = self.pool
            q.kernel_h, q.kernel_w, q.stride_h, q.stride_w = kh, kw, kh, kw
            q.pad_h, q.pad_w = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
            pooling, out = Pooling(lp, self.phase), Blob(name=lp.name)
            self.levels.append((pooling, out))

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error(f"bottom must be (N, C, H, W), got shape {bottom[0].shape}")
        n, c, h, w = bottom[0].shape
        if self.shape != (h, w):
            self._levels(h, w)
            self.level_grad = Blob(bottom[0].shape, name=f"{self.name}/diff")
            for pooling, out in self.levels:
                pooling.set_up([self.level_grad], [out])
            self.shape = (h, w)
        self.level_grad.reshape(bottom[0].shape)
        for pooling, out in self.levels:
            pooling.reshape([bottom[0]], [out])
        if self.height == 1:
            top[0].reshape(self.levels[0][1].shape)
        else:
            top[0].reshape(n, sum(out.count // n for _, out in self.levels))

    def forward(self, bottom, top):
        n = bottom[0].shape[0]
        flat = top[0].data.reshape(n, -1)
        offset = 0
        for pooling, out in self.levels:
            pooling.backward_runs = self.backward_runs   # set by the net after reshape
            pooling.forward(bottom, [out])
            size = out.count // n
            flat[:, offset:offset + size] = out.data.reshape(n, size)
            offset += size

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        flat = top[0].diff.reshape(n, -1)
        bottom[0].diff[...] = 0
        offset = 0
        for pooling, out in self.levels:
            pooling.keep_argmax(bottom, [out])   # its backward below sees only level_grad
            size = out.count // n
            out.diff[...] = flat[:, offset:offset + size].reshape(out.shape)
            pooling.backward([out], [True], [self.level_grad])
            bottom[0].diff += self.level_grad.diff
            offset += size
