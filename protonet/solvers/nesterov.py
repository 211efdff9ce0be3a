"""Nesterov's accelerated gradient (Caffe's NesterovSolver).

    previous = history
    history = momentum * history + local_rate * diff
    diff = (1 + momentum) * history - momentum * previous
"""
import numpy as np

from .base import Solver


class NesterovSolver(Solver):
    type = "Nesterov"

    def compute_update(self, param_id: int, rate: float) -> None:
        diff = self.net.learnable_params[param_id].diff
        history = self.history_of(param_id)
        momentum = np.float32(self.param.momentum)
        previous = history.copy()
        history *= momentum
        history += np.float32(rate) * diff
        np.multiply(history, np.float32(1) + momentum, out=diff)
        diff -= momentum * previous
