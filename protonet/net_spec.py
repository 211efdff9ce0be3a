"""Nets written as Python expressions, pycaffe's net_spec: `L.Convolution(bottom, ...)` makes
a layer, assigning it to a NetSpec attribute names it, `to_proto()` gives the NetParameter.

    from protonet.net_spec import NetSpec, layers as L, params as P
    n = NetSpec()
    n.data, n.label = L.Data(source="train_lmdb", backend=P.Data.LMDB, batch_size=64, ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                            weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    print(n.to_proto())

The NetParameter built is the one pycaffe builds for the same script, field for field and
layer for layer, so its text is identical:
- a keyword goes to the layer type's own parameter message (`kernel_size` to
  convolution_param) when that message has the field, else to the LayerParameter itself
  (`loss_weight`, `include`); keywords ending in `param` always go to the LayerParameter;
- a dict fills a message, a list of dicts adds repeated messages, a list extends a repeated
  field and a single value given to a repeated field becomes a one-element list;
- `ntop=k` gives k tops (a tuple; none gives the layer itself), `in_place=True` writes the
  tops over the bottoms;
- layers come out depth first from the named tops, in the order they were named; a layer is
  named after its first top; unnamed tops and top-less layers get the type name and a count
  per type (ReLU1, ReLU2...).
"""
from __future__ import annotations

from collections import Counter, OrderedDict

from . import caffe_pb2

__all__ = ["NetSpec", "Top", "Function", "Layers", "Parameters", "layers", "params",
           "to_proto", "assign_proto", "param_name_dict"]


def param_name_dict() -> dict[str, str]:
    """Layer type name -> its LayerParameter field prefix, read off the schema
    (ConvolutionParameter convolution_param -> 'Convolution': 'convolution')."""
    mapping = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                mapping[type_name[:-len("Parameter")]] = field.name[:-len("_param")]
    return mapping


_PARAM_PREFIX = param_name_dict()


def assign_proto(proto, name: str, value) -> None:
    """Set field `name` of message `proto` from a Python value (see the module docstring).
    An unknown field raises AttributeError."""
    field = getattr(proto, name)
    repeated = hasattr(field, "extend")
    if repeated and not isinstance(value, list):
        value = [value]
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            for item in value:
                message = field.add()
                for key, sub in item.items():
                    assign_proto(message, key, sub)
        else:
            field.extend(value)
    elif isinstance(value, dict):
        for key, sub in value.items():
            assign_proto(field, key, sub)
    else:
        setattr(proto, name, value)


class Top:
    """One output of a layer: the `n`-th top of Function `fn`."""

    def __init__(self, fn: "Function", n: int) -> None:
        self.fn = fn
        self.n = n

    def to_proto(self):
        """The NetParameter of every layer this top depends on."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames) -> None:
        self.fn._to_proto(layers, names, autonames)


class Function:
    """One layer: its type, its bottoms (Tops) and its keyword settings."""

    def __init__(self, type_name: str, inputs, params: dict) -> None:
        for index, bottom in enumerate(inputs):
            if not isinstance(bottom, Top):
                raise TypeError(f"{type_name} input {index} is not a Top "
                                f"(type is {type(bottom)})")
        self.type_name = type_name
        self.inputs = tuple(inputs)
        self.ntop = params.pop("ntop", 1)
        self.in_place = params.pop("in_place", False)
        self.params = params
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _top_name(self, top: Top, names: dict, autonames: Counter) -> str:
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _name(self, names: dict, autonames: Counter) -> str:
        if self not in names:
            if self.tops:
                names[self] = self._top_name(self.tops[0], names, autonames)
            else:
                autonames[self.type_name] += 1
                names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _to_proto(self, layers: OrderedDict, names: dict, autonames: Counter) -> None:
        if self in layers:
            return
        bottoms = []
        for bottom in self.inputs:
            bottom._to_proto(layers, names, autonames)
            bottoms.append(layers[bottom.fn].top[bottom.n])
        layer = caffe_pb2.LayerParameter(type=self.type_name)
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            layer.top.extend(self._top_name(top, names, autonames) for top in self.tops)
        layer.name = self._name(names, autonames)
        prefix = _PARAM_PREFIX.get(self.type_name)
        for key, value in self.params.items():
            if key.endswith("param") or prefix is None:
                assign_proto(layer, key, value)
                continue
            try:
                assign_proto(getattr(layer, prefix + "_param"), key, value)
            except AttributeError:   # not a field of the type's message: the layer's own
                assign_proto(layer, key, value)
        layers[self] = layer


def _net_of(layers: OrderedDict):
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


def to_proto(*tops):
    """A NetParameter with every layer the given tops (or top-less layers) need, names made
    up as they come."""
    layers, autonames = OrderedDict(), Counter()
    for top in tops:
        top._to_proto(layers, {}, autonames)
    return _net_of(layers)


class NetSpec:
    """Named tops: `n.conv1 = L.Convolution(...)` names the layer and its top 'conv1';
    `n.to_proto()` gives the NetParameter of everything named (and what it needs)."""

    def __init__(self) -> None:
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name: str, value) -> None:
        self.tops[name] = value

    def __getattr__(self, name: str):
        try:
            return self.__dict__["tops"][name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top named {name!r}") from None

    def __setitem__(self, key: str, value) -> None:
        self.tops[key] = value

    def __getitem__(self, key: str):
        return self.tops[key]

    def to_proto(self):
        names = {top: name for name, top in self.tops.items()}
        layers, autonames = OrderedDict(), Counter()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        return _net_of(layers)


class Layers:
    """`layers.Type(*bottoms, **settings)`: a Top, a tuple of Tops (ntop > 1) or, with
    ntop=0, the layer itself."""

    def __getattr__(self, type_name: str):
        if type_name.startswith("__"):
            raise AttributeError(type_name)

        def make_layer(*bottoms, **settings):
            fn = Function(type_name, bottoms, settings)
            if fn.ntop == 0:
                return fn
            return fn.tops[0] if fn.ntop == 1 else fn.tops
        return make_layer


class _EnumValues:
    def __init__(self, message_name: str) -> None:
        self._message = getattr(caffe_pb2, message_name + "Parameter")

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._message, name)


class Parameters:
    """`params.Pooling.MAX`: the enum values of caffe_pb2.PoolingParameter, and so on."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _EnumValues(name)


layers = Layers()
params = Parameters()
