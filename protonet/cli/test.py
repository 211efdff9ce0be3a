"""`protonet test`: score a trained model on its TEST-phase data, like `caffe test`."""
from __future__ import annotations

import logging
import math

import numpy as np

from ..errors import NonFiniteError, ProtonetError
from ..net import TEST, Net
from ._common import add_allow_unknown, add_common, setup_logging

NAME = "test"
ORDER = 20
HELP = "run a net's TEST phase for some batches and report the mean of every output"
log = logging.getLogger("protonet")


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="the net prototxt")
    p.add_argument("--weights", required=True, help="the trained .caffemodel")
    p.add_argument("--iterations", type=int, default=50, help="batches to run (default 50)")
    add_common(p)
    add_allow_unknown(p)


def run(args) -> int:
    setup_logging(args)
    if args.iterations <= 0:
        raise ProtonetError(f"--iterations must be positive, got {args.iterations}")
    with Net(args.model, TEST, weights=args.weights) as net:
        log.info("Running for %d iterations.", args.iterations)
        weights = {top: w for (_, top), w in net.loss_weights().items()}
        sums: dict[str, np.ndarray] = {}
        loss = 0.0
        for i in range(args.iterations):
            batch_loss = net.forward_from_to(0, len(net.layers) - 1)
            if not math.isfinite(batch_loss) or not all(
                    np.isfinite(net.blobs[name].data).all() for name in net.outputs):
                bad = net.first_nonfinite()
                where = f"layer '{bad[0]}' top '{bad[1]}'" if bad else "the loss"
                raise NonFiniteError(f"batch {i}: {where} holds NaN or Inf (scores of such a "
                                     "batch mean nothing)")
            loss += batch_loss
            for name in net.outputs:
                values = net.blobs[name].data.astype(np.float64).ravel()
                for v in values:
                    log.info("Batch %d, %s = %g", i, name, v)
                sums[name] = sums[name] + values if name in sums else values.copy()
        loss /= args.iterations
        log.info("Loss: %g", loss)
        for name, total in sums.items():
            for v in total / args.iterations:
                w = weights.get(name, 0.0)
                extra = f" (* {w:g} = {w * v:g} loss)" if w else ""
                log.info("%s = %g%s", name, v, extra)
    return 0
