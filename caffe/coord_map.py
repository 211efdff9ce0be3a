"""caffe.coord_map: protonet.coord_map under pycaffe's module name."""
from protonet.coord_map import *  # noqa: F401,F403
