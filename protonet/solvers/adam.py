"""Adam (Caffe's AdamSolver): `momentum` is beta1, `momentum2` beta2, `delta` epsilon.

    m = beta1 * m + (1 - beta1) * diff
    v = beta2 * v + (1 - beta2) * diff^2
    diff = local_rate * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + delta),  t = iter + 1
The bias correction goes into the step size and epsilon is added uncorrected (Caffe parity).
"""
import math

import numpy as np

from .base import Solver


class AdamSolver(Solver):
    type = "Adam"
    num_history = 2
    fraction_fields = ("momentum", "momentum2")

    def compute_update(self, param_id: int, rate: float) -> None:
        diff = self.net.learnable_params[param_id].diff
        m, v = self.history_of(param_id, 0), self.history_of(param_id, 1)
        beta1 = np.float32(self.param.momentum)
        beta2 = np.float32(self.param.momentum2)
        t = self.iter + 1
        correction = math.sqrt(1.0 - float(beta2) ** t) / (1.0 - float(beta1) ** t)
        m *= beta1
        m += (np.float32(1) - beta1) * diff
        v *= beta2
        v += (np.float32(1) - beta2) * diff * diff
        np.divide(m, np.sqrt(v) + np.float32(self.param.delta), out=diff)
        diff *= np.float32(rate * correction)
