"""Solver: Caffe's training loop (solver.cpp, sgd_solver.cpp) around a rule's compute_update.

One iteration: clear parameter diffs; maybe test; iter_size x forward/backward; smooth and
display the loss; rate from the lr policy; clip gradients; per parameter normalize (1/iter_size),
regularize (L2/L1 weight decay x decay_mult), `compute_update` (the rule: SGD, Adam, ...); then
data -= diff. Snapshots write <prefix>_iter_N.caffemodel and .solverstate atomically.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np

from .. import caffe_pb2, parallel, prototxt, rng
from ..errors import NonFiniteError, OutputError, ProtonetError, SolverConfigError
from ..io.atomic import check_output, remove_stale_temps
from ..io.solverstate import SolverStateData, read_solverstate, write_solverstate
from ..net import TEST, TRAIN, Net
from ..runtime import NCCL
from . import lr_policy

log = logging.getLogger("protonet")


class Solver:
    """Trains a net as a SolverParameter says. Subclasses implement `compute_update`."""

    type: ClassVar[str] = ""
    # History blobs per learnable parameter (AdaDelta and Adam keep two).
    num_history: ClassVar[int] = 1
    # SolverParameter fields the rule needs in [0, 1) (Adam's betas: 1 divides by zero).
    fraction_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, param, source: str = "<solver>", *, train_net_file=None) -> None:
        if isinstance(param, (str, Path)):
            source = str(param)
            param = prototxt.read_solver(param)
        self.param = param
        self.source = source
        self._check_param()
        if param.random_seed >= 0:
            rng.set_random_seed(param.random_seed)
        self.net = self._build_train_net(train_net_file)
        self.test_nets = self._build_test_nets(train_net_file)
        params = self.net.learnable_params
        self.history = [np.zeros(p.shape, np.float32) for _ in range(self.num_history)
                        for p in params]
        self.iter = 0
        self.current_step = 0
        self.callbacks: list[Callable[["Solver", float], None]] = []
        # pycaffe's add_callback pairs: on_start() before each iteration's forward/backward,
        # on_gradients_ready() after it, before the update.
        self._iteration_callbacks: list[tuple[Callable[[], None], Callable[[], None]]] = []
        # The solvers training together (protonet.parallel): one process, or MPI ranks.
        self.group = parallel.SINGLE
        # Test batches each test net has read so far, over all ranks (splits a test pass).
        self.test_batches = [0] * len(self.test_nets)
        self.smoothed_loss = 0.0
        self._losses: list[float] = []
        self._stop_requested = False
        self._snapshot_requested = False
        # Per parameter, the NaN or Inf entries its last update in this step() left, as the
        # update's kernel counted them (None: not counted); spares the check a pass.
        self._nonfinite_after_update: list[int | None] = []
        # Set by restore when this rank's own random stream came from the snapshot.
        self.random_stream_restored = False
        # (iteration, {output blob: value}) of every training iteration and every test pass,
        # for learning curves and scripts.
        self.train_history: list[tuple[int, dict[str, float]]] = []
        self.test_history: list[tuple[int, int, dict[str, float]]] = []

    # -- construction ------------------------------------------------------------------------
    def _check_param(self) -> None:
        p, where = self.param, self.source
        for f, value in p.ListFields():
            if isinstance(value, float) and not math.isfinite(value):
                raise SolverConfigError(f"{where}: {f.name} must be a finite number, got {value}")
        if p.base_lr < 0:
            raise SolverConfigError(f"{where}: base_lr must not be negative, got {p.base_lr}")
        lr_policy.check_policy(p, where)
        if p.regularization_type not in ("L1", "L2"):
            raise SolverConfigError(f"{where}: unknown regularization_type "
                                    f"\"{p.regularization_type}\" (known: L1, L2)")
        if p.iter_size < 1:
            raise SolverConfigError(f"{where}: iter_size must be at least 1, got {p.iter_size}")
        if p.average_loss < 1:
            raise SolverConfigError(f"{where}: average_loss must be at least 1")
        for name in ("max_iter", "snapshot", "display", "test_interval"):
            if getattr(p, name) < 0:
                raise SolverConfigError(f"{where}: {name} must not be negative, got "
                                        f"{getattr(p, name)}")
        if any(n < 1 for n in p.test_iter):
            raise SolverConfigError(f"{where}: every test_iter must be at least 1, got "
                                    f"{list(p.test_iter)}")
        for name in self.fraction_fields:
            if not 0 <= getattr(p, name) < 1:
                raise SolverConfigError(f"{where}: {self.type} needs 0 <= {name} < 1, got "
                                        f"{getattr(p, name):g}")
        if p.HasField("solver_mode") and p.solver_mode == caffe_pb2.SolverParameter.GPU or \
                p.HasField("device_id"):
            log.info("%s: solver_mode/device_id are for GPUs; protonet runs on the CPU", where)
        if p.snapshot_format == caffe_pb2.SolverParameter.HDF5:
            raise SolverConfigError(f"{where}: snapshot_format HDF5 is not supported; use "
                                    "BINARYPROTO (Caffe's default)")

    def _resolve(self, path: str) -> str:
        """Paths in a solver are relative to the working directory (as in Caffe); failing
        that, to the solver file's folder."""
        if Path(path).exists() or self.source.startswith("<"):
            return path
        beside = Path(self.source).parent / path
        return str(beside) if beside.exists() else path

    def _build_train_net(self, train_net_file) -> Net:
        p = self.param
        given = [f for f in ("net", "net_param", "train_net", "train_net_param") if p.HasField(f)]
        if train_net_file is None and len(given) != 1:
            raise SolverConfigError(f"{self.source}: give exactly one of net, net_param, "
                                    f"train_net, train_net_param (found {given or 'none'})")
        state = caffe_pb2.NetState(phase=TRAIN)
        state.MergeFrom(p.train_state)
        if train_net_file is not None:
            log.info("Creating training net from net file: %s", train_net_file)
            return Net(train_net_file, TRAIN, stages=list(state.stage), level=state.level)
        field = given[0]
        if field.endswith("_param"):
            log.info("Creating training net specified in %s.", field)
            return Net(param=getattr(p, field), phase=TRAIN, stages=list(state.stage),
                       level=state.level, source=f"{self.source} ({field})")
        path = self._resolve(getattr(p, field))
        log.info("Creating training net from %s file: %s", field, path)
        return Net(path, TRAIN, stages=list(state.stage), level=state.level)

    def _build_test_nets(self, train_net_file) -> list[Net]:
        p = self.param
        generic = train_net_file or (p.net if p.HasField("net") else None)
        generic_param = p.net_param if p.HasField("net_param") else None
        specific = [("test_net_param", tp) for tp in p.test_net_param] + \
                   [("test_net", self._resolve(f)) for f in p.test_net]
        has_generic = generic is not None or generic_param is not None
        if (len(p.test_iter) < len(specific)) or (not has_generic and
                                                  len(p.test_iter) != len(specific)):
            raise SolverConfigError(f"{self.source}: test_iter must be given once per test net "
                                    f"({len(specific)} test nets, {len(p.test_iter)} test_iter)")
        count = len(specific) + (len(p.test_iter) - len(specific) if has_generic else 0)
        if len(p.test_state) and len(p.test_state) != count:
            raise SolverConfigError(f"{self.source}: test_state must be given once per test net")
        if count and p.test_interval <= 0:
            raise SolverConfigError(f"{self.source}: test nets need test_interval > 0")
        nets = []
        for i in range(count):
            state = caffe_pb2.NetState(phase=TEST)
            if len(p.test_state):
                state.MergeFrom(p.test_state[i])
            kw = dict(stages=list(state.stage), level=state.level)
            if i < len(specific):
                kind, spec = specific[i]
                net = (Net(param=spec, phase=TEST, source=f"{self.source} (test_net_param)", **kw)
                       if kind == "test_net_param" else Net(spec, TEST, **kw))
            elif generic is not None:
                net = Net(self._resolve(str(generic)) if train_net_file is None
                          else train_net_file, TEST, **kw)
            else:
                net = Net(param=generic_param, phase=TEST, source=f"{self.source} (net_param)",
                          **kw)
            net.share_trained_layers_with(self.net)
            nets.append(net)
        return nets

    # -- training ----------------------------------------------------------------------------
    def step(self, iters: int) -> None:
        """Run `iters` iterations (Caffe's Solver::Step)."""
        p = self.param
        start_iter = self.iter
        stop_iter = self.iter + iters
        self._losses = []
        self.smoothed_loss = 0.0
        self._nonfinite_after_update = []
        timer, last_iter = time.perf_counter(), self.iter
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if p.test_interval and self.iter % p.test_interval == 0 and (
                    self.iter > 0 or p.test_initialization):
                self.test_all()
                if self._stop_requested:
                    break
            for on_start, _ in self._iteration_callbacks:
                on_start()
            display = p.display and self.iter % p.display == 0
            self.net.apply_loss_weight_schedule(self.iter)
            loss = 0.0
            for _ in range(p.iter_size):
                loss += self.net.forward_backward()
            loss = self.group.agree(self, loss / p.iter_size)
            if not math.isfinite(loss):
                bad = self.net.first_nonfinite()
                where = f"; first non-finite output: layer '{bad[0]}', top '{bad[1]}'" if bad \
                    else ""
                raise NonFiniteError(f"iteration {self.iter}: loss is {loss}{where}")
            self._update_smoothed_loss(loss, start_iter)
            self.train_history.append((self.iter, self._output_values(self.net)))
            if display:
                lapse = time.perf_counter() - timer
                per_s = (self.iter - last_iter) / lapse if lapse > 0 else 0.0
                log.info("Iteration %d (%.4g iter/s, %.4gs/%d iters), loss = %.6g",
                         self.iter, per_s, lapse, p.display, self.smoothed_loss)
                timer, last_iter = time.perf_counter(), self.iter
                self._log_outputs(self.net, "Train", {n: self.net.blobs[n].data
                                                      for n in self.net.outputs})
            for _, on_gradients_ready in self._iteration_callbacks:
                on_gradients_ready()
            with self.group.updating():  # parameters and iteration change together
                self.apply_update(display)
                self.iter += 1
            for callback in self.callbacks:
                callback(self, loss)
            if (p.snapshot and self.iter % p.snapshot == 0) or self._snapshot_requested:
                self._snapshot_requested = False
                self.snapshot()
            if self._stop_requested:
                break
        if self.iter > start_iter:
            # The update's own counts, unless a callback ran after it (it may change weights).
            self._check_params_finite([] if self.callbacks else self._nonfinite_after_update)

    def add_callback(self, on_start, on_gradients_ready=None) -> None:
        """pycaffe's Solver.add_callback: on_start() runs at the start of every iteration
        (after any test pass), on_gradients_ready() once the gradients are in the parameter
        diffs, before the update. add_callback(nccl) does nothing, as in a Caffe built
        without NCCL. One object with both methods (protonet.parallel.mpi.MPISync, what
        NCCL(solver, uid) gives among several ranks) counts as the pair."""
        if isinstance(on_start, NCCL) and on_gradients_ready is None:
            return
        if on_gradients_ready is None and hasattr(on_start, "on_gradients_ready"):
            on_start, on_gradients_ready = on_start.on_start, on_start.on_gradients_ready
        self._iteration_callbacks.append((on_start, on_gradients_ready))

    def share_weights(self, net: Net) -> None:
        """pycaffe's Solver.share_weights: `net` uses the training net's weights (same
        memory) for its same-named layers."""
        net.share_trained_layers_with(self.net)

    @property
    def lr(self) -> float:
        """pycaffe's SGDSolver.lr: the learning rate the lr policy gives for this iteration."""
        return self.learning_rate()

    def solve(self, resume_file=None) -> None:
        """Train to max_iter (Caffe's Solver::Solve), snapshot at the end, test once more."""
        p = self.param
        log.info("Solving %s", self.net.name)
        log.info("Learning Rate Policy: %s", p.lr_policy)
        self._stop_requested = False
        if resume_file:
            self.restore(resume_file)
        self.check_outputs()
        with _SigintStops(self):
            self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self._stop_requested:
            log.info("Optimization stopped early.")
            return
        if p.display and self.iter % p.display == 0:
            self.net.apply_loss_weight_schedule(self.iter)
            loss = self.group.agree(self, self.net.forward_from_to(0, len(self.net.layers) - 1))
            self._update_smoothed_loss(loss, self.iter)
            log.info("Iteration %d, loss = %.6g", self.iter, self.smoothed_loss)
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        log.info("Optimization Done.")

    def request_stop(self, snapshot: bool = False) -> None:
        """Stop after the current iteration (what SIGINT does), optionally snapshotting."""
        self._stop_requested = True
        self._snapshot_requested = snapshot

    def _update_smoothed_loss(self, loss: float, start_iter: int) -> None:
        n = self.param.average_loss
        if len(self._losses) < n:
            self._losses.append(loss)
            size = len(self._losses)
            self.smoothed_loss = (self.smoothed_loss * (size - 1) + loss) / size
        else:
            idx = (self.iter - start_iter) % n
            self.smoothed_loss += (loss - self._losses[idx]) / n
            self._losses[idx] = loss

    def learning_rate(self) -> float:
        self.current_step = lr_policy.multistep_position(self.param, self.iter,
                                                         self.current_step)
        return lr_policy.learning_rate(self.param, self.iter, self.current_step, self.source)

    def apply_update(self, display: bool = False) -> None:
        rate = self.learning_rate()
        if display:
            log.info("Iteration %d, lr = %.6g", self.iter, rate)
        self._clip_gradients()
        p, net = self.param, self.net
        pending = []
        counted: list[int | None] = []
        for i, blob in enumerate(net.learnable_params):
            if p.iter_size > 1:
                blob.diff *= np.float32(1.0 / p.iter_size)
            decay = p.weight_decay * net.params_weight_decay[i]
            nonfinite = (self.fused_step(i, decay, rate * net.params_lr[i])
                         if p.regularization_type == "L2" else None)
            counted.append(nonfinite)
            if nonfinite is not None:
                continue
            if decay:
                if p.regularization_type == "L2":
                    blob.diff += np.float32(decay) * blob.data
                else:
                    blob.diff += np.float32(decay) * np.sign(blob.data)
            self.compute_update(i, rate * net.params_lr[i])
            pending.append(blob)
        for blob in pending:
            blob.data -= blob.diff
        self._nonfinite_after_update = counted

    def fused_step(self, param_id: int, decay: float, rate: float) -> int | None:
        """L2 regularization, the rule's update and data -= diff for one parameter in one
        pass, where the rule has such a kernel (SGD), returning how many of its values the
        step left NaN or infinite; None leaves the steps to apply_update. Same float32
        arithmetic either way."""
        return None

    def _clip_gradients(self) -> None:
        clip = self.param.clip_gradients
        if clip < 0:
            return
        params = self.net.learnable_params
        norm = math.sqrt(sum(float(np.dot(b.diff.ravel(), b.diff.ravel())) for b in params))
        if norm > clip:
            log.info("Gradient clipping: scaling down gradients (L2 norm %g > %g) by scale "
                     "factor %g", norm, clip, clip / norm)
            for b in params:
                b.diff *= np.float32(clip / norm)

    def compute_update(self, param_id: int, rate: float) -> None:
        """Turn net.learnable_params[param_id].diff into the step to subtract (in place)."""
        raise NotImplementedError

    def history_of(self, param_id: int, k: int = 0) -> np.ndarray:
        """The k-th history array of a parameter (Caffe's history_[k * n + param_id])."""
        return self.history[k * len(self.net.learnable_params) + param_id]

    # -- testing -----------------------------------------------------------------------------
    def test_all(self) -> list[dict[str, float]]:
        return [self.test(i) for i in range(len(self.test_nets))]

    def test(self, test_net_id: int = 0) -> dict[str, float]:
        """Run test_iter batches; log and return the mean of every output blob."""
        log.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        net = self.test_nets[test_net_id]
        net.apply_loss_weight_schedule(self.iter)
        iters = self.param.test_iter[test_net_id]
        # Over several ranks each runs its share of the batches; the sums are then added up.
        mine = self.group.test_share(self.test_batches[test_net_id], iters)
        self.test_batches[test_net_id] += iters
        sums = {name: np.zeros(net.blobs[name].count) for name in net.outputs}
        loss = 0.0
        for _ in range(mine):
            loss += net.forward_from_to(0, len(net.layers) - 1)
            for name in net.outputs:
                sums[name] += net.blobs[name].data.astype(np.float64).ravel()
        total = self.group.sum(np.concatenate([[loss], *sums.values()]))
        loss, offset = float(total[0]), 1
        for name in sums:
            sums[name] = total[offset:offset + sums[name].size]
            offset += sums[name].size
        if self.param.test_compute_loss:
            log.info("Test loss: %g", loss / iters)
        means = {name: s / iters for name, s in sums.items()}
        bad = [name for name, v in means.items() if not np.isfinite(v).all()]
        if bad or not math.isfinite(loss):
            first = net.first_nonfinite()
            where = f"; first non-finite output: layer '{first[0]}', top '{first[1]}'" \
                if first else ""
            raise NonFiniteError(f"iteration {self.iter}: test net #{test_net_id} output "
                                 f"'{(bad or ['loss'])[0]}' is NaN or Inf{where}")
        self._log_outputs(net, "Test", means)
        scores = {n: float(v[0]) if v.size == 1 else float(v.mean()) for n, v in means.items()}
        self.test_history.append((self.iter, test_net_id, scores))
        return scores

    @staticmethod
    def _output_values(net: Net) -> dict[str, float]:
        return {n: float(net.blobs[n].data.mean()) for n in net.outputs}

    @staticmethod
    def _log_outputs(net: Net, kind: str, values) -> None:
        weights = {top: w for (_, top), w in net.loss_weights().items()}
        index = 0
        for name in net.outputs:
            for v in np.atleast_1d(np.asarray(values[name], dtype=np.float64)).ravel():
                w = weights.get(name, 0.0)
                extra = f" (* {w:g} = {w * v:.6g} loss)" if w else ""
                log.info("    %s net output #%d: %s = %.6g%s", kind, index, name, v, extra)
                index += 1

    # -- snapshots ---------------------------------------------------------------------------
    def snapshot_filename(self, extension: str) -> str:
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{extension}"

    def snapshot(self) -> tuple[str, str]:
        """Write <prefix>_iter_N.caffemodel and .solverstate, each atomically. Weights that
        are NaN or Inf are not written (NonFiniteError). If the files cannot be written, they
        go to a fallback folder and the OutputError says where. Over several ranks every rank
        calls it; rank 0 writes, with every rank's data positions."""
        if not self.param.snapshot_prefix:
            raise SolverConfigError(f"{self.source}: snapshot_prefix is needed to snapshot")
        self._check_params_finite()
        every_rank = self.group.gather((self.reader_positions(), rng.get_state()))
        if not self.group.is_root:
            return self.snapshot_filename(".caffemodel"), self.snapshot_filename(".solverstate")
        return self.group.run_writer(self.write_snapshot, every_rank, list(self.test_batches))

    def data_readers(self) -> list:
        """("<net index>/<layer name>", layer) for every data layer that reads a source."""
        return [(f"{net_id}/{layer.name}", layer)
                for net_id, net in enumerate([self.net] + self.test_nets)
                for layer in net.layers if layer.reader_position() is not None]

    def reader_positions(self) -> dict[str, tuple[str, int]]:
        """Where this process's data layers stand: "<net index>/<layer>" -> (source, index of
        the next record)."""
        return {key: (layer.source, layer.reader_position())
                for key, layer in self.data_readers()}

    def write_snapshot(self, every_rank: list, test_batches: list[int]) -> tuple[str, str]:
        """Write the current weights, histories and iteration with every rank's (data reader
        positions, random state) and the test batches read so far; if the snapshot folder
        fails, to a fallback folder and then OutputError says where."""
        model = self.snapshot_filename(".caffemodel")
        try:
            return self._write_snapshot(model, self.snapshot_filename(".solverstate"),
                                        every_rank, test_batches)
        except OutputError as e:
            fallback = Path(tempfile.gettempdir()) / f"protonet-snapshot-{os.getpid()}"
            name = Path(self.param.snapshot_prefix).name or "snapshot"
            saved = self._write_snapshot(str(fallback / f"{name}_iter_{self.iter}.caffemodel"),
                                         str(fallback / f"{name}_iter_{self.iter}.solverstate"),
                                         every_rank, test_batches)
            raise OutputError(f"{e}; the snapshot was saved to {saved[0]} and "
                              f"{saved[1]} instead") from None

    def _write_snapshot(self, model: str, path: str, every_rank: list,
                        test_batches: list[int]) -> tuple[str, str]:
        log.info("Snapshotting to binary proto file %s", model)
        self.net.save(model)
        (data_readers, random_state), *others = every_rank
        data = SolverStateData(iter=self.iter, learned_net=model,
                               current_step=self.current_step, history=self.history,
                               readers=data_readers, random_state=random_state)
        data.rank_readers = {rank: readers for rank, (readers, _) in enumerate(others, start=1)}
        data.rank_random_states = {rank: state
                                   for rank, (_, state) in enumerate(others, start=1)}
        data.solver_count, data.test_batches = self.group.size, list(test_batches)
        log.info("Snapshotting solver state to binary proto file %s", path)
        write_solverstate(path, data)
        return model, path

    def check_outputs(self) -> None:
        """Before training: the snapshot folder must be writable (else the trained weights
        would be lost at the first snapshot); stale temporary files of earlier killed runs
        there are removed."""
        prefix = self.param.snapshot_prefix
        if not prefix:
            return
        probe = Path(f"{prefix}_iter_{self.iter}.caffemodel")
        check_output(probe, f"{self.source}: snapshot_prefix \"{prefix}\":")
        removed = remove_stale_temps(probe.parent, probe.name.rsplit("_iter_", 1)[0] + "_iter_")
        if removed:
            log.info("Removed %d temporary files left by an interrupted snapshot in %s",
                     len(removed), probe.parent)

    def _check_params_finite(self, counted=()) -> None:
        """NonFiniteError naming the first parameter with a NaN or Inf; `counted[i]`, where
        given and not None, is how many parameter i holds (the update's kernel counted)."""
        params = zip(self.net.learnable_param_names, self.net.learnable_params)
        for i, (name, blob) in enumerate(params):
            known = counted[i] if i < len(counted) else None
            if known == 0 or (known is None and np.isfinite(blob.data).all()):
                continue
            raise NonFiniteError(f"iteration {self.iter}: parameter {name} holds NaN or Inf "
                                 f"after the update (learning rate {self.learning_rate():g})")

    def restore(self, path) -> None:
        """Continue from a .solverstate: iteration, weights, histories, data positions, random
        state."""
        state = read_solverstate(path)
        log.info("Restoring previous solver status from %s", path)
        if state.learned_net:
            model = Path(state.learned_net)
            if not model.exists():
                model = Path(path).parent / model.name
            self.net.copy_from(model)
        if len(state.history) != len(self.history):
            raise ProtonetError(f"{path}: {len(state.history)} history blobs, this {self.type} "
                                f"solver keeps {len(self.history)}")
        for i, values in enumerate(state.history):
            if values.size != self.history[i].size:
                raise ProtonetError(f"{path}: history {i} has {values.size} values, the net's "
                                    f"parameter has {self.history[i].size}")
            if not np.isfinite(values).all():
                raise NonFiniteError(f"{path}: history {i} holds NaN or Inf")
            self.history[i][...] = values.reshape(self.history[i].shape)
        self.iter = state.iter
        self.current_step = state.current_step
        readers, here = state.readers, parallel.solver_count()
        if state.solver_count != here:
            log.warning("%s was written by %d solvers, this run has %d: every data layer "
                        "continues from rank 0's position", path, state.solver_count, here)
        elif parallel.solver_rank():
            readers = state.rank_readers.get(parallel.solver_rank(), {})
        if state.solver_count == here:
            self.test_batches[:len(state.test_batches)] = state.test_batches
        for net_id, net in enumerate([self.net] + self.test_nets):
            for layer in net.layers:
                key = f"{net_id}/{layer.name}"
                if key in readers:
                    layer.seek(readers[key][1])
        own_stream = state.rank_random_states.get(parallel.solver_rank()) \
            if state.solver_count == here and parallel.solver_rank() else None
        self.random_stream_restored = own_stream is not None
        if own_stream is not None:
            rng.set_state(own_stream)
        elif state.random_state is not None:
            rng.set_state(state.random_state)
            if state.legacy_random_state:
                log.info("%s: random state read from its old pickled form as plain data "
                         "(not unpickled)", path)
        elif state.legacy_random_state:
            seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> 1)
            rng.set_random_seed(seed)
            log.warning("%s keeps its random state in the old pickled form, and it is not a "
                        "plain generator state (protonet never unpickles: that can run code); "
                        "resuming with random seed %d", path, seed)

    def close(self) -> None:
        for net in [self.net] + self.test_nets:
            net.close()


class _SigintStops:
    """While training, Ctrl-C (SIGINT) asks the solver to stop after the current iteration;
    Solve then snapshots (Caffe's default sigint_effect "stop" with snapshot_after_train)."""

    def __init__(self, solver: Solver) -> None:
        self.solver = solver
        self.previous = None

    def _handle(self, signum, frame) -> None:
        log.info("Interrupted: stopping after iteration %d and snapshotting", self.solver.iter)
        self.solver.group.request_stop(self.solver, signum)

    def __enter__(self):
        # Over MPI also SIGTERM and SIGUSR1: what mpirun sends or forwards to the ranks.
        try:
            self.previous = {s: signal.signal(s, self._handle)
                             for s in self.solver.group.stop_signals}
        except ValueError:  # not the main thread: leave signals alone
            self.previous = None
        self.watch = self.solver.group.watch_signals() if self.previous is not None else None
        if self.watch is not None:
            self.watch.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.watch is not None:
            self.watch.__exit__(*exc)
        for signum, handler in (self.previous or {}).items():
            signal.signal(signum, handler)
