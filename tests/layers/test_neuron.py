"""Elementwise layers: values against numpy, gradients, in-place use."""
import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

from protonet import caffe_pb2


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# (prototxt, reference of x, in place allowed, gradient-check kink)
CASES = [
    ('type: "ReLU"', lambda x: np.maximum(x, 0), True, 0.0),
    ('type: "ReLU" relu_param { negative_slope: 0.1 }', lambda x: np.where(x > 0, x, 0.1 * x),
     True, 0.0),
    ('type: "Sigmoid"', sigmoid, True, None),
    ('type: "TanH"', np.tanh, True, None),
    ('type: "AbsVal"', np.abs, False, 0.0),
    ('type: "BNLL"', lambda x: np.log1p(np.exp(x)), False, None),
    ('type: "ELU" elu_param { alpha: 0.7 }', lambda x: np.where(x > 0, x, 0.7 * np.expm1(x)),
     True, 0.0),
    ('type: "Power" power_param { power: 2 scale: 0.5 shift: 2 }', lambda x: (2 + 0.5 * x) ** 2,
     False, None),
    ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.1 }', lambda x: 2 ** (0.1 + 0.5 * x),
     True, None),
    ('type: "Log" log_param { scale: 0.2 shift: 3 }', lambda x: np.log(3 + 0.2 * x), False, None),
    ('type: "PReLU"', lambda x: np.where(x > 0, x, 0.25 * x), False, 0.0),
    ('type: "Swish" swish_param { beta: 1.5 }', lambda x: x * sigmoid(1.5 * x), True, None),
]
SHAPE = (2, 3, 4, 5)


@pytest.mark.parametrize("case", CASES)
def test_neuron_forward(case):
    text, ref, _, _ = case
    layer, bottom, top = build(text, [SHAPE])
    x = bottom[0].data.astype(np.float64)
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0], ref(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_neuron_gradient(case):
    text, _, in_place, kink = case
    layer, bottom, top = build(text, [SHAPE])
    kw = {} if kink is None else {"kink": kink, "kink_range": 0.02}
    check_gradient(layer, bottom, top, **kw)
    if in_place:
        layer, bottom, top = build(text, [SHAPE], in_place=True)
        check_gradient(layer, bottom, top, **kw)


def test_threshold_forward():
    layer, bottom, top = build('type: "Threshold" threshold_param { threshold: 0.3 }', [SHAPE])
    x = bottom[0].data.copy()
    np.testing.assert_array_equal(run_forward(layer, bottom, top)[0], (x > 0.3).astype(float))


def test_dropout_scales_kept_units_in_train_and_is_identity_in_test():
    layer, bottom, top = build('type: "Dropout" dropout_param { dropout_ratio: 0.4 }',
                               [(50, 40)])
    x = bottom[0].data.copy()
    y = run_forward(layer, bottom, top)[0]
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.6, rtol=1e-6)
    assert 0.5 < kept.mean() < 0.7
    check_gradient(layer, bottom, top)
    test_layer, bottom, top = build('type: "Dropout" dropout_param { dropout_ratio: 0.4 }',
                                    [(50, 40)], phase=caffe_pb2.TEST)
    np.testing.assert_array_equal(run_forward(test_layer, bottom, top)[0], bottom[0].data)


def test_dropout_scale_train_false_scales_at_test_time_as_fast_rcnn():
    text = 'type: "Dropout" dropout_param { dropout_ratio: 0.4 scale_train: false }'
    layer, bottom, top = build(text, [(50, 40)])
    x = bottom[0].data.copy()
    y = run_forward(layer, bottom, top)[0]
    kept = y != 0
    np.testing.assert_array_equal(y[kept], x[kept])
    check_gradient(layer, bottom, top)
    test_layer, bottom, top = build(text, [(50, 40)], phase=caffe_pb2.TEST)
    np.testing.assert_allclose(run_forward(test_layer, bottom, top)[0], bottom[0].data * 0.6,
                               rtol=1e-6)


def test_prelu_channel_shared_has_one_slope():
    layer, bottom, top = build('type: "PReLU" prelu_param { channel_shared: true }', [SHAPE])
    assert layer.blobs[0].shape == (1,)
    check_gradient(layer, bottom, top, kink=0.0, kink_range=0.02)


def test_clip_forward_and_gradient_away_from_its_two_kinks():
    from protonet.blob import Blob
    x = np.random.default_rng(0).uniform(-1.5, 1.5, SHAPE).astype(np.float32)
    x[np.abs(x + 0.5) < 0.03] = 0.1
    x[np.abs(x - 0.7) < 0.03] = 0.1
    blob = Blob(SHAPE)
    blob.data[...] = x
    layer, bottom, top = build('type: "Clip" clip_param { min: -0.5 max: 0.7 }', None,
                               bottoms=[blob])
    np.testing.assert_array_equal(run_forward(layer, bottom, top)[0], np.clip(x, -0.5, 0.7))
    check_gradient(layer, bottom, top)
