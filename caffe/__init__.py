"""pycaffe's module layout over protonet: `import caffe` runs Caffe's Python scripts on
protonet, unchanged. Everything here is protonet's; this package only re-exports it under
pycaffe's names (caffe.io, caffe.net_spec, caffe.proto.caffe_pb2, caffe.draw, ...).
New code can import protonet directly.
"""
from protonet import *  # noqa: F401,F403  (Net, solvers, TRAIN/TEST, set_mode_*, ...)

from . import io  # noqa: F401
from ._version import __version__  # noqa: F401
from .classifier import Classifier  # noqa: F401
from .detector import Detector  # noqa: F401
from .net_spec import NetSpec, layers, params, to_proto  # noqa: F401
from .proto.caffe_pb2 import TEST, TRAIN  # noqa: F401
from protonet.parallel import (set_multiprocess, set_solver_count,  # noqa: F401
                               set_solver_rank, solver_count, solver_rank)
