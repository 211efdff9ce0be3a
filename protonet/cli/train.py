"""`protonet train`: train with a solver, like `caffe train`."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from .. import parallel
from ..errors import ProtonetError
from ..plot import plot_learning_curve
from ..solvers import get_solver
from ..io.atomic import check_output
from ._common import (add_allow_unknown, add_common, input_paths, is_solver_file, progress,
                      setup_logging)

NAME = "train"
ORDER = 10
HELP = "train a net: give a solver prototxt, or a net prototxt with its solver beside it"
log = logging.getLogger("protonet")


def add_arguments(p) -> None:
    p.add_argument("prototxt", nargs="?", help="a solver prototxt, or a net prototxt whose "
                   "solver is <name>_solver.prototxt beside it")
    p.add_argument("--solver", help="the solver prototxt (Caffe's -solver)")
    p.add_argument("--weights", help="caffemodel(s) to fine-tune from, comma-separated")
    p.add_argument("--snapshot", help="a .solverstate to resume from")
    p.add_argument("--iters", type=int, help="train to this many iterations (overrides max_iter)")
    p.add_argument("--no-plot", action="store_true", help="do not write the learning curve PNG")
    add_common(p)
    add_allow_unknown(p)


def _solver_and_net(args) -> tuple[str, str | None]:
    if args.prototxt is None and args.solver is None:
        raise ProtonetError("give a solver or net prototxt (protonet train models/lenet.prototxt)")
    if args.prototxt is None:
        return args.solver, None
    if is_solver_file(args.prototxt):
        if args.solver:
            raise ProtonetError(f"{args.prototxt} is a solver; give either it or --solver")
        return args.prototxt, None
    net = Path(args.prototxt)
    if args.solver:
        return args.solver, str(net)
    beside = net.with_name(f"{net.stem}_solver.prototxt")
    if not beside.exists():
        raise ProtonetError(f"{net} is a net; no solver found beside it ({beside}); give --solver")
    log.info("Using solver %s for net %s", beside, net)
    return str(beside), str(net)


def run(args) -> int:
    setup_logging(args)
    comm = parallel.join_launched_world()
    if comm is None:
        return _train(args, None)
    from ..parallel.mpi import abort_on_error
    log.info("Data-parallel training on %d MPI ranks: each rank runs its own batch of its "
             "share of the data, so one iteration sees %d x batch_size samples; the learning "
             "rate is not rescaled (as in Caffe's multi-GPU training)", comm.Get_size(),
             comm.Get_size())
    with abort_on_error(comm, NAME):
        return _train(args, comm)


def _train(args, comm) -> int:
    if args.weights and args.snapshot:
        raise ProtonetError("give --weights or --snapshot, not both (as in Caffe)")
    solver_path, net_path = _solver_and_net(args)
    solver = get_solver(solver_path, train_net_file=net_path)
    if args.iters is not None:
        if args.iters <= 0:
            raise ProtonetError(f"--iters must be positive, got {args.iters}")
        solver.param.max_iter = args.iters
    try:
        solver.check_outputs()  # before anything slow: the trained weights must have a place
        curve = None
        if not args.no_plot and solver.param.snapshot_prefix:
            curve = Path(f"{solver.param.snapshot_prefix}_curve.png")
            check_output(curve, "learning curve", inputs=input_paths(args))
        if args.weights:
            for model in args.weights.split(","):
                for net in [solver.net] + solver.test_nets:
                    net.copy_from(model)  # logs the layers that keep their fillers
        if args.snapshot:
            solver.restore(args.snapshot)
        if comm is not None:
            _join(solver, comm)
        bar = progress(solver.param.max_iter, initial=solver.iter, desc="train") \
            if solver.group.is_root else None
        if bar is not None:
            solver.callbacks.append(lambda s, loss: (bar.update(1),
                                                     bar.set_postfix(loss=f"{loss:.4g}")))
        with _tqdm_logging(bar):
            solver.solve()
        if bar is not None:
            bar.close()
        if comm is not None:
            sync = solver.group
            log.info("Waiting for gradient allreduce: %.3g s in all, %.3g ms per iteration",
                     sync.wait_seconds, 1e3 * sync.wait_seconds / max(1, len(
                         solver.train_history)))
        if curve is not None and solver.train_history and solver.group.is_root:
            plot_learning_curve(solver.train_history, solver.test_history, curve,
                                title=f"{solver.net.name} ({solver_path})")
            log.info("Learning curve written to %s", curve)
    finally:
        solver.close()
    return 0


def _join(solver, comm) -> None:
    """Make the solver one of the ranks: rank 0's weights everywhere, gradients averaged."""
    from ..parallel.mpi import MPISync
    sync = MPISync(solver, comm=comm)
    sync.bcast()
    solver.add_callback(sync)
    solver.net.after_backward(sync)
    batch = next((layer.batch_size for layer in solver.net.layers
                  if hasattr(layer, "batch_size")), None)
    if batch:
        log.info("Effective batch: %d ranks x %d = %d samples per iteration (x iter_size %d)",
                 sync.size, batch, sync.size * batch, solver.param.iter_size)


@contextlib.contextmanager
def _tqdm_logging(bar):
    """Route log lines through tqdm.write while a bar is on screen, so they don't tear it."""
    if bar is None:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm
    with logging_redirect_tqdm(loggers=[log]):
        yield
