"""`protonet time`: per-layer forward and backward milliseconds, like `caffe time`."""
from __future__ import annotations

import logging
import time

from ..errors import ProtonetError
from ..net import TRAIN, Net
from ._common import add_allow_unknown, add_common, setup_logging

NAME = "time"
ORDER = 30
HELP = "time each layer's forward and backward over some iterations (TRAIN phase)"
log = logging.getLogger("protonet")


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="the net prototxt")
    p.add_argument("--iterations", type=int, default=50, help="iterations to time (default 50)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed iterations first (numba compiles on the first; default 1)")
    add_common(p)
    add_allow_unknown(p)


def time_layers(net: Net, iterations: int, warmup: int = 1):
    """Mean milliseconds per layer: ([(name, forward_ms, backward_ms)], forward-backward ms)."""
    n = len(net.layers)
    for _ in range(warmup):
        net.forward_backward()
    forward = [0.0] * n
    backward = [0.0] * n
    start = time.perf_counter()
    for _ in range(iterations):
        for i in range(n):
            t = time.perf_counter()
            net.forward_from_to(i, i)
            forward[i] += time.perf_counter() - t
        for i in reversed(range(n)):
            t = time.perf_counter()
            net.backward_from_to(i, i)
            backward[i] += time.perf_counter() - t
    total = (time.perf_counter() - start) * 1e3 / iterations
    rows = [(layer.name, forward[i] * 1e3 / iterations, backward[i] * 1e3 / iterations)
            for i, layer in enumerate(net.layers)]
    return rows, total


def run(args) -> int:
    setup_logging(args)
    if args.iterations <= 0:
        raise ProtonetError(f"--iterations must be positive, got {args.iterations}")
    if args.warmup < 0:
        raise ProtonetError(f"--warmup must not be negative, got {args.warmup}")
    with Net(args.model, TRAIN) as net:
        log.info("Performing Forward and Backward, %d iterations (after %d warm-up)",
                 args.iterations, args.warmup)
        rows, total = time_layers(net, args.iterations, args.warmup)
        log.info("Average time per layer: ")
        width = max(len(name) for name, _, _ in rows)
        for name, f, _ in rows:
            log.info("%*s\tforward: %.4f ms.", width, name, f)
        for name, _, b in rows:
            log.info("%*s\tbackward: %.4f ms.", width, name, b)
        fwd = sum(f for _, f, _ in rows)
        bwd = sum(b for _, _, b in rows)
        log.info("Average Forward pass: %.4f ms.", fwd)
        log.info("Average Backward pass: %.4f ms.", bwd)
        log.info("Average Forward-Backward: %.4f ms.", total)
        log.info("Total Time: %.4f ms.", total * args.iterations)
    return 0
