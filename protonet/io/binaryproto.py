"""BlobProto <-> numpy, and .binaryproto files (mean images, single blobs).

A BlobProto gives its shape either as `shape { dim: ... }` or, in files from before 2015,
as the legacy num/channels/height/width fields; values are float `data` or `double_data`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import caffe_pb2
from ..errors import DataError, NonFiniteError, PrototxtError
from .atomic import atomic_write


def blobproto_shape(proto, count: int | None = None) -> tuple[int, ...]:
    """The blob's shape; `count`: how many values it has when they are not in `proto` itself
    (the caffemodel reader leaves packed floats in the file)."""
    if proto.HasField("shape"):
        return tuple(int(d) for d in proto.shape.dim)
    if any(proto.HasField(f) for f in ("num", "channels", "height", "width")):
        return (proto.num, proto.channels, proto.height, proto.width)
    # Neither form: how Caffe writes a 0-axis blob (a scalar: Scale with num_axes 0, the SSD
    # fork's channel-shared Normalize), since its empty shape sets no field. Several values
    # without a shape are read as a 1-d blob of them.
    n = count if count is not None else len(proto.data) or len(proto.double_data)
    return (n,) if n > 1 else ()


def array_from_blobproto(proto, where: str = "blob", diff: bool = False) -> np.ndarray:
    """The blob's values (or diff) as a float32 array of its shape."""
    shape = blobproto_shape(proto)
    if diff:
        values = proto.diff if len(proto.diff) else proto.double_diff
    else:
        values = proto.data if len(proto.data) else proto.double_data
    array = np.asarray(values, dtype=np.float32)
    expected = int(np.prod(shape, dtype=np.int64))
    if array.size != expected:
        if diff and array.size == 0:
            return np.zeros(shape, np.float32)
        raise PrototxtError(f"{where}: shape {shape} needs {expected} values, "
                            f"the file has {array.size}")
    return array.reshape(shape)


def blobproto_from_array(array, diff=None, legacy_4d: bool = False):
    """A BlobProto of float32 values; `legacy_4d` writes num/channels/height/width instead of
    `shape` (for tools that only read the old fields)."""
    array = np.asarray(array, dtype=np.float32)
    proto = caffe_pb2.BlobProto()
    if legacy_4d:
        if array.ndim > 4:
            raise DataError(f"cannot write shape {array.shape} as a legacy 4-d blob")
        n, c, h, w = [1] * (4 - array.ndim) + list(array.shape)
        proto.num, proto.channels, proto.height, proto.width = n, c, h, w
    elif array.ndim:  # a 0-axis blob gets no shape field, as Caffe writes it
        proto.shape.dim.extend(int(d) for d in array.shape)
    _merge_packed_floats(proto, _DATA_FIELD, array)
    if diff is not None:
        _merge_packed_floats(proto, _DIFF_FIELD, diff)
    return proto


def blobproto_pieces(array) -> list:
    """blobproto_from_array(array).SerializeToString() in pieces, the floats as a view of the
    array (no copy of a float32 array): data (field 5), then shape (7; none for a 0-axis
    blob), protobuf's order."""
    shape = np.shape(array)
    values = np.ascontiguousarray(array, dtype="<f4").reshape(-1)  # (which makes 0-d 1-d)
    pieces = []
    if values.size:
        raw = memoryview(values).cast("B")
        pieces += [length_key(_DATA_FIELD, len(raw)), raw]
    if shape:
        pieces.append(caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=shape))
                      .SerializeToString())
    return pieces


# BlobProto's `data` and `diff` (fields 5 and 6, packed repeated float): filled by parsing their
# wire encoding, the raw little-endian floats behind a tag and a length. extend() from a list
# goes through one Python float per value (CaffeNet's 61M weights: ~35 s to save against ~1 s).
_DATA_FIELD, _DIFF_FIELD = 5, 6


def _merge_packed_floats(proto, field_number: int, values) -> None:
    raw = np.ascontiguousarray(values, dtype="<f4").tobytes()
    if not raw:
        return
    proto.MergeFromString(length_key(field_number, len(raw)) + raw)


def varint(n: int) -> bytes:
    """protobuf's base-128 encoding of a non-negative integer."""
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def length_key(field_number: int, nbytes: int) -> bytes:
    """The tag and length before a length-delimited field (wire type 2) of `nbytes`."""
    return varint(field_number << 3 | 2) + varint(nbytes)


def read_binaryproto(path) -> np.ndarray:
    """A .binaryproto file (one serialized BlobProto) as a float32 array."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    proto = caffe_pb2.BlobProto()
    try:
        proto.ParseFromString(raw)
    except Exception as e:
        raise DataError(f"{path}: not a binary BlobProto ({e})") from None
    array = array_from_blobproto(proto, where=str(path))
    finite = np.isfinite(array)
    if not finite.all():  # a mean or an infogain matrix: NaN would spread through every batch
        raise NonFiniteError(f"{path}: {array.size - int(finite.sum())} of {array.size} values "
                             "are NaN or Inf")
    return array


def write_binaryproto(path, array, legacy_4d: bool = True) -> None:
    """Write `array` as a .binaryproto, atomically. Legacy 4-d fields by default, as Caffe's
    compute_image_mean writes them."""
    atomic_write(path, blobproto_from_array(array, legacy_4d=legacy_4d).SerializeToString())
