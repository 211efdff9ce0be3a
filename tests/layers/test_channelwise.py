"""ShuffleChannel (ShuffleNet), Axpy (SENet), BN (SegNet): values against numpy written from
the formulas, gradients."""
import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

from protonet import caffe_pb2
from protonet.errors import NetDefinitionError, ShapeError


@pytest.mark.parametrize("group, shape", [(3, (2, 6, 3, 5)), (2, (1, 4, 5)), (1, (2, 3, 2, 2))])
def test_shuffle_channel_reads_the_group_grid_by_columns(group, shape):
    layer, bottom, top = build(f'type: "ShuffleChannel" shuffle_channel_param {{ group: {group} }}',
                               [shape])
    x = bottom[0].data
    c = shape[1]
    expected = np.empty_like(x)
    for g in range(group):
        for k in range(c // group):
            expected[:, k * group + g] = x[:, g * (c // group) + k]
    np.testing.assert_array_equal(run_forward(layer, bottom, top)[0], expected)
    check_gradient(layer, bottom, top)


def test_shuffle_channel_group_must_divide_channels():
    with pytest.raises(ShapeError, match="multiple of group 4"):
        build('type: "ShuffleChannel" shuffle_channel_param { group: 4 }', [(1, 6, 2, 2)])


@pytest.mark.parametrize("a_shape", [(2, 3, 1, 1), (2, 3)])
def test_axpy_scales_x_per_channel_and_adds_y(a_shape):
    layer, bottom, top = build('type: "Axpy"', [a_shape, (2, 3, 4, 5), (2, 3, 4, 5)])
    a, x, y = (b.data.astype(np.float64) for b in bottom)
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0],
                               a.reshape(2, 3, 1, 1) * x + y, rtol=1e-5, atol=1e-6)
    check_gradient(layer, bottom, top)


def test_axpy_scale_must_match_channels():
    with pytest.raises(ShapeError, match="one value per sample and channel"):
        build('type: "Axpy"', [(2, 4, 1, 1), (2, 3, 4, 5), (2, 3, 4, 5)])


BN_FILLERS = ('scale_filler { type: "uniform" min: 0.5 max: 1.5 } '
              'shift_filler { type: "gaussian" std: 1 }')


def test_bn_learn_normalizes_with_the_batch_statistics_then_scales_and_shifts():
    layer, bottom, top = build(f'type: "BN" bn_param {{ {BN_FILLERS} }}', [(3, 4, 5, 2)],
                               n_top=3)
    x = bottom[0].data.astype(np.float64)
    mean = x.mean(axis=(0, 2, 3))
    var = (x ** 2).mean(axis=(0, 2, 3)) - mean ** 2
    scale, shift = (b.data.astype(np.float64).reshape(1, 4, 1, 1) for b in layer.blobs)
    expected = scale * (x - mean.reshape(1, 4, 1, 1)) / np.sqrt(var.reshape(1, 4, 1, 1) + 1e-9)
    y, m, v = run_forward(layer, bottom, top)
    np.testing.assert_allclose(y, expected + shift, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.ravel(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v.ravel(), var, rtol=1e-4, atol=1e-6)
    check_gradient(layer, bottom, top[:1], threshold=2e-3)


def test_bn_inference_is_scale_and_shift():
    layer, bottom, top = build(f'type: "BN" bn_param {{ bn_mode: INFERENCE {BN_FILLERS} }}',
                               [(2, 3, 4, 5)])
    scale, shift = (b.data.astype(np.float64).reshape(1, 3, 1, 1) for b in layer.blobs)
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0],
                               scale * bottom[0].data + shift, rtol=1e-6, atol=1e-6)
    check_gradient(layer, bottom, top)
    assert layer.blobs[0].shape == (1, 3, 1, 1)


def test_bn_statistics_tops_need_learn_mode():
    with pytest.raises(NetDefinitionError, match="need bn_mode LEARN"):
        build('type: "BN" bn_param { bn_mode: INFERENCE }', [(2, 3, 4, 5)], n_top=2)


@pytest.mark.parametrize("mode", ["LEARN", "INFERENCE"])
def test_bn_in_place_as_segnet_writes_it(mode):
    text = f'type: "BN" bn_param {{ bn_mode: {mode} {BN_FILLERS} }}'
    apart, bottom, top = build(text, [(2, 3, 4, 5)])
    expected = run_forward(apart, bottom, top)[0]
    layer, bottom, top = build(text, [(2, 3, 4, 5)], in_place=True)
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0], expected, rtol=1e-6)
    check_gradient(layer, bottom, top, threshold=2e-3)
