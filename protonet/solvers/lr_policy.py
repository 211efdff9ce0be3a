"""Caffe's learning-rate policies (SGDSolver::GetLearningRate), one small function each.

Each takes the SolverParameter, the iteration and the multistep position, and returns the rate.
"""
from __future__ import annotations

import math

from ..errors import SolverConfigError


def _fixed(p, it, step):
    return p.base_lr


def _step(p, it, step):
    return p.base_lr * p.gamma ** (it // p.stepsize)


def _exp(p, it, step):
    return p.base_lr * p.gamma ** it


def _inv(p, it, step):
    return p.base_lr * (1.0 + p.gamma * it) ** (-p.power)


def _multistep(p, it, step):
    return p.base_lr * p.gamma ** step


def _poly(p, it, step):
    return p.base_lr * (1.0 - it / p.max_iter) ** p.power


def _sigmoid(p, it, step):
    exponent = -p.gamma * (it - p.stepsize)
    if exponent > 700:   # exp overflows a double: the rate has fallen to 0, as in Caffe
        return 0.0
    return p.base_lr * (1.0 / (1.0 + math.exp(exponent)))


LR_POLICIES = {
    "fixed": _fixed, "step": _step, "exp": _exp, "inv": _inv,
    "multistep": _multistep, "poly": _poly, "sigmoid": _sigmoid,
}


# Policies Caffe's GetLearningRate CHECKs gamma >= 0 for (a negative one flips the rate's sign).
_GAMMA_POLICIES = ("step", "exp", "inv", "multistep", "sigmoid")


def check_policy(p, where: str) -> None:
    """Reject what Caffe rejects, at load time rather than at the first step."""
    if p.lr_policy not in LR_POLICIES:
        raise SolverConfigError(f"{where}: unknown lr_policy \"{p.lr_policy}\" "
                                f"(known: {', '.join(LR_POLICIES)})")
    if p.lr_policy in ("step", "sigmoid") and p.stepsize <= 0:
        raise SolverConfigError(f"{where}: lr_policy \"{p.lr_policy}\" needs stepsize > 0, "
                                f"got {p.stepsize}")
    for name, policies in (("gamma", _GAMMA_POLICIES), ("power", ("inv", "poly"))):
        if p.lr_policy in policies and not math.isfinite(getattr(p, name)):
            raise SolverConfigError(f"{where}: lr_policy \"{p.lr_policy}\" needs a finite "
                                    f"{name}, got {getattr(p, name)}")
    if p.lr_policy in _GAMMA_POLICIES and not p.gamma >= 0:
        raise SolverConfigError(f"{where}: lr_policy \"{p.lr_policy}\" needs gamma >= 0, got "
                                f"{p.gamma:g}")
    if p.lr_policy == "poly" and p.max_iter <= 0:
        raise SolverConfigError(f"{where}: lr_policy \"poly\" needs max_iter > 0")


def multistep_position(p, it: int, step: int) -> int:
    """Advance Caffe's current_step past every stepvalue already reached."""
    while step < len(p.stepvalue) and it >= p.stepvalue[step]:
        step += 1
    return step


def learning_rate(p, it: int, step: int, where: str = "<solver>") -> float:
    """The rate at iteration `it`; one that overflows or is not a number is an error naming
    the policy and its values (Caffe would train on with inf or NaN)."""
    try:
        rate = float(LR_POLICIES[p.lr_policy](p, it, step))
    except (OverflowError, ZeroDivisionError):
        rate = math.inf
    except TypeError:   # a negative number to a fractional power is complex (poly past max_iter)
        rate = math.nan
    if not math.isfinite(rate):
        raise SolverConfigError(
            f"{where}: lr_policy \"{p.lr_policy}\" gives a rate of {rate} at iteration {it} "
            f"(base_lr {p.base_lr:g}, gamma {p.gamma:g}, power {p.power:g}, stepsize "
            f"{p.stepsize}, max_iter {p.max_iter})")
    return rate
