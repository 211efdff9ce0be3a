"""Layer types by name: the one place that knows Caffe's V1 enum names and V2 type strings.

`@register_layer("Convolution")` files a class under its V2 type string; `layer_class` accepts
either spelling ("Convolution" or the V1 enum "CONVOLUTION") because V1 names are translated
through `V1_TO_V2`, the complete table of caffe.proto's V1LayerParameter.LayerType (types
protonet does not run are listed too, so `protonet upgrade` can rename them).
"""
from __future__ import annotations

import difflib

from .errors import NetDefinitionError, UnknownLayerTypeError

# V1LayerParameter.LayerType enum name -> V2 type string (Caffe's UpgradeV1LayerType).
V1_TO_V2: dict[str, str] = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DATA": "Data",
    "DECONVOLUTION": "Deconvolution",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

_LAYERS: dict[str, type] = {}


def register_layer(type_name: str):
    """Class decorator: file a Layer subclass under its V2 Caffe type string."""

    def decorate(cls):
        if type_name in _LAYERS and _LAYERS[type_name] is not cls:
            other = _LAYERS[type_name]
            raise NetDefinitionError(
                f'layer type "{type_name}" registered twice: {other.__module__}.{other.__name__} '
                f"and {cls.__module__}.{cls.__name__}")
        cls.type = type_name
        _LAYERS[type_name] = cls
        return cls

    return decorate


def canonical_type(name: str) -> str:
    """The V2 type string for a V1 enum name or a V2 string."""
    return V1_TO_V2.get(name, name)


def layer_type_list() -> list[str]:
    """Every type string protonet runs, sorted (like caffe.layer_type_list())."""
    _load_layers()
    return sorted(_LAYERS)


# Caffe layer types protonet knows of but does not run, with the reason and the way around.
UNSUPPORTED = {
    "HDF5Output": "writing HDF5 files is not supported; save blobs from Python (net.blobs) "
                  "with h5py or numpy",
    "WindowData": "R-CNN window files are not supported; swap in DummyData for shape checks "
                  "(protonet.surgery.swap_data_layers)",
    "DenseImageData": "SegNet's image/label-image lists are not read; swap in DummyData for "
                      "shape checks (protonet.surgery.swap_data_layers)",
}


def layer_class(name: str, layer_name: str | None = None) -> type:
    """The class registered for `name` ("Convolution" or "CONVOLUTION")."""
    _load_layers()
    cls = _LAYERS.get(canonical_type(name))
    if cls is None:
        where = f" in layer '{layer_name}'" if layer_name else ""
        if canonical_type(name) in UNSUPPORTED:
            raise UnknownLayerTypeError(f'layer type "{name}"{where} is not supported: '
                                        f"{UNSUPPORTED[canonical_type(name)]}")
        candidates = sorted(set(_LAYERS) | set(V1_TO_V2))
        near = [n for n in difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
                if n != name]
        hint = f'did you mean {" or ".join(repr(n) for n in near)}? ' if near else ""
        raise UnknownLayerTypeError(f'unknown layer type "{name}"{where} ({hint}known: '
                                    f'{", ".join(sorted(_LAYERS))})')
    return cls


def _load_layers() -> None:
    # Registration happens when the layer family modules are imported, in one place.
    from . import layers  # noqa: F401
