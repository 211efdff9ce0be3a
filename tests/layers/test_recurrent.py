"""RNN and LSTM: values against step-by-step float64 references, gradients through time,
state carried between batches, Caffe's blob order."""
import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

from protonet.blob import Blob

T, N, I, H, S = 4, 3, 5, 2, 3


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def inputs(cont=None, static=False, states=0, seed=0):
    g = np.random.default_rng(seed)
    arrays = [g.standard_normal((T, N, I)),
              np.array(cont if cont is not None else [[0] * N] + [[1, 0, 1]] * (T - 1))]
    if static:
        arrays.append(g.standard_normal((N, S)))
    arrays += [g.standard_normal((1, N, H)) for _ in range(states)]
    out = []
    for a in arrays:
        b = Blob(a.shape)
        b.data[...] = a
        out.append(b)
    return out


def rnn_reference(blobs, x, cont, static=None, h=None):
    w = [b.data.astype(np.float64) for b in blobs]
    w_xh, b_h = w[0], w[1]
    w_s = w[2] if static is not None else None
    w_hh, w_ho, b_o = w[-3:]
    h = np.zeros((x.shape[1], w_hh.shape[0])) if h is None else h
    out = []
    for t in range(x.shape[0]):
        a = (cont[t][:, None] * h) @ w_hh.T + x[t] @ w_xh.T + b_h
        if w_s is not None:
            a += static @ w_s.T
        h = np.tanh(a)
        out.append(np.tanh(h @ w_ho.T + b_o))
    return np.array(out), h


def lstm_reference(blobs, x, cont, static=None, h=None, c=None):
    w = [b.data.astype(np.float64) for b in blobs]
    w_xc, b_c, w_hc = w[0], w[1], w[-1]
    hidden = w_hc.shape[1]
    h = np.zeros((x.shape[1], hidden)) if h is None else h
    c = np.zeros_like(h) if c is None else c
    out = []
    for t in range(x.shape[0]):
        gates = (cont[t][:, None] * h) @ w_hc.T + x[t] @ w_xc.T + b_c
        if static is not None:
            gates += static @ w[2].T
        i, f, o = (sigmoid(gates[:, k * hidden:(k + 1) * hidden]) for k in range(3))
        g = np.tanh(gates[:, 3 * hidden:])
        c = cont[t][:, None] * f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.array(out), h, c


P = (f'recurrent_param {{ num_output: {H} weight_filler {{ type: "gaussian" std: 0.5 }} '
     'bias_filler { type: "gaussian" std: 0.5 } ')


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
@pytest.mark.parametrize("static", [False, True])
def test_recurrent_forward_and_gradient_through_time(kind, static):
    bottom = inputs(static=static)
    layer, bottom, top = build(f'type: "{kind}" {P} }}', None, bottoms=bottom)
    x, cont = bottom[0].data.astype(np.float64), bottom[1].data
    s = bottom[2].data.astype(np.float64) if static else None
    ref = rnn_reference if kind == "RNN" else lstm_reference
    expected = ref(layer.blobs, x, cont, s)[0]
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0], expected, rtol=1e-5,
                               atol=1e-6)
    # cont is 0 at the first step, so the state carried from earlier forwards drops out.
    check_gradient(layer, bottom, top)


def test_blob_shapes_follow_caffes_order():
    layer, _, _ = build(f'type: "LSTM" {P} }}', None, bottoms=inputs(static=True))
    assert [b.shape for b in layer.blobs] == [(4 * H, I), (4 * H,), (4 * H, S), (4 * H, H)]
    layer, _, _ = build(f'type: "RNN" {P} }}', None, bottoms=inputs())
    assert [b.shape for b in layer.blobs] == [(H, I), (H,), (H, H), (H, H), (H,)]


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_state_carries_over_to_the_next_batch(kind):
    """Two batches of T steps with cont 1 across the boundary equal one run of 2T steps."""
    first = inputs(cont=[[0] * N] + [[1] * N] * (T - 1), seed=1)
    layer, bottom, top = build(f'type: "{kind}" {P} }}', None, bottoms=first)
    y1 = run_forward(layer, bottom, top)[0]
    second = inputs(cont=[[1] * N] * T, seed=2)
    y2 = run_forward(layer, second, top)[0]
    x = np.concatenate([first[0].data, second[0].data]).astype(np.float64)
    cont = np.concatenate([first[1].data, second[1].data])
    ref = rnn_reference if kind == "RNN" else lstm_reference
    expected = ref(layer.blobs, x, cont)[0]
    np.testing.assert_allclose(np.concatenate([y1, y2]), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind, states", [("RNN", 1), ("LSTM", 2)])
def test_expose_hidden_takes_and_gives_the_states(kind, states):
    bottom = inputs(cont=[[1] * N] * T, states=states, seed=3)
    layer, bottom, top = build(f'type: "{kind}" {P} expose_hidden: true }}',
                               None, bottoms=bottom, n_top=1 + states)
    x, cont = bottom[0].data.astype(np.float64), bottom[1].data
    given = [b.data[0].astype(np.float64) for b in bottom[2:]]
    if kind == "RNN":
        out, h = rnn_reference(layer.blobs, x, cont, h=given[0])
        finals = [h]
    else:
        out, h, c = lstm_reference(layer.blobs, x, cont, h=given[0], c=given[1])
        finals = [h, c]
    got = run_forward(layer, bottom, top)
    np.testing.assert_allclose(got[0], out, rtol=1e-5, atol=1e-6)
    for blob, final in zip(got[1:], finals):
        np.testing.assert_allclose(blob[0], final, rtol=1e-5, atol=1e-6)
    check_gradient(layer, bottom, top)
