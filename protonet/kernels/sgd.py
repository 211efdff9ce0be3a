"""The SGD solver's whole per-parameter step in one pass (Caffe's Regularize, ComputeUpdateValue
and Update), instead of five numpy passes over each parameter: LeNet's 431K parameters took
about 0.3-0.5 ms per iteration that way."""
from __future__ import annotations

from ._jit import jit, prange


@jit(parallel=True)
def sgd_momentum_step(data, diff, history, decay, rate, momentum):
    """Over flat float32 arrays: diff += decay * data (L2; skipped when decay is 0, as Caffe
    does); history = momentum * history + rate * diff; diff = history; data -= diff.

    The scalars are float32, so every operation rounds as Caffe's float arithmetic does.
    """
    for i in prange(data.size):
        g = diff[i] + decay * data[i] if decay != 0 else diff[i]
        h = momentum * history[i] + rate * g
        history[i] = h
        diff[i] = h
        data[i] -= h
