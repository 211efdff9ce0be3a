"""`protonet upgrade`: old net and solver files rewritten in the current form, like Caffe's
upgrade_net_proto_text, upgrade_net_proto_binary and upgrade_solver_proto_text."""
from __future__ import annotations

import logging

from google.protobuf import text_format

from .. import prototxt
from ..io.atomic import atomic_write
from ._common import add_allow_unknown, check_outputs, is_solver_file, setup_logging

NAME = "upgrade"
ORDER = 50
HELP = "rewrite a V0/V1 net (text or --binary caffemodel) or an old solver in the current form"
log = logging.getLogger("protonet")


def add_arguments(p) -> None:
    p.add_argument("input", help="the old prototxt (or .caffemodel with --binary)")
    p.add_argument("output", help="where the upgraded file goes")
    p.add_argument("--binary", action="store_true",
                   help="input and output are binary NetParameters (caffemodels), weights kept")
    add_allow_unknown(p)


def run(args) -> int:
    setup_logging(args)
    check_outputs(args, "output")
    if args.binary:
        net = prototxt.read_net_binary(args.input)
        atomic_write(args.output, net.SerializeToString())
        log.info("Wrote upgraded NetParameter (%d layers, binary) to %s", len(net.layer),
                 args.output)
        return 0
    if is_solver_file(args.input):
        message, what = prototxt.read_solver(args.input), "solver"
    else:
        message = prototxt.read_net(args.input)
        what = f"net ({len(message.layer)} layers)"
    atomic_write(args.output, text_format.MessageToString(message).encode())
    log.info("Wrote upgraded %s to %s", what, args.output)
    return 0
