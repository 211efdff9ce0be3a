"""Solvers: each update rule step by step against its formula, lr policies, test passes,
snapshots (atomic, exact resume), Ctrl-C, non-finite losses."""
import math

import numpy as np
import pytest

import protonet
from protonet import caffe_pb2, prototxt
from protonet.errors import NonFiniteError, SolverConfigError
from protonet.solvers import get_solver, lr_policy

# Least squares: y = W x + b, loss = 1/(2N) sum (y - t)^2 (Caffe's solver tests use the same).
NET = """
name: "linreg"
layer { name: "data" type: "DummyData" top: "x" top: "t"
  dummy_data_param { shape { dim: 5 dim: 3 } shape { dim: 5 dim: 2 }
                     data_filler { type: "gaussian" std: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 }
                        bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
"""


def make_solver(tmp_path, extra="", net=NET, test=False):
    solver = caffe_pb2.SolverParameter()
    prototxt.parse_text(f"""
      base_lr: 0.05 lr_policy: "fixed" max_iter: 10 random_seed: 7 display: 0
      snapshot_prefix: "{tmp_path}/snap" """, solver)
    solver.MergeFrom(prototxt.parse_text(extra, caffe_pb2.SolverParameter()))
    prototxt.parse_text(net, solver.net_param)
    if test:
        solver.test_iter.append(3)
        solver.test_interval = 5
    return get_solver(solver)


def least_squares_grads(w, b, x, t):
    dy = (x @ w.T + b - t) / x.shape[0]
    return dy.T @ x, dy.sum(axis=0)


class Reference:
    """The update rules in float64, written from Caffe's documented formulas."""

    def __init__(self, kind, p):
        self.kind, self.p, self.state, self.t = kind, p, {}, 0

    def step(self, key, w, g, lr_mult, decay_mult):
        p = self.p
        g = g + p.weight_decay * decay_mult * w
        lr = p.base_lr * lr_mult
        s = self.state.setdefault(key, [np.zeros_like(w), np.zeros_like(w)])
        if self.kind == "SGD":
            s[0] = p.momentum * s[0] + lr * g
            return w - s[0]
        if self.kind == "Nesterov":
            prev = s[0].copy()
            s[0] = p.momentum * s[0] + lr * g
            return w - ((1 + p.momentum) * s[0] - p.momentum * prev)
        if self.kind == "AdaGrad":
            s[0] += g * g
            return w - lr * g / (np.sqrt(s[0]) + p.delta)
        if self.kind == "RMSProp":
            s[0] = p.rms_decay * s[0] + (1 - p.rms_decay) * g * g
            return w - lr * g / (np.sqrt(s[0]) + p.delta)
        if self.kind == "AdaDelta":
            s[0] = p.momentum * s[0] + (1 - p.momentum) * g * g
            u = g * np.sqrt((s[1] + p.delta) / (s[0] + p.delta))
            s[1] = p.momentum * s[1] + (1 - p.momentum) * u * u
            return w - lr * u
        if self.kind == "Adam":
            t = self.t + 1
            s[0] = p.momentum * s[0] + (1 - p.momentum) * g
            s[1] = p.momentum2 * s[1] + (1 - p.momentum2) * g * g
            corr = math.sqrt(1 - p.momentum2 ** t) / (1 - p.momentum ** t)
            return w - lr * corr * s[0] / (np.sqrt(s[1]) + p.delta)
        raise AssertionError(self.kind)


@pytest.mark.parametrize("kind, extra", [
    ("SGD", "momentum: 0.9 weight_decay: 0.01"),
    ("SGD", "momentum: 0 weight_decay: 0"),
    ("Nesterov", "momentum: 0.9 weight_decay: 0.01"),
    ("AdaGrad", "weight_decay: 0.01 delta: 1e-6"),
    ("RMSProp", "weight_decay: 0.01 rms_decay: 0.95 delta: 1e-6"),
    ("AdaDelta", "momentum: 0.95 weight_decay: 0.01 delta: 1e-6 base_lr: 1.0"),
    ("Adam", "momentum: 0.9 momentum2: 0.999 weight_decay: 0.01 delta: 1e-8"),
])
def test_update_rule_matches_caffe_formula(tmp_path, kind, extra):
    solver = make_solver(tmp_path, f'type: "{kind}" {extra}')
    assert solver.type == kind
    ref = Reference(kind, solver.param)
    w_blob, b_blob = solver.net.params["ip"]
    w, b = w_blob.data.astype(np.float64), b_blob.data.astype(np.float64)
    for it in range(5):
        solver.step(1)
        x = solver.net.blobs["x"].data.astype(np.float64)
        t = solver.net.blobs["t"].data.astype(np.float64)
        gw, gb = least_squares_grads(w, b, x, t)
        w, b = ref.step("w", w, gw, 1, 1), ref.step("b", b, gb, 2, 0)
        ref.t += 1
        np.testing.assert_allclose(w_blob.data, w, rtol=2e-4, atol=1e-6, err_msg=f"iter {it}")
        np.testing.assert_allclose(b_blob.data, b, rtol=2e-4, atol=1e-6, err_msg=f"iter {it}")
    assert solver.iter == 5


@pytest.mark.parametrize("extra", ["momentum: 0.9 weight_decay: 0.01",
                                   "momentum: 0.9 weight_decay: 0 iter_size: 2"])
def test_sgd_single_pass_step_is_bitwise_the_stepwise_one(tmp_path, extra, monkeypatch):
    """SGD's one-pass kernel (decay, momentum, data -= diff) rounds exactly as the numpy steps
    it replaces: the same weights, diffs and history to the last bit."""
    fused = make_solver(tmp_path, extra)
    fused.step(4)
    monkeypatch.setattr(protonet.solvers.sgd.SGDSolver, "fused_step",
                        protonet.solvers.base.Solver.fused_step)
    stepwise = make_solver(tmp_path, extra)
    stepwise.step(4)
    for a, b in zip(fused.net.learnable_params, stepwise.net.learnable_params):
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.diff, b.diff)
    for a, b in zip(fused.history, stepwise.history):
        np.testing.assert_array_equal(a, b)


def test_iter_size_accumulates_and_normalizes(tmp_path):
    # Constant data, so two half-steps with iter_size 2 equal one step with iter_size 1.
    net = NET.replace('data_filler { type: "gaussian" std: 1 }',
                      'data_filler { type: "constant" value: 0.5 }')
    a = make_solver(tmp_path, "momentum: 0.9 iter_size: 2", net=net)
    b = make_solver(tmp_path, "momentum: 0.9 iter_size: 1", net=net)
    a.step(3)
    b.step(3)
    np.testing.assert_allclose(a.net.params["ip"][0].data, b.net.params["ip"][0].data,
                               rtol=1e-5)


def test_clip_gradients_bounds_the_update(tmp_path):
    solver = make_solver(tmp_path, "momentum: 0 clip_gradients: 0.001 base_lr: 1")
    before = [b.data.copy() for b in solver.net.params["ip"]]
    solver.step(1)
    steps = [np.linalg.norm(b.data - w) for b, w in zip(solver.net.params["ip"], before)]
    # With lr 1 and lr_mult 2 on the bias, the step norm is at most 2 x the clip.
    assert math.hypot(*steps) <= 2 * 0.001 + 1e-7


@pytest.mark.parametrize("policy, extra, iteration, expected", [
    ("fixed", "", 100, 0.1),
    ("step", "gamma: 0.5 stepsize: 30", 65, 0.1 * 0.5 ** 2),
    ("exp", "gamma: 0.99", 10, 0.1 * 0.99 ** 10),
    ("inv", "gamma: 0.0001 power: 0.75", 1000, 0.1 * (1 + 0.0001 * 1000) ** -0.75),
    ("multistep", "gamma: 0.1 stepvalue: 10 stepvalue: 20", 25, 0.1 * 0.1 ** 2),
    ("poly", "power: 2 max_iter: 100", 25, 0.1 * (1 - 0.25) ** 2),
    ("sigmoid", "gamma: -0.1 stepsize: 50", 60, 0.1 / (1 + math.exp(0.1 * 10))),
])
def test_lr_policies(policy, extra, iteration, expected):
    p = caffe_pb2.SolverParameter()
    prototxt.parse_text(f'base_lr: 0.1 lr_policy: "{policy}" {extra}', p)
    step = lr_policy.multistep_position(p, iteration, 0)
    assert lr_policy.learning_rate(p, iteration, step) == pytest.approx(expected, rel=1e-6)


def test_bad_solver_configurations_are_named(tmp_path):
    with pytest.raises(SolverConfigError, match='unknown lr_policy "wavy"'):
        make_solver(tmp_path, 'lr_policy: "wavy"')
    with pytest.raises(SolverConfigError, match="base_lr must not be negative"):
        make_solver(tmp_path, "base_lr: -1")
    with pytest.raises(SolverConfigError, match='unknown solver type "Adamm"'):
        make_solver(tmp_path, 'type: "Adamm"')
    with pytest.raises(SolverConfigError, match="momentum cannot be used with AdaGrad"):
        make_solver(tmp_path, 'type: "AdaGrad" momentum: 0.9')


def test_test_pass_reports_the_mean_of_each_output_and_shares_weights(tmp_path):
    solver = make_solver(tmp_path, "momentum: 0.9", test=True)
    test_net = solver.test_nets[0]
    assert np.shares_memory(test_net.params["ip"][0].data, solver.net.params["ip"][0].data)
    scores = solver.test(0)
    assert set(scores) == {"loss"} and scores["loss"] > 0


def test_resume_is_exact(tmp_path):
    straight = make_solver(tmp_path / "a", "momentum: 0.9 type: \"Adam\"")
    straight.step(7)
    first = make_solver(tmp_path / "b", "momentum: 0.9 type: \"Adam\"")
    first.step(4)
    _, state = first.snapshot()
    resumed = make_solver(tmp_path / "b", "momentum: 0.9 type: \"Adam\" random_seed: 99")
    resumed.restore(state)
    assert resumed.iter == 4
    resumed.step(3)
    for a, b in zip(straight.net.learnable_params, resumed.net.learnable_params):
        assert np.array_equal(a.data, b.data)


def test_snapshot_files_are_caffe_formats(tmp_path):
    solver = make_solver(tmp_path, "momentum: 0.9")
    solver.step(2)
    model, state = solver.snapshot()
    assert model == f"{tmp_path}/snap_iter_2.caffemodel"
    assert state == f"{tmp_path}/snap_iter_2.solverstate"
    s = caffe_pb2.SolverState()
    s.ParseFromString(open(state, "rb").read())
    assert s.iter == 2 and s.learned_net == model and len(s.history) == 2
    net = caffe_pb2.NetParameter()
    net.ParseFromString(open(model, "rb").read())
    assert [lp.name for lp in net.layer if len(lp.blobs)] == ["ip"]


# The run is made to overflow; numpy's warning on the way is expected.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_nonfinite_loss_stops_with_iteration_and_layer(tmp_path):
    solver = make_solver(tmp_path, "base_lr: 1e30 momentum: 0")
    with pytest.raises(NonFiniteError, match=r"iteration \d+: loss is (nan|inf); first non-finite output: layer '(ip|loss)'"):
        solver.step(10)


# Adam divides the infinite moment by its square root: numpy warns on the way.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("extra, counted_by_kernel", [
    ("momentum: 0.9 weight_decay: 0.01", True),                                # SGD's pass
    ('momentum: 0.9 weight_decay: 0.01 regularization_type: "L1"', False),   # numpy steps
    ('type: "Adam" momentum: 0.9 momentum2: 0.999', False)])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_step_stops_on_a_parameter_the_update_left_nonfinite(tmp_path, extra, counted_by_kernel,
                                                             bad):
    """A gradient that turns one weight NaN or infinite (the loss still finite) stops
    step() after that update, naming the parameter, whether SGD's pass counted it or the
    weights are read again."""
    solver = make_solver(tmp_path, extra)
    solver.step(2)   # finite: no error
    bias = solver.net.params["ip"][1]
    solver.add_callback(lambda: None, lambda: bias.diff.__setitem__(1, bad))
    with pytest.raises(NonFiniteError, match=r"iteration 3: parameter ip\[1\] holds NaN or Inf "
                                             r"after the update"):
        solver.step(1)
    assert solver.iter == 3 and not np.isfinite(bias.data[1])
    assert solver._nonfinite_after_update[1] == (1 if counted_by_kernel else None)


def test_sgd_pass_counts_the_weights_it_leaves_nonfinite():
    from protonet.kernels.sgd import sgd_momentum_step
    n = 1 << 17   # the threads' compile as well as the serial one
    for size in (10, n):
        data = np.ones(size, np.float32)
        diff = np.zeros(size, np.float32)
        diff[[1, 3, size - 1]] = [np.inf, np.nan, -np.inf]
        history = np.zeros(size, np.float32)
        data[5] = np.float32(3e38)
        diff[5] = np.float32(-3e38)   # finite gradient, the sum overflows
        f32 = np.float32
        assert sgd_momentum_step(data, diff, history, f32(0), f32(1), f32(0.9)) == 4
        assert np.isfinite(data).sum() == size - 4
        diff[:] = 0
        data[:] = 1
        history[:] = 0
        assert sgd_momentum_step(data, diff, history, f32(0), f32(1), f32(0)) == 0
