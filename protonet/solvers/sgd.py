"""SGD with momentum (Caffe's SGDSolver): the learning rate is folded into the history.

    history = momentum * history + local_rate * diff;  diff = history
"""
import numpy as np

from ..kernels.sgd import sgd_momentum_step
from .base import Solver


class SGDSolver(Solver):
    type = "SGD"

    def compute_update(self, param_id: int, rate: float) -> None:
        diff = self.net.learnable_params[param_id].diff
        history = self.history_of(param_id)
        history *= np.float32(self.param.momentum)
        history += np.float32(rate) * diff
        diff[...] = history

    def fused_step(self, param_id: int, decay: float, rate: float) -> int:
        blob = self.net.learnable_params[param_id]
        return sgd_momentum_step(blob.data.reshape(-1), blob.diff.reshape(-1),
                                 self.history_of(param_id).reshape(-1), np.float32(decay),
                                 np.float32(rate), np.float32(self.param.momentum))
