"""caffe.classifier: protonet.classifier under pycaffe's module name."""
from protonet.classifier import *  # noqa: F401,F403
