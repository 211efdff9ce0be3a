"""Layers that produce blobs: Input, Parameter, DummyData, Data (LMDB), ImageData, MemoryData.

These only connect the net to data; reading and decoding live in protonet/io and protonet/data.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from .. import caffe_pb2, parallel, rng
from ..blob import Blob
from ..data.prefetch import Prefetcher
from ..data.transformer import DataTransformer
from ..errors import DataError, NetDefinitionError, ShapeError
from ..fillers import fill
from ..io.datum import datum_shape, datum_to_array, parse_datum
from ..io.images import load_image, read_image_list
from ..io.lmdb_store import LmdbCursor, close_lmdb, open_lmdb
from ..registry import register_layer
from .base import Layer

log = logging.getLogger("protonet")


def _shapes_from_param(layer: Layer, shapes, num_tops: int, what: str) -> list[tuple[int, ...]]:
    """One BlobShape for every top, or one per top."""
    shapes = [tuple(int(d) for d in s.dim) for s in shapes]
    for shape in shapes:
        if any(d < 1 for d in shape):   # an empty blob would reach every layer below
            raise layer.error(f"{what} shape {shape}: every dimension must be at least 1",
                              NetDefinitionError)
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


@register_layer("Parameter")
class Parameter(Layer):
    """A learnable blob as a top (Caffe "Parameter"): parameter_param.shape gives its shape;
    the blob starts at zero (Caffe has no filler here; load it from a caffemodel) and its
    gradient is the top's."""

    num_bottom = 0
    num_top = 1

    def setup(self, bottom, top):
        shape = tuple(int(d) for d in self.param.parameter_param.shape.dim)
        if not self.blobs:
            self.blobs = [Blob(shape, name=f"{self.name}[0]")]
        self.check_blob_shape(0, shape)

    def reshape(self, bottom, top):
        top[0].reshape(self.blobs[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.blobs[0].data

    def backward(self, top, propagate_down, bottom):
        if self.param_propagate_down[0]:
            self.blobs[0].diff += top[0].diff


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
        if len(p.shape) and (len(p.num) or len(p.channels) or len(p.height) or len(p.width)):
            raise self.error("dummy_data_param gives both shape and num/channels/height/width; "
                             "give one of them", NetDefinitionError)
        if len(p.shape):
            self.shapes = _shapes_from_param(self, p.shape, len(top), "dummy_data_param")
        else:
            legacy = [list(p.num), list(p.channels), list(p.height), list(p.width)]
            if any(len(v) not in (1, len(top)) for v in legacy):
                raise self.error("dummy_data_param needs shape, or num/channels/height/width "
                                 f"given once or once per top ({len(top)} tops)")
            self.shapes = [tuple(v[0] if len(v) == 1 else v[i] for v in legacy)
                           for i in range(len(top))]
            if any(d < 1 for shape in self.shapes for d in shape):
                raise self.error(f"dummy_data_param num/channels/height/width {self.shapes}: "
                                 "every dimension must be at least 1", NetDefinitionError)
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
            fill(filler, blob.data, where=f"layer '{self.name}' ({self.type})")

    def reshape(self, bottom, top):
        for blob, shape in zip(top, self.shapes):
            blob.reshape(shape)

    def forward(self, bottom, top):
        for blob, filler, refill in zip(top, self.fillers, self.refill):
            if refill:
                fill(filler, blob.data)


class PrefetchingData(Layer):
    """Shared by Data and ImageData: records read ahead on a background thread into a cycle of
    batch buffers, transformed, and counted, so a snapshot can store where reading resumes.

    A subclass opens its source in `setup`, then calls `start_reading(...)`; it defines
    `rewind(position)` (the next record read is number `position`, counting from the first
    and not wrapped) and `read_record(out) -> label` (decode the next record into `out`), and
    may define a faster `skip_records(n)`. In data-parallel training each rank reads only its
    share of the records (protonet.parallel.data_shard); positions count every record.
    """

    num_bottom = 0
    num_top = (1, 2)

    def start_reading(self, batch_size: int, depth: int, record_shape, raw_dtype,
                      start: int) -> None:
        self.batch_size, self.depth = int(batch_size), max(1, int(depth))
        self.record_shape, self.raw_dtype = tuple(record_shape), raw_dtype
        self.transformer = DataTransformer(self.param.transform_param, self.phase,
                                           self.record_shape, self.where)
        self.seed = int(rng.generator().integers(1 << 62))
        self.shard = parallel.data_shard(self.phase, self.batch_size, origin=start)
        self.wait_seconds = 0.0
        self._buffers = None
        self._start(start)

    def _start(self, position: int) -> None:
        self.rewind(position)
        self.position = self._read_position = position
        if self._buffers is None:
            n = self.batch_size
            self._buffers = [_Batch(np.empty((n, *self.record_shape), self.raw_dtype),
                                    np.empty((n, *self.transformer.out_shape), np.float32),
                                    np.empty(n, np.float32)) for _ in range(self.depth + 1)]
        self.prefetcher = Prefetcher(self._produce, self._buffers, name=f"prefetch {self.name}")

    def _produce(self, batch: "_Batch") -> None:
        batch.position = self._read_position
        for i in range(self.batch_size):
            kept = self.shard.next_kept(self._read_position)
            if kept > self._read_position:
                self.skip_records(kept - self._read_position)
                self._read_position = kept
            batch.label[i] = self.read_record(batch.raw[i])
            self._read_position += 1
        batch.end = self._read_position
        self.transformer(batch.raw, self.seed, batch.position, batch.data)

    def skip_records(self, n: int) -> None:
        """Pass over the next `n` records (other ranks' share) without decoding them."""
        self.rewind(self._read_position + n)

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
        self.position = batch.end
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
            self.close_source()

    def close_source(self) -> None:
        """Release the source after the reading thread stopped."""


class _Batch:
    __slots__ = ("raw", "data", "label", "position", "end")

    def __init__(self, raw, data, label) -> None:
        self.raw, self.data, self.label, self.position, self.end = raw, data, label, 0, 0


@register_layer("Data")
class Data(PrefetchingData):
    """Batches of Datum records from an LMDB, transformed, read ahead on a background thread.

    Caffe "Data" (V1 DATA). Reads data_param: source, batch_size, rand_skip (0: skip a random
    number of records below it at the start), backend (LMDB only; LEVELDB is refused),
    prefetch (4 batches ahead); transform_param (see protonet.data.transformer).
    Tops: data (batch_size, C, H, W) (crop_size replaces H and W) and optionally label
    (batch_size,). Records are read in key order, wrapping around at the end.
    """

    def setup(self, bottom, top):
        p = self.param.data_param
        where = self.where = f"layer '{self.name}' (Data)"
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
        self.source = p.source
        self.env = open_lmdb(p.source, where)
        self.cursor = LmdbCursor(self.env, f"{where}: LMDB '{p.source}'")
        start = int(rng.generator().integers(p.rand_skip)) if p.rand_skip else 0
        self.cursor.seek(start)
        key, value = self.cursor.next()
        first = parse_datum(value, key, self.cursor.where)
        self.start_reading(p.batch_size, p.prefetch, datum_shape(first),
                           np.float32 if len(first.float_data) else np.uint8, start)

    def rewind(self, position: int) -> None:
        self.cursor.seek(position)

    def skip_records(self, n: int) -> None:
        for _ in range(n):
            self.cursor.next()

    def read_record(self, out: np.ndarray) -> float:
        key, value = self.cursor.next()
        datum = parse_datum(value, key, self.cursor.where)
        datum_to_array(datum, key, out=out, where=self.cursor.where)
        return datum.label

    def close_source(self) -> None:
        self.cursor.close()
        close_lmdb(self.env)


@register_layer("ImageData")
class ImageData(PrefetchingData):
    """Batches of image files named in a list ('path label' per line), read ahead.

    Caffe "ImageData" (V1 IMAGE_DATA). Reads image_data_param: source (the list),
    root_folder (prefixed to each path), batch_size, new_height/new_width (resize, bilinear),
    is_color (true: 3 channels, BGR as Caffe's OpenCV), shuffle (a new order every epoch,
    drawn from the net's random seed), rand_skip; transform_param. Every image must have the
    first one's shape (resize them with new_height/new_width otherwise). Decoded by Pillow,
    so a resized image can differ from OpenCV's resize by a grey level here and there.
    """

    def setup(self, bottom, top):
        p = self.param.image_data_param
        self.where = f"layer '{self.name}' (ImageData)"
        if not p.source:
            raise DataError(f"{self.where}: image_data_param.source is missing")
        if p.batch_size < 1:
            raise DataError(f"{self.where}: image_data_param.batch_size must be positive")
        try:
            self.entries = read_image_list(p.source)
        except DataError as e:
            raise DataError(f"{self.where}: {e}") from None
        self.root, self.color = p.root_folder, bool(p.is_color)
        self.size = (int(p.new_height), int(p.new_width))
        self.shuffle_seed = int(rng.generator().integers(1 << 62)) if p.shuffle else None
        self._orders: dict[int, np.ndarray] = {}
        start = int(rng.generator().integers(p.rand_skip)) if p.rand_skip else 0
        self.rewind(start)
        first = self._load(self._entry(start)[0])
        self.start_reading(p.batch_size, 4, first.shape, np.uint8, start)

    def _order(self, epoch: int) -> np.ndarray:
        if self.shuffle_seed is None:
            return np.arange(len(self.entries))
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.shuffle_seed, epoch])
                            .permutation(len(self.entries))}
        return self._orders[epoch]

    def _entry(self, position: int) -> tuple[str, int]:
        epoch, i = divmod(position, len(self.entries))
        path, label = self.entries[self._order(epoch)[i]]
        return self.root + path, label

    def _load(self, path: str) -> np.ndarray:
        try:
            return load_image(path, *self.size, color=self.color)
        except (OSError, ValueError) as e:
            raise DataError(f"{self.where}: cannot read image {path}: {e}") from None

    def rewind(self, position: int) -> None:
        self._next = position

    def read_record(self, out: np.ndarray) -> float:
        path, label = self._entry(self._next)
        image = self._load(path)
        if image.shape != out.shape:
            raise DataError(f"{self.where}: image {path} has shape {image.shape}, the first had "
                            f"{out.shape}; set image_data_param new_height and new_width to "
                            "resize them")
        out[...] = image
        self._next += 1
        return label


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
        if parallel.solver_count() > 1:  # data-parallel: this rank's share of the samples
            kept = parallel.data_shard(self.phase, self.shape[0]).kept(len(data))
            data, labels = data[kept], labels[kept]
        if len(data) % self.shape[0]:
            raise self.error(f"{len(data)} samples is not a multiple of batch_size "
                             f"{self.shape[0]}" + (f" (this rank's share, of "
                                                   f"{parallel.solver_count()} ranks)"
                                                   if parallel.solver_count() > 1 else ""),
                             ShapeError)
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
