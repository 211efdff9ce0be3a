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
