"""AdaDelta (Caffe's AdaDeltaSolver); `momentum` is the decay of both running averages.

    g2 = momentum * g2 + (1 - momentum) * diff^2
    step = diff * sqrt((dx2 + delta) / (g2 + delta))
    dx2 = momentum * dx2 + (1 - momentum) * step^2
    diff = local_rate * step
"""
import numpy as np

from .base import Solver


class AdaDeltaSolver(Solver):
    type = "AdaDelta"
    num_history = 2

    def compute_update(self, param_id: int, rate: float) -> None:
        diff = self.net.learnable_params[param_id].diff
        g2, dx2 = self.history_of(param_id, 0), self.history_of(param_id, 1)
        m = np.float32(self.param.momentum)
        delta = np.float32(self.param.delta)
        g2 *= m
        g2 += (np.float32(1) - m) * diff * diff
        diff *= np.sqrt((dx2 + delta) / (g2 + delta))
        dx2 *= m
        dx2 += (np.float32(1) - m) * diff * diff
        diff *= np.float32(rate)
