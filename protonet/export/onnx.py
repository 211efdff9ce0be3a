"""A deploy net and its weights as an ONNX model (the onnx package; `pip install onnx`).

Each layer class has one converter, registered next to the others below, that emits ONNX
nodes from the layer's parsed attributes and learnable blobs. Caffe semantics that ONNX
lacks are spelled out with extra nodes: Caffe's ceil-rounded pooling becomes explicit end
padding, and average pooling over padding divides as Caffe does (zero padding counted, the
ceil overhang not). Blobs overwritten in place get versioned tensor names; the net's outputs
keep their blob names. Layers with no ONNX equivalent are reported by name.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np

from ..errors import ProtonetError
from .. import caffe_pb2
from ..layers import (bn, channelwise, conv, depthwise, inner_product, neuron, normalization,
                      pooling, resize, roi, shape, softmax)
from ..layers.data import Input
from ..io.atomic import atomic_write

OPSET = 17
_CONVERTERS: dict[type, Callable] = {}


class _Declared:
    """What a converter sees of a layer: its name, type and blobs, and the settings its class
    declares (annotations, as `kh: int` on Convolution), not its internals."""

    def __init__(self, layer) -> None:
        self._layer = layer

    def __getattr__(self, name: str):
        if name in ("name", "type", "blobs") or any(
                name in vars(cls).get("__annotations__", {}) for cls in type(self._layer).__mro__):
            return getattr(self._layer, name)
        raise AttributeError(f"{type(self._layer).__name__}.{name} is not a declared setting; "
                             "declare it on the class to export it")


def onnx_converter(*classes):
    def decorate(fn):
        for cls in classes:
            _CONVERTERS[cls] = fn
        return fn
    return decorate


class _Graph:
    """ONNX nodes and initializers under construction, with unique tensor names."""

    def __init__(self, helper, numpy_helper, float_type) -> None:
        self.helper, self.numpy_helper, self.float_type = helper, numpy_helper, float_type
        self.nodes, self.initializers, self.inputs = [], [], []
        self.used: set[str] = set()

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}__{k}"
        self.used.add(name)
        return name

    def const(self, base: str, array) -> str:
        name = self.fresh(base)
        self.initializers.append(self.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs, outputs=None, name: str = "", **attrs) -> str:
        """Add a node; returns its (first) output name (fresh unless given)."""
        outputs = list(outputs) if outputs else [self.fresh(f"{name or op}_out")]
        self.nodes.append(self.helper.make_node(op, list(inputs), outputs,
                                                name=self.fresh(name or op), **attrs))
        return outputs[0]


def export_onnx(net, path) -> list[str]:
    """Write `net` (built in TEST phase, weights loaded) as an ONNX model to `path`.

    Raises ProtonetError listing every layer that has no ONNX equivalent (loss and data
    layers among them: export deploy nets). Returns the graph's output names.
    """
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ProtonetError("ONNX export needs the onnx package: pip install onnx") from None
    missing = [f"'{layer.name}' ({layer.type})" for layer in net.layers
               if type(layer) not in _CONVERTERS]
    if missing:
        raise ProtonetError(f"{net.source}: no ONNX equivalent for layer(s) "
                            f"{', '.join(missing)}; export a deploy net")
    g = _Graph(helper, numpy_helper, TensorProto.FLOAT)
    produced = Counter(t for lp in net.param.layer for t in lp.top)
    seen: Counter = Counter()
    current: dict[str, str] = {}    # blob name -> tensor holding its latest value
    for layer, lp in zip(net.layers, net.param.layer):
        tops = []
        for t in lp.top:
            seen[t] += 1
            # The last value of a blob keeps the blob's name; earlier in-place values don't.
            tops.append(t if seen[t] == produced[t] else f"{t}__v{seen[t]}")
        g.used.update(tops)
        _CONVERTERS[type(layer)](_Declared(layer), g, [current[b] for b in lp.bottom], tops,
                                 [net.blobs[b].shape for b in lp.bottom],
                                 [net.blobs[t].shape for t in lp.top])
        current.update(zip(lp.top, tops))
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                             list(net.blobs[name].shape))
               for name in net.outputs]
    graph = helper.make_graph(g.nodes, net.name or "protonet", g.inputs, outputs,
                              g.initializers)
    model = helper.make_model(graph, producer_name="protonet",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    atomic_write(path, model.SerializeToString())
    return list(net.outputs)


def _identity(layer, g, bottoms, tops, in_shapes, out_shapes):
    for top in tops:
        g.node("Identity", bottoms[:1], [top], name=layer.name)


onnx_converter(shape.Split, neuron.Dropout)(_identity)


@onnx_converter(Input)
def _input(layer, g, bottoms, tops, in_shapes, out_shapes):
    """An Input layer's tops are the graph's inputs."""
    g.inputs.extend(g.helper.make_tensor_value_info(t, g.float_type, list(shape))
                    for t, shape in zip(tops, out_shapes))


def _conv(op):
    def convert(layer, g, bottoms, tops, in_shapes, out_shapes):
        if len(bottoms) != 1:
            raise ProtonetError(f"layer '{layer.name}' ({layer.type}): export applies one "
                                "bottom/top pair per layer")
        inputs = bottoms + [g.const(f"{layer.name}_w", layer.blobs[0].data)]
        if layer.bias_term:
            inputs.append(g.const(f"{layer.name}_b", layer.blobs[1].data))
        g.node(op, inputs, tops, name=layer.name, kernel_shape=[layer.kh, layer.kw],
               strides=[layer.sh, layer.sw], pads=[layer.ph, layer.pw, layer.ph, layer.pw],
               dilations=[layer.dh, layer.dw], group=layer.group)
    return convert


onnx_converter(conv.Convolution)(_conv("Conv"))
onnx_converter(conv.Deconvolution)(_conv("ConvTranspose"))


@onnx_converter(inner_product.InnerProduct)
def _inner_product(layer, g, bottoms, tops, in_shapes, out_shapes):
    flat = g.node("Flatten", bottoms, name=f"{layer.name}_flatten", axis=layer.axis)
    inputs = [flat, g.const(f"{layer.name}_w", layer.blobs[0].data)]
    if layer.bias_term:
        inputs.append(g.const(f"{layer.name}_b", layer.blobs[1].data))
    out_shape = out_shapes[0]
    if len(out_shape) == 2:
        g.node("Gemm", inputs, tops, name=layer.name, transB=0 if layer.transpose else 1)
        return
    y = g.node("Gemm", inputs, name=layer.name, transB=0 if layer.transpose else 1)
    g.node("Reshape", [y, g.const(f"{layer.name}_shape", np.array(out_shape, np.int64))],
           tops, name=f"{layer.name}_reshape")


@onnx_converter(pooling.Pooling)
def _pooling(layer, g, bottoms, tops, in_shapes, out_shapes):
    _, _, h, w = in_shapes[0]
    _, _, ho, wo = out_shapes[0]
    # Padding at the far end that floor-rounding needs to give Caffe's ceil-rounded size.
    end_h = (ho - 1) * layer.sh + layer.kh - h - layer.ph
    end_w = (wo - 1) * layer.sw + layer.kw - w - layer.pw
    # round_mode FLOOR leaves input past the last window unread, which floor-rounding ONNX
    # does too with no end padding.
    if end_h < 0 and (h + layer.ph - layer.kh) // layer.sh + 1 == ho:
        end_h = 0
    if end_w < 0 and (w + layer.pw - layer.kw) // layer.sw + 1 == wo:
        end_w = 0
    x = bottoms[0]
    window = dict(kernel_shape=[layer.kh, layer.kw], strides=[layer.sh, layer.sw])
    if layer.is_max:
        _check_pads(layer, end_h, end_w)
        outputs = tops[:1] + ([g.fresh(f"{layer.name}_indices")] if len(tops) == 2 else [])
        g.node("MaxPool", [x], outputs, name=layer.name,
               pads=[layer.ph, layer.pw, end_h, end_w], **window)
        if len(tops) == 2:
            # Caffe's mask top: the argmax within its plane (h * W + w) as a float; ONNX
            # counts over the whole input tensor.
            n, c = in_shapes[0][:2]
            planes = (np.arange(n * c, dtype=np.int64) * h * w).reshape(n, c, 1, 1)
            local = g.node("Sub", [outputs[1], g.const(f"{layer.name}_planes", planes)])
            g.node("Cast", [local], tops[1:], name=f"{layer.name}_mask", to=1)   # FLOAT
        return
    # Caffe averages over the window clipped to the zero-padded input: pad with real zeros,
    # then let the overhang beyond it not count.
    if layer.ph or layer.pw:
        pads = np.array([0, 0, layer.ph, layer.pw, 0, 0, layer.ph, layer.pw], np.int64)
        x = g.node("Pad", [x, g.const(f"{layer.name}_pads", pads)], name=f"{layer.name}_pad")
        end_h, end_w = end_h - layer.ph, end_w - layer.pw
    _check_pads(layer, end_h, end_w)
    g.node("AveragePool", [x], tops[:1], name=layer.name, pads=[0, 0, end_h, end_w],
           count_include_pad=0, **window)


def _check_pads(layer, *pads):
    # Caffe drops a last window that would start in the padding; if that leaves input rows
    # unread past the padding, ONNX would need negative pads.
    if min(pads) < 0:
        raise ProtonetError(f"layer '{layer.name}' (Pooling): Caffe's output size for this "
                            "window needs cropping that ONNX pooling cannot express")


@onnx_converter(neuron.ReLU)
def _relu(layer, g, bottoms, tops, in_shapes, out_shapes):
    if layer.negative_slope:
        g.node("LeakyRelu", bottoms, tops, name=layer.name, alpha=float(layer.negative_slope))
    else:
        g.node("Relu", bottoms, tops, name=layer.name)


def _unary(op):
    def convert(layer, g, bottoms, tops, in_shapes, out_shapes):
        g.node(op, bottoms, tops, name=layer.name)
    return convert


onnx_converter(neuron.Sigmoid)(_unary("Sigmoid"))
onnx_converter(neuron.TanH)(_unary("Tanh"))
onnx_converter(neuron.AbsVal)(_unary("Abs"))
onnx_converter(neuron.BNLL)(_unary("Softplus"))


@onnx_converter(neuron.ELU)
def _elu(layer, g, bottoms, tops, in_shapes, out_shapes):
    g.node("Elu", bottoms, tops, name=layer.name, alpha=float(layer.alpha))


@onnx_converter(neuron.Power)
def _power(layer, g, bottoms, tops, in_shapes, out_shapes):
    x = bottoms[0]
    if layer.scale != 1:
        x = g.node("Mul", [x, g.const(f"{layer.name}_scale", np.float32(layer.scale))])
    if layer.shift != 0:
        x = g.node("Add", [x, g.const(f"{layer.name}_shift", np.float32(layer.shift))])
    g.node("Pow", [x, g.const(f"{layer.name}_power", np.float32(layer.power))], tops,
           name=layer.name)


@onnx_converter(neuron.PReLU)
def _prelu(layer, g, bottoms, tops, in_shapes, out_shapes):
    slope = layer.blobs[0].data
    slope = slope.reshape(-1, *[1] * (len(in_shapes[0]) - 2)) if slope.size > 1 else slope
    g.node("PRelu", [bottoms[0], g.const(f"{layer.name}_slope", slope)], tops,
           name=layer.name)


@onnx_converter(softmax.Softmax)
def _softmax(layer, g, bottoms, tops, in_shapes, out_shapes):
    g.node("Softmax", bottoms, tops, name=layer.name, axis=int(layer.axis))


@onnx_converter(shape.Concat)
def _concat(layer, g, bottoms, tops, in_shapes, out_shapes):
    g.node("Concat", bottoms, tops, name=layer.name, axis=int(layer.axis))


@onnx_converter(shape.Flatten, shape.Reshape)
def _reshape(layer, g, bottoms, tops, in_shapes, out_shapes):
    g.node("Reshape", [bottoms[0], g.const(f"{layer.name}_shape",
                                           np.array(out_shapes[0], np.int64))], tops,
           name=layer.name)


@onnx_converter(shape.Slice)
def _slice(layer, g, bottoms, tops, in_shapes, out_shapes):
    sizes = np.array([end - start for start, end in layer.bounds], np.int64)
    g.node("Split", [bottoms[0], g.const(f"{layer.name}_split", sizes)], tops,
           name=layer.name, axis=int(layer.axis))


@onnx_converter(shape.Eltwise)
def _eltwise(layer, g, bottoms, tops, in_shapes, out_shapes):
    E = caffe_pb2.EltwiseParameter
    if layer.op == E.PROD:
        g.node("Mul", bottoms, tops, name=layer.name)
    elif layer.op == E.MAX:
        g.node("Max", bottoms, tops, name=layer.name)
    else:
        terms = [b if c == 1 else g.node("Mul", [b, g.const(f"{layer.name}_coeff{i}",
                                                            np.float32(c))])
                 for i, (b, c) in enumerate(zip(bottoms, layer.coeff))]
        g.node("Sum", terms, tops, name=layer.name)


@onnx_converter(normalization.LRN)
def _lrn(layer, g, bottoms, tops, in_shapes, out_shapes):
    if not layer.across:
        raise ProtonetError(f"layer '{layer.name}' (LRN): WITHIN_CHANNEL has no ONNX "
                            "equivalent (ONNX LRN runs across channels)")
    g.node("LRN", bottoms, tops, name=layer.name, size=int(layer.size),
           alpha=float(layer.alpha), beta=float(layer.beta), bias=float(layer.k))


@onnx_converter(normalization.BatchNorm)
def _batch_norm(layer, g, bottoms, tops, in_shapes, out_shapes):
    mean, var, factor = (b.data for b in layer.blobs)
    scale = np.float32(0 if factor[0] == 0 else 1 / factor[0])   # Caffe's rule
    c = mean.size
    g.node("BatchNormalization",
           [bottoms[0], g.const(f"{layer.name}_gamma", np.ones(c, np.float32)),
            g.const(f"{layer.name}_beta", np.zeros(c, np.float32)),
            g.const(f"{layer.name}_mean", mean * scale),
            g.const(f"{layer.name}_var", var * scale)], tops, name=layer.name,
           epsilon=float(layer.eps))


def _along_axis(g, name, operand, axis, x_axes, tensor=None):
    """`operand` (an array, or the tensor named `tensor` of that shape) reshaped to
    broadcast against an x of `x_axes` axes from `axis` on (Caffe's Scale/Bias layout)."""
    shape = tuple(operand.shape if tensor is None else operand)
    if not shape:
        return g.const(name, np.float32(operand)) if tensor is None else tensor
    axis = axis % x_axes
    full = (*shape, *[1] * (x_axes - axis - len(shape)))
    if tensor is None:
        return g.const(name, np.asarray(operand, np.float32).reshape(full))
    return g.node("Reshape", [tensor, g.const(f"{name}_shape", np.array(full, np.int64))])


def _operand(layer, g, bottoms, in_shapes, as_param: bool, what: str):
    """Scale's or Bias's operand: its learned blob (the first), or the second bottom."""
    if as_param:
        return _along_axis(g, f"{layer.name}_{what}", layer.blobs[0].data, layer.axis,
                           len(in_shapes[0]))
    return _along_axis(g, f"{layer.name}_{what}", in_shapes[1], layer.axis, len(in_shapes[0]),
                       bottoms[1])


@onnx_converter(normalization.Scale)
def _scale(layer, g, bottoms, tops, in_shapes, out_shapes):
    s = _operand(layer, g, bottoms, in_shapes, layer.scale_is_param, "scale")
    if not layer.bias_term:
        g.node("Mul", [bottoms[0], s], tops, name=layer.name)
        return
    y = g.node("Mul", [bottoms[0], s], name=layer.name)
    b = _along_axis(g, f"{layer.name}_bias", layer.blobs[-1].data, layer.axis, len(in_shapes[0]))
    g.node("Add", [y, b], tops, name=f"{layer.name}_bias")


@onnx_converter(normalization.Bias)
def _bias(layer, g, bottoms, tops, in_shapes, out_shapes):
    b = _operand(layer, g, bottoms, in_shapes, layer.bias_is_param, "bias")
    g.node("Add", [bottoms[0], b], tops, name=layer.name)


# -- layers of Caffe forks ---------------------------------------------------------------------
@onnx_converter(depthwise.ConvolutionDepthwise)
def _depthwise(layer, g, bottoms, tops, in_shapes, out_shapes):
    inputs = bottoms + [g.const(f"{layer.name}_w", layer.blobs[0].data)]
    if layer.bias_term:
        inputs.append(g.const(f"{layer.name}_b", layer.blobs[1].data))
    g.node("Conv", inputs, tops, name=layer.name, kernel_shape=[layer.kh, layer.kw],
           strides=[layer.sh, layer.sw], pads=[layer.ph, layer.pw, layer.ph, layer.pw],
           dilations=[layer.dh, layer.dw], group=int(in_shapes[0][1]))


@onnx_converter(channelwise.ShuffleChannel)
def _shuffle_channel(layer, g, bottoms, tops, in_shapes, out_shapes):
    n, c = in_shapes[0][:2]
    grid = np.array([n, layer.group, c // layer.group, -1], np.int64)
    x = g.node("Reshape", [bottoms[0], g.const(f"{layer.name}_grid", grid)])
    x = g.node("Transpose", [x], perm=[0, 2, 1, 3])
    g.node("Reshape", [x, g.const(f"{layer.name}_shape", np.array(out_shapes[0], np.int64))],
           tops, name=layer.name)


@onnx_converter(channelwise.Axpy)
def _axpy(layer, g, bottoms, tops, in_shapes, out_shapes):
    a, x, y = bottoms
    n, c = in_shapes[1][:2]
    scale_shape = np.array([n, c] + [1] * (len(in_shapes[1]) - 2), np.int64)
    a = g.node("Reshape", [a, g.const(f"{layer.name}_scale_shape", scale_shape)])
    g.node("Add", [g.node("Mul", [a, x]), y], tops, name=layer.name)


@onnx_converter(bn.BN)
def _bn(layer, g, bottoms, tops, in_shapes, out_shapes):
    if layer.learn:
        raise ProtonetError(f"layer '{layer.name}' (BN): bn_mode LEARN normalizes with the "
                            "batch's statistics; export the INFERENCE net (statistics folded in)")
    scale, shift = (b.data.reshape(1, -1, *[1] * (len(in_shapes[0]) - 2)) for b in layer.blobs)
    y = g.node("Mul", [bottoms[0], g.const(f"{layer.name}_scale", scale)])
    g.node("Add", [y, g.const(f"{layer.name}_shift", shift)], tops, name=layer.name)


def _resize(layer, g, x, tops, out_shape, **attrs):
    sizes = g.const(f"{layer.name}_sizes", np.array(out_shape, np.int64))
    g.node("Resize", [x, "", "", sizes], tops, name=layer.name, **attrs)


@onnx_converter(resize.Interp)
def _interp(layer, g, bottoms, tops, in_shapes, out_shapes):
    x = bottoms[0]
    if layer.pad != (0, 0):
        _, _, h, w = in_shapes[0]
        begin = -layer.pad[0]
        starts = np.array([begin, begin], np.int64)
        ends = np.array([h + layer.pad[1], w + layer.pad[1]], np.int64)
        x = g.node("Slice", [x, g.const(f"{layer.name}_starts", starts),
                             g.const(f"{layer.name}_ends", ends),
                             g.const(f"{layer.name}_axes", np.array([2, 3], np.int64))])
    _resize(layer, g, x, tops, out_shapes[0], mode="linear",
            coordinate_transformation_mode="align_corners")


@onnx_converter(resize.Resample)
def _resample(layer, g, bottoms, tops, in_shapes, out_shapes):
    _resize(layer, g, bottoms[0], tops, out_shapes[0], mode="nearest",
            coordinate_transformation_mode="asymmetric", nearest_mode="floor")


@onnx_converter(resize.Upsample)
def _upsample(layer, g, bottoms, tops, in_shapes, out_shapes):
    """SegNet's unpooling as MaxUnpool, whose indices count over the whole output tensor:
    each plane's flat mask plus that plane's offset."""
    n, c, ho, wo = out_shapes[0]
    offsets = (np.arange(n * c, dtype=np.int64) * ho * wo).reshape(n, c, 1, 1)
    index = g.node("Cast", [bottoms[1]], to=7)   # INT64
    index = g.node("Add", [index, g.const(f"{layer.name}_offsets", offsets)])
    g.node("MaxUnpool", [bottoms[0], index,
                         g.const(f"{layer.name}_shape", np.array(out_shapes[0], np.int64))],
           tops, name=layer.name, kernel_shape=[1, 1])


@onnx_converter(roi.ROIPooling)
def _roi_pooling(layer, g, bottoms, tops, in_shapes, out_shapes):
    g.node("MaxRoiPool", bottoms, tops, name=layer.name, pooled_shape=list(layer.pooled),
           spatial_scale=float(layer.spatial_scale))
