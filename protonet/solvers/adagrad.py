"""AdaGrad (Caffe's AdaGradSolver).

    history += diff^2;  diff = local_rate * diff / (sqrt(history) + delta)
"""
import numpy as np

from ..errors import SolverConfigError
from .base import Solver


class AdaGradSolver(Solver):
    type = "AdaGrad"

    def _check_param(self) -> None:
        super()._check_param()
        if self.param.momentum != 0:
            raise SolverConfigError(f"{self.source}: momentum cannot be used with AdaGrad")

    def compute_update(self, param_id: int, rate: float) -> None:
        diff = self.net.learnable_params[param_id].diff
        history = self.history_of(param_id)
        history += diff * diff
        denom = np.sqrt(history) + np.float32(self.param.delta)
        np.divide(diff, denom, out=diff)
        diff *= np.float32(rate)
