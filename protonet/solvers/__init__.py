"""Solvers by Caffe type name, and pycaffe's constructors (SGDSolver, AdamSolver, ...)."""
from __future__ import annotations

from pathlib import Path

from .. import prototxt
from ..errors import SolverConfigError
from .adadelta import AdaDeltaSolver
from .adagrad import AdaGradSolver
from .adam import AdamSolver
from .base import Solver
from .nesterov import NesterovSolver
from .rmsprop import RMSPropSolver
from .sgd import SGDSolver

SOLVERS: dict[str, type[Solver]] = {cls.type: cls for cls in (
    SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver, AdaDeltaSolver, AdamSolver)}


def get_solver(path_or_param, *, train_net_file=None) -> Solver:
    """The solver a solver prototxt (or SolverParameter) asks for (pycaffe's get_solver)."""
    if isinstance(path_or_param, (str, Path)):
        source = str(path_or_param)
        param = prototxt.read_solver(path_or_param)
    else:
        source, param = "<solver>", prototxt.upgrade_solver(path_or_param)
    cls = SOLVERS.get(param.type)
    if cls is None:
        raise SolverConfigError(f'{source}: unknown solver type "{param.type}" '
                                f"(known: {', '.join(SOLVERS)})")
    return cls(param, source, train_net_file=train_net_file)


__all__ = ["SOLVERS", "Solver", "get_solver", "SGDSolver", "NesterovSolver", "AdaGradSolver",
           "RMSPropSolver", "AdaDeltaSolver", "AdamSolver"]
