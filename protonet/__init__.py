"""protonet: Caffe networks and solvers in Python, with numba kernels.

The API is pycaffe's, so scripts port by changing the import:

    import protonet as caffe
    net = caffe.Net("models/lenet.prototxt", caffe.TEST, weights="lenet.caffemodel")
    out = net.forward(data=images)
    solver = caffe.get_solver("models/lenet_solver.prototxt")
    solver.step(100)
"""
import os

# BLAS's threads and numba's share the cores, one after the other: each must yield its core
# as soon as its work ends rather than spin (see kernels/_jit.configure_threads). Read by
# OpenBLAS and libgomp when they load, so set before numpy and numba are imported; a user's
# own setting wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import caffe_pb2  # noqa: E402
from .blob import Blob  # noqa: E402
from .errors import ProtonetError  # noqa: E402
from .layers.base import Layer  # noqa: E402
from .net import Net  # noqa: E402
from .registry import layer_type_list  # noqa: E402
from .rng import set_random_seed  # noqa: E402
from .solvers import (AdaDeltaSolver,  # noqa: E402 AdaGradSolver, AdamSolver, NesterovSolver,
                      RMSPropSolver, SGDSolver, get_solver)

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST


def set_mode_cpu() -> None:
    """pycaffe compatibility: protonet always runs on the CPU."""


__all__ = ["Net", "Blob", "Layer", "TRAIN", "TEST", "get_solver", "SGDSolver",
           "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver", "AdamSolver",
           "set_random_seed", "layer_type_list", "set_mode_cpu", "ProtonetError", "caffe_pb2"]
