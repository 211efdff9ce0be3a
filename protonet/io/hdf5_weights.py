"""Caffe's HDF5 weights files (Net::ToHDF5 / CopyTrainedLayersFromHDF5, pycaffe's save_hdf5 and
load_hdf5): group /data holds a group per layer (every layer, in net order), and in it one
float32 dataset per learnable blob named "0", "1", ... in the blob's shape. A blob that uses
another layer's parameter (ParamSpec sharing) is not written; its owner's is. With write_diff a
/diff group holds the gradients the same way. Needs h5py (pip install protonet[hdf5]).
"""
from __future__ import annotations

import numpy as np

from ..errors import NonFiniteError, ProtonetError, ShapeError
from . import wire
from .atomic import atomic_path
from .caffemodel import layers_without_weights


def _h5py(path):
    try:
        import h5py
    except ImportError:
        raise ProtonetError(f"{path}: HDF5 weights need the h5py package: pip install h5py "
                            "(or protonet[hdf5])") from None
    return h5py


def save(net, path, write_diff: bool = False) -> None:
    h5py = _h5py(path)
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            groups = [("data", "data")] + ([("diff", "diff")] if write_diff else [])
            for group_name, field in groups:
                top = f.create_group(group_name)
                for i, layer in enumerate(net.layers):
                    group = top.require_group(layer.name)
                    for j, blob in enumerate(layer.blobs):
                        if (i, j) not in net._shared_param_slots:
                            group.create_dataset(str(j), data=np.asarray(getattr(blob, field),
                                                                        np.float32))


def load(net, path, strict: bool = False) -> list[str]:
    """Copy /data/<layer>/<j> into the same-named layers of `net`; layers of the file the net
    lacks are ignored; returns the learnable layers the file lacks (an error when `strict`)."""
    h5py = _h5py(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ProtonetError(f"{path}: cannot read HDF5 weights ({e})") from None
    found = set()
    pending = []  # (blob, values): copied only once every blob of the file has been checked
    with f:
        if "data" not in f:
            raise ProtonetError(f"{path}: not a Caffe HDF5 weights file (no /data group)")
        for name, group in f["data"].items():
            layer = net.layer_dict.get(name)
            if layer is None:
                continue
            found.add(name)
            layer_index = net.layers.index(layer)
            if len(group) > len(layer.blobs):
                raise ShapeError(f"{path}: layer '{name}' has {len(group)} blobs in the file, "
                                 f"the net's layer has {len(layer.blobs)}")
            for j, blob in enumerate(layer.blobs):
                if str(j) not in group:
                    if (layer_index, j) in net._shared_param_slots:
                        continue  # a shared parameter: its owner's blob carries it
                    raise ShapeError(f"{path}: layer '{name}' has no blob {j} in the file; "
                                     f"the net's layer has {len(layer.blobs)} blobs")
                dataset = group[str(j)]
                if tuple(dataset.shape) != blob.shape:
                    raise ShapeError(f"{path}: cannot copy blob {j} of layer '{name}': shape "
                                     f"{tuple(dataset.shape)} in the file, {blob.shape} in "
                                     "the net")
                if not all(np.isfinite(values).all() for _, values in _blocks(dataset)):
                    raise NonFiniteError(f"{path}: layer '{name}' blob {j} holds NaN or Inf "
                                         "values")
                pending.append((blob, dataset))
        missing = layers_without_weights(net, found, str(path), strict)
        for blob, dataset in pending:  # read again, into place: no copy of all the weights
            for rows, values in _blocks(dataset):
                blob.data[rows] = values
    return missing


def _blocks(dataset):
    """(index, float32 values) of `dataset` in blocks of leading rows of at most
    wire.READ_BLOCK bytes (the whole of a 0-axis dataset)."""
    if not dataset.ndim:
        yield (), np.asarray(dataset[()], np.float32)
        return
    row = max(1, int(np.prod(dataset.shape[1:], dtype=np.int64)) * 4)
    step = max(1, wire.READ_BLOCK // row)
    for start in range(0, dataset.shape[0], step):
        rows = slice(start, start + step)
        yield rows, np.asarray(dataset[rows], np.float32)
