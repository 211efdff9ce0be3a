"""caffe.draw: protonet.draw under pycaffe's module name and function names."""
from protonet.draw import (choose_color_by_layertype, draw_net, draw_net_to_file,  # noqa: F401
                           get_edge_label, get_layer_label, get_layer_lr_mult,
                           get_pooling_types_dict, get_pydot_graph, net_to_dot)
