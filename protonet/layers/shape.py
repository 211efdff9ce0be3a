"""Layers that move data without arithmetic on it: Split, Flatten, Reshape, Concat, Slice,
Silence, Crop, Tile, and Eltwise (elementwise sum, product or max of several bottoms)."""
from __future__ import annotations

import math

import numpy as np

from .. import caffe_pb2
from ..errors import NetDefinitionError, ShapeError
from ..kernels.epilogue import channel_epilogue, channel_planes, sum_epilogue
from ..registry import register_layer
from .base import Layer, canonical_axis, count


@register_layer("Split")
class Split(Layer):
    """One bottom read by several layers; backward sums their diffs. Caffe "Split" (V1 SPLIT),
    inserted by the net where one blob feeds several layers.

    The tops' data are views of the bottom's (Caffe's ShareData), so forward copies nothing
    (ResNet-50 at batch 16 copied 51 MB per block); their diffs are their own. Nothing writes
    them: every reader of the bottom reads a split top instead (graph.insert_splits), a layer
    "in place" on a split top writes a new blob under the bottom's name, and no layer writes
    its bottoms."""

    num_top = (1, None)
    in_place = False
    # The views follow the bottom's memory, which a blob grown and shrunk back to the same
    # shape has moved (net.blobs['data'].reshape(...) twice before a forward).
    reshape_reads_only_shapes = False

    def reshape(self, bottom, top):
        for blob in top:
            if blob is bottom[0]:
                raise self.error("a Split top cannot be its bottom (in place)",
                                 NetDefinitionError)
            blob.reshape(bottom[0].shape)
            blob.share_data(bottom[0])

    def forward(self, bottom, top):
        """Nothing to copy: reshape made the tops views of the bottom's data."""

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        if len(top) == 1:
            diff[...] = top[0].diff
            return
        np.add(top[0].diff, top[1].diff, out=diff)
        for blob in top[2:]:
            diff += blob.diff


class _CopyShapeLayer(Layer):
    """Top = bottom's values under another shape (forward and backward are copies)."""

    in_place = False

    def forward(self, bottom, top):
        if top[0] is not bottom[0]:
            top[0].data.reshape(-1)[...] = bottom[0].data.reshape(-1)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0] and top[0] is not bottom[0]:
            bottom[0].diff.reshape(-1)[...] = top[0].diff.reshape(-1)


@register_layer("Flatten")
class Flatten(_CopyShapeLayer):
    """Axes axis..end_axis merged into one, Caffe "Flatten" (V1 FLATTEN).
    Reads flatten_param.axis (1), end_axis (-1). (N, C, H, W) -> (N, C*H*W) by default."""

    def reshape(self, bottom, top):
        p = self.param.flatten_param
        n = bottom[0].num_axes
        start = canonical_axis(p.axis, n, self)
        end = canonical_axis(p.end_axis, n, self)
        if end < start:
            raise self.error(f"end_axis {p.end_axis} comes before axis {p.axis} for shape "
                             f"{bottom[0].shape}")
        shape = bottom[0].shape
        top[0].reshape(*shape[:start], count(shape, start, end + 1), *shape[end + 1:])


@register_layer("Reshape")
class Reshape(_CopyShapeLayer):
    """Same values, new shape, Caffe "Reshape". Reads reshape_param.shape (0 copies the bottom's
    dimension, -1 is inferred), axis (0) and num_axes (-1: all) of the part replaced."""

    def setup(self, bottom, top):
        p = self.param.reshape_param
        self.dims = [int(d) for d in p.shape.dim]
        if self.dims.count(-1) > 1:
            raise self.error("reshape_param.shape may infer (-1) at most one dimension",
                             NetDefinitionError)
        self.axis, self.num_axes = p.axis, p.num_axes

    def reshape(self, bottom, top):
        shape = list(bottom[0].shape)
        n = len(shape)
        start = self.axis if self.axis >= 0 else n + self.axis + 1
        end = n if self.num_axes == -1 else start + self.num_axes
        if not 0 <= start <= end <= n:
            raise self.error(f"axis {self.axis} / num_axes {self.num_axes} out of range for "
                             f"shape {bottom[0].shape}")
        copied = [i for i, d in enumerate(self.dims) if d == 0 and start + i >= n]
        if copied:
            raise self.error(f"shape dim {copied[0]} is 0 (copy the bottom's axis "
                             f"{start + copied[0]}), but the bottom {bottom[0].shape} has "
                             f"{n} axes")
        new = [shape[start + i] if d == 0 else d for i, d in enumerate(self.dims)]
        out = shape[:start] + new + shape[end:]
        if -1 in out:
            known = math.prod(d for d in out if d != -1)
            if known == 0 or bottom[0].count % known:
                raise self.error(f"cannot reshape {bottom[0].shape} to {tuple(out)}")
            out[out.index(-1)] = bottom[0].count // known
        if math.prod(out) != bottom[0].count:
            raise self.error(f"cannot reshape {bottom[0].shape} ({bottom[0].count} values) to "
                             f"{tuple(out)}")
        top[0].reshape(out)


def _legacy_axis(layer, p, legacy: str, bottom) -> int:
    """`axis`, or the old unsigned field `legacy` (concat_dim, slice_dim); Caffe rejects both
    at once and a legacy value past the last axis."""
    num_axes = bottom[0].num_axes
    if not p.HasField(legacy):
        return canonical_axis(p.axis, num_axes, layer)
    if p.HasField("axis"):
        raise layer.error(f"give either axis or {legacy}, not both", NetDefinitionError)
    if getattr(p, legacy) >= num_axes:
        raise layer.error(f"{legacy} {getattr(p, legacy)} out of range for a blob with "
                          f"{num_axes} axes", NetDefinitionError)
    return int(getattr(p, legacy))


def _concat_axis(layer, p, bottom) -> int:
    return _legacy_axis(layer, p, "concat_dim", bottom)


@register_layer("Concat")
class Concat(Layer):
    """Bottoms joined along concat_param.axis (1) (or the legacy concat_dim), Caffe "Concat"
    (V1 CONCAT). All other dimensions must agree."""

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    axis: int

    num_bottom = (1, None)

    def reshape(self, bottom, top):
        self.axis = _concat_axis(self, self.param.concat_param, bottom)
        first = bottom[0].shape
        for blob in bottom[1:]:
            if blob.num_axes != len(first) or any(
                    a != b for i, (a, b) in enumerate(zip(blob.shape, first)) if i != self.axis):
                raise self.error(f"bottom '{blob.name}' shape {blob.shape} does not match "
                                 f"'{bottom[0].name}' shape {first} outside axis {self.axis}")
        size = sum(b.shape[self.axis] for b in bottom)
        top[0].reshape(*first[:self.axis], size, *first[self.axis + 1:])

    def forward(self, bottom, top):
        if len(bottom) == 1:
            top[0].data[...] = bottom[0].data
            return
        np.concatenate([b.data for b in bottom], axis=self.axis, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        offset = 0
        for blob, down in zip(bottom, propagate_down):
            size = blob.shape[self.axis]
            if down:
                index = (slice(None),) * self.axis + (slice(offset, offset + size),)
                blob.diff[...] = top[0].diff[index]
            offset += size


@register_layer("Slice")
class Slice(Layer):
    """The bottom cut along slice_param.axis (1) (or slice_dim) at slice_point, or into equal
    parts, one per top, Caffe "Slice" (V1 SLICE)."""

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    axis: int
    bounds: list

    num_top = (1, None)

    def reshape(self, bottom, top):
        p = self.param.slice_param
        self.axis = _legacy_axis(self, p, "slice_dim", bottom)
        size = bottom[0].shape[self.axis]
        points = list(p.slice_point)
        if points:
            if (len(points) != len(top) - 1 or sorted(set(points)) != points
                    or points[0] <= 0 or points[-1] >= size):
                raise self.error(f"slice_point {points} does not cut axis {self.axis} (size "
                                 f"{size}) into {len(top)} parts")
        else:
            if size % len(top):
                raise self.error(f"axis {self.axis} size {size} is not divisible into "
                                 f"{len(top)} equal parts")
            points = [size // len(top) * i for i in range(1, len(top))]
        self.bounds = list(zip([0] + points, points + [size]))
        shape = list(bottom[0].shape)
        for blob, (a, b) in zip(top, self.bounds):
            shape[self.axis] = b - a
            blob.reshape(shape)

    def _index(self, a, b):
        return (slice(None),) * self.axis + (slice(a, b),)

    def forward(self, bottom, top):
        for blob, (a, b) in zip(top, self.bounds):
            blob.data[...] = bottom[0].data[self._index(a, b)]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            for blob, (a, b) in zip(top, self.bounds):
                bottom[0].diff[self._index(a, b)] = blob.diff


@register_layer("Silence")
class Silence(Layer):
    """Consumes bottoms so they are not net outputs, Caffe "Silence" (V1 SILENCE); no tops."""

    num_bottom = (1, None)
    num_top = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for blob, down in zip(bottom, propagate_down):
            if down:
                blob.diff[...] = 0


E = caffe_pb2.EltwiseParameter


@register_layer("Eltwise")
class Eltwise(Layer):
    """Elementwise PROD, SUM (with one coeff per bottom) or MAX of same-shaped bottoms,
    Caffe "Eltwise" (V1 ELTWISE). Reads eltwise_param.operation (SUM), coeff, stable_prod_grad.

    A SUM takes the net's fused output pass (protonet/fusion.py): the in-place ReLU after it
    (every ResNet block's), in a TEST net a BatchNorm and Scale too. Two bottoms of coeff 1
    are summed and finished in one pass on numba's threads: ResNet-50's 16 shortcut sums and
    their ReLUs at batch 16 took 50 ms of a 400-440 ms forward as numpy's add on one thread
    and the ReLU's own pass over the blob (51 MB at 56 x 56), 30-35 ms so."""

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    op: int
    coeff: list

    num_bottom = (2, None)
    bias_term = False   # the output pass has no bias of its own

    def setup(self, bottom, top):
        p = self.param.eltwise_param
        self.op = p.operation
        if len(p.coeff) and (self.op != E.SUM or len(p.coeff) != len(bottom)):
            raise self.error("coeff needs operation SUM and one value per bottom",
                             NetDefinitionError)
        self.coeff = [float(c) for c in p.coeff] or [1.0] * len(bottom)
        self.stable_prod_grad = p.stable_prod_grad
        self.takes_epilogue = self.op == E.SUM

    def reshape(self, bottom, top):
        for blob in bottom[1:]:
            if blob.shape != bottom[0].shape:
                raise self.error(f"bottom '{blob.name}' shape {blob.shape} differs from "
                                 f"'{bottom[0].name}' shape {bottom[0].shape}", ShapeError)
        top[0].reshape(bottom[0].shape)
        if self.op == E.MAX:
            self.scratch("argmax", bottom[0].shape, np.int32)

    def forward(self, bottom, top):
        out = top[0].data
        if self.op == E.SUM:
            epilogue = self.output_epilogue()   # what the net fused after it, if anything
            if len(bottom) == 2 and self.coeff == [1.0, 1.0]:
                # ResNet's shortcut sums: one pass (x * 1 is x, so the same bits).
                sum_epilogue(*(channel_planes(b.data) for b in (bottom[0], bottom[1], top[0])),
                             *epilogue)
                return
            np.multiply(bottom[0].data, self.coeff[0], out=out)
            for blob, c in zip(bottom[1:], self.coeff[1:]):
                out += c * blob.data if c != 1 else blob.data
            if self.epilogue is not None:
                channel_epilogue(channel_planes(out), *epilogue)
        elif self.op == E.PROD:
            np.multiply(bottom[0].data, bottom[1].data, out=out)
            for blob in bottom[2:]:
                out *= blob.data
        else:
            stacked = np.stack([b.data for b in bottom])
            self.argmax[...] = stacked.argmax(axis=0)
            np.max(stacked, axis=0, out=out)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        for i, (blob, down) in enumerate(zip(bottom, propagate_down)):
            if not down:
                continue
            if self.op == E.SUM:
                np.multiply(dy, self.coeff[i], out=blob.diff)
            elif self.op == E.MAX:
                np.multiply(dy, self.argmax == i, out=blob.diff)
            elif self.stable_prod_grad:
                others = np.ones_like(dy)
                for j, other in enumerate(bottom):
                    if j != i:
                        others *= other.data
                np.multiply(dy, others, out=blob.diff)
            else:
                np.multiply(dy, top[0].data / blob.data, out=blob.diff)


@register_layer("Crop")
class Crop(Layer):
    """top = A[..., o_k : o_k + B.shape[k], ...] for every axis k >= crop_param.axis, Caffe
    "Crop". Reads crop_param: axis (2), offset (repeated: none = 0 for all cropped axes, one =
    the same for all, else one per cropped axis).

    Bottom: A to crop, B of at least A's number of axes (only its shape is read).
    Top: A's shape with axes >= axis taken from B. Gradient to A only (B gets none).
    """

    num_bottom = 2

    def setup(self, bottom, top):
        p = self.param.crop_param
        self.axis_param, self.offset = p.axis, list(p.offset)

    def reshape(self, bottom, top):
        a, b = bottom[0].shape, bottom[1].shape
        axis = canonical_axis(self.axis_param, len(a), self)
        cropped = len(a) - axis
        if len(self.offset) > 1 and len(self.offset) != cropped:
            raise self.error(f"{len(self.offset)} crop_param.offset values for the {cropped} "
                             f"axes from axis {axis} of bottom '{bottom[0].name}' {a}",
                             NetDefinitionError)
        if len(b) < len(a):
            raise self.error(f"reference bottom '{bottom[1].name}' {b} has fewer axes than "
                             f"bottom '{bottom[0].name}' {a}")
        offsets = self.offset * cropped if len(self.offset) == 1 else \
            self.offset or [0] * cropped
        self.slices = tuple(slice(None) for _ in range(axis))
        for k, off in zip(range(axis, len(a)), offsets):
            if off + b[k] > a[k]:
                raise self.error(f"crop of axis {k} out of bounds: size {b[k]} (bottom "
                                 f"'{bottom[1].name}' {b}) at offset {off} does not fit size "
                                 f"{a[k]} (bottom '{bottom[0].name}' {a})")
            self.slices += (slice(off, off + b[k]),)
        top[0].reshape(a[:axis] + b[axis:len(a)])

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data[self.slices]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 0
            bottom[0].diff[self.slices] = top[0].diff
        if propagate_down[1]:
            # B only supplies a shape; Caffe leaves its diff untouched, protonet writes the
            # true gradient (zero) so the overwrite contract holds.
            bottom[1].diff[...] = 0


@register_layer("Tile")
class Tile(Layer):
    """Repeat the bottom `tiles` times along tile_param.axis (np.tile), Caffe "Tile".
    Reads tile_param: axis (1), tiles (required, positive).
    Bottom: (..., d_axis, ...). Top: (..., tiles * d_axis, ...). Backward sums the tiles.
    """

    def setup(self, bottom, top):
        p = self.param.tile_param
        if not p.HasField("tiles") or p.tiles < 1:
            raise self.error("tile_param.tiles must be given and positive", NetDefinitionError)
        self.axis_param, self.tiles = p.axis, p.tiles

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        axis = canonical_axis(self.axis_param, len(shape), self)
        top[0].reshape(shape[:axis] + (shape[axis] * self.tiles,) + shape[axis + 1:])
        # The whole block from the axis on repeats, so (outer, tiles, inner) views suffice.
        self.view = (count(shape, 0, axis), self.tiles, count(shape, axis))

    def forward(self, bottom, top):
        outer, _, inner = self.view
        top[0].data.reshape(self.view)[...] = bottom[0].data.reshape(outer, 1, inner)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            outer, _, inner = self.view
            np.sum(top[0].diff.reshape(self.view), axis=1,
                   out=bottom[0].diff.reshape(outer, inner))
