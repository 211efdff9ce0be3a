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

import numpy as np

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
    "DenseImageData": "dense_image_data_param",   # SegNet's fork
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
    if kind == "DenseImageData" and index == 1 and lp.top[0] in shapes:
        # A label image: one channel of the data image's height and width.
        return [batch, 1, *(int(d) for d in shapes[lp.top[0]][1:])]
    if _is_label(index):
        return [batch]
    raise NetDefinitionError(f"layer '{lp.name}' ({lp.type}): give the shape of its top "
                             f"'{top}' per sample, e.g. shapes={{'{top}': (3, 227, 227)}}")


FOLDABLE = ("Convolution", "InnerProduct")


def batchnorm_affine(bn, scale=None):
    """(gamma, beta), float64 per channel, such that a BatchNorm layer `bn` using its global
    statistics, then the Scale layer `scale` (optional; or `bn` None for a Scale alone), map
    x to x * gamma + beta: gamma = g / sqrt(var + eps), beta = b - mean * gamma, with
    mean = mean_sum / s and var = var_sum / s (0 when s is 0) as BatchNorm computes them and g
    and b the Scale's (1 and 0 without one). The one formula for `fold-bn` and for the fold a
    TEST net does at run time (protonet/fusion.py)."""
    gamma, beta = np.ones(1), np.zeros(1)
    if bn is not None:
        mean, var, factor = (b.data.astype(np.float64).reshape(-1) for b in bn.blobs)
        s = 0.0 if factor[0] == 0 else 1.0 / factor[0]
        gamma = 1.0 / np.sqrt(var * s + float(bn.eps))
        beta = -mean * s * gamma
    if scale is not None:
        g = scale.blobs[0].data.astype(np.float64).reshape(-1)
        b = scale.blobs[1].data.astype(np.float64).reshape(-1) if scale.bias_term else 0.0
        gamma, beta = gamma * g, beta * g + b
    return gamma, beta


def fold_batchnorm(net_param, net):
    """Fold every BatchNorm (and the Scale right after it) that directly follows a
    Convolution or InnerProduct into that layer: W' = W g / s, b' = (b - mean) g / s + beta,
    s = sqrt(var + eps), g and beta the Scale's (1 and 0 without one).

    `net_param`: the deploy NetParameter (upgraded); `net`: a protonet.Net built from it in
    TEST phase with the trained weights loaded. Returns (a NetParameter whose layers carry
    their weights as blobs, i.e. a caffemodel; names of the BatchNorm layers folded). Clear
    the blobs for the prototxt. BatchNorm layers with no Convolution/InnerProduct right
    before them, whose input is also read by another layer, or that use batch statistics
    (use_global_stats: false), are kept as they are.
    """
    from . import graph
    layers = list(graph.filter_net(net_param, caffe_pb2.NetState(phase=caffe_pb2.TEST)).layer)

    def sole_next_reader(i, blob):
        """The first layer after i reading `blob`, if no other layer reads it before the
        blob is overwritten."""
        readers = []
        for k in range(i + 1, len(layers)):
            if blob in layers[k].bottom:
                readers.append(k)
            if blob in layers[k].top and k not in readers:
                break
        return readers[0] if len(readers) == 1 or (
            readers and blob in layers[readers[0]].top) else None

    fold: dict[int, tuple] = {}     # conv index -> (gamma, beta, top name)
    drop: set[int] = set()
    for j, conv_lp in enumerate(layers):
        if conv_lp.type not in FOLDABLE:
            continue
        i = sole_next_reader(j, conv_lp.top[0])
        if i is None or layers[i].type != "BatchNorm":
            continue
        bn = net.layer_dict[layers[i].name]
        if not bn.use_global_stats:   # batch statistics at run time: nothing fixed to fold
            continue
        top, drop_now, scale = layers[i].top[0], {i}, None
        k = sole_next_reader(i, top)
        if k is not None and layers[k].type == "Scale" and len(layers[k].bottom) == 1:
            scale = net.layer_dict[layers[k].name]
            top = layers[k].top[0]
            drop_now.add(k)
        gamma, beta = batchnorm_affine(bn, scale)
        fold[j] = (gamma, beta, top)
        drop |= drop_now
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    del out.layer[:]
    for i, lp in enumerate(layers):
        if i in drop:
            continue
        new = out.layer.add()
        new.CopyFrom(lp)
        layer = net.layer_dict[lp.name]
        arrays = [b.data.astype(np.float64) for b in layer.blobs]
        if i in fold:
            gamma, beta, top = fold[i]
            w = arrays[0]
            out_axis = 1 if lp.type == "InnerProduct" and layer.transpose else 0
            shape = [1] * w.ndim
            shape[out_axis] = -1
            bias = arrays[1].reshape(-1) if layer.bias_term else np.zeros(len(gamma))
            arrays = [w * gamma.reshape(shape), bias * gamma + beta]
            params = (new.convolution_param if lp.type == "Convolution"
                      else new.inner_product_param)
            params.bias_term = True
            new.top[0] = top
            if len(new.param) == 1:   # the new bias gets Caffe's usual lr_mult 2, no decay
                new.param.add(lr_mult=2, decay_mult=0)
        del new.blobs[:]
        for array in arrays:
            proto = new.blobs.add()
            proto.shape.dim.extend(array.shape)
            proto.data.extend(array.astype(np.float32).ravel().tolist())
    return out, [layers[i].name for i in sorted(drop) if layers[i].type == "BatchNorm"]
