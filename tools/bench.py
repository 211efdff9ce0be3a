"""Side-by-side benchmark: protonet against PyTorch (CPU) and OpenCV's dnn on identical work.

    python tools/bench.py                        # every section, at most --budget minutes
    python tools/bench.py --only contention,zoo  # some sections
    python tools/bench.py --quick                # one round, fewer repeats, short timings

Sections (--only): lenet (LeNet training and forward, 1 and 2 threads), contention (import
order and one other CPU-bound process), zoo (forward at batch 1 and 16 of CIFAR-10, CaffeNet,
GoogLeNet, VGG-16, ResNet-50, MobileNet v1 and MobileNet-SSD, with peak RSS), train (CIFAR-10 quick/full at batch 100,
CaffeNet at 32), latency (LeNet and GoogLeNet at batch 1, and protonet's per-layer overhead),
memory (peak RSS of a whole batch-1 deploy process of VGG-16, CaffeNet, ResNet-50, GoogLeNet);
with --only only: convpaths (protonet's convolution paths, GEMM against direct, side by side
in one process: LeNet's and CIFAR-10's convolutions alone and CIFAR-10 training steps).
Every worker gets a time limit from what is left of --budget (default 45 minutes); a row that
no longer fits is printed as skipped. The zoo and train sections need ../shared/caffe-models.

Each measurement runs in a fresh subprocess with its thread count fixed before numpy or torch
load (OMP_NUM_THREADS = N: BLAS, torch's intra-op pool and protonet's numba loops all use N).
Each row runs protonet, PyTorch NCHW and PyTorch channels_last in turn, --rounds times (5), each
run the median of --repeats timed runs after warm-up. A row shows the median images/s of each
framework and the median of the per-round ratios protonet/PyTorch. PyTorch is optional (pip install torch==2.13.0): without it only protonet runs.
The zoo, latency and train rows run one process per framework, --pair-rounds times (2), the
order reversed every other round; their ratios are the median of the rounds' ratios (a single
pass of each was 10-15% off on this shared host, so a near-1.0 ratio could flip).
Writes benchmarks/results.json and benchmarks/bench.png for the default sections; a run of
other sections writes benchmarks/results-<sections>.json and leaves the full run's files alone.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# LeNet forward multiply-adds per 28x28 image: conv1 20*25*24*24, conv2 50*500*8*8, ip1 800*500,
# ip2 500*10; training ~ 3 x forward FLOPs (forward, backward to data, backward to weights).
LENET_TRAIN_FLOP = 3 * 2 * (20 * 25 * 576 + 50 * 500 * 64 + 800 * 500 + 500 * 10)


# ---------------------------------------------------------------- workers (one per process)
def timed_rates(step, batch, iters, repeats) -> list[float]:
    """Images/s of `repeats` runs of `iters` steps, after 3 warm-up steps."""
    for _ in range(3):
        step()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(iters):
            step()
        rates.append(batch * iters / (time.perf_counter() - t))
    return rates


def _protonet_net(net: str, batch: int, train: bool):
    import protonet
    from protonet import caffe_pb2, prototxt
    if not train:
        text = (ROOT / "models/lenet.prototxt").read_text().replace("dim: 64", f"dim: {batch}")
        return protonet.Net(param=prototxt.parse_net_text(text), phase=protonet.TEST), None
    train_test = {"lenet": "lenet_train_test", "lenet_dsn": "lenet_dsn"}[net]
    param = prototxt.read_net(ROOT / f"models/{train_test}.prototxt")
    inputs = caffe_pb2.LayerParameter(name="data", type="Input", top=["data", "label"])
    inputs.input_param.shape.add().dim.extend([batch, 1, 28, 28])
    inputs.input_param.shape.add().dim.extend([batch])
    layers = [lp for lp in param.layer if lp.type != "Data"]
    del param.layer[:]
    param.layer.add().CopyFrom(inputs)
    for lp in layers:
        param.layer.add().CopyFrom(lp)
    solver = caffe_pb2.SolverParameter(base_lr=0.01, momentum=0.9, weight_decay=5e-4,
                                       lr_policy="inv", gamma=1e-4, power=0.75, max_iter=10 ** 6,
                                       display=0, random_seed=1701)
    solver.net_param.CopyFrom(param)
    s = protonet.get_solver(solver)
    return s.net, s


def worker_protonet(net, mode, batch, iters, repeats):
    import protonet  # noqa: F401  (the import order under test: see --numpy-first)
    import numpy as np
    n, solver = _protonet_net(net, batch, mode == "train")
    g = np.random.default_rng(0)
    n.blobs["data"].data[...] = g.random(n.blobs["data"].shape, dtype=np.float32)
    if "label" in n.blobs:
        n.blobs["label"].data[...] = g.integers(0, 10, batch)
    step = (lambda: solver.step(1)) if solver else (lambda: n.forward())
    out = {"rates": timed_rates(step, batch, iters, repeats)}
    if solver and net == "lenet":
        from protonet.cli.time import time_layers
        rows, _ = time_layers(n, 20, warmup=1)
        out["layers"] = rows
    return out


def _torch_model(net: str):
    import torch
    from torch import nn

    class LeNet(nn.Module):
        def __init__(self, dsn: bool):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.ip1, self.ip2 = nn.Linear(800, 500), nn.Linear(500, 10)
            self.dsn = dsn
            if dsn:
                self.c1, self.c2 = nn.Linear(2880, 10), nn.Linear(800, 10)
            for m in self.modules():  # Caffe's xavier: U(-a, a), a = sqrt(3 / fan_in)
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    fan_in = m.weight[0].numel()
                    nn.init.uniform_(m.weight, -(3 / fan_in) ** 0.5, (3 / fan_in) ** 0.5)
                    nn.init.zeros_(m.bias)

        def forward(self, x):
            p1 = self.pool(self.conv1(x))
            p2 = self.pool(self.conv2(p1))
            out = self.ip2(torch.relu(self.ip1(p2.flatten(1))))
            if self.dsn:
                return out, self.c1(p1.flatten(1)), self.c2(p2.flatten(1))
            return (out,)

    return LeNet(net == "lenet_dsn")


def worker_torch(net, mode, batch, iters, repeats, channels_last):
    import torch
    from torch import nn
    model = _torch_model(net)
    x = torch.rand(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    weights = (1.0, 0.3, 0.3)

    def train_step():
        opt.zero_grad(set_to_none=False)
        outs = model(x)
        loss = sum(w * loss_fn(o, y) for w, o in zip(weights, outs))
        loss.backward()
        opt.step()

    def forward_step():
        with torch.inference_mode():
            torch.softmax(model(x)[0], dim=1)

    step = train_step if mode == "train" else forward_step
    if mode != "train":
        model.eval()
    out = {"rates": timed_rates(step, batch, iters, repeats)}
    if mode == "train" and net == "lenet":
        out["layers"] = torch_layer_times(model, x, y, loss_fn)
    return out


def torch_layer_times(model, x, y, loss_fn, iters=20):
    """PyTorch's per-layer forward and backward ms, layer by layer as `protonet time` does
    for protonet: each stage run on the previous stage's output, its backward timed with
    autograd.grad to its input and parameters."""
    import time as clock
    import torch
    # (name, function, the module whose parameters get gradients too)
    stages = [("conv1", model.conv1, model.conv1), ("pool1", model.pool, None),
              ("conv2", model.conv2, model.conv2), ("pool2", model.pool, None),
              ("ip1", lambda t: model.ip1(t.flatten(1)), model.ip1),
              ("relu1", torch.relu, None), ("ip2", model.ip2, model.ip2),
              ("loss", lambda t: loss_fn(t, y), None)]
    rows, current = [], x
    for name, fn, owner in stages:
        inp = current.detach().requires_grad_(True)
        params = list(owner.parameters()) if owner is not None else []
        fn(inp)
        t = clock.perf_counter()
        for _ in range(iters):
            out = fn(inp)
        forward_ms = (clock.perf_counter() - t) / iters * 1e3
        grad = torch.randn_like(out)
        torch.autograd.grad(out, [inp] + params, grad, retain_graph=True)
        t = clock.perf_counter()
        for _ in range(iters):
            torch.autograd.grad(out, [inp] + params, grad, retain_graph=True)
        backward_ms = (clock.perf_counter() - t) / iters * 1e3
        rows.append([name, forward_ms, backward_ms])
        current = out
    return rows


def worker_gemm():
    import numpy as np
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    b = a.copy()
    np.matmul(a, b)
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        np.matmul(a, b)
        best = max(best, 2 * 2048 ** 3 / (time.perf_counter() - t))
    from threadpoolctl import threadpool_info
    cores = [lib.get("architecture") for lib in threadpool_info()
             if lib.get("internal_api") == "openblas"]
    return {"gflops": best / 1e9, "openblas_core": cores[0] if cores else None}


# Convolutions the direct path was planned for, and the conv1s it was measured against:
# (name, num_output, kernel, pad, bottom shape).
CONV_SHAPES = [("lenet conv1", 20, 5, 0, (64, 1, 28, 28)),
               ("lenet conv2", 50, 5, 0, (64, 20, 12, 12)),
               ("cifar10 conv1", 32, 5, 2, (100, 3, 32, 32)),
               ("cifar10 conv2", 32, 5, 2, (100, 32, 16, 16)),
               ("cifar10 conv3", 64, 5, 2, (100, 32, 8, 8))]


def worker_convpaths(threads: int, rounds: int) -> dict:
    """Convolution alone (forward; backward to weights and data) and whole training steps of
    CIFAR-10 quick and full, with the direct convolution allowed where the planner takes it
    (default tuning) and on none, alternating in this one process. At 1 thread the clock is
    the process's CPU time (robust to other programs on the machine), else wall time."""
    import dataclasses

    import numpy as np

    from protonet import caffe_pb2
    from protonet.blob import Blob
    from protonet.layers import conv
    from protonet.kernels.conv_plan import TUNING
    from protonet.testing import layer_from_text
    clock = time.process_time if threads == 1 else time.perf_counter
    paths = {"gemm": dataclasses.replace(TUNING, direct_min_k=1 << 30), "planned": TUNING,
             "direct": dataclasses.replace(TUNING, direct_min_k=0, direct_max_waste=1.0)}
    rows = []
    for name, outputs, kernel, pad, shape in CONV_SHAPES:
        layer = layer_from_text(f'name: "c" type: "Convolution" convolution_param {{ '
                                f'num_output: {outputs} kernel_size: {kernel} pad: {pad} '
                                'weight_filler { type: "xavier" } }', caffe_pb2.TRAIN)
        bottom, top = [Blob(shape)], [Blob()]
        bottom[0].data[...] = np.random.default_rng(0).random(shape, dtype=np.float32)
        layer.set_up(bottom, top)
        times = {p: [] for p in paths}
        for _ in range(rounds):
            for path, tuning in paths.items():
                layer.tuning = tuning
                layer.reshape(bottom, top)
                top[0].diff[...] = 0.01
                best = [float("inf")] * 2
                for _ in range(5):
                    t0 = clock()
                    layer.forward(bottom, top)
                    t1 = clock()
                    layer.backward(top, [True], bottom)
                    t2 = clock()
                    best = [min(best[0], t1 - t0), min(best[1], t2 - t1)]
                times[path].append(best)
        layer.tuning = TUNING
        layer.reshape(bottom, top)
        rows.append({"name": name, "takes_direct": layer.plan.direct,
                     **{p: [1e3 * statistics.median(v[i] for v in t) for i in (0, 1)]
                        for p, t in times.items()}})
    nets = []
    import bench_zoo
    import protonet
    for net_name in ("cifar10_quick", "cifar10_full"):
        if not bench_zoo.SHARED.exists():
            break
        solver = protonet.get_solver(bench_zoo.train_param(net_name, 100))
        net = solver.net
        g = np.random.default_rng(0)
        net.blobs["data"].data[...] = g.random(net.blobs["data"].shape, dtype=np.float32)
        net.blobs["label"].data[...] = g.integers(0, 10, 100)
        rates = {"gemm": [], "planned": []}
        for r in range(rounds):
            for path in ("gemm", "planned") if r % 2 == 0 else ("planned", "gemm"):
                conv._BaseConvolution.tuning = paths[path]
                net.reshape()
                solver.step(2)
                t = clock()
                solver.step(4)
                rates[path].append(400 / (clock() - t))
        conv._BaseConvolution.tuning = TUNING
        nets.append({"name": net_name, **{p: statistics.median(v) for p, v in rates.items()},
                     "ratio": statistics.median(b / a for a, b in zip(rates["gemm"],
                                                                       rates["planned"]))})
    return {"layers": rows, "nets": nets}


def worker_main(args):
    if args.numpy_first:
        import numpy  # noqa: F401  (as a pycaffe script starts: before protonet or torch)
    if args.job:
        import bench_zoo
        job = json.loads(args.job)
        print("RESULT " + json.dumps(getattr(bench_zoo, job["fn"])(*job["args"])))
        return
    if args.framework == "torch":
        import torch
        torch.set_num_threads(args.threads)
        result = worker_torch(args.net, args.mode, args.batch, args.iters, args.repeats,
                              args.channels_last)
    elif args.framework == "gemm":
        result = worker_gemm()
    elif args.framework == "convpaths":
        result = worker_convpaths(args.threads, args.rounds)
    else:
        result = worker_protonet(args.net, args.mode, args.batch, args.iters, args.repeats)
    print("RESULT " + json.dumps(result))


# ---------------------------------------------------------------- driver
DEADLINE = [float("inf")]  # time.monotonic() by which every worker must have ended


def run_worker(threads: int | None, *extra, env_extra=None) -> dict | None:
    """One worker process; `threads` None leaves the thread settings as a user has them."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--worker", "--threads", str(threads or os.cpu_count()),
           *map(str, extra)]
    left = DEADLINE[0] - time.monotonic()
    if left < 5:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                             timeout=min(left, 3600))
    except subprocess.TimeoutExpired:
        print(f"  (stopped at the time budget: {' '.join(cmd[2:])})", file=sys.stderr)
        return None
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(f"  (failed: {' '.join(cmd)}: {out.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
    return None


def first_iteration_seconds(cache_dir: str) -> float:
    """Wall time of a fresh `protonet train` process through its first training iteration."""
    solver = Path(cache_dir) / "solver.prototxt"
    solver.write_text(f'net: "{ROOT}/models/lenet_train_test.prototxt"\nbase_lr: 0.01\n'
                      'lr_policy: "fixed"\nmax_iter: 1\nsnapshot_after_train: false\n')
    env = dict(os.environ, NUMBA_CACHE_DIR=str(Path(cache_dir) / "numba"), PYTHONPATH=str(ROOT))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "protonet", "train", str(solver), "--no-plot"],
                   cwd=ROOT, env=env, capture_output=True, check=True)
    return time.perf_counter() - t


PEAK_RSS = """
import re, sys
from protonet.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read()
print("VmHWM", re.search(r"VmHWM:\\s+(\\d+)", status).group(1), file=sys.stderr)
sys.exit(code)
"""


def peak_rss_mb() -> float:
    """Peak resident memory (the process's own VmHWM) of a 200-iteration LeNet training run on
    the real LMDBs, test pass included. (getrusage's RUSAGE_CHILDREN would report the largest
    child so far, a PyTorch worker among them.)"""
    solver = Path(tempfile.mkdtemp()) / "solver.prototxt"
    solver.write_text(f'net: "{ROOT}/models/lenet_train_test.prototxt"\nbase_lr: 0.01\n'
                      'momentum: 0.9\nlr_policy: "fixed"\nmax_iter: 200\ntest_iter: 100\n'
                      'test_interval: 200\nsnapshot_after_train: false\n')
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, "train", str(solver), "--no-plot"],
                            cwd=ROOT, capture_output=True, text=True, check=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    kib = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("VmHWM")]
    return int(kib[-1]) / 1024


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("--framework", default="protonet")
    p.add_argument("--net", default="lenet")
    p.add_argument("--mode", default="train")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--threads-list", default="1,2")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--numpy-first", action="store_true")
    p.add_argument("--rounds", type=int, default=5,
                   help="alternate protonet and PyTorch runs this many times per row")
    p.add_argument("--only", default=",".join(DEFAULT_SECTIONS),
                   help=f"sections to run, comma-separated (default: {','.join(DEFAULT_SECTIONS)};"
                        f" also: convpaths, fusion)")
    p.add_argument("--budget", type=float, default=45,
                   help="minutes for the whole run; rows that do not fit are skipped")
    p.add_argument("--zoo-nets", default=",".join(ZOO_NETS))
    p.add_argument("--zoo-batches", default="1,16")
    p.add_argument("--train-nets", default="cifar10_quick:100,cifar10_full:100,caffenet:32",
                   help="the train section's nets and batches (name:batch,...)")
    p.add_argument("--fusion-nets", default="resnet50,mobilenet_v1,mobilenet_ssd,googlenet")
    p.add_argument("--pair-rounds", type=int, default=2,
                   help="zoo, latency and train rows: rounds of one process per framework, "
                        "the order reversed every other round; ratios are the median of the "
                        "rounds'")
    p.add_argument("--seconds", type=float, default=3.0,
                   help="timed seconds per zoo/train/latency measurement (after a warm-up)")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args)
    DEADLINE[0] = time.monotonic() + args.budget * 60
    started = time.monotonic()
    results = {"machine": f"{os.cpu_count()} cores, {sys.platform}"}
    # A machine may pin OpenBLAS's kernels (some images set OPENBLAS_CORETYPE=Haswell for old
    # OpenBLAS builds): numpy's GEMMs then run at half speed on an AVX-512 CPU, which users of
    # a current numpy do not see. The figures say so.
    pinned = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
              if k in os.environ}
    if pinned:
        print(f"note: OpenBLAS pinned by {pinned}: protonet's GEMMs run those kernels; "
              "`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` measures what OpenBLAS picks itself")
    results["openblas_env"] = pinned
    for name in args.only.split(","):
        if name not in SECTIONS:
            p.error(f"unknown section {name!r} (sections: {', '.join(SECTIONS)})")
        print(f"\n## {name}", flush=True)
        results["section"] = name
        SECTIONS[name](args, results)
    results.pop("section", None)
    results["minutes"] = (time.monotonic() - started) / 60
    print(f"\nall sections: {results['minutes']:.1f} minutes")
    # Said again at the end: a 45-minute run's skipped sections scroll out of sight.
    for line in results.get("skipped", []):
        print(f"SKIPPED {line}")
    out_dir = ROOT / "benchmarks"
    out_dir.mkdir(exist_ok=True)
    full_run = args.only.split(",") == DEFAULT_SECTIONS
    # A partial run (--only lenet while tuning a kernel) must not replace the full run's
    # figures, which BENCHMARKS.md quotes.
    name = "results.json" if full_run else f"results-{args.only.replace(',', '+')}.json"
    (out_dir / name).write_text(json.dumps(summarized(results), indent=1))
    if full_run and results.get("rows"):
        chart(results, out_dir / "bench.png")
    print(f"\nwrote {out_dir / name}")


def have(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def section_lenet(args, results):
    """LeNet training and forward against PyTorch NCHW and channels_last, 1 and 2 threads."""
    repeats = 3 if args.quick else args.repeats
    rounds = 1 if args.quick else max(1, args.rounds)
    max_threads = max(int(t) for t in args.threads_list.split(","))
    have_torch = have("torch")
    results.update(rows=[], rounds=rounds, repeats=repeats)
    print(f"{'work':34s} {'thr':>3s} {'protonet img/s':>15s} {'torch NCHW':>11s} "
          f"{'ratio':>6s} {'torch ch-last':>13s} {'ratio':>6s}")
    cases = [("lenet", "train", 64), ("lenet_dsn", "train", 64), ("lenet", "forward", 64),
             ("lenet", "forward", 1000)]
    layer_table, torch_layers = None, {}
    for threads in [int(t) for t in args.threads_list.split(",")]:
        for net, mode, batch in cases:
            iters = 20 if batch == 64 else 3
            common = ["--net", net, "--mode", mode, "--batch", batch, "--iters", iters,
                      "--repeats", repeats]
            # Rounds alternate the frameworks, so a slow spell of the shared machine hits
            # both; a row reports medians of all runs and the median of per-round ratios.
            rates = {"protonet": [], "torch": [], "torch_cl": []}
            ratios = {"torch": [], "torch_cl": []}
            for _ in range(rounds):
                ours = run_worker(threads, "--framework", "protonet", *common)
                if not ours:
                    break
                mine = statistics.median(ours["rates"])
                rates["protonet"].append(mine)
                if "layers" in ours and threads == max_threads:
                    layer_table = ours["layers"]
                for key, flag in (("torch", []), ("torch_cl", ["--channels-last"])):
                    theirs = run_worker(threads, "--framework", "torch", *common, *flag) \
                        if have_torch else None
                    if theirs:
                        rates[key].append(statistics.median(theirs["rates"]))
                        ratios[key].append(mine / rates[key][-1])
                        if "layers" in theirs and threads == max_threads:
                            torch_layers[key] = theirs["layers"]
            row = {"net": net, "mode": mode, "batch": batch, "threads": threads,
                   "runs": rates}
            for key, values in rates.items():
                row[key] = statistics.median(values) if values else None
            for key, values in ratios.items():
                row[f"ratio_{key}"] = statistics.median(values) if values else None
            results["rows"].append(row)

            def fmt(v):
                return f"{v:,.0f}" if v else "-"

            def ratio(r):
                return f"{r:.2f}" if r else "-"
            print(f"{net + ' ' + mode + ' batch ' + str(batch):34s} {threads:3d} "
                  f"{fmt(row['protonet']):>15s} {fmt(row['torch']):>11s} "
                  f"{ratio(row['ratio_torch']):>6s} {fmt(row['torch_cl']):>13s} "
                  f"{ratio(row['ratio_torch_cl']):>6s}", flush=True)
    gemm = run_worker(max(int(t) for t in args.threads_list.split(",")), "--framework", "gemm")
    results["gemm_gflops"] = gemm["gflops"] if gemm else None
    if gemm:
        best = max((r["protonet"] or 0) for r in results["rows"]
                   if r["net"] == "lenet" and r["mode"] == "train")
        frac = best * LENET_TRAIN_FLOP / (gemm["gflops"] * 1e9)
        core = gemm.get("openblas_core")
        core = f" (OpenBLAS's {core} kernels)" if core else ""
        print(f"\nnumpy float32 GEMM peak: {gemm['gflops']:.1f} GFLOP/s{core}; LeNet training at "
              f"{best:,.0f} img/s x {LENET_TRAIN_FLOP / 1e6:.1f} MFLOP = {frac:.1%} of it")
        results["lenet_fraction_of_gemm_peak"] = frac
    if layer_table:
        print(f"\nper-layer ms, LeNet training batch 64, {max_threads} threads (protonet: "
              "`protonet time`'s table; PyTorch: each module on the previous one's output)")
        print(f"  {'layer':8s} {'protonet fwd':>12s} {'bwd':>7s} {'torch fwd':>10s} {'bwd':>7s} "
              f"{'ch-last fwd':>12s} {'bwd':>7s}")
        theirs = {key: {r[0]: r[1:] for r in rows} for key, rows in torch_layers.items()}
        for name, f, b in layer_table:
            cells = [f"{f:12.3f}", f"{b:7.3f}"]
            for key, width in (("torch", 10), ("torch_cl", 12)):
                fb = theirs.get(key, {}).get(name)
                cells += [f"{fb[0]:{width}.3f}", f"{fb[1]:7.3f}"] if fb else \
                    [f"{'-':>{width}s}", f"{'-':>7s}"]
            print(f"  {name:8s} " + " ".join(cells))
        results["layers"] = layer_table
        results["torch_layers"] = torch_layers
    if not (ROOT / "data/fashion_mnist/fashion_mnist_train_lmdb").exists():
        skipped(results, "no data/fashion_mnist LMDBs (make data)",
                "first iteration and peak RSS")
        return
    with tempfile.TemporaryDirectory() as cache:
        cold = first_iteration_seconds(cache)
        warm = first_iteration_seconds(cache)
    results["first_iteration_s"] = {"cold": cold, "warm": warm}
    print(f"\ntime to first training iteration of a fresh process: cold cache {cold:.1f} s, "
          f"warm {warm:.1f} s")
    rss = peak_rss_mb()
    results["peak_rss_mb"] = rss
    print(f"peak RSS of LeNet training (200 iterations + a test pass): {rss:.0f} MB")


HOG = "import numpy as np\na = np.ones((512, 512), np.float32)\nwhile True:\n    a @ a\n"


@contextlib.contextmanager
def cpu_hog(on: bool):
    """One other CPU-bound program (numpy matrix products on one thread) while the block runs."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", HOG],
                            env=dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"))
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.kill()
        proc.wait()


def section_contention(args, results):
    """LeNet training and batch-64 forward, protonet and PyTorch channels_last, each with
    numpy imported first (as pycaffe scripts do) and last, on a quiet machine and beside one
    other CPU-bound program. Thread settings as a user has them (none: every core)."""
    rounds = 1 if args.quick else max(1, min(args.rounds, 3))
    frameworks = {"protonet": ["--framework", "protonet"]}
    if have("torch"):
        frameworks["torch_cl"] = ["--framework", "torch", "--channels-last"]
    rows = []
    print(f"{'work':22s} {'load':5s} {'imported first':15s} {'protonet img/s':>15s} "
          f"{'torch ch-last':>14s} {'ratio':>6s}")
    for mode in ("train", "forward"):
        common = ["--net", "lenet", "--mode", mode, "--batch", 64, "--iters", 20, "--repeats",
                  2 if args.quick else 3]
        runs = {}  # (load, order, framework) -> [img/s per round]
        for _ in range(rounds):
            for load in ("quiet", "busy"):
                with cpu_hog(load == "busy"):
                    for order in ("framework", "numpy"):
                        for fw, flags in frameworks.items():
                            extra = ["--numpy-first"] if order == "numpy" else []
                            out = run_worker(None, *flags, *common, *extra)
                            runs.setdefault((load, order, fw), []).append(
                                statistics.median(out["rates"]) if out else None)
        for load in ("quiet", "busy"):
            for order in ("framework", "numpy"):
                ours = runs[(load, order, "protonet")]
                theirs = runs.get((load, order, "torch_cl"), [None] * len(ours))
                ratios = [a / b for a, b in zip(ours, theirs) if a and b]
                row = {"mode": mode, "load": load, "first": order,
                       "protonet": median_of(ours), "torch_cl": median_of(theirs),
                       "ratio": statistics.median(ratios) if ratios else None,
                       "runs": {"protonet": ours, "torch_cl": theirs}}
                rows.append(row)
                print(f"{'LeNet ' + mode + ' batch 64':22s} {load:5s} "
                      f"{'numpy' if order == 'numpy' else 'protonet/torch':15s} "
                      f"{fmt(row['protonet']):>15s} {fmt(row['torch_cl']):>14s} "
                      f"{fmt(row['ratio'], '.2f'):>6s}", flush=True)
        for load in ("quiet", "busy"):
            a, b = runs[(load, "framework", "protonet")], runs[(load, "numpy", "protonet")]
            slow = [x / y for x, y in zip(a, b) if x and y]
            if slow:
                print(f"  {mode}, {load}: protonet's time numpy-first / protonet-first: "
                      f"{statistics.median(slow):.2f}")
        for order in ("framework", "numpy"):
            quiet = [r for r in rows if (r["mode"], r["load"], r["first"]) == (mode, "quiet", order)]
            busy = [r for r in rows if (r["mode"], r["load"], r["first"]) == (mode, "busy", order)]
            if quiet[0]["ratio"] and busy[0]["ratio"]:
                print(f"  {mode}, {'numpy' if order == 'numpy' else 'protonet'} first: busy "
                      f"ratio / quiet ratio to PyTorch = {busy[0]['ratio'] / quiet[0]['ratio']:.2f}")
    results["contention"] = rows


def median_of(values):
    values = [v for v in values if v]
    return statistics.median(values) if values else None


def fmt(value, spec=",.0f"):
    return format(value, spec) if value else "-"


ZOO_NETS = ["cifar10_quick", "cifar10_full", "caffenet", "googlenet", "vgg16", "resnet50",
            "mobilenet_v1", "mobilenet_ssd"]


# glibc's malloc in the timed forward and training workers, every framework alike: memory a
# framework frees stays mapped for its next allocation. By default glibc maps blocks over its
# threshold (32 MB at most) afresh and gives back what is freed at the top of its heap, so a
# framework that allocates its activations at every forward (PyTorch) faults their pages in
# again each time. MobileNet-SSD at batch 16 in PyTorch's worker, 2 threads: 356-457 ms by
# default, 173-204 in a heap a protonet Net had left warm (until protonet's big arrays became
# mappings of their own, 9bbaf9e), 185-193 with these settings. They give PyTorch its best
# case whatever else its process did; protonet allocates its arrays once. The memory
# section keeps glibc's defaults.
TIMING_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def zoo_job(threads, fn, *job_args):
    timed = fn.startswith(("forward_", "train_"))
    return run_worker(threads, "--job", json.dumps({"fn": fn, "args": list(job_args)}),
                      env_extra=TIMING_MALLOC if timed else None)


def _zoo_frameworks():
    names = ["protonet"]
    names += ["torch"] if have("torch") else []
    names += ["opencv"] if have("cv2") else []
    return names


def summarized(value, longest: int = 50):
    """`value` with every list of more than `longest` timings replaced by its count, min,
    median and max: the zoo and latency workers time thousands of forwards each, which made
    results.json megabytes of samples."""
    if isinstance(value, dict):
        return {k: summarized(v, longest) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) > longest and all(isinstance(v, (int, float)) for v in value):
            return {"n": len(value), "min": min(value), "median": statistics.median(value),
                    "max": max(value)}
        return [summarized(v, longest) for v in value]
    return value


def paired_rounds(rounds: int, frameworks: list, measure) -> list:
    """measure(framework) for each framework, `rounds` times, the order reversed every other
    round so that neither side always runs first after a quiet (or busy) spell: a list of
    {framework: result} per round."""
    out = []
    for r in range(rounds):
        order = frameworks if r % 2 == 0 else frameworks[::-1]
        out.append({fw: measure(fw) for fw in order})
    return out


def round_ratio(got: list, theirs: str, ours: str, key: str):
    """The median over rounds of median(theirs' `key` timings) / median(ours'): protonet's
    speed ratio pair by pair (None if no round has both)."""
    ratios = [statistics.median(g[theirs][key]) / statistics.median(g[ours][key])
              for g in got if g.get(theirs) and g.get(ours)]
    return statistics.median(ratios) if ratios else None


def skipped(results, reason: str, what: str = "") -> None:
    """Print that the running section (or `what` of it) is skipped and why, and keep the line
    for the run's last lines."""
    what = what or results["section"]
    print(f"{what} skipped: {reason}")
    results.setdefault("skipped", []).append(f"{what}: {reason}")


def section_zoo(args, results, nets=None, batches=None, key="zoo"):
    """Forward of zoo nets (random weights, native input size) in protonet, PyTorch
    channels_last (the same layers in torch.nn, weights copied) and OpenCV dnn, milliseconds
    per forward and peak RSS of each (its process's VmHWM during the forwards)."""
    import bench_zoo
    if not bench_zoo.SHARED.exists():
        skipped(results, f"{bench_zoo.SHARED} is absent")
        return
    threads = max(int(t) for t in args.threads_list.split(","))
    nets = nets or args.zoo_nets.split(",")
    batches = batches or [int(b) for b in args.zoo_batches.split(",")]
    seconds = 1.0 if args.quick else args.seconds
    frameworks = _zoo_frameworks()
    print(f"{threads} threads; ms per forward (median), protonet's speed ratio to each, "
          "peak RSS MB")
    print(f"{'net':14s} {'batch':>5s} " + " ".join(f"{f + ' ms':>11s}" for f in frameworks) +
          " " + " ".join(f"{'vs ' + f:>9s}" for f in frameworks[1:]) + " " +
          " ".join(f"{f[:5] + ' MB':>9s}" for f in frameworks) +
          f" {'weights+pair MB':>15s}")
    rounds = 1 if args.quick else max(1, args.pair_rounds)
    rows = []
    for net, batch, files in prepared_zoo(threads, nets, batches):
        row = {"net": net, "batch": batch}
        got = paired_rounds(rounds, frameworks, lambda fw: zoo_job(
            threads, f"forward_{fw}", files["prototxt"], files["weights"],
            *([threads] if fw == "opencv" else []), seconds))
        ms = {}
        for fw in frameworks:
            runs = [g[fw] for g in got if g[fw]]
            row[fw] = {**runs[0], "ms": [t for r in runs for t in r["ms"]],
                       "round_ms": [statistics.median(r["ms"]) for r in runs],
                       "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)} if runs else None
            ms[fw] = statistics.median(row[fw]["round_ms"]) if runs else None
        ours = row["protonet"] or {}
        row["ratio"] = {fw: r for fw in frameworks[1:]
                        if (r := round_ratio(got, fw, "protonet", "ms")) is not None}
        rows.append(row)
        budget = (ours.get("weights_mb", 0) + ours.get("largest_pair_mb", 0))
        print(f"{net:14s} {batch:5d} " +
              " ".join(f"{fmt(ms[f], ',.1f'):>11s}" for f in frameworks) + " " +
              " ".join(f"{fmt(row['ratio'].get(f), '.2f'):>9s}" for f in frameworks[1:])
              + " " + " ".join(f"{fmt((row[f] or {}).get('peak_rss_mb')):>9s}"
                               for f in frameworks) +
              f" {fmt(budget):>15s}", flush=True)
    results[key] = rows


def prepared_zoo(threads, nets, batches):
    """(net, batch, {prototxt, weights}) for each zoo net and batch, in a temporary folder
    (bench_zoo.prepare); rows that fail or do not fit the budget are printed as skipped."""
    with tempfile.TemporaryDirectory(prefix="protonet-bench-") as workdir:
        for net in nets:
            for batch in batches:
                files = zoo_job(threads, "prepare", net, batch, workdir)
                if files:
                    yield net, batch, files
                else:
                    print(f"{net:14s} {batch:5d} skipped (budget or error)")


def section_fusion(args, results):
    """Zoo nets' forward with the fused output pass (BatchNorm/Scale folded, ReLU fused)
    off and on, and OpenCV dnn's, alternating in one process (bench_zoo.fusion_ab)."""
    import bench_zoo
    if not (bench_zoo.SHARED.exists() and bench_zoo.REAL_MODELS.exists()):
        skipped(results, f"{bench_zoo.SHARED} or {bench_zoo.REAL_MODELS} is absent")
        return
    threads = max(int(t) for t in args.threads_list.split(","))
    nets = args.fusion_nets.split(",")
    batches = [int(b) for b in args.zoo_batches.split(",")]
    seconds = 1.0 if args.quick else args.seconds
    print(f"{threads} threads; forwards alternating one by one (at least {args.rounds} rounds); "
          "median ms, median of the rounds' ratios")
    print(f"{'net':14s} {'batch':>5s} {'rounds':>6s} {'unfused':>9s} {'fused':>9s} "
          f"{'speedup':>8s} {'opencv':>9s} {'vs cv before':>12s} {'vs cv after':>11s} "
          f"{'folds':>5s} {'relus':>5s} {'max rel diff':>12s}")
    rows = []
    for net, batch, files in prepared_zoo(threads, nets, batches):
        out = zoo_job(threads, "fusion_ab", files["prototxt"], files["weights"], threads,
                      seconds * 3, args.rounds)
        if not out:
            print(f"{net:14s} {batch:5d} failed")
            continue
        ms = {k: statistics.median(v) for k, v in out["ms"].items()}
        rounds = out["ms"]["fused"]

        def ratio(a, b):
            """The median over rounds of a's time over b's (each round ran both)."""
            return (statistics.median(x / y for x, y in zip(out["ms"][a], out["ms"][b]))
                    if a in out["ms"] else None)
        out["ratios"] = {"speedup": ratio("unfused", "fused"),
                         "opencv_vs_unfused": ratio("opencv", "unfused"),
                         "opencv_vs_fused": ratio("opencv", "fused")}
        rows.append({"net": net, "batch": batch, **out})
        r = out["ratios"]
        print(f"{net:14s} {batch:5d} {len(rounds):6d} {ms['unfused']:9.1f} {ms['fused']:9.1f} "
              f"{r['speedup']:8.2f} {fmt(ms.get('opencv'), '.1f'):>9s} "
              f"{fmt(r['opencv_vs_unfused'], '.2f'):>12s} "
              f"{fmt(r['opencv_vs_fused'], '.2f'):>11s} {out['folded']:5d} "
              f"{out['relu_fused']:5d} {out['max_rel_diff']:12.2e}", flush=True)
    results["fusion"] = rows


def section_train(args, results):
    """Training steps of CIFAR-10 quick and full (batch 100) and CaffeNet (batch 32, 227x227)
    in protonet and PyTorch channels_last, with each net's solver (momentum, weight decay,
    base_lr) and random inputs: images/s and protonet's ratio."""
    import bench_zoo
    if not bench_zoo.SHARED.exists():
        skipped(results, f"{bench_zoo.SHARED} is absent")
        return
    threads = max(int(t) for t in args.threads_list.split(","))
    seconds = 2.0 if args.quick else 2 * args.seconds
    rows = []
    print(f"{threads} threads; {'net':14s} {'batch':>5s} {'protonet img/s':>15s} "
          f"{'torch ch-last':>14s} {'ratio':>6s}")
    rounds = 1 if args.quick else max(1, args.pair_rounds)
    frameworks = ["protonet"] + (["torch"] if have("torch") else [])
    for net, batch in (item.split(":") for item in args.train_nets.split(",")):
        batch = int(batch)
        got = paired_rounds(rounds, frameworks,
                            lambda fw: zoo_job(threads, f"train_{fw}", net, batch, seconds))

        def rate(fw):
            per_round = [batch * 1e3 / statistics.median(g[fw]["ms"]) for g in got if g.get(fw)]
            return statistics.median(per_round) if per_round else None
        rows.append({"net": net, "batch": batch, "protonet": rate("protonet"),
                     "torch_cl": rate("torch") if "torch" in frameworks else None,
                     "ratio": round_ratio(got, "torch", "protonet", "ms")})
        row = rows[-1]
        print(f"{'':11s} {net:14s} {batch:5d} {fmt(row['protonet']):>15s} "
              f"{fmt(row['torch_cl']):>14s} {fmt(row['ratio'], '.2f'):>6s}", flush=True)
    results["train"] = rows


def section_latency(args, results):
    """LeNet and GoogLeNet at batch 1: ms per forward in each framework, and where protonet's
    time goes (the executor alone, the layers by type)."""
    section_zoo(args, results, nets=["lenet", "googlenet"], batches=[1], key="latency")
    threads = max(int(t) for t in args.threads_list.split(","))
    seconds = 1.0 if args.quick else args.seconds
    import bench_zoo
    with tempfile.TemporaryDirectory(prefix="protonet-bench-") as workdir:
        for net in ("lenet", "googlenet"):
            if net == "googlenet" and not bench_zoo.SHARED.exists():
                continue
            files = zoo_job(threads, "prepare", net, 1, workdir)
            out = files and zoo_job(threads, "overhead_protonet", files["prototxt"],
                                    files["weights"], seconds)
            if not out:
                continue
            results.setdefault("overhead", {})[net] = out
            per = out["executor_ms"] / out["layers"] * 1e3
            cheap = sorted(out["median_layer_ms_by_type"].items(), key=lambda kv: kv[1])
            print(f"  protonet {net} batch 1: {out['forward_ms']:.2f} ms per forward over "
                  f"{out['layers']} layers; the executor alone {out['executor_ms']:.3f} ms "
                  f"({per:.1f} us a layer); layers timed one by one sum to "
                  f"{out['sum_of_layers_ms']:.2f} ms; cheapest layer types: " +
                  ", ".join(f"{k} {v * 1e3:.0f} us" for k, v in cheap[:4]))


def section_memory(args, results):
    """Peak RSS of a whole batch-1 deploy process (import, Net with weights, forwards) for
    the zoo nets, each in a fresh process (the second of two), against issue 14's budget:
    1.5 x (weights + the largest layer's bottoms and tops); and the seconds
    Net(prototxt, TEST, weights=) takes."""
    import bench_zoo
    if not bench_zoo.SHARED.exists():
        skipped(results, f"{bench_zoo.SHARED} is absent")
        return
    threads = max(int(t) for t in args.threads_list.split(","))
    nets = [n for n in ("vgg16", "caffenet", "resnet50", "googlenet")
            if n in args.zoo_nets.split(",")]
    print(f"{threads} threads; MB of VmRSS after import / numba's runtime (its first kernel, "
          "from the cache) / load / forwards, peak (VmHWM) after the load and at the end, "
          "budget; load seconds")
    rows = []
    with tempfile.TemporaryDirectory(prefix="protonet-bench-") as workdir:
        for net in nets:
            files = zoo_job(threads, "prepare", net, 1, workdir)
            # The first run may compile kernels numba's on-disk cache lacks (a fresh
            # checkout, an edited kernel): its peak would hold the compiler's. Measure the
            # second.
            out = None
            for _ in range(2 if files else 0):
                out = zoo_job(threads, "memory_protonet", files["prototxt"], files["weights"])
            if not out:
                print(f"{net:10s} skipped (budget or error)")
                continue
            rows.append({"net": net, **out})
            r = out["rss_mb"]
            print(f"{net:10s} import {r['import']:5.0f}  numba runtime "
                  f"{r['numba_runtime'] - r['import']:+4.0f}  loaded {r['loaded']:5.0f}  forwards "
                  f"{r['forwards']:5.0f}  load peak {out['load_peak_mb']:5.0f}  peak "
                  f"{out['peak_mb']:5.0f} ({out['peak_mb'] - r['import']:5.0f} above the "
                  f"import)  budget {out['budget_mb']:5.0f} "
                  f"({out['peak_mb'] / out['budget_mb']:.2f}x of it)  load {out['load_s']:.2f} s",
                  flush=True)
    results["memory"] = rows


def section_convpaths(args, results):
    """protonet alone: its convolution paths side by side in one process (no peer)."""
    rows = {}
    for threads in (int(t) for t in args.threads_list.split(",")):
        out = run_worker(threads, "--framework", "convpaths", "--rounds",
                         1 if args.quick else args.rounds)
        if out is None:
            continue
        rows[threads] = out
        clock = "CPU" if threads == 1 else "wall"
        print(f"{threads} thread(s), {clock} ms, median of {args.rounds} alternating rounds "
              "(forward / backward to weights and data)")
        print(f"  {'convolution':14s} {'GEMM paths':>14s} {'as planned':>14s} "
              f"{'direct forced':>14s}")
        for row in out["layers"]:
            print(f"  {row['name']:14s} " + " ".join(
                f"{row[p][0]:6.2f} /{row[p][1]:6.2f}" for p in ("gemm", "planned", "direct"))
                + ("  (planned: direct)" if row["takes_direct"] else ""))
        for row in out["nets"]:
            print(f"  {row['name']} training, images/s: GEMM paths {row['gemm']:,.0f}, as "
                  f"planned {row['planned']:,.0f}, ratio {row['ratio']:.2f}")
    results["convpaths"] = rows


SECTIONS = {"lenet": section_lenet, "contention": section_contention, "zoo": section_zoo,
            "train": section_train, "latency": section_latency, "memory": section_memory,
            "convpaths": section_convpaths, "fusion": section_fusion}
# convpaths and fusion measure protonet against itself (fusion: the fused output pass off and
# on, with OpenCV beside): run them with --only.
DEFAULT_SECTIONS = [name for name in SECTIONS if name not in ("convpaths", "fusion")]


def chart(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = results["rows"]
    labels = [f"{r['net']} {r['mode']}\nbatch {r['batch']}, {r['threads']} thr" for r in rows]
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.27
    for k, (key, name) in enumerate((("protonet", "protonet"), ("torch", "PyTorch NCHW"),
                                     ("torch_cl", "PyTorch channels_last"))):
        ax.bar([i + (k - 1) * width for i in range(len(rows))], [r[key] or 0 for r in rows],
               width, label=name)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("images / s")
    ax.legend()
    ax.set_title("protonet vs PyTorch 2.13 CPU, same machine and threads")
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
