"""pycaffe's multi-solver counters (solver_count, solver_rank, set_multiprocess). protonet
trains with one solver per process, so these only record what a script sets, as Caffe's
Caffe::set_solver_count and friends do when no parallel training runs.
"""
from __future__ import annotations

__all__ = ["solver_count", "set_solver_count", "solver_rank", "set_solver_rank",
           "set_multiprocess"]

_state = {"solver_count": 1, "solver_rank": 0, "multiprocess": False}


def solver_count() -> int:
    return _state["solver_count"]


def set_solver_count(count: int) -> None:
    _state["solver_count"] = int(count)


def solver_rank() -> int:
    return _state["solver_rank"]


def set_solver_rank(rank: int) -> None:
    _state["solver_rank"] = int(rank)


def set_multiprocess(multiprocess: bool) -> None:
    _state["multiprocess"] = bool(multiprocess)
