"""Binary .caffemodel files: a NetParameter whose layers carry their blobs.

Writing follows Caffe's Net::ToProto: every layer (Split layers too) with its LayerParameter,
its blobs in the current `shape` form, data only. Reading accepts the current and the V1
`layers` format, and blobs with `shape` or the legacy num/channels/height/width fields.
"""
from __future__ import annotations

import io
import logging
import os
import sys

import numpy as np
from google.protobuf.message import DecodeError

from .. import caffe_pb2
from ..errors import NonFiniteError, PrototxtError, ProtonetError, ShapeError
from .atomic import atomic_write
from .binaryproto import (array_from_blobproto, blobproto_from_array, blobproto_shape,
                          length_key)

log = logging.getLogger("protonet")


def net_to_proto(net, write_diff: bool = False):
    out = caffe_pb2.NetParameter()
    out.name = net.name
    for layer in net.layers:
        lp = out.layer.add()
        lp.CopyFrom(layer.param)
        lp.ClearField("blobs")
        for blob in layer.blobs:
            lp.blobs.add().CopyFrom(
                blobproto_from_array(blob.data, blob.diff if write_diff else None))
    return out


def save(net, path) -> None:
    """Write the net's weights as a .caffemodel: the bytes protobuf gives for
    net_to_proto(net), but written layer by layer, each blob's floats straight from its array.
    Building the message first held the weights twice more (as protobuf floats, then as the
    serialized bytes): saving VGG-16 (528 MB of weights) peaked at 2.2 GB and took 10 s."""
    atomic_write(path, _caffemodel_chunks(net))


def _caffemodel_chunks(net):
    """The .caffemodel's bytes in pieces, in protobuf's order: fields by number, so each
    layer's blobs (field 7) go between its fields below 7 and those above."""
    head = caffe_pb2.NetParameter()
    head.name = net.name
    yield head.SerializeToString()
    for layer in net.layers:
        lp = caffe_pb2.LayerParameter()
        lp.CopyFrom(layer.param)
        lp.ClearField("blobs")
        fields = lp.SerializeToString()
        cut = _first_field_after(fields, _V2_BLOBS)
        blobs = [_blob_pieces(blob.data) for blob in layer.blobs]
        sizes = [sum(len(piece) for piece in pieces) for pieces in blobs]
        yield length_key(_V2_LAYER, len(fields) + sum(len(length_key(_V2_BLOBS, n)) + n
                                                      for n in sizes)) + fields[:cut]
        for pieces, size in zip(blobs, sizes):
            yield length_key(_V2_BLOBS, size)
            yield from pieces
        yield fields[cut:]


def _blob_pieces(array) -> list:
    """A BlobProto of `array` as blobproto_from_array serializes it (data, then shape; a
    0-axis blob has no shape field), the floats as a view of the array."""
    shape = np.shape(array)
    values = np.ascontiguousarray(array, dtype="<f4").reshape(-1)  # (which makes 0-d 1-d)
    pieces = []
    if values.size:
        raw = memoryview(values).cast("B")
        pieces += [length_key(_DATA, len(raw)), raw]
    if shape:
        pieces.append(caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=shape))
                      .SerializeToString())
    return pieces


def _first_field_after(message: bytes, number: int) -> int:
    """Where the first field numbered above `number` starts in a serialized message."""
    wire = _Wire(io.BytesIO(message), "<message>", len(message))
    for field, _, start, _, _ in wire.fields(len(message)):
        if field > number:
            return start
    return len(message)


def _legacy_equal(file_shape, shape) -> bool:
    """Caffe's Blob::ShapeEquals for legacy 4-d blobs: missing leading axes count as 1."""
    if len(shape) > 4:
        return False
    return tuple(file_shape) == tuple([1] * (4 - len(shape)) + list(shape))


def load(net, path, strict: bool = False) -> list[str]:
    """Copy the weights of the .caffemodel at `path` into `net` by layer name (see
    copy_weights), reading each blob's packed floats from the file straight into the blob.

    Parsing the whole NetParameter first would hold every weight as a protobuf float beside
    the net's own arrays, and then a numpy copy of each blob: VGG-16 (528 MB of weights)
    peaked at 1.7 GB while loading. Here the file is walked in protobuf's wire format: the
    small fields of each layer and blob are parsed by protobuf, the packed `data` floats are
    only located, checked in blocks, then read into place. V0 files (2014) take the old path.
    """
    where = str(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the copy
    except FileNotFoundError:
        raise PrototxtError(f"{where}: no such file") from None
    except OSError as e:
        raise PrototxtError(f"{where}: cannot read ({e.strerror})") from None
    with f:
        try:
            layers = _scan_net(_Wire(f, where))
        except _V0File:
            from .. import prototxt
            return copy_weights(net, prototxt.read_net_binary(path), where, strict)
        return _copy(net, layers, where, strict, f)


def layers_with_blobs(path) -> set[str]:
    """Names of the layers the .caffemodel at `path` has blobs for (none when it cannot be
    read this way: load then says why, or takes the whole-parse path)."""
    try:
        with open(path, "rb") as f:
            return {name for name, blobs in _scan_net(_Wire(f, str(path))) if blobs}
    except (OSError, ProtonetError, _V0File):
        return set()


def copy_weights(net, source, where: str, strict: bool = False) -> list[str]:
    """Copy blobs from NetParameter `source` into `net` by layer name; return the names of
    learnable layers the file did not have (an error when `strict`). Every blob is checked
    (shape, number of values, NaN or Inf) before any is copied: a bad file leaves the net as
    it was."""
    layers = [(lp.name, [_FileBlob(proto) for proto in lp.blobs]) for lp in source.layer]
    return _copy(net, layers, where, strict, None)


def _copy(net, file_layers, where: str, strict: bool, file) -> list[str]:
    found = set()
    pending = []  # copied only after every blob of the file has been checked
    for name, file_blobs in file_layers:
        layer = net.layer_dict.get(name)
        if layer is None or not file_blobs and not layer.blobs:
            continue
        found.add(name)
        if len(file_blobs) != len(layer.blobs):
            raise ShapeError(f"{where}: layer '{name}' has {len(file_blobs)} blobs in the "
                             f"file, the net's layer has {len(layer.blobs)}")
        for j, (file_blob, blob) in enumerate(zip(file_blobs, layer.blobs)):
            file_shape = file_blob.shape
            if tuple(file_shape) != blob.shape and not (file_blob.legacy and
                                                        _legacy_equal(file_shape, blob.shape)):
                raise ShapeError(f"{where}: cannot copy blob {j} of layer '{name}': shape "
                                 f"{tuple(file_shape)} in the file, {blob.shape} in the net")
            pending.append((blob, file_blob, f"{where}: layer '{name}' blob {j}"))
    missing = layers_without_weights(net, found, where, strict)
    for _, file_blob, what in pending:  # all checked first: a bad blob leaves the net as it was
        file_blob.check(file, what)
    for blob, file_blob, what in pending:
        file_blob.read_into(file, blob.data, what)
    return missing


class _FileBlob:
    """One BlobProto of a weights file: `proto` holds its shape fields (and its values when
    they are not packed floats); `segments` locate its packed float `data` in the file as
    (offset, bytes), in order (protobuf joins repeated packed runs)."""

    def __init__(self, proto, segments=()):
        self.proto = proto
        self.segments = list(segments)

    @property
    def count(self) -> int:
        if self.segments:
            return sum(n for _, n in self.segments) // 4
        return len(self.proto.data) or len(self.proto.double_data)

    @property
    def shape(self) -> tuple[int, ...]:
        return blobproto_shape(self.proto, self.count)

    @property
    def legacy(self) -> bool:
        return not self.proto.HasField("shape")

    def _blocks(self, file):
        """The packed values as float32 arrays of at most READ_BLOCK bytes, in order."""
        buffer = np.empty(READ_BLOCK // 4, np.float32)
        for offset, nbytes in self.segments:
            file.seek(offset)
            for start in range(0, nbytes, READ_BLOCK):
                part = buffer[:min(READ_BLOCK, nbytes - start) // 4]
                _read_exactly(file, part)
                yield part

    def check(self, file, what: str) -> None:
        """The number of values fits the shape, and none is NaN or Inf."""
        expected = int(np.prod(self.shape, dtype=np.int64))
        if not self.segments:
            _finite_values(array_from_blobproto(self.proto, what), what)
            return
        if self.count != expected:
            raise PrototxtError(f"{what}: shape {self.shape} needs {expected} values, "
                                f"the file has {self.count}")
        bad = sum(part.size - int(np.isfinite(part).sum()) for part in self._blocks(file))
        if bad:
            raise NonFiniteError(f"{what} holds {bad} NaN or Inf values (of {self.count})")

    def read_into(self, file, out, what: str) -> None:
        """Copy the values into the array `out` (of the blob's count)."""
        if not self.segments:
            out[...] = array_from_blobproto(self.proto, what).reshape(out.shape)
            return
        contiguous = out.flags.c_contiguous
        flat = out.reshape(-1) if contiguous else np.empty(out.size, np.float32)
        at = 0
        for offset, nbytes in self.segments:
            file.seek(offset)
            _read_exactly(file, flat[at:at + nbytes // 4])
            at += nbytes // 4
        if sys.byteorder != "little":  # the file's floats are little-endian
            flat.byteswap(inplace=True)
        if not contiguous:
            out[...] = flat.reshape(out.shape)


READ_BLOCK = 1 << 22  # bytes of packed floats checked for NaN/Inf at a time


def _read_exactly(file, array) -> None:
    view = memoryview(array).cast("B")
    if file.readinto(view) != len(view):
        raise PrototxtError(f"{file.name}: the file changed or was cut short while being read")


def _finite_values(values, what: str):
    finite = np.isfinite(values)
    if not finite.all():
        raise NonFiniteError(f"{what} holds {values.size - int(finite.sum())} NaN or Inf "
                             f"values (of {values.size})")
    return values


# -- protobuf's wire format, as far as weights files need it ----------------------------------
# NetParameter: layer = 100 (LayerParameter: name = 1, blobs = 7), V1 layers = 2
# (V1LayerParameter: name = 4, blobs = 6, V0 layer = 1). BlobProto: data = 5 (packed float),
# diff = 6, double_diff = 9 (never needed to load weights), anything else (shape, num/channels/
# height/width, double_data, unpacked data) is parsed by protobuf.
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
_V2_LAYER, _V1_LAYER = 100, 2
_V2_BLOBS, _V1_BLOBS, _V0_LAYER = 7, 6, 1
_DATA, _DIFF, _DOUBLE_DIFF = 5, 6, 9


class _Damaged(Exception):
    """The bytes break protobuf's wire format (truncated, a bad varint or wire type)."""


class _Truncated(_Damaged):
    """A field runs past the end of the file or of the message holding it."""

    def __init__(self, number: int, wire: int, payload: int):
        super().__init__("truncated")
        self.number, self.wire, self.payload = number, wire, payload


class _V0File(Exception):
    """A V0 (2014) file: its layers nest their blobs one level deeper; parsed whole."""


class _Wire:
    """Walks length-delimited protobuf messages in a file without reading their payloads."""

    def __init__(self, file, where: str, size: int | None = None):
        self.file, self.where = file, where
        self.size = os.fstat(file.fileno()).st_size if size is None else size

    def varint(self) -> int:
        result = shift = 0
        while True:
            byte = self.file.read(1)
            if not byte:
                raise _Damaged("truncated")
            result |= (byte[0] & 0x7F) << shift
            if byte[0] < 0x80:
                return result
            shift += 7
            if shift >= 70:
                raise _Damaged("a malformed varint")

    def fields(self, end: int):
        """(field number, wire type, start of the field's tag, start of its payload, end) of
        each field up to `end`; the file is left at the field's end after each."""
        while (start := self.file.tell()) < end:
            key = self.varint()
            number, wire = key >> 3, key & 7
            if number == 0:
                raise _Damaged("field number 0")
            if wire == _LENGTH:
                length = self.varint()
                payload = self.file.tell()
                stop = payload + length
            elif wire == _VARINT:
                payload = self.file.tell()
                self.varint()
                stop = self.file.tell()
            elif wire in (_FIXED64, _FIXED32):
                payload = self.file.tell()
                stop = payload + (8 if wire == _FIXED64 else 4)
            else:  # groups (3, 4): no Caffe field is one; 6 and 7 do not exist
                raise _Damaged(f"wire type {wire} (field {number})")
            if stop > end:
                raise _Truncated(number, wire, payload)
            yield number, wire, start, payload, stop
            self.file.seek(stop)

    def raw(self, start: int, stop: int) -> bytes:
        self.file.seek(start)
        data = self.file.read(stop - start)
        if len(data) != stop - start:
            raise _Damaged("truncated")
        return data


def _scan_net(wire: _Wire):
    """[(layer name, [_FileBlob])] of the file, in its order; the rest of the NetParameter is
    parsed (so damage anywhere is reported) but not kept."""
    layers, kinds, rest = [], set(), bytearray()
    try:
        for number, wire_type, start, payload, stop in wire.fields(wire.size):
            if number in (_V2_LAYER, _V1_LAYER) and wire_type == _LENGTH:
                kinds.add(number)
                layers.append(_scan_layer(wire, number == _V1_LAYER, payload, stop, len(layers)))
            else:
                rest += wire.raw(start, stop)
        caffe_pb2.NetParameter.FromString(bytes(rest))
    except _Truncated as e:
        where = ""
        if e.number in (_V2_LAYER, _V1_LAYER) and e.wire == _LENGTH:  # name the cut layer
            where = (f" (in the file's layer {len(layers)}"
                     f"{_partial_name(wire, e.number == _V1_LAYER, e.payload)})")
        raise PrototxtError(f"{wire.where}: damaged or not a binary NetParameter (caffemodel): "
                            f"{e}{where}") from None
    except (_Damaged, DecodeError) as e:
        raise PrototxtError(f"{wire.where}: damaged or not a binary NetParameter (caffemodel): "
                            f"{e}") from None
    if len(kinds) == 2:
        raise PrototxtError(f"{wire.where}: uses both 'layer' and the old 'layers' field; "
                            "use one of them (protonet upgrade converts old files)")
    return layers


def _scan_layer(wire: _Wire, v1: bool, start: int, end: int, index: int):
    blobs_field = _V1_BLOBS if v1 else _V2_BLOBS
    blobs, rest = [], bytearray()
    try:
        for number, wire_type, field_start, payload, stop in wire.fields(end):
            if v1 and number == _V0_LAYER:
                raise _V0File
            if number == blobs_field and wire_type == _LENGTH:
                blobs.append(_scan_blob(wire, payload, stop))
            else:
                rest += wire.raw(field_start, stop)
        message = (caffe_pb2.V1LayerParameter if v1 else caffe_pb2.LayerParameter)()
        message.ParseFromString(bytes(rest))
    except (_Damaged, DecodeError) as e:
        raise _Damaged(f"{e} (in the file's layer {index}{_name_so_far(rest, v1)})") from None
    if v1:
        from ..prototxt import v1_to_v2_layer  # its errors for a V1 layer, as a full parse
        message = v1_to_v2_layer(message, wire.where)
    return message.name, blobs


def _partial_name(wire: _Wire, v1: bool, payload: int) -> str:
    """", 'name'" of a layer the file cuts short, when its name comes before the cut."""
    rest = bytearray()
    wire.file.seek(payload)
    try:
        for number, _, field_start, _, stop in wire.fields(wire.size):
            if number != (_V1_BLOBS if v1 else _V2_BLOBS):
                rest += wire.raw(field_start, stop)
    except _Damaged:
        pass
    return _name_so_far(rest, v1)


def _name_so_far(rest: bytes, v1: bool) -> str:
    """", 'name'" when the layer's fields read before the damage name it."""
    try:
        message = (caffe_pb2.V1LayerParameter if v1 else caffe_pb2.LayerParameter)()
        message.ParseFromString(bytes(rest))
    except DecodeError:
        return ""
    return f", '{message.name}'" if message.name else ""


def _scan_blob(wire: _Wire, start: int, end: int) -> _FileBlob:
    segments, rest = [], bytearray()
    unpacked_data = False
    for number, wire_type, field_start, payload, stop in wire.fields(end):
        if wire_type == _LENGTH and number in (_DATA, _DIFF, _DOUBLE_DIFF):
            if (stop - payload) % (8 if number == _DOUBLE_DIFF else 4):
                raise _Damaged(f"a packed field of {stop - payload} bytes, not whole values")
            if number == _DATA:
                segments.append((payload, stop - payload))
        else:
            unpacked_data |= number == _DATA
            rest += wire.raw(field_start, stop)
    if segments and unpacked_data:  # packed and unpacked runs, joined in order: parse it whole
        return _FileBlob(caffe_pb2.BlobProto.FromString(wire.raw(start, end)))
    return _FileBlob(caffe_pb2.BlobProto.FromString(bytes(rest)), segments)


def layers_without_weights(net, found, where: str, strict: bool) -> list[str]:
    """The learnable layers of `net` not among the layer names `found` in a weights file;
    they keep their fillers (fine-tuning), or are an error when `strict`."""
    missing = [layer.name for layer in net.layers if layer.blobs and layer.name not in found]
    if missing:
        names = f"learnable layer{'s' if len(missing) > 1 else ''} " + \
            ", ".join(repr(m) for m in missing)
        if strict:
            raise ShapeError(f"{where}: no weights for {names}")
        log.info("%s has no weights for %s; they keep their fillers", where, names)
    return missing
