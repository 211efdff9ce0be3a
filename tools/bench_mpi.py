"""Data-parallel training speed on this machine: 1 process against `mpirun -n 2`.

    python tools/bench_mpi.py                  # LeNet and CIFAR-10 quick, 5 alternating rounds
    python tools/bench_mpi.py --rounds 3 --nets lenet

Each configuration trains the net with the SGD solver for --iters iterations after 5 warm-up
ones, in fresh processes with their thread counts fixed before numpy loads, data layers swapped
for constant DummyData (reading is not what is measured): 1 process on 1 thread, 1 process on
2 threads, and 2 ranks on 1 thread each (batch per rank the same; the job trains 2x the
images per iteration), with gradients sent while backward runs and, for comparison, all at the
end. The configurations take turns within each round, so a machine shared with other work
loads them alike; a row gives the median images/s and the median per-round ratio to
1 process on 1 thread. Also: the time per iteration each rank waits for the allreduce, and
one Allreduce of the gradient's size alone (for the scaling model in BENCHMARKS.md).
Needs mpirun and mpi4py (pip install 'protonet[mpi]').
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NETS = {  # name: (train/test prototxt, data shape per sample, batch)
    "lenet": (ROOT / "models/lenet_train_test.prototxt", (1, 28, 28), 64),
    "cifar10_quick": (ROOT.parent / "shared/caffe-models/examples/cifar10/"
                      "cifar10_quick_train_test.prototxt", (3, 32, 32), 100),
}


# ---------------------------------------------------------------- worker (one per rank)
def worker(net_name: str, iters: int, overlap: bool) -> None:
    import protonet  # first: it sets the thread pools' idle behaviour before numpy loads
    from protonet import caffe_pb2, parallel, prototxt, surgery

    import numpy as np
    comm = parallel.join_launched_world()
    path, shape, batch = NETS[net_name]
    param = surgery.swap_data_layers(prototxt.read_net(path), {"data": shape})
    for lp in param.layer:
        for filler in lp.dummy_data_param.data_filler:
            filler.type, filler.value = "constant", 0.5
    solver_param = caffe_pb2.SolverParameter(base_lr=0.001, momentum=0.9, lr_policy="fixed",
                                             max_iter=10 ** 9, random_seed=1)
    solver_param.net_param.CopyFrom(param)
    solver = protonet.get_solver(solver_param)
    sync = None
    if comm is not None:
        sync = protonet.MPISync(solver, comm=comm)
        sync.bcast()
        solver.add_callback(sync)
        if overlap:
            solver.net.after_backward(sync)
    solver.step(5)
    if comm is not None:
        comm.Barrier()
        sync.wait_seconds = 0.0
    start = time.perf_counter()
    solver.step(iters)
    seconds = time.perf_counter() - start
    ranks = 1 if comm is None else comm.Get_size()
    result = {"images_per_s": ranks * batch * iters / seconds,
              "wait_ms": 1e3 * sync.wait_seconds / iters if sync else 0.0}
    if comm is not None:
        grads = np.concatenate([p.diff.ravel() for p in solver.net.learnable_params])
        comm.Barrier()
        times = []
        for _ in range(20):
            t = time.perf_counter()
            comm.Allreduce(protonet_mpi_in_place(), grads)
            times.append(time.perf_counter() - t)
        # The fastest of 20: on a shared machine the others measure the scheduler.
        result["allreduce_ms"] = 1e3 * min(times)
        result["gradient_bytes"] = grads.nbytes
        small = np.zeros(1)
        times = []
        for _ in range(200):
            t = time.perf_counter()
            comm.Allreduce(protonet_mpi_in_place(), small)
            times.append(time.perf_counter() - t)
        result["latency_us"] = 1e6 * min(times)
        waits = comm.gather(result["wait_ms"], root=0)
        if comm.Get_rank() != 0:
            return
        result["wait_ms"] = max(waits)
    print("RESULT " + json.dumps(result), flush=True)


def protonet_mpi_in_place():
    from mpi4py import MPI
    return MPI.IN_PLACE


# ---------------------------------------------------------------- driver
def run(net: str, ranks: int, threads: int, iters: int, overlap: bool = True) -> dict | None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT),
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    command = [sys.executable, __file__, "--worker", net, str(iters)] + \
        ([] if overlap else ["--no-overlap"])
    if ranks > 1:
        command = [shutil.which("mpirun"), "-n", str(ranks), "--oversubscribe", "--bind-to",
                   "none", "-x", "OMP_NUM_THREADS", "-x", "PYTHONPATH"] + command
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(out.stderr[-2000:], file=sys.stderr)
    return None


CONFIGS = [  # label, ranks, threads per rank, overlap
    ("1 process, 1 thread", 1, 1, True),
    ("1 process, 2 threads", 1, 2, True),
    ("mpirun -n 2, 1 thread each", 2, 1, True),
    ("mpirun -n 2, 1 thread each, allreduce at the end", 2, 1, False),
]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", nargs=2, metavar=("NET", "ITERS"), help=argparse.SUPPRESS)
    p.add_argument("--no-overlap", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=40)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), not args.no_overlap)
        return
    if shutil.which("mpirun") is None:
        sys.exit("bench_mpi needs mpirun: pip install 'protonet[mpi]'")
    report = {}
    for net in args.nets:
        rows = {label: [] for label, *_ in CONFIGS}
        for round_ in range(args.rounds):
            for label, ranks, threads, overlap in CONFIGS:
                result = run(net, ranks, threads, args.iters, overlap)
                if result:
                    rows[label].append(result)
            print(f"{net}: round {round_ + 1} of {args.rounds} done", file=sys.stderr)
        base = rows[CONFIGS[0][0]]
        print(f"\n{net} (batch {NETS[net][2]} per process, {args.iters} iterations, "
              f"{args.rounds} rounds)")
        print(f"{'configuration':52s} {'images/s':>9s} {'x 1p1t':>7s} {'wait ms/it':>10s}")
        for label, results in rows.items():
            if not results:
                continue
            rate = statistics.median(r["images_per_s"] for r in results)
            ratios = [r["images_per_s"] / b["images_per_s"] for r, b in zip(results, base)]
            wait = statistics.median(r["wait_ms"] for r in results)
            print(f"{label:52s} {rate:9.0f} {statistics.median(ratios):7.2f} {wait:10.2f}")
        mpi = rows[CONFIGS[2][0]]
        if mpi:
            print(f"one Allreduce of the {mpi[0]['gradient_bytes']} gradient bytes: "
                  f"{statistics.median(r['allreduce_ms'] for r in mpi):.3f} ms; of 8 bytes: "
                  f"{statistics.median(r['latency_us'] for r in mpi):.1f} us (fastest of "
                  "20 and 200 calls, median over the rounds)")
        report[net] = rows
    out = ROOT / "benchmarks" / "mpi_results.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
