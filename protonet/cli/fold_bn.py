"""`protonet fold-bn`: a deploy net with BatchNorm (+ Scale) folded into the convolution or
inner product before it, for faster inference with the same outputs."""
from __future__ import annotations

import logging

from google.protobuf import text_format

from .. import caffe_pb2, prototxt
from ..io.atomic import atomic_write
from ..net import TEST, Net
from ..surgery import fold_batchnorm
from ._common import add_allow_unknown, check_outputs, setup_logging

NAME = "fold-bn"
ORDER = 80
HELP = "fold BatchNorm and Scale layers into the Convolution/InnerProduct before them"
log = logging.getLogger("protonet")


def add_arguments(p) -> None:
    p.add_argument("net", help="the deploy prototxt")
    p.add_argument("weights", help="its trained .caffemodel")
    p.add_argument("out_net", help="the folded prototxt to write")
    p.add_argument("out_weights", help="the folded .caffemodel to write")
    add_allow_unknown(p)


def run(args) -> int:
    setup_logging(args)
    check_outputs(args, "out_net", "out_weights")
    net_param = prototxt.read_net(args.net)
    with Net(param=net_param, phase=TEST, weights=args.weights, source=args.net) as net:
        folded, names = fold_batchnorm(net_param, net)
    atomic_write(args.out_weights, folded.SerializeToString())
    definition = caffe_pb2.NetParameter()
    definition.CopyFrom(folded)
    for lp in definition.layer:
        del lp.blobs[:]
    atomic_write(args.out_net, text_format.MessageToString(definition).encode())
    log.info("Folded %d BatchNorm layers (%s); wrote %s and %s", len(names),
             ", ".join(names) or "none", args.out_net, args.out_weights)
    return 0
