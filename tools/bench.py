"""Side-by-side benchmark: protonet and PyTorch (CPU) on identical LeNet work.

    python tools/bench.py              # full run (~8 min on 2 cores), prints tables + ratios
    python tools/bench.py --quick      # one round, fewer repeats

Each measurement runs in a fresh subprocess with its thread count fixed before numpy or torch
load (OMP_NUM_THREADS = N: BLAS, torch's intra-op pool and protonet's numba loops all use N).
Each row runs protonet, PyTorch NCHW and PyTorch channels_last in turn, --rounds times (5), each
run the median of --repeats timed runs after warm-up. A row shows the median images/s of each
framework and the median of the per-round ratios protonet/PyTorch. PyTorch is optional (pip install torch==2.13.0): without it only protonet runs.
Writes benchmarks/results.json and benchmarks/bench.png.
"""
from __future__ import annotations

import argparse
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
    import protonet  # noqa: F401
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
    return {"gflops": best / 1e9}


def worker_main(args):
    if args.numpy_first:
        import numpy  # noqa: F401  (as a pycaffe script starts: before protonet or torch)
    if args.framework == "torch":
        import torch
        torch.set_num_threads(args.threads)
        result = worker_torch(args.net, args.mode, args.batch, args.iters, args.repeats,
                              args.channels_last)
    elif args.framework == "gemm":
        result = worker_gemm()
    else:
        result = worker_protonet(args.net, args.mode, args.batch, args.iters, args.repeats)
    print("RESULT " + json.dumps(result))


# ---------------------------------------------------------------- driver
def run_worker(threads: int, *extra, env_extra=None) -> dict | None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT), **(env_extra or {}))
    cmd = [sys.executable, __file__, "--worker", "--threads", str(threads), *map(str, extra)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
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
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args)
    repeats = 3 if args.quick else args.repeats
    rounds = 1 if args.quick else max(1, args.rounds)
    max_threads = max(int(t) for t in args.threads_list.split(","))
    try:
        import importlib.util
        have_torch = importlib.util.find_spec("torch") is not None
    except Exception:
        have_torch = False
    results = {"machine": f"{os.cpu_count()} cores, {sys.platform}", "rows": [],
               "rounds": rounds, "repeats": repeats}
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
        print(f"\nnumpy float32 GEMM peak: {gemm['gflops']:.1f} GFLOP/s; LeNet training at "
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
    with tempfile.TemporaryDirectory() as cache:
        cold = first_iteration_seconds(cache)
        warm = first_iteration_seconds(cache)
    results["first_iteration_s"] = {"cold": cold, "warm": warm}
    print(f"\ntime to first training iteration of a fresh process: cold cache {cold:.1f} s, "
          f"warm {warm:.1f} s")
    if (ROOT / "data/fashion_mnist/fashion_mnist_train_lmdb").exists():
        rss = peak_rss_mb()
        results["peak_rss_mb"] = rss
        print(f"peak RSS of LeNet training (200 iterations + a test pass): {rss:.0f} MB")
    out_dir = ROOT / "benchmarks"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    chart(results, out_dir / "bench.png")
    print(f"\nwrote {out_dir / 'results.json'} and {out_dir / 'bench.png'}")


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
