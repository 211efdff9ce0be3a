"""protonet: Caffe networks and solvers in Python, with numba kernels.

The API is pycaffe's, so scripts port by changing the import:

    import protonet as caffe
    net = caffe.Net("models/lenet.prototxt", caffe.TEST, weights="lenet.caffemodel")
    out = net.forward(data=images)
    solver = caffe.get_solver("models/lenet_solver.prototxt")
    solver.step(100)
"""
from . import _thread_env  # noqa: F401  (first: before numpy loads)
from . import caffe_pb2  # noqa: E402
from .blob import Blob  # noqa: E402
from .errors import ProtonetError  # noqa: E402
from .layers.base import Layer  # noqa: E402
from .net import Net  # noqa: E402
from .parallel import (multiprocess, set_multiprocess, set_solver_count,  # noqa: E402
                       set_solver_rank, solver_count, solver_rank)
from .parallel.mpi import MPISync  # noqa: E402
from .registry import layer_type_list  # noqa: E402
from .rng import set_random_seed  # noqa: E402
from .runtime import (NCCL, Timer, has_nccl, init_log, set_device,  # noqa: E402
                      set_mode_cpu, set_mode_gpu)
from .runtime import log_info as log  # noqa: E402  (pycaffe's caffe.log)
from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver,  # noqa: E402
                      NesterovSolver, RMSPropSolver, SGDSolver, Solver, get_solver)

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST


__all__ = ["Net", "Blob", "Layer", "TRAIN", "TEST", "get_solver", "Solver", "SGDSolver",
           "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver", "AdamSolver",
           "set_random_seed", "layer_type_list", "set_mode_cpu", "set_mode_gpu", "set_device",
           "has_nccl", "NCCL", "Timer", "init_log", "log", "ProtonetError", "caffe_pb2",
           "set_solver_count", "set_solver_rank", "solver_count", "solver_rank",
           "set_multiprocess", "multiprocess", "MPISync"]
