"""Winograd F(2x2, 3x3) forward of Convolution: values against the direct loops on awkward
shapes, the planner's choice, and the transformed-weights cache following every way weights
change (net.params, an array kept from before, a solver step, copy_from)."""
import dataclasses

import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

import protonet
from protonet import caffe_pb2, prototxt
from protonet.kernels import winograd
from protonet.kernels.conv_plan import TUNING, plan_convolution
from protonet.layers import conv
from protonet.solvers import get_solver
from reference import vision

WINOGRAD = dataclasses.replace(TUNING, winograd_min_channels=1, winograd_min_tiles=1)
IM2COL = dataclasses.replace(TUNING, winograd_min_channels=1 << 30)
F = 'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 }'


def conv_text(outputs, pad=1, group=1, bias=True):
    return (f'type: "Convolution" convolution_param {{ num_output: {outputs} kernel_size: 3 '
            f'pad: {pad} group: {group} bias_term: {str(bias).lower()} {F} }}')


def reference(layer, x):
    b = layer.blobs[1].data.astype(np.float64) if layer.bias_term else None
    return vision.conv(x.astype(np.float64), layer.blobs[0].data.astype(np.float64), b,
                       (1, 1), (layer.ph, layer.pw), (1, 1), layer.group)


# (bottom shape, num_output, pad, group, bias): odd and even sides, 1x1 and 2x2 inputs with
# padding, pads 0-2, channel counts that are multiples of nothing, groups.
SHAPES = [
    ((1, 5, 7, 9), 7, 1, 1, True),
    ((3, 5, 8, 6), 3, 0, 1, True),
    ((2, 3, 5, 5), 11, 2, 1, False),
    ((1, 1, 1, 1), 2, 1, 1, True),
    ((2, 2, 2, 3), 1, 2, 1, True),
    ((1, 3, 3, 3), 5, 0, 1, True),
    ((2, 6, 9, 4), 4, 1, 2, True),
    ((1, 9, 6, 7), 6, 2, 3, False),
    ((2, 37, 13, 11), 29, 1, 1, True),
]


@pytest.mark.parametrize("phase", [caffe_pb2.TRAIN, caffe_pb2.TEST], ids=["TRAIN", "TEST"])
@pytest.mark.parametrize("shape,outputs,pad,group,bias", SHAPES)
def test_winograd_forward_matches_direct_loops(shape, outputs, pad, group, bias, phase):
    layer, bottom, top = build(conv_text(outputs, pad, group, bias), [shape], phase=phase)
    layer.tuning = WINOGRAD
    got = run_forward(layer, bottom, top)[0]
    assert layer.plan.winograd
    np.testing.assert_allclose(got, reference(layer, bottom[0].data), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,budget", [((5, 3, 7, 6), 16 * 3 * 7 * 8),
                                          ((2, 3, 13, 9), 16 * 5 * 7 * 2)],
                         ids=["images per block", "tile rows per block"])
def test_winograd_runs_in_blocks_with_the_same_results(shape, budget):
    """V and M hold a block at a time: whole images (2 of 5 here), or a few rows of tiles of
    one image (2 of 7); the outputs are those of the direct loops."""
    layer, bottom, top = build(conv_text(4), [shape])
    layer.tuning = dataclasses.replace(WINOGRAD, winograd_block_floats=budget)
    got = run_forward(layer, bottom, top)[0]
    assert len(layer.plan.winograd_blocks) > shape[0] // 2
    np.testing.assert_allclose(got, reference(layer, bottom[0].data), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("outputs,channels,group", [(5, 7, 1), (6, 4, 2), (64, 64, 1)])
def test_weight_transform_is_g_w_g_transposed_rounded_once(outputs, channels, group):
    """U in the padded layout convolve reads, each value (G w G^T)[i, j] computed in float64
    and rounded once (zeros, ones and tiny values among the weights)."""
    weights = np.random.default_rng(4).standard_normal(
        (outputs, channels // group, 3, 3)).astype(np.float32)
    weights.reshape(-1)[::7] = 0
    weights.reshape(-1)[1::11] = 1
    weights.reshape(-1)[2::13] = 1e-38
    shape = (group, outputs // group, channels // group)
    buffer = np.full(winograd.weights_size(*shape), np.nan, np.float32)
    u = winograd.transformed_weights(buffer, *shape)
    winograd.weight_transform(weights, u)
    expected = np.einsum("ia,kcab,jb->ijkc", winograd.G, weights.astype(np.float64),
                         winograd.G).reshape(16, *shape).astype(np.float32)
    np.testing.assert_array_equal(u, expected)


def test_winograd_on_a_vgg_sized_layer_stays_as_exact_as_im2col():
    """64 channels of 30 x 30 (the 16 matrices of V and M a multiple of 4 KB apart without
    the padding between them): Winograd against the float64 loops within the tolerance the
    im2col path meets."""
    layer, bottom, top = build(conv_text(64), [(1, 64, 30, 30)])
    bottom[0].data[...] = np.maximum(bottom[0].data, 0)
    expected = reference(layer, bottom[0].data)
    for tuning in (IM2COL, WINOGRAD):
        layer.tuning = tuning
        np.testing.assert_allclose(run_forward(layer, bottom, top)[0], expected, rtol=1e-5,
                                   atol=1e-5)
    assert layer.plan.winograd


def test_the_planner_takes_winograd_only_for_stride_1_undilated_3x3_with_enough_channels():
    c = TUNING.winograd_min_channels
    geometry = (3, 3, 1, 1, 1, 1, 1, 1)

    def plan(channels=c, outputs=c, group=1, geometry=geometry, batch=1, side=28,
             tuning=TUNING):
        kh, kw = geometry[:2]
        return plan_convolution(batch, channels * kh * kw, side * side, group, 2, tuning,
                                geometry=geometry, outputs=outputs, out_shape=(side, side))

    assert plan().winograd and plan().winograd_blocks == ((0, 1, 0, 14),)
    assert not plan(channels=c - 1).winograd and not plan(outputs=c - 1).winograd
    assert plan(channels=2 * c, outputs=2 * c, group=2).winograd
    assert not plan(channels=2 * c, outputs=2 * c, group=4).winograd
    for other in [(3, 3, 1, 1, 2, 2, 1, 1), (3, 3, 2, 2, 1, 1, 2, 2), (5, 5, 2, 2, 1, 1, 1, 1),
                  (3, 1, 1, 0, 1, 1, 1, 1), (1, 1, 0, 0, 1, 1, 1, 1)]:
        assert not plan(geometry=other).winograd
    # Too few tiles (GEMMs too narrow): 7 x 7 outputs of one image are 16 tiles.
    tiles = TUNING.winograd_min_tiles
    assert not plan(side=7, batch=tiles // 16 - 1).winograd
    assert plan(side=7, batch=tiles // 16).winograd
    # Deconvolution, and any caller giving no geometry, keeps im2col.
    assert not plan_convolution(1, c * 9, 784, 1, 2, TUNING).winograd
    # Tests and experiments force either path through the tuning.
    assert plan(channels=1, outputs=1, tuning=WINOGRAD).winograd
    assert not plan(tuning=IM2COL).winograd
    # V and M stay within the block budget, the blocks cover every row of tiles once: a big
    # image in a few rows of tiles at a time, small ones a few images at a time.
    for batch, side in [(3, 224), (64, 14)]:
        blocks = plan(batch=batch, side=side, channels=128, outputs=128).winograd_blocks
        covered = [(n, row) for n0, n1, first, rows in blocks for n in range(n0, n1)
                   for row in range(first, first + rows)]
        assert sorted(covered) == [(n, r) for n in range(batch) for r in range(side // 2)]
        for n0, n1, first, rows in blocks:
            floats = sum(winograd.scratch_sizes((n1 - n0) * rows * side // 2, 128, 128))
            assert floats <= TUNING.winograd_block_floats + 32 * winograd.SET_PAD


def test_the_planner_keeps_small_transformed_weights_and_shares_big_ones():
    def plan(channels, outputs, group=1, kept=TUNING.winograd_kept_floats):
        return plan_convolution(1, channels * 9, 28 * 28, group, 2,
                                dataclasses.replace(TUNING, winograd_kept_floats=kept),
                                geometry=(3, 3, 1, 1, 1, 1, 1, 1), outputs=outputs,
                                out_shape=(28, 28))

    # U is 16 floats per 9 weights: 16 x outputs x channels / group
    assert plan(64, 64, kept=16 * 64 * 64).winograd_weights_kept
    assert not plan(64, 65, kept=16 * 64 * 64).winograd_weights_kept
    assert plan(128, 64, group=2, kept=16 * 64 * 64).winograd_weights_kept
    # VGG-16's conv4 and conv5 layers share, CaffeNet's conv3 (256 -> 384) keeps its own.
    assert not plan(256, 512).winograd_weights_kept and not plan(512, 512).winograd_weights_kept
    assert plan(256, 384).winograd_weights_kept


THREE = """
layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 2 dim: 5 dim: 7 dim: 6 } } }
layer { name: "a" type: "Convolution" bottom: "x" top: "ya"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "b" type: "Convolution" bottom: "ya" top: "yb"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "c" type: "Convolution" bottom: "yb" top: "yc"
  convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
"""


def test_a_test_nets_big_layers_share_one_buffer_of_transformed_weights():
    """Layers a (U of 16 x 6 x 5 floats) and b (16 x 8 x 6) over the threshold transform into
    one shared buffer at each forward, c (16 x 3 x 8) keeps its own: the outputs are those of
    the same net keeping all three, bitwise, forward after forward, also after a weight
    changed through net.params."""
    from protonet import scratch
    net = protonet.Net(param=prototxt.parse_text(THREE, caffe_pb2.NetParameter()),
                       phase=protonet.TEST)
    net.blobs["x"].data[...] = np.random.default_rng(2).standard_normal((2, 5, 7, 6))
    keep_all, share = (dataclasses.replace(WINOGRAD, winograd_kept_floats=floats)
                       for floats in (1 << 30, 16 * 3 * 8))

    def forward(tuning):
        for name in "abc":
            net.layer_dict[name].tuning = tuning
        net.reshape()   # plans are made in reshape (a forward reshapes only on new shapes)
        net.forward()
        return [net.blobs[k].data.copy() for k in ("ya", "yb", "yc")]

    for step in range(4):
        if step == 2:
            net.params["b"][0].data[0, 0, 1, 1] += 1.0
        expected = forward(keep_all)
        assert all(net.layer_dict[n].winograd_weights is not None for n in "abc")
        for got, want in zip(forward(share), expected):
            np.testing.assert_array_equal(got, want)
        if step == 2:
            np.testing.assert_allclose(expected[1], reference(net.layer_dict["b"], expected[0]),
                                       rtol=1e-5, atol=1e-5)
    assert [net.layer_dict[n].plan.winograd_weights_kept for n in "abc"] == [False, False, True]
    assert net.layer_dict["a"].winograd_weights is None
    assert net.layer_dict["b"].winograd_weights is None
    assert net.layer_dict["c"].winograd_weights.size == winograd.weights_size(1, 3, 8)
    assert scratch._local.pool["conv.winograd_weights"].size >= winograd.weights_size(1, 8, 6)


NET = """
layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 2 dim: 5 dim: 7 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "y"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1
    weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 } } }
"""


@pytest.fixture
def winograd_everywhere(monkeypatch):
    """Every Convolution built in the test takes Winograd's path."""
    monkeypatch.setattr(conv._BaseConvolution, "tuning", WINOGRAD)


def forward_checked(net):
    net.blobs["x"].data[...] = np.random.default_rng(5).standard_normal(net.blobs["x"].shape)
    net.forward()
    layer = net.layer_dict["conv"]
    assert layer.plan.winograd
    y = net.blobs["y"].data.copy()
    np.testing.assert_allclose(y, reference(layer, net.blobs["x"].data), rtol=1e-5, atol=1e-5)
    return y


def test_weights_set_through_net_params_are_used_at_the_next_forward(winograd_everywhere):
    net = protonet.Net(param=prototxt.parse_text(NET, caffe_pb2.NetParameter()),
                       phase=protonet.TEST)
    before = forward_checked(net)
    net.params["conv"][0].data[...] = np.random.default_rng(9).standard_normal(
        net.params["conv"][0].data.shape)
    assert not np.allclose(forward_checked(net), before)
    # One element changed through an array kept from before the forwards (a finite-difference
    # check, a user's script): no access to the blob tells of it.
    kept = net.params["conv"][0].data
    after_first = forward_checked(net)
    kept[1, 2, 0, 2] += 0.5
    assert not np.allclose(forward_checked(net), after_first)


def test_weights_loaded_with_copy_from_are_used_at_the_next_forward(winograd_everywhere,
                                                                     tmp_path):
    param = prototxt.parse_text(NET, caffe_pb2.NetParameter())
    net = protonet.Net(param=param, phase=protonet.TEST)
    saved = forward_checked(net)
    net.save(str(tmp_path / "w.caffemodel"))
    net.params["conv"][0].data[...] *= -1
    assert not np.allclose(forward_checked(net), saved)
    net.copy_from(str(tmp_path / "w.caffemodel"))
    np.testing.assert_array_equal(forward_checked(net), saved)


def test_a_solver_step_reaches_the_test_nets_transformed_weights(winograd_everywhere, tmp_path):
    """The TEST net shares the TRAIN net's weights: after a step its Winograd forward uses the
    updated weights, not the ones transformed before."""
    solver = caffe_pb2.SolverParameter()
    # A small step: at 0.5 the weights grew to give outputs near 70, and one output near 0.15
    # summed from terms that large was 1.2e-5 off the float64 reference on one CPU (float32's
    # rounding of the terms, not the weights the forward used).
    prototxt.parse_text(f'base_lr: 0.01 lr_policy: "fixed" max_iter: 10 display: 0 '
                        f'test_iter: 1 test_interval: 100 snapshot_prefix: "{tmp_path}/s"',
                        solver)
    prototxt.parse_text(NET.replace('top: "x"', 'top: "x" include { phase: TEST }') + """
layer { name: "train_data" type: "DummyData" top: "x" top: "t" include { phase: TRAIN }
  dummy_data_param { shape { dim: 2 dim: 5 dim: 7 dim: 6 } shape { dim: 2 dim: 4 dim: 7 dim: 6 }
                     data_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss"
  include { phase: TRAIN } }
""", solver.net_param)
    solver = get_solver(solver)
    test_net = solver.test_nets[0]
    before = forward_checked(test_net)
    solver.step(1)
    assert solver.net.layer_dict["conv"].plan.winograd
    assert not np.allclose(forward_checked(test_net), before)


def test_winograd_forward_of_each_bottom_top_pair_and_the_gradients_after_it():
    """Several bottom/top pairs, each convolved by Winograd; the backward (im2col's) builds
    the columns the Winograd forward never made."""
    layer, bottom, top = build(conv_text(3), [(2, 4, 6, 7)] * 2, n_top=2)
    layer.tuning = WINOGRAD
    got = run_forward(layer, bottom, top)
    assert layer.plan.winograd
    for b, y in zip(bottom, got):
        np.testing.assert_allclose(y, reference(layer, b.data), rtol=1e-5, atol=1e-5)
    check_gradient(layer, bottom, top, max_elements=60)
