"""Learning curves: each training output and each test output against the iteration."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .io.atomic import atomic_path


def smooth(values, window: int) -> np.ndarray:
    """Running mean over `window` points (the first points average what there is)."""
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or values.size == 0:
        return values
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    out = np.empty_like(values)
    for i in range(values.size):
        lo = max(0, i + 1 - window)
        out[i] = (cumsum[i + 1] - cumsum[lo]) / (i + 1 - lo)
    return out


def plot_learning_curve(train_history, test_history, path, title: str = "",
                        average: int = 50) -> Path:
    """Write a PNG: training outputs (smoothed over `average` iterations) on the left axis,
    test outputs on the right; returns the path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    if train_history:
        iters = [it for it, _ in train_history]
        for name in train_history[0][1]:
            ax.plot(iters, smooth([v[name] for _, v in train_history], average),
                    label=f"train {name}", linewidth=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"training output (mean of {average} iterations)")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if test_history:
        ax2 = ax.twinx()
        nets = sorted({net_id for _, net_id, _ in test_history})
        for net_id in nets:
            rows = [(it, scores) for it, n, scores in test_history if n == net_id]
            for name in rows[0][1]:
                ax2.plot([it for it, _ in rows], [s[name] for _, s in rows], marker="o",
                         markersize=3, linestyle="--", label=f"test#{net_id} {name}")
        ax2.set_ylabel("test output")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="center right", fontsize=8)
    ax.set_title(title or "learning curve")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
