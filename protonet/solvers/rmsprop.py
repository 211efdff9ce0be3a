"""RMSProp (Caffe's RMSPropSolver).

    history = rms_decay * history + (1 - rms_decay) * diff^2
    diff = local_rate * diff / (sqrt(history) + delta)
"""
import numpy as np

from ..errors import SolverConfigError
from .base import Solver


class RMSPropSolver(Solver):
    type = "RMSProp"

    def _check_param(self) -> None:
        super()._check_param()
        if self.param.momentum != 0:
            raise SolverConfigError(f"{self.source}: momentum cannot be used with RMSProp")
        if not 0 <= self.param.rms_decay <= 1:
            raise SolverConfigError(f"{self.source}: rms_decay must be in [0, 1], got "
                                    f"{self.param.rms_decay}")

    def compute_update(self, param_id: int, rate: float) -> None:
        diff = self.net.learnable_params[param_id].diff
        history = self.history_of(param_id)
        decay = np.float32(self.param.rms_decay)
        history *= decay
        history += (np.float32(1) - decay) * diff * diff
        denom = np.sqrt(history) + np.float32(self.param.delta)
        np.divide(diff, denom, out=diff)
        diff *= np.float32(rate)
