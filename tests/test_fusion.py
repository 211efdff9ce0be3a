"""The fused output pass (protonet/fusion.py, kernels/epilogue.py): a TEST net folds BatchNorm
and Scale into the convolution before them, any net fuses an in-place ReLU there, and a user
sees the same blobs, parameters and files as without it."""
import os
from pathlib import Path

import numpy as np
import pytest

import protonet
from protonet import prototxt
from protonet.kernels.epilogue import (NONE, channel_epilogue, channels_first_epilogue,
                                       rows_epilogue, sum_epilogue)

# conv1 -> bn1 -> scale1 -> relu1 in place; ip (bias off) -> bn_ip -> relu_ip (slope 0.1) in
# place; conv2 (no bias) -> scale2 (with bias) in place.
CHAIN_NET = """
name: "chain"
input: "data" input_shape { dim: 2 dim: 3 dim: 9 dim: 9 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 4 kernel_size: 3 bias_term: false group: 2 } }
layer { name: "scale2" type: "Scale" bottom: "conv2" top: "conv2" scale_param { bias_term: true } }
layer { name: "ip" type: "InnerProduct" bottom: "conv2" top: "ip"
  inner_product_param { num_output: 5 bias_term: false } }
layer { name: "bn_ip" type: "BatchNorm" bottom: "ip" top: "ip" }
layer { name: "relu_ip" type: "ReLU" bottom: "ip" top: "ip" relu_param { negative_slope: 0.1 } }
"""


def randomize(net, seed=0):
    """Random weights and BatchNorm statistics far from the identity (means off zero,
    variances 0.25-1.25, moving-average factor 0.7), so a wrong fold shows."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        for i, blob in enumerate(layer.blobs):
            if layer.type == "BatchNorm":
                blob.data[...] = (0.7 if i == 2 else rng.random(blob.shape) + 0.25 if i == 1
                                  else rng.standard_normal(blob.shape) * 0.3)
            elif blob.num_axes == 1:   # biases, Scale's gamma and beta
                blob.data[...] = rng.standard_normal(blob.shape) * 0.3 + (1 if i == 0 and
                                                                         layer.type == "Scale"
                                                                         else 0)
            else:
                fan_in = blob.count // blob.shape[0]
                blob.data[...] = rng.standard_normal(blob.shape) * np.sqrt(2.0 / fan_in)
    return net


def forward_both(net, x, **kwargs):
    """{blob: data} after a forward without fusion, and after one with it."""
    name = net.inputs[0]
    net.fuse = False
    net.forward(**{name: x}, **kwargs)
    plain = {k: b.data.copy() for k, b in net.blobs.items()}
    net.fuse = True
    net.forward(**{name: x}, **kwargs)
    return plain, {k: b.data.copy() for k, b in net.blobs.items()}


def worst_relative(plain, fused) -> float:
    """The largest difference over all blobs, relative to each blob's largest magnitude."""
    return max(float(np.abs(fused[k] - plain[k]).max() / max(np.abs(plain[k]).max(), 1e-30))
               for k in plain if plain[k].size)


def chain_net(phase=protonet.TEST, text=CHAIN_NET):
    return randomize(protonet.Net(param=prototxt.parse_net_text(text), phase=phase))


def data(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def absorbed_names(net):
    return sorted(net.layers[i].name for g in net._fusion.groups for i in g.absorbed)


def test_a_test_net_folds_batchnorm_scale_and_relu_into_the_layer_before_them():
    net = chain_net()
    assert absorbed_names(net) == ["bn1", "bn_ip", "relu1", "relu_ip", "scale1", "scale2"]
    plain, fused = forward_both(net, data((2, 3, 9, 9)))
    assert worst_relative(plain, fused) <= 1e-5
    # The ReLU with a negative slope is applied (negative outputs kept, scaled).
    assert (fused["ip"] < 0).any()


def test_the_fold_uses_the_parameters_as_they_are_at_each_forward():
    net = chain_net()
    x = data((2, 3, 9, 9))
    net.forward(data=x)
    net.params["bn1"][0].data[...] += 0.5          # net surgery after a fused forward
    net.params["bn1"][2].data[...] = 2.0
    net.params["scale1"][0].data[::2] *= -1
    net.params["conv1"][1].data[...] = 3.0
    net.params["scale2"][1].data[...] -= 1.0
    net.params["bn_ip"][1].data[...] *= 4
    plain, fused = forward_both(net, x)
    assert worst_relative(plain, fused) <= 1e-5
    # A change seen by one forward range and undone before another range runs again.
    conv1_to_relu1 = dict(start="conv1", end="relu1")
    net.forward(data=x, **conv1_to_relu1)
    mean = net.params["bn1"][0].data.copy()
    net.params["bn1"][0].data[...] += 1
    net.forward(data=x)
    net.params["bn1"][0].data[...] = mean
    plain, fused = forward_both(net, x, **conv1_to_relu1)
    assert worst_relative(plain, fused) <= 1e-5
    # copy_from after a fused forward takes effect too.
    other = chain_net()
    randomize(other, seed=5)
    other.fuse = False
    want = other.forward(data=x)["ip"].copy()
    weights = Path(os.environ.get("TMPDIR", "/tmp")) / f"fusion-{os.getpid()}.caffemodel"
    try:
        other.save(weights)
        net.copy_from(str(weights))
    finally:
        weights.unlink(missing_ok=True)
    got = net.forward(data=x)["ip"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_the_fold_leaves_params_and_the_saved_caffemodel_as_they_were(tmp_path):
    net = chain_net()
    before = {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}
    net.save(tmp_path / "before.caffemodel")
    net.forward(data=data((2, 3, 9, 9)))
    net.save(tmp_path / "after.caffemodel")
    assert (tmp_path / "before.caffemodel").read_bytes() == \
        (tmp_path / "after.caffemodel").read_bytes()
    for name, blobs in net.params.items():
        for old, blob in zip(before[name], blobs):
            np.testing.assert_array_equal(blob.data, old)


def test_blobs_a_user_can_read_are_never_fused_away():
    # bn1 writes its own top: conv1 must still hold the convolution's output. bn3 normalizes
    # with the batch's statistics: nothing fixed to fold. (A layer reading conv2 beside an
    # in-place bn2 is refused when the net is built, as by Caffe: test_net.py.)
    text = """
    input: "data" input_shape { dim: 2 dim: 3 dim: 8 dim: 8 }
    layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
      convolution_param { num_output: 4 kernel_size: 3 } }
    layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "bn1" }
    layer { name: "conv2" type: "Convolution" bottom: "bn1" top: "conv2"
      convolution_param { num_output: 4 kernel_size: 1 } }
    layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3"
      convolution_param { num_output: 4 kernel_size: 1 } }
    layer { name: "bn3" type: "BatchNorm" bottom: "conv3" top: "conv3"
      batch_norm_param { use_global_stats: false } }
    """
    net = chain_net(text=text)
    assert absorbed_names(net) == []
    plain, fused = forward_both(net, data((2, 3, 8, 8)))
    for name in plain:
        np.testing.assert_array_equal(fused[name], plain[name])


def test_a_partial_forward_or_a_hook_sees_every_layer_step():
    net = chain_net()
    x = data((2, 3, 9, 9))
    # Up to bn1: the blob holds the BatchNorm output, not the scaled and rectified one.
    plain, fused = forward_both(net, x, end="bn1")
    np.testing.assert_array_equal(fused["conv1"], plain["conv1"])
    assert (fused["conv1"] < 0).any()
    seen = []
    net.before_forward(seen.append)
    net.forward(data=x)
    assert seen == list(range(len(net.layers)))


def test_training_nets_never_fold_but_fuse_relu_bit_for_bit_forward_and_backward():
    text = CHAIN_NET.replace(
        'input: "data" input_shape { dim: 2 dim: 3 dim: 9 dim: 9 }',
        'input: "data" input_shape { dim: 2 dim: 3 dim: 9 dim: 9 }\n'
        'input: "target" input_shape { dim: 2 dim: 4 }') + """
    layer { name: "ip2" type: "InnerProduct" bottom: "ip" top: "ip2"
      inner_product_param { num_output: 4 } }
    layer { name: "relu2" type: "ReLU" bottom: "ip2" top: "ip2" }
    layer { name: "loss" type: "EuclideanLoss" bottom: "ip2" bottom: "target" top: "loss" }
    """
    for phase in (protonet.TRAIN, protonet.TEST):   # a TEST net with a loss takes backward too
        net = chain_net(phase, text)
        assert all(g.batchnorm is None and g.scale is None for g in net._fusion.groups)
        # Only relu2 follows its producer directly once nothing folds.
        assert absorbed_names(net) == ["relu2"]
        x, target = data((2, 3, 9, 9)), data((2, 4), seed=2)
        results = []
        for fuse in (False, True):
            randomize(net)   # the same start: TRAIN's BatchNorm updates its statistics
            net.fuse = fuse
            net.clear_param_diffs()
            net.forward(data=x, target=target)
            net.backward()
            results.append(({k: b.data.copy() for k, b in net.blobs.items()},
                            {k: b.diff.copy() for k, b in net.blobs.items()},
                            [b.diff.copy() for b in net.learnable_params],
                            [b.data.copy() for b in net.params["bn1"]]))
        for plain, fused in zip(*results):
            for a, b in zip(plain.values() if isinstance(plain, dict) else plain,
                            fused.values() if isinstance(fused, dict) else fused):
                np.testing.assert_array_equal(b, a)


PRODUCERS = [
    'type: "Convolution" convolution_param { num_output: 6 kernel_size: 3 pad: 1 }',
    'type: "Convolution" convolution_param { num_output: 6 kernel_size: 3 group: 3 }',
    'type: "Deconvolution" convolution_param { num_output: 4 kernel_size: 2 stride: 2 }',
    'type: "ConvolutionDepthwise" convolution_param { num_output: 3 kernel_size: 3 }',
    'type: "InnerProduct" inner_product_param { num_output: 7 }',
]


@pytest.mark.parametrize("producer", PRODUCERS)
@pytest.mark.parametrize("batch", [1, 16])
def test_every_producer_folds_batchnorm_scale_relu_within_1e5(producer, batch):
    text = f"""
    input: "data" input_shape {{ dim: {batch} dim: 3 dim: 7 dim: 7 }}
    layer {{ name: "p" bottom: "data" top: "p" {producer} }}
    layer {{ name: "bn" type: "BatchNorm" bottom: "p" top: "p" }}
    layer {{ name: "scale" type: "Scale" bottom: "p" top: "p" scale_param {{ bias_term: true }} }}
    layer {{ name: "relu" type: "ReLU" bottom: "p" top: "p" }}
    """
    net = chain_net(text=text)
    assert absorbed_names(net) == ["bn", "relu", "scale"]
    plain, fused = forward_both(net, data((batch, 3, 7, 7)))
    assert worst_relative(plain, fused) <= 1e-5


@pytest.mark.parametrize("producer", PRODUCERS)
@pytest.mark.parametrize("slope", [0, 0.2])
def test_fused_relu_matches_the_separate_layer_bit_for_bit(producer, slope):
    text = f"""
    force_backward: true
    input: "data" input_shape {{ dim: 3 dim: 3 dim: 7 dim: 7 }}
    layer {{ name: "p" bottom: "data" top: "p" {producer} }}
    layer {{ name: "relu" type: "ReLU" bottom: "p" top: "p" relu_param {{ negative_slope: {slope} }} }}
    """
    for phase in (protonet.TRAIN, protonet.TEST):
        net = chain_net(phase, text)
        assert absorbed_names(net) == ["relu"]
        assert_fused_bit_for_bit(net, data((3, 3, 7, 7)), "p")


def assert_fused_bit_for_bit(net, x, name):
    """A forward and backward (top diff 1 on blob `name`) with fusion off and on give the same
    top, data diff and parameter diffs, bit for bit; the ReLU met inputs on both sides of 0."""
    outs = []
    for fuse in (False, True):
        net.fuse = fuse
        net.clear_param_diffs()
        top = net.forward(data=x)[name].copy()
        assert (top <= 0).any() and (top > 0).any()
        dx = net.backward(**{name: np.ones_like(top)})["data"].copy()
        outs.append((top, dx, [b.diff.copy() for b in net.learnable_params]))
    np.testing.assert_array_equal(outs[1][0], outs[0][0])
    np.testing.assert_array_equal(outs[1][1], outs[0][1])
    for a, b in zip(outs[0][2], outs[1][2]):
        np.testing.assert_array_equal(b, a)


# Two convolutions summed by an Eltwise (ResNet's shortcut), then what follows the sum in
# place; the sum's bottoms from layers so that backward reaches both.
ELTWISE_NET = """
force_backward: true
input: "data" input_shape {{ dim: 2 dim: 3 dim: 6 dim: 6 }}
layer {{ name: "a" type: "Convolution" bottom: "data" top: "a"
  convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 }} }}
layer {{ name: "b" type: "Convolution" bottom: "data" top: "b"
  convolution_param {{ num_output: 4 kernel_size: 1 }} }}
{extra_bottom}
layer {{ name: "sum" type: "Eltwise" {bottoms} top: "sum" {param} }}
{after}
"""
RELU_AFTER_SUM = 'layer { name: "relu" type: "ReLU" bottom: "sum" top: "sum" }'
THIRD = """layer { name: "c" type: "Convolution" bottom: "data" top: "c"
  convolution_param { num_output: 4 kernel_size: 1 } }"""


@pytest.mark.parametrize("bottoms, param", [
    (2, ""), (2, "eltwise_param { coeff: 1 coeff: -0.5 }"), (3, "")])
def test_an_eltwise_sum_fuses_its_relu_bit_for_bit_forward_and_backward(bottoms, param):
    text = ELTWISE_NET.format(
        extra_bottom=THIRD if bottoms == 3 else "", param=param, after=RELU_AFTER_SUM,
        bottoms=" ".join(f'bottom: "{n}"' for n in "abc"[:bottoms]))
    for phase in (protonet.TRAIN, protonet.TEST):
        net = chain_net(phase, text)
        assert absorbed_names(net) == ["relu"]
        assert_fused_bit_for_bit(net, data((2, 3, 6, 6)), "sum")


def test_an_eltwise_sum_folds_batchnorm_scale_relu_after_it_within_1e5():
    text = ELTWISE_NET.format(extra_bottom="", param="", bottoms='bottom: "a" bottom: "b"',
                              after="""
    layer { name: "bn" type: "BatchNorm" bottom: "sum" top: "sum" }
    layer { name: "scale" type: "Scale" bottom: "sum" top: "sum" scale_param { bias_term: true } }
    """ + RELU_AFTER_SUM).replace("force_backward: true", "")
    net = chain_net(text=text)
    assert absorbed_names(net) == ["bn", "relu", "scale"]
    plain, fused = forward_both(net, data((2, 3, 6, 6)))
    assert worst_relative(plain, fused) <= 1e-5


def test_eltwise_product_and_max_keep_their_relu_as_a_layer():
    for operation in ("PROD", "MAX"):
        text = ELTWISE_NET.format(extra_bottom="", bottoms='bottom: "a" bottom: "b"',
                                  param=f"eltwise_param {{ operation: {operation} }}",
                                  after=RELU_AFTER_SUM)
        assert absorbed_names(chain_net(text=text)) == []


def test_epilogue_kernels_against_numpy():
    rng = np.random.default_rng(3)
    y = rng.standard_normal((2, 5, 11)).astype(np.float32)
    scale = rng.standard_normal(5).astype(np.float32)
    shift = rng.standard_normal(5).astype(np.float32)
    slope = np.float32(0.3)
    affine = y * scale[:, None] + shift[:, None]
    want = np.where(affine > 0, affine, affine * slope)
    got = y.copy()
    channel_epilogue(got, scale, shift, True, slope)
    np.testing.assert_array_equal(got, want)
    got = y.copy()   # a bias alone: numpy's y + b, bit for bit
    channel_epilogue(got, NONE, shift, False, np.float32(0))
    np.testing.assert_array_equal(got, y + shift[:, None])
    y2 = np.ascontiguousarray(y.transpose(1, 0, 2))   # the GEMM's (M, N, P)
    out = np.empty_like(y)
    channels_first_epilogue(y2, out, scale, shift, True, slope)
    np.testing.assert_array_equal(out, want)
    channels_first_epilogue(y2, out, NONE, NONE, False, np.float32(0))
    np.testing.assert_array_equal(out, y)
    other = rng.standard_normal((2, 5, 11)).astype(np.float32)   # an Eltwise SUM's
    total = y + other
    sum_epilogue(y, other, out, scale, shift, True, slope)
    np.testing.assert_array_equal(
        out, np.where(total * scale[:, None] + shift[:, None] > 0,
                      total * scale[:, None] + shift[:, None],
                      (total * scale[:, None] + shift[:, None]) * slope))
    got = y.copy()   # in place on a bottom, nothing fused: numpy's sum, bit for bit
    sum_epilogue(got, other, got, NONE, NONE, False, np.float32(0))
    np.testing.assert_array_equal(got, total)
    rows = np.ascontiguousarray(y[:, :, 0])   # an InnerProduct's (N, M)
    got = rows.copy()
    rows_epilogue(got, scale, shift, True, slope)
    np.testing.assert_array_equal(got, want[:, :, 0])


def test_fuse_off_runs_every_layer(monkeypatch):
    monkeypatch.setenv("PROTONET_FUSE", "0")
    net = chain_net()
    assert not net.fuse
    ran = []
    for layer in net.layers:
        original = layer.forward

        def spy(bottom, top, original=original, name=layer.name):
            ran.append(name)
            original(bottom, top)
        layer.forward = spy
    net.forward(data=data((2, 3, 9, 9)))
    assert "bn1" in ran and "relu1" in ran
    ran.clear()
    net.fuse = True
    net.forward(data=data((2, 3, 9, 9)))
    assert "bn1" not in ran and "relu1" not in ran and "conv1" in ran


@pytest.mark.parametrize("model, folded", [("resnet50", 53), ("mobilenet_v1", 27)])
def test_zoo_nets_fold_every_batchnorm_within_1e5(real_models, model, folded):
    net = randomize(protonet.Net(str(real_models / f"{model}.prototxt"), protonet.TEST))
    groups = net._fusion.groups
    assert sum(g.batchnorm is not None for g in groups) == folded
    assert sum(g.scale is not None for g in groups) == folded
    shape = net.blobs[net.inputs[0]].shape
    plain, fused = forward_both(net, data(shape))
    assert worst_relative(plain, fused) <= 1e-5


@pytest.mark.parametrize("path, channels, outputs, kernel", [
    # conv_plan's choice for these shapes: Winograd (3x3 stride 1, 32 channels in and out,
    # 64 output tiles), the direct kernel (K = 8 x 5 x 5 >= 128, 16 outputs, 64 pixels).
    ("winograd", 32, 32, 3), ("direct", 8, 16, 5)])
@pytest.mark.parametrize("fold", [True, False])
def test_convolutions_adding_their_own_bias_apply_the_fused_pass(path, channels, outputs,
                                                                 kernel, fold):
    text = f"""
    input: "data" input_shape {{ dim: 4 dim: {channels} dim: 8 dim: 8 }}
    layer {{ name: "p" type: "Convolution" bottom: "data" top: "p"
      convolution_param {{ num_output: {outputs} kernel_size: {kernel} pad: {kernel // 2} }} }}
    """ + ("""
    layer { name: "bn" type: "BatchNorm" bottom: "p" top: "p" }
    layer { name: "scale" type: "Scale" bottom: "p" top: "p" scale_param { bias_term: true } }
    """ if fold else "") + """
    layer { name: "relu" type: "ReLU" bottom: "p" top: "p" relu_param { negative_slope: 0.1 } }
    """
    net = chain_net(text=text)
    assert getattr(net.layers[1].plan, path)
    assert absorbed_names(net) == (["bn", "relu", "scale"] if fold else ["relu"])
    plain, fused = forward_both(net, data((4, channels, 8, 8)))
    if fold:
        assert worst_relative(plain, fused) <= 1e-5
    else:
        np.testing.assert_array_equal(fused["p"], plain["p"])
