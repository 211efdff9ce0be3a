"""Layers that produce blobs: Input, DummyData (and the LMDB-backed Data, MemoryData).

These only connect the net to data; reading and decoding live in protonet/io and protonet/data.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from .. import caffe_pb2, rng
from ..data.prefetch import Prefetcher
from ..data.transformer import DataTransformer
from ..errors import DataError, NetDefinitionError, ShapeError
from ..fillers import fill
from ..io.datum import datum_shape, datum_to_array, parse_datum
from ..io.lmdb_store import LmdbCursor, close_lmdb, open_lmdb
from ..registry import register_layer
from .base import Layer

log = logging.getLogger("protonet")


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


@register_layer("Data")
class Data(Layer):
    """Batches of Datum records from an LMDB, transformed, read ahead on a background thread.

    Caffe "Data" (V1 DATA). Reads data_param: source, batch_size, rand_skip (0: skip a random
    number of records below it at the start), backend (LMDB only; LEVELDB is refused),
    prefetch (4 batches ahead); transform_param (see protonet.data.transformer).
    Tops: data (batch_size, C, H, W) (crop_size replaces H and W) and optionally label
    (batch_size,). Records are read in key order, wrapping around at the end.
    """

    num_bottom = 0
    num_top = (1, 2)

    def setup(self, bottom, top):
        p = self.param.data_param
        where = f"layer '{self.name}' (Data)"
        if p.HasField("backend") and p.backend == caffe_pb2.DataParameter.LEVELDB:
            raise DataError(f"{where}: backend LEVELDB is not supported; protonet reads LMDB "
                            "only (convert with `protonet data` or Caffe's tools with "
                            "-backend lmdb)")
        if not p.source:
            raise DataError(f"{where}: data_param.source is missing")
        if p.batch_size < 1:
            raise DataError(f"{where}: data_param.batch_size must be positive")
        if not p.HasField("backend"):
            log.info("%s: no backend given (Caffe's default is LEVELDB); opening %s as LMDB",
                     where, p.source)
        self.where, self.source, self.batch_size = where, p.source, int(p.batch_size)
        self.env = open_lmdb(p.source, where)
        self.cursor = LmdbCursor(self.env, f"{where}: {p.source}")
        start = int(rng.generator().integers(p.rand_skip)) if p.rand_skip else 0
        self.cursor.seek(start)
        key, value = self.cursor.next()
        first = parse_datum(value, key)
        self.record_shape = datum_shape(first)
        self.raw_dtype = np.float32 if len(first.float_data) else np.uint8
        self.transformer = DataTransformer(self.param.transform_param, self.phase,
                                           self.record_shape, where)
        self.seed = int(rng.generator().integers(1 << 62))
        self.depth = max(1, int(p.prefetch))
        self.position = start
        self.wait_seconds = 0.0
        self._buffers = None
        self._start(start)
        self.reshape(bottom, top)

    def _start(self, position: int) -> None:
        self.cursor.seek(position)
        self.position = position
        if self._buffers is None:
            n = self.batch_size
            self._buffers = [_Batch(np.empty((n, *self.record_shape), self.raw_dtype),
                                    np.empty((n, *self.transformer.out_shape), np.float32),
                                    np.empty(n, np.float32)) for _ in range(self.depth + 1)]
        self.prefetcher = Prefetcher(self._produce, self._buffers, name=f"prefetch {self.name}")

    def _produce(self, batch: "_Batch") -> None:
        batch.position = self.cursor.position
        for i in range(self.batch_size):
            key, value = self.cursor.next()
            datum = parse_datum(value, key)
            datum_to_array(datum, key, out=batch.raw[i])
            batch.label[i] = datum.label
        self.transformer(batch.raw, self.seed, batch.position, batch.data)

    def reshape(self, bottom, top):
        top[0].reshape(self.batch_size, *self.transformer.out_shape)
        if len(top) == 2:
            top[1].reshape(self.batch_size)

    def forward(self, bottom, top):
        t = time.perf_counter()
        batch = self.prefetcher.get()
        self.wait_seconds += time.perf_counter() - t
        top[0].data[...] = batch.data
        if len(top) == 2:
            top[1].data[...] = batch.label
        self.position = batch.position + self.batch_size
        self.prefetcher.release(batch)

    def reader_position(self) -> int:
        """Index of the next record a forward will return (counting from the first record,
        not wrapped)."""
        return self.position

    def seek(self, position: int) -> None:
        """Continue from record `position` (a resumed run restores its reader this way)."""
        self._buffers = self.prefetcher.close()
        self._start(int(position))

    def close(self) -> None:
        if getattr(self, "prefetcher", None) is not None:
            self.prefetcher.close()
            self.prefetcher = None
            self.cursor.close()
            close_lmdb(self.env)


class _Batch:
    __slots__ = ("raw", "data", "label", "position")

    def __init__(self, raw, data, label) -> None:
        self.raw, self.data, self.label, self.position = raw, data, label, 0


@register_layer("MemoryData")
class MemoryData(Layer):
    """Batches from arrays handed in from Python (pycaffe's net.set_input_arrays), wrapping.

    Caffe "MemoryData" (V1 MEMORY_DATA). Reads memory_data_param batch_size, channels,
    height, width. Tops: data (batch_size, channels, height, width), label (batch_size,).
    """

    num_bottom = 0
    num_top = 2

    def setup(self, bottom, top):
        p = self.param.memory_data_param
        self.shape = (int(p.batch_size), int(p.channels), int(p.height), int(p.width))
        if min(self.shape) < 1:
            raise self.error("memory_data_param needs positive batch_size, channels, height and "
                             "width", NetDefinitionError)
        self.data = self.labels = None
        self.index = 0

    def set_input_arrays(self, data, labels) -> None:
        data = np.ascontiguousarray(data, np.float32)
        labels = np.ascontiguousarray(labels, np.float32).reshape(-1)
        if data.shape[1:] != self.shape[1:] or len(labels) != len(data):
            raise self.error(f"arrays of shape {data.shape} with {len(labels)} labels do not fit "
                             f"(N, {self.shape[1]}, {self.shape[2]}, {self.shape[3]}) with N "
                             "labels", ShapeError)
        if len(data) % self.shape[0]:
            raise self.error(f"{len(data)} samples is not a multiple of batch_size "
                             f"{self.shape[0]}", ShapeError)
        self.data, self.labels, self.index = data, labels, 0

    def reshape(self, bottom, top):
        top[0].reshape(self.shape)
        top[1].reshape(self.shape[0])

    def forward(self, bottom, top):
        if self.data is None:
            raise self.error("no arrays given: call net.set_input_arrays(data, labels) first",
                             NetDefinitionError)
        n = self.shape[0]
        top[0].data[...] = self.data[self.index:self.index + n]
        top[1].data[...] = self.labels[self.index:self.index + n]
        self.index = (self.index + n) % len(self.data)
