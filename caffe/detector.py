"""caffe.detector: protonet.detector under pycaffe's module name."""
from protonet.detector import *  # noqa: F401,F403
