"""caffe.draw: protonet.draw under pycaffe's module name and function names."""
from protonet.draw import draw_net, draw_net_to_file, get_pydot_graph, net_to_dot  # noqa: F401
