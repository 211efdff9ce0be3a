"""Bad-input table: solver values Caffe's CHECKs reject (or that would make protonet train
nonsense, such as a negative learning rate, or crash mid-run), each refused when the solver is
built, before any training, with the solver file and the field named."""
from __future__ import annotations

import pytest

from fuzzing import TINY_TRAIN_NET
from harness import Case, check_case, ids
from protonet.errors import NetDefinitionError, PrototxtError, ProtonetError, SolverConfigError
from protonet.solvers import get_solver

NET = TINY_TRAIN_NET
BASE = ('net: "net.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 2\ndisplay: 0\n'
        "snapshot_after_train: false\n")


def _train(tmp):
    solver = get_solver(tmp / "solver.prototxt")
    try:
        solver.solve()
    finally:
        solver.close()


def solver_case(name, fields, words=(), error=SolverConfigError, base=BASE, net=NET):
    """BASE plus `fields` as solver.prototxt beside a tiny net; building the solver must fail,
    naming the solver file and `words`."""
    if "lr_policy" in fields:
        base = base.replace('lr_policy: "fixed"\n', "")
    return Case(name, _train, error, ("solver.prototxt",) + tuple(words),
                files={"solver.prototxt": base + fields, "net.prototxt": net})


S = SolverConfigError

POLICIES = [
    solver_case(f"{policy} with negative gamma", f'lr_policy: "{policy}" gamma: -0.5 '
                f"{extra}", [policy, "gamma"])
    for policy, extra in [("step", "stepsize: 1"), ("exp", ""), ("inv", "power: 0.75"),
                          ("multistep", "stepvalue: 1"), ("sigmoid", "stepsize: 1")]
] + [
    solver_case("step with NaN gamma", 'lr_policy: "step" gamma: nan stepsize: 1', ["gamma"]),
    solver_case("exp with infinite gamma", 'lr_policy: "exp" gamma: 1e39', ["gamma"]),
    solver_case("inv with infinite power", 'lr_policy: "inv" gamma: 0.1 power: -inf',
                ["power"]),
    solver_case("inv rate overflowing", 'lr_policy: "inv" gamma: 1e30 power: -20',
                ["inv", "rate of inf", "iteration 1"]),
    solver_case("sigmoid with stepsize 0", 'lr_policy: "sigmoid" gamma: 0.1 stepsize: 0',
                ["sigmoid", "stepsize"]),
    solver_case("sigmoid with negative stepsize", 'lr_policy: "sigmoid" gamma: 0.1 stepsize: -3',
                ["stepsize"]),
    solver_case("step with stepsize 0", 'lr_policy: "step" gamma: 0.1', ["stepsize"]),
    solver_case("step with negative stepsize", 'lr_policy: "step" gamma: 0.1 stepsize: -1',
                ["stepsize"]),
    solver_case("poly with max_iter 0", 'lr_policy: "poly" power: 1 max_iter: 0',
                ["poly", "max_iter"], base=BASE.replace("max_iter: 2\n", "")),
    solver_case("unknown policy", 'lr_policy: "Step"', ["Step", "known"]),
    solver_case("policy misspelt", 'lr_policy: "cosine"', ["cosine"]),
]

VALUES = [
    solver_case("negative max_iter", "", ["max_iter", "-1"],
                base=BASE.replace("max_iter: 2", "max_iter: -1")),
    solver_case("negative snapshot", "snapshot: -5", ["snapshot", "-5"]),
    solver_case("negative display", "", ["display"], base=BASE.replace("display: 0",
                                                                       "display: -1")),
    solver_case("negative test_interval", "test_interval: -1", ["test_interval"]),
    solver_case("test_iter 0", "test_iter: 0\ntest_interval: 1", ["test_iter"]),
    solver_case("negative test_iter", "test_iter: -2\ntest_interval: 1", ["test_iter"]),
    solver_case("test nets without test_interval", "test_iter: 1", ["test_interval"]),
    solver_case("test_state count", "test_iter: 1\ntest_interval: 1\ntest_state { stage: 'a' }"
                "\ntest_state { stage: 'b' }", ["test_state"]),
    solver_case("test_net without test_iter", 'test_net: "net.prototxt"\ntest_interval: 1',
                ["test_iter"]),
    solver_case("negative base_lr", "", ["base_lr"], base=BASE.replace("base_lr: 0.01",
                                                                       "base_lr: -0.01")),
    solver_case("regularization L3", 'regularization_type: "L3"', ["L3"]),
    solver_case("iter_size 0", "iter_size: 0", ["iter_size"]),
    solver_case("average_loss 0", "average_loss: 0", ["average_loss"]),
    solver_case("HDF5 snapshots", "snapshot_format: HDF5", ["HDF5"]),
    solver_case("no net", "", ["net"], base=BASE.replace('net: "net.prototxt"\n', "")),
    solver_case("two nets", 'train_net: "net.prototxt"', ["train_net"]),
]

RULES = [
    solver_case("Adam momentum2 1", 'type: "Adam"\nmomentum: 0.9\nmomentum2: 1',
                ["Adam", "momentum2"]),
    solver_case("Adam momentum2 1.5", 'type: "Adam"\nmomentum: 0.9\nmomentum2: 1.5',
                ["momentum2"]),
    solver_case("Adam negative momentum2", 'type: "Adam"\nmomentum2: -0.1', ["momentum2"]),
    solver_case("Adam momentum 1", 'type: "Adam"\nmomentum: 1', ["momentum"]),
    solver_case("Adam momentum nan", 'type: "Adam"\nmomentum: nan', ["momentum"]),
    solver_case("lowercase solver type", 'type: "adam"', ["adam", "Adam"]),
    solver_case("unknown solver type", 'type: "LBFGS"', ["LBFGS"]),
    solver_case("solver_type and type", 'type: "SGD"\nsolver_type: ADAM', ["solver_type"],
                error=PrototxtError),
]

FILES = [
    Case("net file missing", _train, PrototxtError, ("nope.prototxt", "no such file"),
         files={"solver.prototxt": BASE.replace("net.prototxt", "nope.prototxt")}),
    Case("net with a syntax error", _train, PrototxtError,
         ("net.prototxt:5:", "reading it as a net"),
         files={"solver.prototxt": BASE,
                "net.prototxt": NET.replace('top: "ip"\n', 'top "ip"\n')}),
    Case("solver with a syntax error", _train, PrototxtError,
         ("solver.prototxt:2:", "reading it as a solver"),
         files={"solver.prototxt": BASE.replace("base_lr: 0.01", "base_lr 0.01"),
                "net.prototxt": NET}),
    Case("a net given as the solver", lambda tmp: get_solver(tmp / "net.prototxt"),
         PrototxtError, ("net.prototxt:1:1", "reading it as a solver"),
         files={"net.prototxt": NET}),
    solver_case("net_param with a bad layer", 'net_param { layer { name: "r" type: "ReLU" '
                'bottom: "nowhere" top: "y" } }', ["nowhere"], error=NetDefinitionError,
                base=BASE.replace('net: "net.prototxt"\n', "")),
    Case("net with a negative gaussian std", _train, NetDefinitionError,
         ("net.prototxt", "'ip'", "std"),
         files={"solver.prototxt": BASE,
                "net.prototxt": NET.replace('type: "xavier"', 'type: "gaussian" std: -1')}),
    Case("net with uniform min > max", _train, NetDefinitionError,
         ("net.prototxt", "'ip'", "min"),
         files={"solver.prototxt": BASE,
                "net.prototxt": NET.replace('type: "xavier"', 'type: "uniform" min: 2 max: 1')}),
    solver_case("empty solver file", "", ["lr_policy"], base=""),
    solver_case("binary junk as solver", "", [], base="\x00\x01\x02", error=ProtonetError),
]

CASES = POLICIES + VALUES + RULES + FILES


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_solver(case, tmp_path):
    check_case(case, tmp_path)
