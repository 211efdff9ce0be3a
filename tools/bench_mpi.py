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
1 process on 1 thread. Also: the time per iteration each rank waits for the allreduce, the
images per CPU-second over all the job's processes (what the work costs, whatever share of
the cores the machine's other load left it), and one Allreduce of the gradient's size alone
(for the scaling model in BENCHMARKS.md).
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
    start, cpu = time.perf_counter(), time.process_time()
    solver.step(iters)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    ranks = 1 if comm is None else comm.Get_size()
    result = {"images_per_s": ranks * batch * iters / seconds,
              "wait_ms": 1e3 * sync.wait_seconds / iters if sync else 0.0,
              "images_per_cpu_s": batch * iters / cpu}
    if comm is not None:
        from mpi4py import MPI
        grads = np.concatenate([p.diff.ravel() for p in solver.net.learnable_params])
        # The fastest of n calls: on a shared machine the others measure the scheduler.
        result["allreduce_ms"] = 1e3 * fastest(lambda: comm.Allreduce(MPI.IN_PLACE, grads), 20)
        result["gradient_bytes"] = grads.nbytes
        small = np.zeros(1)
        result["latency_us"] = 1e6 * fastest(lambda: comm.Allreduce(MPI.IN_PLACE, small), 200)
        waits = comm.gather((result["wait_ms"], cpu), root=0)
        if comm.Get_rank() != 0:
            return
        result["wait_ms"] = max(w for w, _ in waits)
        result["images_per_cpu_s"] = ranks * batch * iters / sum(c for _, c in waits)
    print("RESULT " + json.dumps(result), flush=True)


def fastest(call, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return min(times)


# ---------------------------------------------------------------- scaling model
# Assumed networks: bandwidth in bytes/s and per-message latency (TCP over 10 GbE; RDMA over
# 100 Gbit/s InfiniBand or RoCE).
NETWORKS = [("10 Gbit/s, TCP", 10e9 / 8, 30e-6), ("100 Gbit/s, RDMA", 100e9 / 8, 5e-6)]


def ring_allreduce_seconds(nbytes: float, ranks: int, bandwidth: float, latency: float):
    """Ring allreduce: 2(K-1) steps, each moving nbytes/K over every link."""
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth + 2 * (ranks - 1) * latency


def scaling_table(name, hidden_bytes, exposed_bytes, rate, window, batch=64):
    """Per-iteration allreduce on K ranks: the buckets that leave during backward (hidden
    while they take less than `window` of the step) and the last one (always exposed)."""
    print(f"\n{name}: {hidden_bytes} B leave during backward (window: {window:.0%} of the "
          f"step), {exposed_bytes} B after it; {rate:.0f} images/s per rank on one core")
    print("| network | ranks | hidden part, ms | exposed part, ms | smallest batch per rank "
          f"that hides the first part | step time at batch {batch} vs alone |")
    print("|---|---|---|---|---|---|")
    compute = batch / rate
    for label, bandwidth, latency in NETWORKS:
        for ranks in (8, 64, 256):
            hidden = ring_allreduce_seconds(hidden_bytes, ranks, bandwidth, latency)
            exposed = ring_allreduce_seconds(exposed_bytes, ranks, bandwidth, latency)
            step = compute + exposed + max(0.0, hidden - window * compute)
            print(f"| {label} | {ranks} | {1e3 * hidden:.2f} | {1e3 * exposed:.2f} | "
                  f"{hidden * rate / window:.0f} | {step / compute:.2f}x |")


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
    p.add_argument("--model", action="store_true", help="print the scaling model only")
    args = p.parse_args(argv)
    if args.model:
        # Bytes per bucket from MPISync's split (LeNet: ip2 + ip1's weights, then the rest;
        # CIFAR-10 quick: ip2 + ip1, conv3 + conv2, conv1); rates: 1-thread training images/s
        # on an idle core (LeNet: BENCHMARKS.md run G; CIFAR-10 quick: 3 x its 63.4 ms
        # batch-100 forward); window: the share of a step after the first bucket is ready
        # (backward below ip1): LeNet's from `protonet time` on one thread, CIFAR's estimated.
        scaling_table("LeNet", 1_620_040, 104_280, 3988, 0.50)
        scaling_table("CIFAR-10 quick", 572_456, 9_856, 525, 0.55, batch=100)
        return
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
        print(f"{'configuration':52s} {'images/s':>9s} {'x 1p1t':>7s} {'wait ms/it':>10s} "
              f"{'images/CPU-s':>12s}")
        for label, results in rows.items():
            if not results:
                continue
            rate = statistics.median(r["images_per_s"] for r in results)
            ratios = [r["images_per_s"] / b["images_per_s"] for r, b in zip(results, base)]
            wait = statistics.median(r["wait_ms"] for r in results)
            per_cpu = statistics.median(r["images_per_cpu_s"] for r in results)
            print(f"{label:52s} {rate:9.0f} {statistics.median(ratios):7.2f} {wait:10.2f} "
                  f"{per_cpu:12.0f}")
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
