"""caffe.net_spec: protonet.net_spec under pycaffe's module name."""
from protonet.net_spec import *  # noqa: F401,F403
