"""Conversion tools as users run them: upgrade (text, binary, solver), fold-bn, draw, and
--allow-unknown for files from Caffe forks."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import protonet
from protonet import caffe_pb2, prototxt
from protonet.errors import PrototxtError
from protonet.surgery import fold_batchnorm

ROOT = Path(__file__).resolve().parents[1]

V1_NET = """
name: "old"
input: "data"
input_dim: 2 input_dim: 1 input_dim: 8 input_dim: 8
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
         blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
         convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" } } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "ip" type: INNER_PRODUCT bottom: "conv" top: "ip"
         inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
layers { name: "prob" type: SOFTMAX bottom: "ip" top: "prob" }
"""


def run(*args, check=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "protonet", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=check)


def test_upgrade_text_binary_and_solver_give_what_caffe_upgrade_gives(tmp_path):
    (tmp_path / "old.prototxt").write_text(V1_NET)
    run("upgrade", tmp_path / "old.prototxt", tmp_path / "new.prototxt")
    new = prototxt.parse_text((tmp_path / "new.prototxt").read_text(), caffe_pb2.NetParameter())
    assert not len(new.layers) and not len(new.input)
    assert [(l.name, l.type) for l in new.layer] == [
        ("input", "Input"), ("conv", "Convolution"), ("relu", "ReLU"), ("ip", "InnerProduct"),
        ("prob", "Softmax")]
    assert [(p.lr_mult, p.decay_mult) for p in new.layer[1].param] == [(1, 1), (2, 0)]
    assert list(new.layer[0].input_param.shape[0].dim) == [2, 1, 8, 8]
    # Binary: a V1 caffemodel (blobs with the legacy 4-d fields) keeps its weights.
    protonet.set_random_seed(3)
    net = protonet.Net(param=prototxt.parse_net_text(V1_NET), phase=protonet.TEST)
    old = prototxt.parse_text(V1_NET, caffe_pb2.NetParameter())
    for v1 in old.layers:
        for blob in net.params.get(v1.name, []):
            proto = v1.blobs.add()
            shape = (1,) * (4 - len(blob.shape)) + blob.shape
            proto.num, proto.channels, proto.height, proto.width = shape
            proto.data.extend(blob.data.ravel().tolist())
    (tmp_path / "old.caffemodel").write_bytes(old.SerializeToString())
    run("upgrade", "--binary", tmp_path / "old.caffemodel", tmp_path / "new.caffemodel")
    reloaded = protonet.Net(str(tmp_path / "new.prototxt"), protonet.TEST,
                            weights=str(tmp_path / "new.caffemodel"))
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(reloaded.forward(data=x)["prob"], net.forward(data=x)["prob"])
    (tmp_path / "solver.prototxt").write_text('net: "n"\nbase_lr: 0.1\nsolver_type: ADAM\n')
    run("upgrade", tmp_path / "solver.prototxt", tmp_path / "solver2.prototxt")
    solver = prototxt.parse_text((tmp_path / "solver2.prototxt").read_text(),
                                 caffe_pb2.SolverParameter())
    assert solver.type == "Adam" and not solver.HasField("solver_type")


BN_NET = """
input: "data" input_shape { dim: 2 dim: 3 dim: 6 dim: 6 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 bias_term: false
                            weight_filler { type: "xavier" } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
        scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { name: "side" type: "AbsVal" bottom: "conv2" top: "side" }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "bn2" }
layer { name: "sum" type: "Eltwise" bottom: "bn2" bottom: "side" top: "sum" }
layer { name: "ip" type: "InnerProduct" bottom: "sum" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "bn3" type: "BatchNorm" bottom: "ip" top: "bn3" }
layer { name: "scale3" type: "Scale" bottom: "bn3" top: "out" }
"""


def trained_bn_net(param):
    protonet.set_random_seed(5)
    net = protonet.Net(param=param, phase=protonet.TEST)
    g = np.random.default_rng(1)
    for layer in net.layers:
        if layer.type == "BatchNorm":
            c = layer.blobs[0].count
            layer.blobs[0].data[...] = g.standard_normal(c) * 3
            layer.blobs[1].data[...] = (g.random(c) + 0.5) * 3
            layer.blobs[2].data[...] = 3
        elif layer.type == "Scale":
            layer.blobs[0].data[...] = g.random(layer.blobs[0].shape) + 0.5
            if layer.bias_term:
                layer.blobs[1].data[...] = g.standard_normal(layer.blobs[1].shape)
    return net


def test_fold_batchnorm_gives_the_same_outputs_and_keeps_what_it_cannot_fold(tmp_path):
    param = prototxt.parse_net_text(BN_NET)
    net = trained_bn_net(param)
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 6)).astype(np.float32)
    expected = net.forward(data=x)["out"].copy()
    folded, names = fold_batchnorm(param, net)
    # bn2's input is also read by 'side', so it stays; bn1 (+scale1) and bn3 (+scale3) fold.
    assert names == ["bn1", "bn3"]
    assert [l.name for l in folded.layer if l.type in ("BatchNorm", "Scale")] == ["bn2"]
    got = protonet.Net(param=folded, phase=protonet.TEST).forward(data=x)["out"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # The command writes a prototxt and a caffemodel that load together.
    (tmp_path / "bn.prototxt").write_text(BN_NET)
    net.save(tmp_path / "bn.caffemodel")
    run("fold-bn", tmp_path / "bn.prototxt", tmp_path / "bn.caffemodel",
        tmp_path / "folded.prototxt", tmp_path / "folded.caffemodel")
    again = protonet.Net(str(tmp_path / "folded.prototxt"), protonet.TEST,
                         weights=str(tmp_path / "folded.caffemodel"))
    np.testing.assert_allclose(again.forward(data=x)["out"], expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())


def test_draw_shows_types_shapes_and_loss_weights(tmp_path):
    run("draw", "models/lenet_dsn.prototxt", tmp_path / "dsn.dot", "--phase", "TRAIN")
    dot = (tmp_path / "dsn.dot").read_text()
    assert dot.startswith('digraph "LeNet-DSN"')
    assert 'label="conv1\\n(Convolution)\\nk5 s1 out 20"' in dot
    assert dot.count('label="loss x 0.3"') == 2 and 'label="loss x 1"' in dot
    if (ROOT / "data/fashion_mnist/fashion_mnist_train_lmdb").is_dir():
        assert 'label="pool1\\n64 x 20 x 12 x 12"' in dot
    result = run("draw", "models/lenet.prototxt", tmp_path / "lenet.svg")
    import shutil
    if shutil.which("dot"):
        assert (tmp_path / "lenet.svg").read_text().lstrip().startswith("<?xml")
    else:
        assert (tmp_path / "lenet.dot").exists() and "dot -Tsvg" in result.stderr


FORK_NET = """name: "fork"
input: "data" input_shape { dim: 1 dim: 2 }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 }
  quantization_param { bits: 8 range { min: -1 max: 1 } }
  fork_flag: true
}
"""


def test_fork_fields_are_rejected_by_default_and_dropped_and_listed_on_request(tmp_path):
    path = tmp_path / "fork.prototxt"
    path.write_text(FORK_NET)
    with pytest.raises(PrototxtError, match=r'fork.prototxt:5:3: .*no field named '
                                            r'"quantization_param"'):
        prototxt.read_net(path)
    with prototxt.allowing_unknown_fields() as dropped:
        net = prototxt.read_net(path)
    assert [d.split(": ", 1)[1] for d in dropped] == [
        "LayerParameter.quantization_param", "LayerParameter.fork_flag"]
    assert dropped[0].startswith(f"{path}:5:3")
    assert net.layer[1].inner_product_param.num_output == 2
    result = run("upgrade", "--allow-unknown", path, tmp_path / "clean.prototxt")
    assert "dropped unknown field LayerParameter.quantization_param" in result.stderr
    assert "fork_flag" in result.stderr and "quantization" not in (
        tmp_path / "clean.prototxt").read_text()
    assert run("upgrade", path, tmp_path / "x.prototxt", check=False).returncode == 1


def test_allow_unknown_refuses_to_drop_a_field_inside_a_layers_parameters(tmp_path):
    """A dropped field that would change a layer's result is an error, not a warning (a
    fork's `foo_mode: false` in a PoolingParameter would pool to another size)."""
    path = tmp_path / "fork.prototxt"
    path.write_text('name: "fork"\nlayer { name: "p" type: "Pooling"\n'
                    '  pooling_param { pool: MAX kernel_size: 3 stride: 2 foo_mode: false }\n}\n')
    with prototxt.allowing_unknown_fields() as dropped:
        with pytest.raises(PrototxtError, match=r"fork.prototxt:3:\d+: unknown field "
                                                r"PoolingParameter.foo_mode; .*not of a "
                                                r"layer's parameters"):
            prototxt.read_net(path)
    assert dropped == []
    result = run("upgrade", "--allow-unknown", path, tmp_path / "x.prototxt", check=False)
    assert result.returncode == 1 and "PoolingParameter.foo_mode" in result.stderr
    assert not (tmp_path / "x.prototxt").exists()


@pytest.mark.parametrize("path", ["examples/mnist/lenet_train_test.prototxt",
                                  "models/bvlc_alexnet/train_val.prototxt",
                                  "models/bvlc_googlenet/deploy.prototxt"])
def test_upgrade_and_draw_work_on_caffe_nets(path, caffe_models, tmp_path):
    source = caffe_models / path
    run("upgrade", source, tmp_path / "up.prototxt")
    assert prototxt.read_net(tmp_path / "up.prototxt") == prototxt.read_net(source)
    run("draw", source, tmp_path / "net.dot")
    dot = (tmp_path / "net.dot").read_text()
    for lp in prototxt.read_net(source).layer:
        assert f'{lp.name}\\n({lp.type})' in dot
