"""Synchronous data-parallel SGD over MPI (mpi4py): pycaffe's NCCL object, for CPUs.

    sync = MPISync(solver)          # the solver's group from now on
    sync.bcast()                    # rank 0's weights and solver history to every rank
    solver.add_callback(sync)       # gradients averaged before every update
    solver.net.after_backward(sync) # ... sent in buckets while backward still runs

Gradients travel in buckets of whole parameters, in the order backward finishes them. A bucket
is copied into its own float32 buffer and summed across ranks with a non-blocking Iallreduce
as soon as the layer that completes it is done (the earliest layer using each parameter), so
it overlaps with the backward of the layers below; each later layer's hook lets MPI progress.
`on_gradients_ready` starts what is left, waits, and writes sum / K back into the diffs: every
rank ends with the same bits, as Open MPI's and MPICH's allreduce give every rank one result.
A wait longer than PROTONET_MPI_TIMEOUT seconds (default 300) raises ParallelError naming the
operation, rather than hanging on a rank that died or hangs.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback

import numpy as np

from . import ParallelError, solver_count

log = logging.getLogger("protonet")

# Bytes of gradient per bucket: big enough that the per-message latency stays small, small
# enough that the first bucket leaves while backward is still busy (CIFAR-10 quick's 582 KB
# of gradients make 3 buckets, LeNet's 1.7 MB 2: ip1's weights alone are 1.6 MB).
BUCKET_BYTES = int(float(os.environ.get("PROTONET_MPI_BUCKET_MB", "0.25")) * (1 << 20))


def _timeout() -> float:
    return float(os.environ.get("PROTONET_MPI_TIMEOUT", "300"))


class _Bucket:
    __slots__ = ("params", "buffer", "ready_layer", "request")

    def __init__(self, params, ready_layer: int) -> None:
        self.params = params
        self.buffer = np.empty(sum(p.count for p in params), np.float32)
        self.ready_layer = ready_layer
        self.request = None


class MPISync:
    """The solver group of one rank among `comm`'s ranks (pycaffe's NCCL, over MPI)."""

    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, solver, uid=None, comm=None) -> None:
        if comm is None:
            from mpi4py import MPI
            comm = MPI.COMM_WORLD
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.is_root = self.rank == 0
        if solver_count() != self.size:
            raise ParallelError(f"{self.size} MPI ranks but solver count {solver_count()}: "
                                "call set_solver_count(size) and set_solver_rank(rank) before "
                                "building the solver, so data layers take their share")
        self.solver = solver
        if not self.is_root:  # only rank 0 logs (warnings and errors pass on every rank)
            log.setLevel(max(log.level, logging.WARNING))
        self._pending_stop = False
        self._backward_pass = 0
        self.wait_seconds = 0.0
        self._buckets = self._make_buckets(solver.net)
        solver.group = self

    # -- set-up ------------------------------------------------------------------------------
    @staticmethod
    def _make_buckets(net) -> list[_Bucket]:
        params = net.learnable_params
        owner = {p._diff_buf.ctypes.data: i for i, p in enumerate(params)}
        ready = [len(net.layers)] * len(params)
        for index, layer in enumerate(net.layers):
            for blob in layer.blobs:
                k = owner.get(blob._diff_buf.ctypes.data)
                if k is not None:
                    ready[k] = min(ready[k], index)
        order = sorted(range(len(params)), key=lambda k: -ready[k])
        buckets, current, size = [], [], 0
        for k in order:
            current.append(k)
            size += params[k].count * 4
            if size >= BUCKET_BYTES:
                buckets.append(current)
                current, size = [], 0
        if current:
            buckets.append(current)
        return [_Bucket([params[k] for k in ks], min(ready[k] for k in ks)) for ks in buckets]

    def bcast(self) -> None:
        """Rank 0's weights, solver history and iteration to every rank (after --weights or
        --snapshot), so all start identical whatever their seeds."""
        s = self.solver
        for array in [p.data for p in s.net.learnable_params] + s.history:
            self.comm.Bcast(array, root=0)  # blob data and histories are contiguous
        s.iter, s.current_step = self.comm.bcast((s.iter, s.current_step), root=0)

    @staticmethod
    def new_uid():
        """pycaffe's NCCL.new_uid(): MPI needs no session id."""
        return None

    # -- the hooks ---------------------------------------------------------------------------
    def on_start(self) -> None:
        self._backward_pass = 0

    def __call__(self, layer_index: int) -> None:
        """Net after_backward hook: start every bucket this layer completes (in the last
        backward of the iteration) and let MPI progress the ones in flight."""
        if self._backward_pass == self.solver.param.iter_size - 1:
            for bucket in self._buckets:
                if bucket.request is None and layer_index <= bucket.ready_layer:
                    self._start(bucket)
            self._progress()
        if layer_index == 0:
            self._backward_pass += 1

    def on_gradients_ready(self) -> None:
        for bucket in self._buckets:
            if bucket.request is None:
                self._start(bucket)
        t = time.perf_counter()
        for bucket in self._buckets:
            self._wait(bucket.request, "gradient allreduce")
            bucket.request = None
            scale = np.float32(1.0 / self.size)
            offset = 0
            for p in bucket.params:
                n = p.count
                np.multiply(bucket.buffer[offset:offset + n].reshape(p.diff.shape), scale,
                            out=p.diff)
                offset += n
        self.wait_seconds += time.perf_counter() - t
        self._backward_pass = 0

    def _start(self, bucket: _Bucket) -> None:
        from mpi4py import MPI
        offset = 0
        for p in bucket.params:
            bucket.buffer[offset:offset + p.count] = p.diff.ravel()
            offset += p.count
        bucket.request = self.comm.Iallreduce(MPI.IN_PLACE, bucket.buffer, op=MPI.SUM)

    def _progress(self) -> None:
        for bucket in self._buckets:
            if bucket.request is not None:
                bucket.request.Test()

    def _wait(self, request, what: str) -> None:
        """Wait for `request`, yielding the core, at most PROTONET_MPI_TIMEOUT seconds."""
        start = time.monotonic()
        deadline = start + _timeout()
        pause = 0.0
        while not request.Test():
            now = time.monotonic()
            if now > deadline:
                raise ParallelError(f"no answer from the other ranks for "
                                    f"{now - start:.0f} s in the {what} (a rank stopped or "
                                    "hangs; PROTONET_MPI_TIMEOUT sets the limit)")
            time.sleep(pause)
            pause = min(1e-3, pause * 2 + 2e-5) if now - start > 2e-3 else 0.0

    def _allreduce(self, values: np.ndarray, what: str) -> np.ndarray:
        from mpi4py import MPI
        values = np.ascontiguousarray(values)
        self._wait(self.comm.Iallreduce(MPI.IN_PLACE, values, op=MPI.SUM), what)
        return values

    # -- the group interface the Solver calls ------------------------------------------------
    def agree(self, solver, loss: float) -> float:
        """Mean loss over the ranks (what one process at K x batch would report); a stop
        asked of any rank stops all after this iteration."""
        values = self._allreduce(np.array([loss, float(self._pending_stop)]), "loss exchange")
        if values[1]:
            solver.request_stop()
        self._pending_stop = False
        return float(values[0]) / self.size

    def request_stop(self, solver) -> None:
        self._pending_stop = True

    def test_share(self, first_batch: int, iters: int) -> int:
        """How many of a test pass's `iters` batches this rank runs: the pass reads global
        batches first_batch .. first_batch+iters-1, and this rank those equal to its rank
        modulo K (the test data layers keep the same ones)."""
        return len(range((self.rank - first_batch) % self.size, iters, self.size))

    def sum(self, values: np.ndarray) -> np.ndarray:
        return self._allreduce(np.asarray(values, np.float64).copy(), "test score sum")

    def gather(self, value) -> list | None:
        return self.comm.gather(value, root=0)


def abort_on_error(comm, command: str):
    """Context manager for a rank's whole run: an exception on any rank prints one line naming
    the rank and the error, then MPI_Abort ends every rank (none is left waiting in a
    collective)."""
    return _AbortOnError(comm, command)


class _AbortOnError:
    def __init__(self, comm, command: str) -> None:
        self.comm, self.command = comm, command

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb) -> bool:
        if error is None or kind is SystemExit:
            return False
        from ..errors import ProtonetError
        rank, size = self.comm.Get_rank(), self.comm.Get_size()
        if not isinstance(error, (ProtonetError, KeyboardInterrupt)):
            traceback.print_exception(kind, error, tb, file=sys.stderr)
        what = "interrupted" if isinstance(error, KeyboardInterrupt) else \
            f"error: {error}" if isinstance(error, ProtonetError) else \
            f"error: {kind.__name__}: {error}"
        print(f"protonet {self.command}: rank {rank} of {size}: {what}; aborting all ranks",
              file=sys.stderr, flush=True)
        self.comm.Abort(1)
        return False
