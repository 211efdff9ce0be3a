"""What each rank runs in tests/test_mpi.py (and, with no launcher, the one-process reference).

    python tests/mpi_program.py equivalence DATA BATCH ITERS OUT.npz

trains Caffe's LeNet on the LMDB DATA (train and test nets on it) once per solver type, and
once more with iter_size 2, at train batch BATCH, the way Caffe's python/train.py does with
pycaffe's names (set_solver_count, set_solver_rank, set_multiprocess, NCCL(solver).bcast(),
add_callback, after_backward). Before training and after it, one test pass of 5 batches of 50
(the 5 split 3 + 2 over two ranks). Rank 0 writes the final weights, the test scores and
whether every rank holds the same bits to OUT.npz.

    python tests/mpi_program.py slow-snapshot ARGS...

runs `protonet ARGS...` with every caffemodel taking a second longer to write (a big net, a
slow disk): longer than Open MPI's mpirun waits between its SIGTERM and its SIGKILL.

Also a Python layer that can make iterations slow (SlowLayer), and one (FailingLayer) that makes one rank fail at a
given forward: param_str "RANK MODE N" with MODE raise, die (SIGKILL itself) or hang, at
forward N (N = 0: at set-up).
"""
import os
import signal
import sys
import time

import numpy as np

import protonet as caffe
from protonet import caffe_pb2, prototxt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Nesterov's step is (1 + momentum) times SGD's: at base_lr 0.01 this LeNet trained where
# rounding differences grow fast (on an AMD Zen 3 the ranks ended 7e-4 from one process after
# 50 steps, from 2e-7 after one; on Intel's Sapphire Rapids 5e-7), so it takes half of it.
SOLVERS = {  # type: extra solver fields
    "SGD": 'base_lr: 0.01 momentum: 0.9',
    "Nesterov": 'base_lr: 0.005 momentum: 0.9',
    "AdaGrad": 'base_lr: 0.01',
    "RMSProp": 'base_lr: 0.001 rms_decay: 0.98',
    "AdaDelta": 'base_lr: 1.0 momentum: 0.95 delta: 1e-6',
    "Adam": 'base_lr: 0.001 momentum: 0.9 momentum2: 0.999',
}
RUNS = [(name, 1) for name in SOLVERS] + [("SGD", 2)]


def lenet(data: str, batch: int):
    text = open(os.path.join(ROOT, "models/lenet_train_test.prototxt")).read()
    net = prototxt.parse_net_text(text)
    for layer in net.layer:
        if layer.type == "Data":
            layer.data_param.source = data
            train = any(rule.phase == caffe_pb2.TRAIN for rule in layer.include)
            layer.data_param.batch_size = batch if train else 50
    return net


def solver_param(kind: str, iter_size: int, data: str, batch: int):
    param = prototxt.parse_text(f"""
        type: "{kind}" {SOLVERS[kind]} weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001
        power: 0.75 test_iter: 5 test_interval: 100000 test_initialization: false
        max_iter: 1000 display: 0 random_seed: 1701 iter_size: {iter_size}""",
                                caffe_pb2.SolverParameter())
    param.net_param.CopyFrom(lenet(data, batch))
    return param


def equivalence(data: str, batch: int, iters: int, out: str) -> None:
    comm = None
    if caffe.parallel.launched_ranks() > 1:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        caffe.set_solver_count(comm.Get_size())
        caffe.set_solver_rank(comm.Get_rank())
        caffe.set_multiprocess(True)
    results = {}
    for kind, iter_size in RUNS:
        solver = caffe.get_solver(solver_param(kind, iter_size, data, batch))
        if comm is not None:
            nccl = caffe.NCCL(solver, caffe.NCCL.new_uid())
            nccl.bcast()
            solver.add_callback(nccl)
            solver.net.after_backward(nccl)
        tag = f"{kind}_{iter_size}"
        before = solver.test()
        solver.step(iters)
        after = solver.test()
        weights = [p.data.copy() for p in solver.net.learnable_params]
        every = comm.gather(weights, root=0) if comm is not None else [weights]
        if every is not None:
            results[f"{tag}_same_on_all_ranks"] = all(
                np.array_equal(a, b) for other in every for a, b in zip(weights, other))
            for i, w in enumerate(weights):
                results[f"{tag}_w{i}"] = w
            for name, value in before.items():
                results[f"{tag}_before_{name}"] = value
            for name, value in after.items():
                results[f"{tag}_after_{name}"] = value
            results[f"{tag}_loss"] = solver.smoothed_loss
        solver.close()
    if comm is None or comm.Get_rank() == 0:
        np.savez(out, **results)


class SlowLayer(caffe.Layer):
    """Passes its bottom through, taking a second per forward while the file named by
    param_str exists: an iteration longer than mpirun's gap between SIGTERM and SIGKILL."""

    def setup(self, bottom, top):
        self.switch = self.param_str

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data
        if os.path.exists(self.switch):
            time.sleep(1.0)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff


class FailingLayer(caffe.Layer):
    """Passes its bottom through; on rank RANK, at forward N, raises, dies or hangs."""

    def setup(self, bottom, top):
        rank, self.mode, n = self.param_str.split()
        self.rank, self.n, self.count = int(rank), int(n), 0
        if self.n == 0:
            self.fail()

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data
        self.count += 1
        if self.count == self.n:
            self.fail()

    def fail(self):
        if caffe.solver_rank() == self.rank:
            if self.mode == "raise":
                raise ValueError(f"planted failure at forward {self.n}")
            if self.mode == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.mode == "hang":
                time.sleep(3600)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff


def slow_snapshot(args: list[str]) -> int:
    from protonet.cli import main
    from protonet.io import caffemodel
    write = caffemodel.atomic_write

    def slow_write(path, data):
        time.sleep(1.0)
        write(path, data)

    caffemodel.atomic_write = slow_write
    return main(args)


if __name__ == "__main__":
    if sys.argv[1] == "equivalence":
        equivalence(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif sys.argv[1] == "slow-snapshot":
        sys.exit(slow_snapshot(sys.argv[2:]))
