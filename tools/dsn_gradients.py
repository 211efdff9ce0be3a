"""Deep supervision evidence: train LeNet and LeNet-DSN side by side from the same seed and
record, per layer, the mean absolute gradient of its weights and biases over training (the
Deeply-Supervised Nets paper's figure: companion losses give lower layers larger gradients),
plus both test-accuracy curves.

    python tools/dsn_gradients.py --iters 2000 --out docs/dsn
    (needs the LMDBs of `protonet data fashion-mnist data/fashion_mnist`)

A script in pycaffe's style: get_solver, step, read params and their diffs between steps.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import protonet

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["conv1", "conv2", "ip1", "ip2"]


def train(solver_path: Path, iters: int, every: int, test_every: int):
    solver = protonet.get_solver(str(solver_path))
    solver.param.test_interval = 0  # tested below, on our own schedule
    grads = {f"{l}[{j}]": [] for l in LAYERS for j in range(2)}
    steps, accuracy = [], []
    for it in range(0, iters, every):
        # Gradients are read after the step's backward, before the next clears them: step(1)
        # applies the update, but the diff holds the update, so recompute the raw gradient.
        solver.step(every)
        net = solver.net
        net.clear_param_diffs()
        net.apply_loss_weight_schedule(solver.iter)
        net.forward_backward()
        for layer in LAYERS:
            for j, blob in enumerate(net.params[layer]):
                grads[f"{layer}[{j}]"].append(float(np.abs(blob.diff).mean()))
        steps.append(solver.iter)
        if solver.iter % test_every == 0:
            scores = [solver.test_nets[0].forward()["accuracy"].item()
                      for _ in range(solver.param.test_iter[0])]
            accuracy.append((solver.iter, float(np.mean(scores))))
    solver.close()
    return {"iters": steps, "grads": grads, "accuracy": accuracy}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--every", type=int, default=20, help="record gradients every N iterations")
    p.add_argument("--test-every", type=int, default=500)
    p.add_argument("--out", default=str(ROOT / "docs" / "dsn"))
    p.add_argument("--replot", action="store_true",
                   help="only redraw the figure from OUT/dsn_gradients.json")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        runs = json.loads((out / "dsn_gradients.json").read_text())
    else:
        runs = {}
        for name in ("lenet", "lenet_dsn"):
            protonet.set_random_seed(1701)
            runs[name] = train(ROOT / f"models/{name}_solver.prototxt", args.iters, args.every,
                               args.test_every)
        (out / "dsn_gradients.json").write_text(json.dumps(runs))
    summary = {}
    for name, run in runs.items():
        summary[name] = {k: float(np.mean(v)) for k, v in run["grads"].items()}
        summary[name]["final_accuracy"] = run["accuracy"][-1][1] if run["accuracy"] else None
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot(runs, out / "dsn_gradients.png")
    for key in runs["lenet"]["grads"]:
        a, b = summary["lenet"][key], summary["lenet_dsn"][key]
        print(f"{key:9s} mean |grad|  LeNet {a:.3e}  LeNet-DSN {b:.3e}  ratio {b / a:.2f}")
    for name in runs:
        print(f"{name}: test accuracy {runs[name]['accuracy']}")


def smooth(values, window=10):
    """Moving average over `window` recorded points (the per-batch values are noisy)."""
    values = np.asarray(values)
    kernel = np.ones(min(window, len(values))) / min(window, len(values))
    return np.convolve(values, kernel, mode="valid")


def plot(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for name, style in (("lenet", "--"), ("lenet_dsn", "-")):
        run = runs[name]
        for key in ("conv1[0]", "conv2[0]", "ip1[0]"):
            y = smooth(run["grads"][key])
            axes[0].semilogy(run["iters"][-len(y):], y, style, label=f"{name} {key}")
        for key in ("conv1[1]", "conv2[1]", "ip1[1]"):
            y = smooth(run["grads"][key])
            axes[1].semilogy(run["iters"][-len(y):], y, style, label=f"{name} {key}")
        if run["accuracy"]:
            it, acc = zip(*run["accuracy"])
            axes[2].plot(it, acc, style, marker="o", label=name)
    axes[0].set_title("mean |gradient| of weights (moving average of 10)")
    axes[1].set_title("mean |gradient| of biases (moving average of 10)")
    axes[2].set_title("test accuracy (Fashion-MNIST)")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
