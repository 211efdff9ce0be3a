"""Split, Flatten, Reshape, Concat, Slice, Eltwise, Silence, Parameter."""
import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

from protonet.errors import NetDefinitionError, ShapeError


def test_split_shares_the_bottoms_data_and_sums_diffs():
    layer, bottom, top = build('type: "Split"', [(2, 3)], n_top=3)
    for t in run_forward(layer, bottom, top):
        np.testing.assert_array_equal(t, bottom[0].data)
    # Caffe's ShareData: the tops are the bottom's memory, also after it grew.
    assert all(np.shares_memory(t.data, bottom[0].data) for t in top)
    bottom[0].reshape(4, 5)
    bottom[0].data[...] = np.arange(20).reshape(4, 5)
    run_forward(layer, bottom, top)
    for t in top:
        assert t.shape == (4, 5) and np.shares_memory(t.data, bottom[0].data)
        np.testing.assert_array_equal(t.data, bottom[0].data)
    assert not any(np.shares_memory(t.diff, bottom[0].diff) for t in top)
    check_gradient(layer, bottom, top)


@pytest.mark.parametrize("text, shape, expected", [
    ('type: "Flatten"', (2, 3, 4, 5), (2, 60)),
    ('type: "Flatten" flatten_param { axis: 2 }', (2, 3, 4, 5), (2, 3, 20)),
    ('type: "Flatten" flatten_param { axis: 1 end_axis: 2 }', (2, 3, 4, 5), (2, 12, 5)),
    ('type: "Reshape" reshape_param { shape { dim: 0 dim: -1 dim: 2 } }', (2, 3, 4), (2, 6, 2)),
    ('type: "Reshape" reshape_param { shape { dim: 3 dim: 4 } axis: 1 }', (2, 12), (2, 3, 4)),
])
def test_reshaping_layers(text, shape, expected):
    layer, bottom, top = build(text, [shape])
    assert top[0].shape == expected
    np.testing.assert_array_equal(run_forward(layer, bottom, top)[0].ravel(),
                                  bottom[0].data.ravel())
    check_gradient(layer, bottom, top)


def test_reshape_two_inferred_dims_is_an_error():
    with pytest.raises(NetDefinitionError, match="at most one"):
        build('type: "Reshape" reshape_param { shape { dim: -1 dim: -1 } }', [(2, 3)])


@pytest.mark.parametrize("text, shapes, axis", [
    ('type: "Concat"', [(2, 3, 4), (2, 1, 4), (2, 2, 4)], 1),
    ('type: "Concat" concat_param { axis: 0 }', [(1, 3), (2, 3)], 0),
    ('type: "Concat" concat_param { concat_dim: 2 }', [(2, 2, 1), (2, 2, 3)], 2),
])
def test_concat_forward_and_gradient(text, shapes, axis):
    layer, bottom, top = build(text, shapes)
    expected = np.concatenate([b.data for b in bottom], axis=axis)
    np.testing.assert_array_equal(run_forward(layer, bottom, top)[0], expected)
    check_gradient(layer, bottom, top)


def test_concat_shape_mismatch_names_both_shapes():
    with pytest.raises(ShapeError, match=r"\(2, 3, 5\) does not match .*\(2, 3, 4\)"):
        build('type: "Concat"', [(2, 3, 4), (2, 3, 5)])


@pytest.mark.parametrize("text, n_top, sizes", [
    ('type: "Slice" slice_param { slice_point: 1 slice_point: 3 }', 3, [1, 2, 2]),
    ('type: "Slice"', 5, [1] * 5),
])
def test_slice_forward_and_gradient(text, n_top, sizes):
    layer, bottom, top = build(text, [(2, 5, 3)], n_top=n_top)
    assert [t.shape[1] for t in top] == sizes
    outs = run_forward(layer, bottom, top)
    np.testing.assert_array_equal(np.concatenate(outs, axis=1), bottom[0].data)
    check_gradient(layer, bottom, top)


@pytest.mark.parametrize("text, op", [
    ('type: "Eltwise"', lambda a, b, c: a + b + c),
    ('type: "Eltwise" eltwise_param { operation: SUM coeff: 1 coeff: -2 coeff: 0.5 }',
     lambda a, b, c: a - 2 * b + 0.5 * c),
    ('type: "Eltwise" eltwise_param { operation: PROD }', lambda a, b, c: a * b * c),
    ('type: "Eltwise" eltwise_param { operation: MAX }', lambda a, b, c: np.maximum(np.maximum(a, b), c)),
])
def test_eltwise_forward_and_gradient(text, op):
    layer, bottom, top = build(text, [(2, 3, 4)] * 3)
    # Distinct values in all bottoms: MAX has no ties (kinks) to trip the finite differences.
    values = np.random.default_rng(0).permutation(72).reshape(3, 2, 3, 4) * 0.04 - 1.4
    for b, v in zip(bottom, values):
        b.data[...] = v
    a, b, c = [x.data.astype(np.float64) for x in bottom]
    expected = op(a, b, c)
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0], expected, rtol=1e-6, atol=1e-6)
    check_gradient(layer, bottom, top)


def test_silence_zeroes_diffs():
    layer, bottom, _ = build('type: "Silence"', [(2, 3)], n_top=0)
    bottom[0].diff[...] = 5
    layer.backward([], [True], bottom)
    assert not bottom[0].diff.any()


def test_parameter_outputs_its_learnable_blob_and_collects_its_gradient():
    layer, bottom, top = build('type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }',
                               [])
    assert layer.blobs[0].shape == (2, 3) and top[0].shape == (2, 3)
    layer.blobs[0].data[...] = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(run_forward(layer, bottom, top)[0], layer.blobs[0].data)
    check_gradient(layer, bottom, top)
