"""Shared driver for the layer tables: build a layer from prototxt text on seeded bottoms."""
import numpy as np

from protonet import caffe_pb2, rng
from protonet.blob import Blob
from protonet.testing import check_gradient, layer_from_text, random_blobs


def build(text, shapes, phase=caffe_pb2.TRAIN, seed=1701, bottoms=None, in_place=False,
          n_top=1):
    rng.set_random_seed(seed)
    layer = layer_from_text(text, phase)
    bottom = bottoms if bottoms is not None else random_blobs(shapes, seed)
    top = [bottom[0]] if in_place else [Blob(name=f"top{i}") for i in range(n_top)]
    layer.set_up(bottom, top)
    return layer, bottom, top


def run_forward(layer, bottom, top):
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return [t.data.astype(np.float64) for t in top]


__all__ = ["build", "run_forward", "check_gradient"]
