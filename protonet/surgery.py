"""Net surgery on NetParameter messages: data layers swapped for DummyData, and (see
fold_batchnorm) BatchNorm + Scale folded into the layer before them for deploy.

swap_data_layers lets any Caffe net run without its data: the LMDB, image-list, window-file,
HDF5 and memory layers become DummyData layers with tops of the same shapes (random data,
label tops constant 0, a valid class for every loss). Use it to check shapes, time a net, or
try a model zoo prototxt whose data you do not have:

    net_param = prototxt.read_net("train_val.prototxt")
    swapped = swap_data_layers(net_param, {"data": (3, 227, 227)}, batch_size=2)
    net = protonet.Net(swapped, protonet.TRAIN)
"""
from __future__ import annotations

from typing import Mapping, Sequence

from . import caffe_pb2
from .errors import NetDefinitionError
from .registry import canonical_type

# Data layer type -> (the parameter message holding batch_size, does it have a label top).
DATA_LAYERS = {
    "Data": "data_param",
    "ImageData": "image_data_param",
    "WindowData": "window_data_param",
    "HDF5Data": "hdf5_data_param",
    "MemoryData": "memory_data_param",
}


def swap_data_layers(net_param, shapes: Mapping[str, Sequence[int]] | None = None,
                     batch_size: int | None = None):
    """A copy of `net_param` (upgraded to `layer`) with every data layer replaced by DummyData.

    `shapes` maps a data top's name to its shape per sample, e.g. {"data": (3, 227, 227)}: the
    shape the layer outputs (after crop_size). MemoryData knows its own shape; a Data,
    ImageData, WindowData or HDF5Data top missing from `shapes` is an error naming it, except
    the label top (the second), which is (batch,) of zeros. `batch_size`
    replaces every data layer's batch size and the first axis of Input shapes (small batches
    keep shape checks cheap). The layers keep their names, tops and include/exclude rules.
    """
    from .prototxt import needs_upgrade, upgrade_net
    shapes = dict(shapes or {})
    net = caffe_pb2.NetParameter()
    net.CopyFrom(net_param)
    if needs_upgrade(net):
        net = upgrade_net(net)
    for lp in net.layer:
        kind = canonical_type(lp.type)
        if kind == "Input" and batch_size is not None:
            for shape in lp.input_param.shape:
                shape.dim[0] = batch_size
            continue
        if kind not in DATA_LAYERS:
            continue
        holder = getattr(lp, DATA_LAYERS[kind])
        batch = int(batch_size if batch_size is not None else holder.batch_size)
        if batch < 1:
            raise NetDefinitionError(f"layer '{lp.name}' ({lp.type}): no batch size to swap in")
        top_shapes = [_top_shape(lp, kind, j, top, shapes, batch) for j, top in enumerate(lp.top)]
        keep = caffe_pb2.LayerParameter()
        keep.CopyFrom(lp)
        lp.Clear()
        lp.name, lp.type = keep.name, "DummyData"
        lp.top.extend(keep.top)
        lp.include.extend(keep.include)
        lp.exclude.extend(keep.exclude)
        dummy = lp.dummy_data_param
        for j, shape in enumerate(top_shapes):
            dummy.shape.add().dim.extend(shape)
            filler = dummy.data_filler.add()
            is_label = _is_label(j) and keep.top[j] not in shapes
            filler.type = "constant" if is_label else "gaussian"
    return net


def _is_label(index: int) -> bool:
    # HDF5Data tops are whatever the file holds; by convention (data, label) as in Caffe's
    # examples, so its second top gets the label treatment unless `shapes` names it.
    return index == 1


def _top_shape(lp, kind, index, top, shapes, batch) -> list[int]:
    if kind == "MemoryData":
        p = lp.memory_data_param
        return [batch, p.channels, p.height, p.width] if index == 0 else [batch]
    if top in shapes:
        return [batch, *(int(d) for d in shapes[top])]
    if _is_label(index):
        return [batch]
    raise NetDefinitionError(f"layer '{lp.name}' ({lp.type}): give the shape of its top "
                             f"'{top}' per sample, e.g. shapes={{'{top}': (3, 227, 227)}}")
