"""`protonet export --onnx`: a deploy net with its trained weights as an ONNX model."""
from __future__ import annotations

import logging

from ..errors import ProtonetError
from ..export.onnx import export_onnx
from ..net import TEST, Net
from ._common import add_allow_unknown, check_outputs, setup_logging

NAME = "export"
ORDER = 60
HELP = "export a deploy net and its caffemodel to another format (--onnx)"
log = logging.getLogger("protonet")


def add_arguments(p) -> None:
    p.add_argument("--onnx", action="store_true", required=True,
                   help="write ONNX (the only format so far; needs the onnx package)")
    p.add_argument("net", help="the deploy prototxt (Input layer or input: fields)")
    p.add_argument("weights", help="the trained .caffemodel")
    p.add_argument("output", help="the .onnx file to write")
    add_allow_unknown(p)


def run(args) -> int:
    setup_logging(args)
    check_outputs(args, "output")
    if not args.onnx:
        raise ProtonetError("choose a format: --onnx")
    with Net(args.net, TEST, weights=args.weights) as net:
        outputs = export_onnx(net, args.output)
    log.info("Wrote %s (inputs %s, outputs %s)", args.output, ", ".join(net.inputs),
             ", ".join(outputs))
    return 0
