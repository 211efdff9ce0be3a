"""`protonet draw`: a picture of a net, like Caffe's draw_net.py."""
from __future__ import annotations

import logging

from .. import caffe_pb2, prototxt
from ..draw import net_to_dot, render
from ..net import Net
from ._common import add_allow_unknown, check_outputs, setup_logging

NAME = "draw"
ORDER = 70
HELP = "draw a net as .svg/.png/.pdf (Graphviz) or .dot, with blob shapes and loss branches"
log = logging.getLogger("protonet")
PHASES = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST, "ALL": None}


def add_arguments(p) -> None:
    p.add_argument("net", help="the net prototxt")
    p.add_argument("output", help="the picture: .svg, .png, .pdf or .dot")
    p.add_argument("--phase", choices=sorted(PHASES), default="ALL",
                   help="draw only the layers of this phase (default: all)")
    p.add_argument("--rankdir", choices=["LR", "TB", "BT", "RL"], default="LR",
                   help="direction of the graph (draw_net.py's --rankdir)")
    add_allow_unknown(p)


def run(args) -> int:
    setup_logging(args)
    check_outputs(args, "output")
    net_param = prototxt.read_net(args.net)
    phase = PHASES[args.phase]
    shapes, weights = {}, {}
    try:   # shapes need the net built: its data sources must exist
        with Net(param=net_param, phase=caffe_pb2.TRAIN if phase is None else phase,
                 source=args.net) as net:
            shapes = {name: blob.shape for name, blob in net.blobs.items()}
            weights = net.loss_weights()
    except Exception as e:  # noqa: BLE001 - any build failure only loses the shapes
        log.info("Blob shapes left out (the net does not build here: %s)", e)
    written = render(net_to_dot(net_param, phase, shapes, args.rankdir, weights), args.output)
    log.info("Drew %s to %s", args.net, written)
    return 0
