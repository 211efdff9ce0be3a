"""caffe.draw: pycaffe's draw_net / draw_net_to_file over protonet.draw."""
import shutil

import pytest
from google.protobuf import text_format

import caffe.draw
from caffe.proto import caffe_pb2

NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 } }
layer { name: "train_only" type: "ReLU" bottom: "ip" top: "ip" include { phase: TRAIN } }
"""
V1_NET = """
name: "old"
input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
         convolution_param { num_output: 2 kernel_size: 3 } }
"""
needs_graphviz = pytest.mark.skipif(shutil.which("dot") is None,
                                    reason="Graphviz's dot is not installed")


def parse(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def test_draw_net_as_dot_names_every_layer_and_blob():
    dot = caffe.draw.draw_net(parse(NET), "TB", ext="dot").decode()
    assert dot.startswith('digraph "tiny"') and "rankdir=TB" in dot
    for name in ("data", "ip", "train_only", "(InnerProduct)"):
        assert name in dot


def test_draw_net_keeps_only_the_phase_asked_for():
    dot = caffe.draw.draw_net(parse(NET), "LR", ext="dot", phase=caffe_pb2.TEST).decode()
    assert "train_only" not in dot and "(InnerProduct)" in dot


def test_old_v1_nets_are_upgraded_before_drawing():
    dot = caffe.draw.draw_net(parse(V1_NET), "LR", ext="dot").decode()
    assert "(Convolution)" in dot and "(Input)" in dot


@needs_graphviz
def test_draw_net_renders_png_bytes():
    assert caffe.draw.draw_net(parse(NET), "LR").startswith(b"\x89PNG")


@needs_graphviz
def test_draw_net_to_file_uses_the_extension(tmp_path):
    out = tmp_path / "net.svg"
    caffe.draw.draw_net_to_file(parse(NET), str(out), "BT")
    assert b"<svg" in out.read_bytes()


def test_draw_net_without_graphviz_says_what_to_install(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(caffe.ProtonetError, match="Graphviz"):
        caffe.draw.draw_net(parse(NET), "LR", ext="png")


def layer(text):
    return text_format.Parse(text, caffe_pb2.LayerParameter())


def test_layer_labels_as_pycaffe_writes_them():
    pool = layer('name: "pool1" type: "Pooling" pooling_param { pool: AVE kernel_size: 3 '
                 'stride: 2 }')
    assert caffe.draw.get_layer_label(pool, "LR") == \
        r'"pool1\n(Pooling AVE)\nkernel size: 3\nstride: 2\npad: 0"'
    conv = layer('name: "c" type: "Convolution" param { lr_mult: 0 } '
                 'convolution_param { num_output: 8 kernel_size: 5 pad: 2 }')
    assert caffe.draw.get_layer_label(conv, "TB", display_lrm=True) == \
        '"c (Convolution) kernel size: 5 stride: 1 pad: 2 lr mult: 0.0, 1.0"'
    assert caffe.draw.get_layer_label(layer('name: "r" type: "ReLU"'), "LR") == r'"r\n(ReLU)"'


def test_lr_mults_edge_labels_colours_and_pooling_names():
    ip = layer('name: "ip" type: "InnerProduct" param { lr_mult: 2 } param { lr_mult: 3 } '
               'inner_product_param { num_output: 10 }')
    assert caffe.draw.get_layer_lr_mult(ip) == (2, 3)
    assert caffe.draw.get_layer_lr_mult(layer('name: "c" type: "Convolution"')) == (1, 1)
    with pytest.raises(ValueError, match="ReLU layers do not have"):
        caffe.draw.get_layer_lr_mult(layer('name: "r" type: "ReLU"'))
    assert caffe.draw.get_edge_label(ip) == "10"
    assert caffe.draw.get_edge_label(layer('type: "Data" data_param { batch_size: 64 }')) == \
        "Batch 64"
    assert caffe.draw.get_edge_label(layer('type: "ReLU"')) == '""'
    assert caffe.draw.choose_color_by_layertype("Pooling") == "#FF9900"
    assert caffe.draw.choose_color_by_layertype("Softmax") == "#6495ED"
    assert caffe.draw.get_pooling_types_dict() == {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}
