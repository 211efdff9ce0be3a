#!/usr/bin/env python
"""Data-parallel training from a script, in the shape of Caffe's python/train.py.

    OMP_NUM_THREADS=1 mpirun -n 2 python examples/train_mpi.py --solver models/lenet_solver.prototxt

Caffe's script forks one process per GPU and joins them with NCCL; here mpirun starts the
processes and MPI joins them, under the same pycaffe names.
"""
import argparse

from mpi4py import MPI

import protonet as caffe


def solve(proto, snapshot, iters):
    comm = MPI.COMM_WORLD
    caffe.set_solver_count(comm.Get_size())
    caffe.set_solver_rank(comm.Get_rank())
    caffe.set_multiprocess(True)

    solver = caffe.get_solver(proto)
    if snapshot:
        solver.restore(snapshot)

    nccl = caffe.NCCL(solver, caffe.NCCL.new_uid())
    nccl.bcast()                       # rank 0's weights everywhere
    solver.add_callback(nccl)          # gradients averaged before each update
    solver.net.after_backward(nccl)    # ... sent while backward still runs
    solver.step(iters or solver.param.max_iter)
    solver.snapshot()                  # every rank calls it; rank 0 writes


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--solver", required=True, help="Solver proto definition.")
    parser.add_argument("--snapshot", help="Solver snapshot to restore.")
    parser.add_argument("--iters", type=int, help="Iterations (default: max_iter).")
    args = parser.parse_args()
    solve(args.solver, args.snapshot, args.iters)
