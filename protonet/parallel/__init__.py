"""Data-parallel training: the process-wide solver count and rank, how data layers shard their
records, and the solver group a Solver talks to (one process, or MPI ranks in mpi.py).

Caffe's multi-GPU rules, over MPI:
- `solver_count()` / `solver_rank()` (pycaffe's `set_solver_count` / `set_solver_rank`) are set
  before the solver is built; data layers read them at set-up and keep only their share of the
  records (Caffe's DataLayer::Skip): in TRAIN record i when i mod K == r, in TEST whole batches
  (batch j when j mod K == r), so the test iterations split across ranks read exactly the
  batches one process would.
- A Solver holds a `group` (SINGLE here; an MPISync when training over MPI) and calls it at a
  few points only: `agree` after the gradients (mean loss, stop requests), `test_share` and
  `sum` in a test pass, `gather`, `is_root` and `run_writer` for snapshots, `updating` around
  each update and `watch_signals` while training.
Nothing here imports mpi4py; protonet.parallel.mpi does, when a launcher says there are ranks.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal

import numpy as np

from ..errors import ProtonetError

log = logging.getLogger("protonet")

_solver_count = 1
_solver_rank = 0
_multiprocess = False


class ParallelError(ProtonetError):
    """Data-parallel training cannot go on: no MPI, a rank that stopped answering, a
    snapshot written by another number of ranks."""


# -- pycaffe's process-wide settings ---------------------------------------------------------
def set_solver_count(count: int) -> None:
    """How many solvers train together (pycaffe's caffe.set_solver_count)."""
    global _solver_count
    if int(count) < 1:
        raise ParallelError(f"solver count must be at least 1, got {count}")
    _solver_count = int(count)


def set_solver_rank(rank: int) -> None:
    """This process's place among them, 0 .. count-1 (pycaffe's caffe.set_solver_rank)."""
    global _solver_rank
    _solver_rank = int(rank)


def solver_count() -> int:
    return _solver_count


def solver_rank() -> int:
    return _solver_rank


def set_multiprocess(value: bool) -> None:
    """pycaffe's caffe.set_multiprocess: one solver per process (always so over MPI)."""
    global _multiprocess
    _multiprocess = bool(value)


def multiprocess() -> bool:
    return _multiprocess


# -- sharding --------------------------------------------------------------------------------
class Shard:
    """Which records of a data source this rank reads: counting records from `origin` in
    blocks of `unit`, the blocks whose index is `rank` modulo `count`."""

    def __init__(self, rank: int = 0, count: int = 1, unit: int = 1, origin: int = 0) -> None:
        if not 0 <= rank < count:
            raise ParallelError(f"solver rank {rank} is outside 0..{count - 1}")
        self.rank, self.count, self.unit, self.origin = rank, count, max(1, unit), origin

    def next_kept(self, index: int) -> int:
        """The first record at or after `index` that this rank keeps."""
        if self.count == 1:
            return index
        block = (index - self.origin) // self.unit
        ahead = (self.rank - block) % self.count
        return index if ahead == 0 else self.origin + (block + ahead) * self.unit

    def run_end(self, index: int) -> int | None:
        """End (exclusive) of the run of kept records that `index` (a kept one) starts or
        continues; None when every record is kept."""
        if self.count == 1:
            return None
        return self.origin + ((index - self.origin) // self.unit + 1) * self.unit

    def kept(self, total: int) -> np.ndarray:
        """Indices of the kept records among origin .. total-1."""
        i = np.arange(self.origin, total)
        return i[((i - self.origin) // self.unit) % self.count == self.rank]


def data_shard(phase: int, batch_size: int, origin: int = 0) -> Shard:
    """The shard a data layer of `phase` keeps under the current solver count and rank."""
    from .. import caffe_pb2
    unit = batch_size if phase == caffe_pb2.TEST else 1
    return Shard(_solver_rank, _solver_count, unit, origin)


# -- the solver group ------------------------------------------------------------------------
class SingleProcess:
    """One solver alone: every group operation is the identity."""

    rank, size, is_root = 0, 1, True
    stop_signals = (signal.SIGINT,)

    def agree(self, solver, loss: float) -> float:
        return loss

    def request_stop(self, solver, signum: int | None = None) -> None:
        solver.request_stop()

    def test_share(self, first_batch: int, iters: int) -> int:
        return iters

    def sum(self, values: np.ndarray) -> np.ndarray:
        return values

    def gather(self, value) -> list:
        return [value]

    def run_writer(self, write, *args):
        return write(*args)

    def updating(self):
        return contextlib.nullcontext()

    def watch_signals(self):
        return None


SINGLE = SingleProcess()


# -- launching -------------------------------------------------------------------------------
# What mpirun / mpiexec / srun put in each rank's environment: the number of ranks.
_LAUNCHER_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
                            "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


def launched_ranks() -> int:
    """How many ranks an MPI launcher started this process among (1 when none did)."""
    for name in _LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def join_launched_world():
    """Under `mpirun -n K` with K > 1: initialize MPI, set the solver count and rank, quiet
    the log on every rank but 0 and return the communicator. Otherwise None, and nothing
    changes (no MPI is loaded)."""
    ranks = launched_ranks()
    if ranks <= 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ParallelError(f"started by an MPI launcher as one of {ranks} ranks, but mpi4py "
                            f"cannot be loaded ({e}); install it: pip install 'protonet[mpi]'"
                            ) from None
    from .. import rng
    from .mpi import wait
    comm = MPI.COMM_WORLD
    set_solver_count(comm.Get_size())
    set_solver_rank(comm.Get_rank())
    set_multiprocess(True)
    # One random stream on every rank while the nets are built (a solver's random_seed, if
    # set, reseeds it alike), so the data layers' draws at set-up (rand_skip, shuffle orders)
    # agree and the shards fit; MPISync.bcast then gives each rank its own.
    seed = np.array([rng.generator().integers(1 << 62)], np.int64)
    wait(comm.Ibcast(seed, root=0), "start-up broadcast of the random seed")
    rng.set_random_seed(int(seed[0]))
    if comm.Get_rank() != 0:
        log.setLevel(logging.WARNING)
    return comm
