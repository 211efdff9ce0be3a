"""Layers that produce blobs: Input, DummyData (and the LMDB-backed Data, MemoryData).

These only connect the net to data; reading and decoding live in protonet/io and protonet/data.
"""
from __future__ import annotations

from .. import caffe_pb2
from ..fillers import fill
from ..registry import register_layer
from .base import Layer


def _shapes_from_param(layer: Layer, shapes, num_tops: int, what: str) -> list[tuple[int, ...]]:
    """One BlobShape for every top, or one per top."""
    shapes = [tuple(int(d) for d in s.dim) for s in shapes]
    if len(shapes) == 1:
        return shapes * num_tops
    if len(shapes) != num_tops:
        raise layer.error(f"{what} gives {len(shapes)} shapes for {num_tops} tops; "
                          f"give one shape, or one per top")
    return shapes


@register_layer("Input")
class Input(Layer):
    """Tops of fixed shapes that the user fills (net.blobs[name].data[...] = x).

    Caffe "Input". Reads input_param.shape (one for all tops, or one per top).
    """

    num_bottom = 0
    num_top = (1, None)
    is_net_input = True

    def setup(self, bottom, top):
        shapes = _shapes_from_param(self, self.param.input_param.shape, len(top), "input_param")
        for blob, shape in zip(top, shapes):
            blob.reshape(shape)

    def reshape(self, bottom, top):
        # Caffe parity: a no-op, so pycaffe's `net.blobs['data'].reshape(...); net.reshape()`
        # keeps the shape the user set.
        pass

    def forward(self, bottom, top):
        pass


@register_layer("DummyData")
class DummyData(Layer):
    """Tops filled by fillers: constant fillers once at set-up, others on every forward.

    Caffe "DummyData" (V1 DUMMY_DATA). Reads dummy_data_param.data_filler (none: constant 0;
    one: used for every top; or one per top) and shape (or the legacy num/channels/height/width
    lists).
    """

    num_bottom = 0
    num_top = (1, None)

    def setup(self, bottom, top):
        p = self.param.dummy_data_param
        if len(p.shape):
            self.shapes = _shapes_from_param(self, p.shape, len(top), "dummy_data_param")
        else:
            legacy = [list(p.num), list(p.channels), list(p.height), list(p.width)]
            if any(len(v) not in (1, len(top)) for v in legacy):
                raise self.error("dummy_data_param needs shape, or num/channels/height/width "
                                 f"given once or once per top ({len(top)} tops)")
            self.shapes = [tuple(v[0] if len(v) == 1 else v[i] for v in legacy)
                           for i in range(len(top))]
        fillers = list(p.data_filler)
        if not fillers:
            fillers = [caffe_pb2.FillerParameter(type="constant", value=0)]
        if len(fillers) == 1:
            fillers = fillers * len(top)
        if len(fillers) != len(top):
            raise self.error(f"dummy_data_param gives {len(fillers)} data_filler for "
                             f"{len(top)} tops; give one, or one per top")
        self.fillers = fillers
        self.refill = [f.type != "constant" for f in fillers]
        for blob, shape, filler in zip(top, self.shapes, fillers):
            blob.reshape(shape)
            fill(filler, blob.data)

    def reshape(self, bottom, top):
        for blob, shape in zip(top, self.shapes):
            blob.reshape(shape)

    def forward(self, bottom, top):
        for blob, filler, refill in zip(top, self.fillers, self.refill):
            if refill:
                fill(filler, blob.data)
