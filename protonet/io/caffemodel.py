"""Binary .caffemodel files: a NetParameter whose layers carry their blobs.

Writing follows Caffe's Net::ToProto: every layer (Split layers too) with its LayerParameter,
its blobs in the current `shape` form, data only. Reading accepts the current and the V1
`layers` format, and blobs with `shape` or the legacy num/channels/height/width fields.
"""
from __future__ import annotations

import logging

import numpy as np

from .. import caffe_pb2
from ..errors import NonFiniteError, ShapeError
from .atomic import atomic_write
from .binaryproto import array_from_blobproto, blobproto_from_array, blobproto_shape

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
    atomic_write(path, net_to_proto(net).SerializeToString())


def _legacy_equal(file_shape, shape) -> bool:
    """Caffe's Blob::ShapeEquals for legacy 4-d blobs: missing leading axes count as 1."""
    if len(shape) > 4:
        return False
    return tuple(file_shape) == tuple([1] * (4 - len(shape)) + list(shape))


def copy_weights(net, source, where: str, strict: bool = False) -> list[str]:
    """Copy blobs from NetParameter `source` into `net` by layer name; return the names of
    learnable layers the file did not have (an error when `strict`)."""
    found = set()
    pending = []  # copied only after every blob of the file has been checked
    for lp in source.layer:
        layer = net.layer_dict.get(lp.name)
        if layer is None or not len(lp.blobs) and not layer.blobs:
            continue
        found.add(lp.name)
        if len(lp.blobs) != len(layer.blobs):
            raise ShapeError(f"{where}: layer '{lp.name}' has {len(lp.blobs)} blobs in the file, "
                             f"the net's layer has {len(layer.blobs)}")
        for j, (proto, blob) in enumerate(zip(lp.blobs, layer.blobs)):
            file_shape = blobproto_shape(proto)
            legacy = not proto.HasField("shape")
            if tuple(file_shape) != blob.shape and not (legacy and
                                                        _legacy_equal(file_shape, blob.shape)):
                raise ShapeError(f"{where}: cannot copy blob {j} of layer '{lp.name}': shape "
                                 f"{tuple(file_shape)} in the file, {blob.shape} in the net")
            pending.append((blob, proto, f"{where}: layer '{lp.name}' blob {j}"))
    missing = layers_without_weights(net, found, where, strict)
    arrays = [(blob, _finite_values(proto, what)) for blob, proto, what in pending]
    for blob, values in arrays:  # all checked first: a bad blob leaves the net as it was
        blob.data[...] = values.reshape(blob.shape)
    return missing


def _finite_values(proto, what: str):
    values = array_from_blobproto(proto, what)
    finite = np.isfinite(values)
    if not finite.all():
        raise NonFiniteError(f"{what} holds {values.size - int(finite.sum())} NaN or Inf "
                             f"values (of {values.size})")
    return values


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
