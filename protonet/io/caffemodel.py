"""Binary .caffemodel files: a NetParameter whose layers carry their blobs.

Writing follows Caffe's Net::ToProto: every layer (Split layers too) with its LayerParameter,
its blobs in the current `shape` form, data only. Reading accepts the current and the V1
`layers` format, and blobs with `shape` or the legacy num/channels/height/width fields.
Both stream the blobs' floats between the file and the net's arrays (io/wire.py).
"""
from __future__ import annotations

import logging

from google.protobuf.message import DecodeError

from .. import caffe_pb2
from ..errors import PrototxtError, ProtonetError, ShapeError
from . import wire
from .atomic import atomic_write
from .binaryproto import blobproto_from_array, length_key

log = logging.getLogger("protonet")

# NetParameter: layer = 100 (LayerParameter: name = 1, blobs = 7), V1 layers = 2
# (V1LayerParameter: name = 4, blobs = 6, V0 layer = 1).
_V2_LAYER, _V1_LAYER = 100, 2
_V2_BLOBS, _V1_BLOBS, _V0_LAYER = 7, 6, 1


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
    """The .caffemodel's bytes in pieces: the NetParameter's name, then each layer (field
    100) with its blobs (field 7) streamed in."""
    head = caffe_pb2.NetParameter()
    head.name = net.name
    yield head.SerializeToString()
    for layer in net.layers:
        lp = caffe_pb2.LayerParameter()
        lp.CopyFrom(layer.param)
        lp.ClearField("blobs")
        pieces, size = wire.with_blobs(lp, _V2_BLOBS, [blob.data for blob in layer.blobs])
        yield length_key(_V2_LAYER, size)
        yield from pieces


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
            layers = _scan_net(wire.Wire(f, where))
        except _V0File:
            from .. import prototxt
            return copy_weights(net, prototxt.read_net_binary(path), where, strict)
        return _copy(net, layers, where, strict)


def layers_with_blobs(path) -> set[str]:
    """Names of the layers the .caffemodel at `path` has blobs for (none when it cannot be
    read this way: load then says why, or takes the whole-parse path)."""
    try:
        with open(path, "rb") as f:
            return {name for name, blobs in _scan_net(wire.Wire(f, str(path))) if blobs}
    except (OSError, ProtonetError, _V0File):
        return set()


def copy_weights(net, source, where: str, strict: bool = False) -> list[str]:
    """Copy blobs from NetParameter `source` into `net` by layer name; return the names of
    learnable layers the file did not have (an error when `strict`). Every blob is checked
    (shape, number of values, NaN or Inf) before any is copied: a bad file leaves the net as
    it was."""
    layers = [(lp.name, [wire.FileBlob(proto) for proto in lp.blobs]) for lp in source.layer]
    return _copy(net, layers, where, strict)


def _copy(net, file_layers, where: str, strict: bool) -> list[str]:
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
        file_blob.check(what)
    for blob, file_blob, what in pending:
        file_blob.read_into(blob.data, what)
    return missing


class _V0File(Exception):
    """A V0 (2014) file: its layers nest their blobs one level deeper; parsed whole."""


def _scan_net(reader: wire.Wire):
    """[(layer name, [wire.FileBlob])] of the file, in its order; the rest of the NetParameter is
    parsed (so damage anywhere is reported) but not kept."""
    layers, kinds, rest = [], set(), bytearray()
    try:
        for number, wire_type, start, payload, stop in reader.fields(reader.size):
            if number in (_V2_LAYER, _V1_LAYER) and wire_type == wire.LENGTH:
                kinds.add(number)
                layers.append(_scan_layer(reader, number == _V1_LAYER, payload, stop,
                                          len(layers)))
            else:
                rest += reader.raw(start, stop)
        caffe_pb2.NetParameter.FromString(bytes(rest))
    except wire.Truncated as e:
        where = ""
        if e.number in (_V2_LAYER, _V1_LAYER) and e.wire == wire.LENGTH:  # name the cut layer
            where = (f" (in the file's layer {len(layers)}"
                     f"{_partial_name(reader, e.number == _V1_LAYER, e.payload)})")
        raise PrototxtError(f"{reader.where}: damaged or not a binary NetParameter "
                            f"(caffemodel): {e}{where}") from None
    except (wire.Damaged, DecodeError) as e:
        raise PrototxtError(f"{reader.where}: damaged or not a binary NetParameter "
                            f"(caffemodel): {e}") from None
    if len(kinds) == 2:
        raise PrototxtError(f"{reader.where}: uses both 'layer' and the old 'layers' field; "
                            "use one of them (protonet upgrade converts old files)")
    return layers


def _scan_layer(reader: wire.Wire, v1: bool, start: int, end: int, index: int):
    blobs_field = _V1_BLOBS if v1 else _V2_BLOBS
    blobs, rest = [], bytearray()
    try:
        for number, wire_type, field_start, payload, stop in reader.fields(end):
            if v1 and number == _V0_LAYER:
                raise _V0File
            if number == blobs_field and wire_type == wire.LENGTH:
                blobs.append(wire.scan_blob(reader, payload, stop))
            else:
                rest += reader.raw(field_start, stop)
        message = (caffe_pb2.V1LayerParameter if v1 else caffe_pb2.LayerParameter)()
        message.ParseFromString(bytes(rest))
    except (wire.Damaged, DecodeError) as e:
        raise wire.Damaged(f"{e} (in the file's layer {index}{_name_so_far(rest, v1)})") \
            from None
    if v1:
        from ..prototxt import v1_to_v2_layer  # its errors for a V1 layer, as a full parse
        message = v1_to_v2_layer(message, reader.where)
    return message.name, blobs


def _partial_name(reader: wire.Wire, v1: bool, payload: int) -> str:
    """", 'name'" of a layer the file cuts short, when its name comes before the cut."""
    rest = bytearray()
    reader.file.seek(payload)
    try:
        for number, _, field_start, _, stop in reader.fields(reader.size):
            if number != (_V1_BLOBS if v1 else _V2_BLOBS):
                rest += reader.raw(field_start, stop)
    except wire.Damaged:
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
