"""LRN, BatchNorm, Scale, Bias, MVN: values against straightforward numpy, gradients."""
from collections import namedtuple

import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

import protonet
from protonet import caffe_pb2, prototxt
from protonet.errors import NetDefinitionError, ShapeError

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


# -- references (float64, written from the formulas, not from the layer code) ------------------
def lrn_across(x, n, alpha=1.0, beta=0.75, k=1.0):
    half = (n - 1) // 2
    s = np.empty_like(x)
    for c in range(x.shape[1]):
        s[:, c] = (x[:, max(0, c - half):c + half + 1] ** 2).sum(axis=1)
    return x * (k + alpha / n * s) ** -beta


def lrn_within(x, n, alpha=1.0, beta=0.75):
    half = (n - 1) // 2
    padded = np.pad(x ** 2, ((0, 0), (0, 0), (half, half), (half, half)))
    s = np.empty_like(x)
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            s[:, :, i, j] = padded[:, :, i:i + n, j:j + n].sum(axis=(2, 3))
    return x * (1 + alpha / n ** 2 * s) ** -beta


def batch_norm(x, eps=1e-5, mean=None, var=None):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = [1] * x.ndim
    shape[1] = x.shape[1]
    if mean is None:
        mean = x.mean(axis=axes)
        var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)


def mvn(x, normalize_variance=True, across_channels=False, eps=1e-9):
    x = x.reshape(x.shape + (1,) * (4 - x.ndim))
    y = np.empty_like(x)
    for n in range(x.shape[0]):
        for c in range(1 if across_channels else x.shape[1]):
            where = (n,) if across_channels else (n, c)
            d = x[where] - x[where].mean()
            if normalize_variance:
                d = d / (np.sqrt((d ** 2).mean()) + eps)
            y[where] = d
    return y


def at(v, ndim, axis):
    """v broadcast into an ndim-array from `axis` (a scalar v anywhere)."""
    return v.reshape((1,) * axis + v.shape + (1,) * (ndim - axis - v.ndim))


Case = namedtuple("Case", "text shapes ref in_place grad", defaults=(True, True))
# ref(bottoms, blobs) -> top, both lists of float64 arrays. grad False: forward only.
UNIFORM = 'filler { type: "uniform" min: 0.5 max: 1.5 }'
GAUSS_BIAS = 'bias_filler { type: "gaussian" std: 1 }'
S = (2, 3, 4, 5)
CASES = [
    Case('type: "LRN"', [(2, 7, 3, 4)], lambda x, b: lrn_across(x[0], 5), False),
    Case('type: "LRN" lrn_param { local_size: 3 alpha: 0.5 beta: 0.8 k: 2 }', [S],
         lambda x, b: lrn_across(x[0], 3, 0.5, 0.8, 2.0), False),
    Case('type: "LRN" lrn_param { local_size: 5 alpha: 2 }', [S],  # window wider than C
         lambda x, b: lrn_across(x[0], 5, 2.0), False),
    Case('type: "LRN" lrn_param { local_size: 3 alpha: 2 beta: 0.6 norm_region: WITHIN_CHANNEL '
         'k: 7 }', [(2, 2, 5, 6)], lambda x, b: lrn_within(x[0], 3, 2.0, 0.6), False),
    Case('type: "LRN" lrn_param { local_size: 5 norm_region: WITHIN_CHANNEL }', [(1, 2, 6, 7)],
         lambda x, b: lrn_within(x[0], 5), False),
    # Planes as CIFAR-10 full's norm1 (window by window) and wider ones (phase planes), both
    # big enough for the threads.
    Case('type: "LRN" lrn_param { local_size: 3 alpha: 5e-05 norm_region: WITHIN_CHANNEL }',
         [(2, 8, 24, 24)], lambda x, b: lrn_within(x[0], 3, 5e-5), False, False),
    Case('type: "LRN" lrn_param { local_size: 3 alpha: 2 norm_region: WITHIN_CHANNEL }',
         [(2, 4, 33, 40)], lambda x, b: lrn_within(x[0], 3, 2.0), False, False),
    Case('type: "BatchNorm"', [S], lambda x, b: batch_norm(x[0])),
    Case('type: "BatchNorm" batch_norm_param { eps: 0.001 }', [(6, 4)],
         lambda x, b: batch_norm(x[0], 1e-3)),
    Case('type: "BatchNorm"', [(5, 2, 3)], lambda x, b: batch_norm(x[0])),
    Case(f'type: "Scale" scale_param {{ {UNIFORM} }}', [S],
         lambda x, b: x[0] * at(b[0], 4, 1)),
    Case(f'type: "Scale" scale_param {{ axis: 0 num_axes: 2 {UNIFORM} }}', [S],
         lambda x, b: x[0] * at(b[0], 4, 0)),
    Case(f'type: "Scale" scale_param {{ axis: 2 num_axes: -1 {UNIFORM} }}', [S],
         lambda x, b: x[0] * at(b[0], 4, 2)),
    Case(f'type: "Scale" scale_param {{ axis: -2 {UNIFORM} }}', [S],
         lambda x, b: x[0] * at(b[0], 4, 2)),
    Case(f'type: "Scale" scale_param {{ num_axes: 0 {UNIFORM} }}', [S],
         lambda x, b: x[0] * b[0]),
    Case(f'type: "Scale" scale_param {{ bias_term: true {UNIFORM} {GAUSS_BIAS} }}', [S],
         lambda x, b: x[0] * at(b[0], 4, 1) + at(b[1], 4, 1)),
    Case('type: "Scale"', [S, (3, 4)], lambda x, b: x[0] * at(x[1], 4, 1)),
    Case('type: "Scale" scale_param { axis: 0 }', [S, (2, 3)], lambda x, b: x[0] * at(x[1], 4, 0)),
    Case('type: "Scale" scale_param { axis: 3 }', [S, ()], lambda x, b: x[0] * x[1]),
    Case(f'type: "Scale" scale_param {{ axis: 2 bias_term: true {GAUSS_BIAS} }}', [S, (4, 5)],
         lambda x, b: x[0] * at(x[1], 4, 2) + at(b[0], 4, 2)),
    Case('type: "Bias" bias_param { filler { type: "gaussian" } }', [S],
         lambda x, b: x[0] + at(b[0], 4, 1)),
    Case('type: "Bias" bias_param { axis: 0 num_axes: -1 filler { type: "gaussian" } }', [S],
         lambda x, b: x[0] + b[0]),
    Case('type: "Bias" bias_param { num_axes: 0 filler { type: "gaussian" } }', [S],
         lambda x, b: x[0] + b[0]),
    Case('type: "Bias" bias_param { axis: 2 }', [S, (4, 5)], lambda x, b: x[0] + at(x[1], 4, 2)),
    Case('type: "MVN"', [S], lambda x, b: mvn(x[0])),
    Case('type: "MVN" mvn_param { across_channels: true }', [S],
         lambda x, b: mvn(x[0], across_channels=True)),
    Case('type: "MVN" mvn_param { normalize_variance: false }', [S],
         lambda x, b: mvn(x[0], normalize_variance=False)),
    Case('type: "MVN" mvn_param { normalize_variance: false across_channels: true }', [S],
         lambda x, b: mvn(x[0], False, True)),
    Case('type: "MVN" mvn_param { across_channels: true }', [(3, 6)],  # top (3, 6, 1, 1)
         lambda x, b: mvn(x[0], across_channels=True), False),
    # Caffe's backward drops eps (exact for eps = 0), so a large eps is checked forward only.
    Case('type: "MVN" mvn_param { eps: 0.01 }', [S], lambda x, b: mvn(x[0], eps=0.01),
         True, False),
]


def case_id(case):
    return f"{case.text} {case.shapes}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_normalization_forward(case):
    layer, bottom, top = build(case.text, case.shapes)
    xs = [b.data.astype(np.float64) for b in bottom]
    blobs = [b.data.astype(np.float64) for b in layer.blobs]
    expected = case.ref(xs, blobs)
    got = run_forward(layer, bottom, top)[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("case", [c for c in CASES if c.grad], ids=case_id)
def test_normalization_gradient(case):
    layer, bottom, top = build(case.text, case.shapes)
    check_gradient(layer, bottom, top)
    if case.in_place:
        layer, bottom, top = build(case.text, case.shapes, in_place=True)
        check_gradient(layer, bottom, top)


def test_normalization_in_place_forward_matches():
    for case in CASES:
        if case.in_place:
            layer, bottom, top = build(case.text, case.shapes)
            expected = run_forward(layer, bottom, top)[0]
            layer, bottom, top = build(case.text, case.shapes, in_place=True)
            np.testing.assert_array_equal(run_forward(layer, bottom, top)[0], expected)


# -- Scale and Bias blobs ---------------------------------------------------------------------
@pytest.mark.parametrize("text, shapes, blob_shapes", [
    ('type: "Scale"', [S], [(3,)]),
    ('type: "Scale" scale_param { axis: 0 num_axes: -1 }', [S], [S]),
    ('type: "Scale" scale_param { axis: 1 num_axes: 0 bias_term: true }', [S], [(), ()]),
    ('type: "Scale" scale_param { axis: -1 bias_term: true }', [S], [(5,), (5,)]),
    ('type: "Scale"', [S, (3,)], []),
    ('type: "Scale" scale_param { bias_term: true }', [S, (3, 4)], [(3, 4)]),
    ('type: "Bias" bias_param { axis: 1 num_axes: 2 }', [S], [(3, 4)]),
    ('type: "Bias"', [S, (3, 4, 5)], []),
])
def test_scale_and_bias_blob_shapes(text, shapes, blob_shapes):
    layer, _, _ = build(text, shapes)
    assert [b.shape for b in layer.blobs] == blob_shapes


def test_scale_default_fillers_are_one_and_zero():
    layer, bottom, top = build('type: "Scale" scale_param { bias_term: true }', [S])
    assert np.all(layer.blobs[0].data == 1) and np.all(layer.blobs[1].data == 0)
    np.testing.assert_array_equal(run_forward(layer, bottom, top)[0], bottom[0].data)


def test_scale_param_diffs_accumulate_and_second_bottom_diff_is_overwritten():
    layer, bottom, top = build(f'type: "Scale" scale_param {{ {UNIFORM} }}', [S])
    run_forward(layer, bottom, top)
    top[0].diff[...] = 1
    layer.blobs[0].diff[...] = 0
    layer.backward(top, [True], bottom)
    once = layer.blobs[0].diff.copy()
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * once, rtol=1e-6)

    layer, bottom, top = build('type: "Scale"', [S, (3,)])
    run_forward(layer, bottom, top)
    top[0].diff[...] = 1
    layer.backward(top, [True, True], bottom)
    once = bottom[1].diff.copy()
    layer.backward(top, [True, True], bottom)
    np.testing.assert_array_equal(bottom[1].diff, once)
    np.testing.assert_allclose(once, bottom[0].data.sum(axis=(0, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("text, shapes, message", [
    ('type: "Scale"', [S, (4,)], r"scale shape \(4,\) does not match bottom\[0\] shape"),
    ('type: "Scale" scale_param { axis: 2 }', [S, (4, 5, 6)], "does not match"),
    ('type: "Bias"', [S, (3, 5)], r"bias shape \(3, 5\) does not match"),
    ('type: "Scale" scale_param { axis: 3 num_axes: 2 }', [S], "extends past"),
    ('type: "Scale" scale_param { num_axes: -2 }', [S], "num_axes must be non-negative"),
    ('type: "Bias" bias_param { axis: 4 }', [S], "axis 4 out of range"),
])
def test_scale_and_bias_bad_shapes_name_the_layer(text, shapes, message):
    kind = text.split('"')[1]
    with pytest.raises((ShapeError, NetDefinitionError), match=message) as err:
        build(text, shapes)
    assert f"layer 'layer' ({kind})" in str(err.value)


# -- LRN --------------------------------------------------------------------------------------
def test_lrn_even_local_size_is_an_error():
    with pytest.raises(NetDefinitionError, match=r"layer 'layer' \(LRN\): local_size must be "
                                                 "odd, got 4"):
        build('type: "LRN" lrn_param { local_size: 4 }', [S])


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3)])
def test_lrn_needs_four_axes(shape):
    with pytest.raises(ShapeError, match=r"\(LRN\): bottom must be \(N, C, H, W\)"):
        build('type: "LRN"', [shape])


def test_lrn_refuses_in_place():
    with pytest.raises(NetDefinitionError, match="in place"):
        build('type: "LRN"', [S], in_place=True)


def caffe_within_channel_steps(x, dy, n, alpha, beta):
    """WITHIN_CHANNEL LRN forward and backward as Caffe runs its composition (Split, Power
    square, AVE Pooling, Power, Eltwise PROD), each step in float32 and its order: the pool's
    sums window by window, its backward scattered output by output. beta 0.75: the power
    correctly rounded."""
    f32 = np.float32
    alpha, neg_beta = f32(alpha), -f32(beta)
    _, _, height, width = x.shape
    pad = (n - 1) // 2

    def windows():
        for h in range(height):
            for w in range(width):
                hs, ws = h - pad, w - pad
                size = f32((min(hs + n, height + pad) - hs) * (min(ws + n, width + pad) - ws))
                yield (h, w, size, range(max(hs, 0), min(hs + n, height)),
                       range(max(ws, 0), min(ws + n, width)))

    square = x * x
    pool = np.zeros_like(x)
    for h, w, size, rows, cols in windows():
        for hh in rows:
            for ww in cols:
                pool[:, :, h, w] += square[:, :, hh, ww]
        pool[:, :, h, w] /= size
    base = pool * alpha + f32(1)
    power = (base.astype(np.float64) ** float(neg_beta)).astype(f32)
    y = x * power
    t = power / (pool * alpha + f32(1)) * (neg_beta * alpha) * (dy * x)
    pooled_diff = np.zeros_like(x)
    for h, w, size, rows, cols in windows():
        share = t[:, :, h, w] / size
        for hh in rows:
            for ww in cols:
                pooled_diff[:, :, hh, ww] += share
    return y, dy * power + (x * f32(2)) * pooled_diff


@pytest.mark.parametrize("shape, n, alpha", [
    ((3, 5, 7, 6), 3, 2.0),             # small: the serial compile
    ((4, 40, 9, 10), 5, 0.3),           # threads, several stacks of planes, a partial last one
    ((100, 4, 8, 8), 3, 5e-5),          # CIFAR-10 full's norm2 planes
    ((2, 3, 1, 1), 3, 1.0)])            # windows wider than the plane
def test_within_channel_lrn_is_caffes_composition_bit_for_bit(shape, n, alpha):
    layer, bottom, top = build('type: "LRN" lrn_param { local_size: %d alpha: %g '
                               'norm_region: WITHIN_CHANNEL }' % (n, alpha), [shape])
    rng = np.random.default_rng(3)
    bottom[0].data[...] = rng.standard_normal(shape, dtype=np.float32) * 3
    top[0].diff[...] = rng.standard_normal(shape, dtype=np.float32)
    layer.forward(bottom, top)
    layer.backward(top, [True], bottom)
    y, dx = caffe_within_channel_steps(bottom[0].data, top[0].diff, n, alpha, 0.75)
    np.testing.assert_array_equal(top[0].data, y)
    np.testing.assert_array_equal(bottom[0].diff, dx)


# -- BatchNorm --------------------------------------------------------------------------------
def bn_blobs(layer, mean_sum, var_sum, factor):
    for blob, value in zip(layer.blobs, (mean_sum, var_sum, [factor])):
        blob.data[...] = value


@pytest.mark.parametrize("text, phase", [
    ('type: "BatchNorm"', TEST),
    ('type: "BatchNorm" batch_norm_param { use_global_stats: true eps: 0.01 }', TRAIN),
])
def test_batch_norm_global_stats_forward_and_gradient(text, phase):
    layer, bottom, top = build(text, [S], phase=phase)
    assert layer.use_global_stats
    mean_sum, var_sum, factor = np.array([0.5, -1.0, 2.0]), np.array([2.0, 0.5, 4.0]), 2.5
    bn_blobs(layer, mean_sum, var_sum, factor)
    eps = layer.param.batch_norm_param.eps
    expected = batch_norm(bottom[0].data.astype(np.float64), eps, mean_sum / factor,
                          var_sum / factor)
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0], expected, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(layer.blobs[2].data, [factor])  # no update in global mode
    # Fixed statistics: no work arrays of the bottom's size (the batch's path needs two).
    assert layer.x_norm is None and layer.temp is None
    check_gradient(layer, bottom, top, check_params=False)
    layer, bottom, top = build(text, [S], phase=phase, in_place=True)
    bn_blobs(layer, mean_sum, var_sum, factor)
    check_gradient(layer, bottom, top, check_params=False)


def test_batch_norm_global_stats_with_zero_factor_use_zero_mean_and_variance():
    layer, bottom, top = build('type: "BatchNorm"', [S], phase=TEST)
    bn_blobs(layer, [1, 2, 3], [4, 5, 6], 0)
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0],
                               bottom[0].data / np.sqrt(np.float32(1e-5)), rtol=1e-5)


def test_batch_norm_use_global_stats_false_in_test_uses_the_batch():
    layer, bottom, top = build('type: "BatchNorm" batch_norm_param { use_global_stats: false }',
                               [S], phase=TEST)
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0],
                               batch_norm(bottom[0].data.astype(np.float64)), rtol=1e-5,
                               atol=2e-6)


def test_batch_norm_running_stats_after_two_forwards_follow_caffe():
    layer, bottom, top = build('type: "BatchNorm" batch_norm_param { '
                               'moving_average_fraction: 0.9 }', [S])
    assert not layer.use_global_stats
    assert [b.shape for b in layer.blobs] == [(3,), (3,), (1,)]
    assert all(not b.data.any() for b in layer.blobs)
    x1 = bottom[0].data.astype(np.float64)
    x2 = x1 * 1.5 + 0.3
    layer.forward(bottom, top)
    bottom[0].data[...] = x2
    layer.forward(bottom, top)
    m = 2 * 4 * 5
    mean = [x.mean(axis=(0, 2, 3)) for x in (x1, x2)]
    var = [x.var(axis=(0, 2, 3)) * m / (m - 1) for x in (x1, x2)]
    np.testing.assert_allclose(layer.blobs[2].data, [1 * 0.9 + 1], rtol=1e-6)
    np.testing.assert_allclose(layer.blobs[0].data, mean[0] * 0.9 + mean[1], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(layer.blobs[1].data, var[0] * 0.9 + var[1], rtol=1e-5)


def test_batch_norm_statistics_are_not_learned_by_the_net():
    net_text = ('layer { name: "data" type: "Input" top: "data" '
                'input_param { shape { dim: 4 dim: 3 dim: 2 dim: 2 } } }\n'
                'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" %s }\n'
                'layer { name: "loss" type: "EuclideanLoss" bottom: "bn" bottom: "data" '
                'top: "loss" }\n')
    net = protonet.Net(param=prototxt.parse_net_text(net_text % ""), phase=TRAIN)
    bn = net.layer_dict["bn"]
    assert bn.param_propagate_down == [False] * 3
    assert [spec.lr_mult for spec in bn.param.param] == [0, 0, 0]
    assert net.params_lr == [0, 0, 0]
    with pytest.raises(NetDefinitionError, match=r"'bn' \(BatchNorm\): param 1 has lr_mult 1"):
        protonet.Net(param=prototxt.parse_net_text(
            net_text % "param { lr_mult: 0 } param { lr_mult: 1 }"), phase=TRAIN)


def test_batch_norm_channel_change_is_an_error():
    layer, bottom, top = build('type: "BatchNorm"', [S])
    bottom[0].reshape(2, 4, 4, 5)
    with pytest.raises(ShapeError, match=r"\(BatchNorm\): bottom shape \(2, 4, 4, 5\) has 4 "
                                         "channels"):
        layer.reshape(bottom, top)


@pytest.mark.parametrize("beta", [0.75, 0.6, 1.0])
def test_lrn_scale_powers_are_float32_powers(beta):
    """LRN's scale^-beta: for Caffe's default beta 0.75 the correctly rounded float32 power
    (float64's, rounded once) bit for bit, in place of powf's one-ulp slips; for any other
    beta float32's pow itself (here within 2 ulp of the correctly rounded power)."""
    from protonet.kernels.normalization import powers
    rng = np.random.default_rng(5)
    # LRN's scales: 1 (k) plus up to large window sums, and ones just above 1 (alpha 5e-5)
    s = np.concatenate([1 + rng.random(50_000, dtype=np.float32) * 50,
                        1 + rng.random(50_000, dtype=np.float32) * np.float32(1e-4),
                        np.float32([1.0, 2.0, 3e4])])
    out = np.empty_like(s)
    powers(s, np.float32(-beta), out)
    correctly_rounded = (s.astype(np.float64) ** -beta).astype(np.float32)
    if beta == 0.75:
        np.testing.assert_array_equal(out, correctly_rounded)
    else:
        np.testing.assert_array_max_ulp(out, correctly_rounded, maxulp=2)
