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
Every collective is non-blocking: a wait longer than PROTONET_MPI_TIMEOUT seconds (default
300) raises ParallelError naming the operation, rather than hanging on a rank that died or
hangs.

Stopping: SIGINT, SIGTERM or SIGUSR1 on any rank stops all after the iteration they agree on,
and rank 0 snapshots. Open MPI's mpirun answers Ctrl-C with SIGCONT, then SIGTERM 0.25 s later
and SIGKILL another 0.25 s later, to each rank and the processes it started (a process in a
session of its own escapes them), often before the iteration ends. So the ranks exchange, with each iteration's loss, where their data readers stand and
their random states: with the weights after that iteration's update, rank 0 then holds a
complete resume point at every moment outside an update. On SIGTERM a thread of rank 0 forks
at once a writer process in a session of its own, which writes that point as the snapshot
(atomically) whether or not the rank is killed meanwhile; the stop at the iteration's end
waits for it instead of snapshotting again.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import signal
import sys
import threading
import time
import traceback

import numpy as np

from .. import errors, rng
from . import ParallelError, solver_count

log = logging.getLogger("protonet")

# Bytes of gradient per bucket: big enough that the per-message latency stays small, small
# enough that the first bucket leaves while backward is still busy (CIFAR-10 quick's 582 KB
# of gradients make 3 buckets, LeNet's 1.7 MB 2: ip1's weights alone are 1.6 MB).
BUCKET_BYTES = int(float(os.environ.get("PROTONET_MPI_BUCKET_MB", "0.25")) * (1 << 20))


def _timeout() -> float:
    return float(os.environ.get("PROTONET_MPI_TIMEOUT", "300"))


def wait(request, what: str) -> None:
    """Wait for a non-blocking MPI `request`, yielding the core, at most PROTONET_MPI_TIMEOUT
    seconds; then ParallelError naming `what`."""
    start = time.monotonic()
    deadline = start + _timeout()
    pause = 0.0
    while not request.Test():
        now = time.monotonic()
        if now > deadline:
            raise ParallelError(f"no answer from the other ranks for {now - start:.0f} s in "
                                f"the {what} (a rank stopped or hangs; PROTONET_MPI_TIMEOUT "
                                "sets the limit)")
        time.sleep(pause)
        pause = min(1e-3, pause * 2 + 2e-5) if now - start > 2e-3 else 0.0


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
        self._killed_soon = False  # a SIGTERM came: mpirun's SIGKILL follows within 0.25 s
        self._backward_pass = 0
        self.wait_seconds = 0.0
        self._buckets = self._make_buckets(solver.net)
        # The data layers every rank reports in the exchange after each iteration, in one
        # order: (key, source, layer); and (iteration, every rank's exchanged words, test
        # batches) for the weights once that iteration's update is applied, decoded only when
        # a SIGTERM snapshot needs it.
        self._readers = [(key, layer.source, layer)
                         for key, layer in sorted(solver.data_readers(), key=lambda r: r[0])]
        self._resume_point = None
        # Held around each update and notified after it; under it the SIGTERM thread and the
        # main thread claim an iteration's snapshot, so only one of them writes it.
        self._update = threading.Condition()
        self._snapshot_iteration = -1  # the last iteration a snapshot was claimed for
        self._snapshot_writer: _Detached | None = None  # the last detached one
        self._sigterm_snapshot = False  # the SIGTERM thread wrote it
        self._watching = False
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
            # blob data and histories are contiguous
            wait(self.comm.Ibcast(array, root=0), "start-up broadcast of the weights")
        position = np.array([s.iter, s.current_step], np.int64)
        wait(self.comm.Ibcast(position, root=0), "start-up broadcast of the iteration")
        s.iter, s.current_step = int(position[0]), int(position[1])
        self._own_random_stream()

    def _own_random_stream(self) -> None:
        """From here on each rank draws from its own random stream, as Caffe seeds rank r with
        random_seed + r: Dropout masks, random crops and mirrors differ between the ranks'
        samples as between one big batch's. Rank 0 keeps the stream one process would have; a
        rank whose own stream came from the snapshot keeps that."""
        s = self.solver
        if self.rank == 0 or s.random_stream_restored:
            return
        seed = s.param.random_seed
        if seed < 0:  # the stream every rank shares since start-up: all draw the same seed
            seed = int(rng.generator().integers(1 << 62))
        rng.set_random_seed(seed + self.rank)

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
            wait(bucket.request, "gradient allreduce")
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

    def _allreduce(self, values: np.ndarray, what: str) -> np.ndarray:
        from mpi4py import MPI
        values = np.ascontiguousarray(values)
        wait(self.comm.Iallreduce(MPI.IN_PLACE, values, op=MPI.SUM), what)
        return values

    # -- the group interface the Solver calls ------------------------------------------------
    def agree(self, solver, loss: float) -> float:
        """Mean loss over the ranks (what one process at K x batch would report); a stop
        asked of any rank stops all after this iteration. Each rank also tells where its data
        readers stand and its random state (the resume point after this iteration)."""
        mine = np.array([np.float64(loss).view(np.uint64), self._pending_stop,
                         self._killed_soon,
                         *(layer.reader_position() for _, _, layer in self._readers),
                         *rng.state_to_words(rng.get_state())], np.uint64)
        every = np.empty((self.size, mine.size), np.uint64)
        wait(self.comm.Iallgather(mine, every), "loss exchange")
        if every[:, 1].any():
            solver.request_stop()
        self._killed_soon = bool(every[:, 2].any())
        self._pending_stop = False
        if self.is_root:
            self._resume_point = (solver.iter + 1, every, list(solver.test_batches))
        return float(every[:, 0].view(np.float64).sum()) / self.size

    def request_stop(self, solver, signum: int | None = None) -> None:
        self._pending_stop = True
        self._killed_soon |= signum == signal.SIGTERM

    def test_share(self, first_batch: int, iters: int) -> int:
        """How many of a test pass's `iters` batches this rank runs: the pass reads global
        batches first_batch .. first_batch+iters-1, and this rank those equal to its rank
        modulo K (the test data layers keep the same ones)."""
        return len(range((self.rank - first_batch) % self.size, iters, self.size))

    def sum(self, values: np.ndarray) -> np.ndarray:
        return self._allreduce(np.asarray(values, np.float64).copy(), "test score sum")

    def gather(self, value) -> list | None:
        """Every rank's `value` (plain data: numbers, strings, dicts), as a list at rank 0 and
        None elsewhere."""
        from mpi4py import MPI
        mine = np.frombuffer(pickle.dumps(value), np.uint8)  # between this job's own ranks
        sizes = np.zeros(self.size, np.int64)
        wait(self.comm.Iallgather(np.array([mine.size], np.int64), sizes),
             "snapshot gather (sizes)")
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        everything = np.empty(int(sizes.sum()) if self.is_root else 0, np.uint8)
        receive = [everything, sizes.tolist(), offsets.tolist(), MPI.BYTE] \
            if self.is_root else None
        wait(self.comm.Igatherv(mine, receive, root=0), "snapshot gather")
        if not self.is_root:
            return None
        return [pickle.loads(everything[o:o + n].tobytes()) for o, n in zip(offsets, sizes)]

    def run_writer(self, write, *args):
        """Rank 0 writes a snapshot: here; after a SIGTERM in a process mpirun's SIGKILL cannot
        reach; or not at all once the SIGTERM thread wrote one (the stop that follows it would
        snapshot again, one iteration later)."""
        iteration = self.solver.iter
        with self._update:
            if self._sigterm_snapshot:    # the SIGTERM thread's snapshot stands
                writer = self._snapshot_writer
            elif self._killed_soon:
                if self._snapshot_iteration != iteration:
                    log.info("Stopping on SIGTERM: the snapshot is written by a process of its "
                             "own, which finishes it even if this rank is killed")
                    self._snapshot_writer = _Detached(write, *args)
                writer = self._snapshot_writer
            else:
                writer = None
            self._snapshot_iteration = iteration   # the SIGTERM thread leaves it alone
            self._update.notify_all()
        return write(*args) if writer is None else writer.result()

    @contextlib.contextmanager
    def updating(self):
        with self._update:
            yield
            self._update.notify_all()

    def watch_signals(self):
        """While training on rank 0: a thread that snapshots as soon as a SIGTERM comes."""
        return _SigtermSnapshots(self) if self.is_root else None

    def snapshot_on_sigterm(self) -> None:
        """(The SIGTERM thread.) Fork the writer of the resume point as soon as the weights
        match it: at once, or when the update in progress ends."""
        s = self.solver
        with self._update:
            self._update.wait_for(lambda: not self._watching or (
                self._resume_point is not None and self._resume_point[0] == s.iter),
                timeout=_timeout())
            point = self._resume_point
            if not self._watching or point is None or point[0] != s.iter or \
                    not s.param.snapshot_prefix or self._snapshot_iteration == s.iter or \
                    self._sigterm_snapshot:
                return  # before the first exchange the stop at the iteration's end snapshots
            log.info("SIGTERM at iteration %d: the snapshot is written by a process of its "
                     "own, which finishes it even if this rank is killed", s.iter)
            self._snapshot_iteration, self._sigterm_snapshot = s.iter, True
            self._snapshot_writer = _Detached(s.write_snapshot, self._decode(point[1]),
                                              point[2])

    def _decode(self, every: np.ndarray) -> list:
        """Every rank's (reader positions, random state) from the exchanged words."""
        n = len(self._readers)
        return [({key: (source, int(words[3 + i]))
                  for i, (key, source, _) in enumerate(self._readers)},
                 rng.state_from_words(words[3 + n:])) for words in every]


class _SigtermSnapshots:
    """Python runs signal handlers in the main thread only between bytecodes, which may be
    after mpirun's SIGKILL; the wake-up fd tells this thread at once (kernels and MPI waits
    release the GIL)."""

    def __init__(self, sync: MPISync) -> None:
        self.sync = sync

    def __enter__(self):
        self.sync._watching, self.sync._sigterm_snapshot = True, False
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.write_end, False)
        self.previous = signal.set_wakeup_fd(self.write_end, warn_on_full_buffer=False)
        self.thread = threading.Thread(target=self._watch, name="protonet-sigterm", daemon=True)
        self.thread.start()
        return self

    def _watch(self) -> None:
        while True:
            received = os.read(self.read_end, 64)
            if not received or 0 in received:  # 0: __exit__'s wake-up (no signal has it)
                return
            if signal.SIGTERM in received:
                self.sync.snapshot_on_sigterm()

    def __exit__(self, *exc) -> None:
        signal.set_wakeup_fd(self.previous)
        with self.sync._update:
            self.sync._watching = False
            self.sync._update.notify_all()
        os.write(self.write_end, b"\0")
        self.thread.join()
        os.close(self.read_end)
        os.close(self.write_end)


class _Detached:
    """write(*args) in a grandchild in a session of its own: killing this process or its
    process group leaves it running. Its result or error (a ProtonetError by class name) comes
    back through a pipe, read by result() while this process lives."""

    def __init__(self, write, *args) -> None:
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                os.close(read_end)
                os.setsid()
                if os.fork() == 0:
                    # Another thread may have held a log handler's lock (tqdm's) at the fork;
                    # the parent logs the outcome instead.
                    logging.disable(logging.CRITICAL)
                    try:
                        message = ["ok", list(write(*args))]
                    except BaseException as e:  # anything: the parent reports it
                        message = ["error", type(e).__name__, str(e)]
                    try:
                        os.write(write_end, json.dumps(message).encode())
                    finally:
                        os._exit(0)
            finally:
                os._exit(0)
        os.close(write_end)
        os.waitpid(child, 0)
        self.read_end = read_end
        self.message = None

    def result(self):
        if self.message is None:
            with os.fdopen(self.read_end, "rb") as pipe:
                answer = pipe.read()
            self.message = json.loads(answer) if answer else \
                ["error", "ProtonetError", "the snapshot writer process ended without an answer"]
            if self.message[0] == "ok":
                log.info("Snapshot written: %s", ", ".join(self.message[1]))
        if self.message[0] == "ok":
            return tuple(self.message[1])
        raise _protonet_error_class(self.message[1])(self.message[2])


def _protonet_error_class(name: str) -> type:
    classes, found = [errors.ProtonetError], {}
    while classes:
        kind = classes.pop()
        found[kind.__name__] = kind
        classes.extend(kind.__subclasses__())
    return found.get(name, errors.ProtonetError)


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
        rank, size = self.comm.Get_rank(), self.comm.Get_size()
        if rank:
            # When rank 0 fails as well (a bad file fails on every rank), its abort ends this
            # rank first: one report for the job, not one per rank.
            time.sleep(1.0)
        if not isinstance(error, (errors.ProtonetError, KeyboardInterrupt)):
            traceback.print_exception(kind, error, tb, file=sys.stderr)
        what = "interrupted" if isinstance(error, KeyboardInterrupt) else \
            f"error: {error}" if isinstance(error, errors.ProtonetError) else \
            f"error: {kind.__name__}: {error}"
        print(f"protonet {self.command}: rank {rank} of {size}: {what}; aborting all ranks",
              file=sys.stderr, flush=True)
        self.comm.Abort(1)
        return False
