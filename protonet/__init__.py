"""protonet: Caffe networks and solvers in Python, with numba kernels.

The API is pycaffe's, so scripts port by changing the import:

    import protonet as caffe
    net = caffe.Net("models/lenet.prototxt", caffe.TEST, weights="lenet.caffemodel")
    out = net.forward(data=images)
    solver = caffe.get_solver("models/lenet_solver.prototxt")
    solver.step(100)
"""
from . import caffe_pb2
from .blob import Blob
from .errors import ProtonetError
from .layers.base import Layer
from .net import Net
from .registry import layer_type_list
from .rng import set_random_seed
from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,
                      RMSPropSolver, SGDSolver, get_solver)

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST


def set_mode_cpu() -> None:
    """pycaffe compatibility: protonet always runs on the CPU."""


__all__ = ["Net", "Blob", "Layer", "TRAIN", "TEST", "get_solver", "SGDSolver",
           "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver", "AdamSolver",
           "set_random_seed", "layer_type_list", "set_mode_cpu", "ProtonetError", "caffe_pb2"]
