"""ONNX export: ONNX Runtime's outputs match protonet's for deploy nets with random weights,
blob by blob; layers without an ONNX equivalent are named; the CLI writes the file."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

import protonet
from protonet import prototxt
from protonet.errors import ProtonetError
from protonet.export.onnx import export_onnx

ROOT = Path(__file__).resolve().parents[1]


def random_net(param, seed=1701):
    """The net in TEST phase, batch 1, every parameter (biases too) random."""
    protonet.set_random_seed(seed)
    net = protonet.Net(param=param, phase=protonet.TEST)
    for name in net.inputs:
        net.blobs[name].reshape(1, *net.blobs[name].shape[1:])
    net.reshape()
    g = np.random.default_rng(seed)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = g.standard_normal(blob.shape) * (1.0 / np.sqrt(blob.count /
                                                                            blob.shape[0]))
    return net


def assert_onnx_matches(net, tmp_path, rtol=1e-4, feed=None):
    g = np.random.default_rng(0)
    feed = feed or {n: g.standard_normal(net.blobs[n].shape).astype(np.float32)
                    for n in net.inputs}
    net.forward(**feed)
    export_onnx(net, tmp_path / "net.onnx")
    model = onnx.load(tmp_path / "net.onnx")
    produced = {o for node in model.graph.node for o in node.output}
    names = [b for b in net.blobs if b in produced and b not in net.outputs]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(b, onnx.TensorProto.FLOAT,
                                                                 None) for b in names)
    session = onnxruntime.InferenceSession(model.SerializeToString())
    wanted = list(net.outputs) + names
    for name, value in zip(wanted, session.run(wanted, feed)):
        ours = net.blobs[name].data
        scale = max(float(np.abs(ours).max()), 1e-12)
        assert value.shape == ours.shape, name
        assert float(np.abs(value - ours).max()) / scale < rtol, name
    return wanted


def test_lenet_matches_onnx_runtime(tmp_path):
    net = random_net(prototxt.read_net(ROOT / "models/lenet.prototxt"))
    checked = assert_onnx_matches(net, tmp_path)
    assert {"conv1", "pool2", "ip1", "ip2", "prob"} <= set(checked)


@pytest.mark.parametrize("path", ["examples/cifar10/cifar10_quick.prototxt",
                                  "models/bvlc_alexnet/deploy.prototxt",
                                  "models/bvlc_googlenet/deploy.prototxt"])
def test_caffe_deploy_nets_match_onnx_runtime(path, caffe_models, tmp_path):
    net = random_net(prototxt.read_net(caffe_models / path))
    checked = assert_onnx_matches(net, tmp_path)
    assert len(checked) > 5


def test_caffe_pooling_rounding_padding_and_other_layers_match(tmp_path):
    """Ceil-rounded max/average pooling with padding (the overhang Caffe does not count),
    BatchNorm + Scale, PReLU, Eltwise, Slice, Concat, Deconvolution."""
    net = random_net(prototxt.parse_net_text("""
        input: "x" input_shape { dim: 1 dim: 4 dim: 9 dim: 10 }
        layer { name: "mp" type: "Pooling" bottom: "x" top: "mp"
                pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
        layer { name: "ap" type: "Pooling" bottom: "x" top: "ap"
                pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
        layer { name: "ap0" type: "Pooling" bottom: "x" top: "ap0"
                pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
        layer { name: "cat" type: "Concat" bottom: "mp" bottom: "ap" top: "cat" }
        layer { name: "bn" type: "BatchNorm" bottom: "cat" top: "cat" }
        layer { name: "sc" type: "Scale" bottom: "cat" top: "cat" scale_param { bias_term: true } }
        layer { name: "pr" type: "PReLU" bottom: "cat" top: "pr" }
        layer { name: "sl" type: "Slice" bottom: "pr" top: "a" top: "b" }
        layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum"
                eltwise_param { coeff: 1 coeff: -0.5 } }
        layer { name: "up" type: "Deconvolution" bottom: "sum" top: "up"
                convolution_param { num_output: 3 kernel_size: 4 stride: 2 pad: 1 } }
        layer { name: "lrn" type: "LRN" bottom: "up" top: "lrn" lrn_param { local_size: 3 } }
        """))
    net.params["bn"][1].data[...] = np.abs(net.params["bn"][1].data) + 0.5  # variances > 0
    net.params["bn"][2].data[...] = 2.0
    checked = assert_onnx_matches(net, tmp_path)
    assert {"mp", "ap", "ap0", "cat", "sum", "up", "lrn"} <= set(checked)


def test_fork_layers_match_onnx_runtime(tmp_path):
    """ShuffleChannel, ConvolutionDepthwise, Axpy, SegNet's BN (INFERENCE), Interp (with a
    crop), Resample, and FLOOR-rounded pooling."""
    net = random_net(prototxt.parse_net_text("""
        input: "x" input_shape { dim: 1 dim: 6 dim: 9 dim: 8 }
        layer { name: "sh" type: "ShuffleChannel" bottom: "x" top: "sh"
                shuffle_channel_param { group: 3 } }
        layer { name: "dw" type: "ConvolutionDepthwise" bottom: "sh" top: "dw"
                convolution_param { num_output: 6 kernel_size: 3 stride: 2 pad: 1 } }
        layer { name: "gap" type: "Pooling" bottom: "dw" top: "gap"
                pooling_param { pool: AVE global_pooling: true } }
        layer { name: "ax" type: "Axpy" bottom: "gap" bottom: "dw" bottom: "dw" top: "ax" }
        layer { name: "bn" type: "BN" bottom: "ax" top: "bn" bn_param { bn_mode: INFERENCE } }
        layer { name: "fl" type: "Pooling" bottom: "bn" top: "fl"
                pooling_param { pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR } }
        layer { name: "ip" type: "Interp" bottom: "bn" top: "ip"
                interp_param { zoom_factor: 2 pad_beg: -1 pad_end: -1 } }
        layer { name: "rs" type: "Resample" bottom: "ip" top: "rs"
                resample_param { type: NEAREST factor: 2 } }
        """))
    checked = assert_onnx_matches(net, tmp_path)
    assert {"sh", "dw", "ax", "bn", "fl", "ip", "rs"} <= set(checked)


def test_segnet_unpooling_matches_onnx_max_unpool(tmp_path):
    net = random_net(prototxt.parse_net_text("""
        input: "x" input_shape { dim: 1 dim: 3 dim: 8 dim: 10 }
        layer { name: "pool" type: "Pooling" bottom: "x" top: "pool" top: "mask"
                pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
        layer { name: "up" type: "Upsample" bottom: "pool" bottom: "mask" top: "up"
                upsample_param { scale: 2 } }
        """))
    assert {"mask", "up"} <= set(assert_onnx_matches(net, tmp_path))


def test_roi_pooling_matches_onnx_max_roi_pool(tmp_path):
    net = random_net(prototxt.parse_net_text("""
        input: "x" input_shape { dim: 2 dim: 3 dim: 12 dim: 10 }
        input: "rois" input_shape { dim: 4 dim: 5 }
        layer { name: "roi" type: "ROIPooling" bottom: "x" bottom: "rois" top: "roi"
                roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.5 } }
        """))
    rois = np.array([[0, 0, 0, 9, 7], [0, 3, 2, 18, 22], [0, 5, 5, 6, 6], [0, -4, 1, 30, 9]],
                    np.float32)
    x = np.random.default_rng(3).standard_normal((1, 3, 12, 10)).astype(np.float32)
    net.blobs["rois"].reshape(*rois.shape)   # random_net made every input batch 1
    net.reshape()
    assert "roi" in assert_onnx_matches(net, tmp_path, feed={"x": x, "rois": rois})


def test_layers_without_an_onnx_equivalent_are_named(tmp_path):
    net = protonet.Net(param=prototxt.parse_net_text("""
        input: "x" input_shape { dim: 2 dim: 3 }
        layer { name: "am" type: "ArgMax" bottom: "x" top: "am" }"""), phase=protonet.TEST)
    with pytest.raises(ProtonetError, match=r"no ONNX equivalent for layer\(s\) 'am' \(ArgMax\)"):
        export_onnx(net, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_export_command_writes_a_model_runtime_loads(tmp_path):
    net = protonet.Net(str(ROOT / "models/lenet.prototxt"), protonet.TEST)
    net.save(tmp_path / "w.caffemodel")
    subprocess.run([sys.executable, "-m", "protonet", "export", "--onnx",
                    str(ROOT / "models/lenet.prototxt"), str(tmp_path / "w.caffemodel"),
                    str(tmp_path / "lenet.onnx")], check=True, capture_output=True)
    session = onnxruntime.InferenceSession(str(tmp_path / "lenet.onnx"))
    x = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    (prob,) = session.run(["prob"], {"data": x})
    np.testing.assert_allclose(prob, net.forward(data=x)["prob"], rtol=1e-4, atol=1e-6)
