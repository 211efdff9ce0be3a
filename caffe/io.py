"""caffe.io: protonet.preprocessing under pycaffe's module name."""
from protonet.preprocessing import *  # noqa: F401,F403
