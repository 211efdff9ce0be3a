"""A forward reshapes a layer again only when its bottoms' (or tops') shapes or the thread
count changed (protonet/reshape_memo.py); outputs stay those of a freshly built net."""
import sys

import numba
import numpy as np
import pytest

import protonet
from protonet import prototxt

NET = """
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 3 dim: 9 dim: 9 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 }
                      bias_filler { type: "constant" value: 0.1 } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def build(text=NET):
    return protonet.Net(param=prototxt.parse_net_text(text), phase=protonet.TEST)


def count_reshapes(net):
    """{layer name: calls} of each layer's own reshape (which still runs)."""
    calls = {layer.name: 0 for layer in net.layers}
    for layer in net.layers:
        def counted(bottom, top, layer=layer, reshape=layer.reshape):
            calls[layer.name] += 1
            reshape(bottom, top)
        layer.reshape = counted
    return calls


def test_layers_are_reshaped_again_only_when_their_bottom_shapes_change():
    net = build()
    calls = count_reshapes(net)
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 9)).astype(np.float32)
    first = net.forward(data=x)["prob"].copy()
    second = net.forward(data=x)["prob"].copy()
    assert calls == {"data": 2, "conv": 1, "pool": 1, "ip": 1, "prob": 1}
    np.testing.assert_array_equal(first, second)
    # Another batch: every layer reshapes, and the outputs are a new net's.
    y = np.random.default_rng(1).standard_normal((3, 3, 9, 9)).astype(np.float32)
    net.blobs["data"].reshape(*y.shape)
    got = net.forward(data=y)["prob"].copy()
    assert calls == {"data": 3, "conv": 2, "pool": 2, "ip": 2, "prob": 2}
    assert net.blobs["pool"].shape == (3, 4, 3, 3)
    fresh = build(NET.replace("dim: 2 dim: 3", "dim: 3 dim: 3"))
    for name in net.params:
        for mine, theirs in zip(net.params[name], fresh.params[name]):
            theirs.data[...] = mine.data
    np.testing.assert_array_equal(got, fresh.forward(data=y)["prob"])
    # And back: the first shape's outputs again.
    net.blobs["data"].reshape(*x.shape)
    np.testing.assert_array_equal(net.forward(data=x)["prob"], first)


def test_a_top_reshaped_by_hand_is_reshaped_back_by_its_layer():
    net = build()
    net.forward()
    net.blobs["pool"].reshape(1, 1, 1, 1)   # as a user poking at net.blobs might
    net.forward()
    assert net.blobs["pool"].shape == (2, 4, 3, 3)
    assert net.blobs["prob"].shape == (2, 5)


def test_a_changed_thread_count_plans_the_convolution_again():
    net = build()
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        net.forward()
        assert net.layer_dict["conv"].plan.threads == 1
    finally:
        numba.set_num_threads(before)
    net.forward()
    assert net.layer_dict["conv"].plan.threads == before


def test_filter_follows_its_selector_at_an_unchanged_shape():
    net = build("""
    layer { name: "in" type: "Input" top: "x" top: "keep"
      input_param { shape { dim: 4 dim: 2 } shape { dim: 4 } } }
    layer { name: "f" type: "Filter" bottom: "x" bottom: "keep" top: "kept" }
    """)
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    assert net.forward(x=x, keep=np.float32([1, 0, 1, 1]))["kept"].shape == (3, 2)
    kept = net.forward(x=x, keep=np.float32([0, 1, 0, 0]))["kept"]
    np.testing.assert_array_equal(kept, x[[1]])


class _GrowingTop:
    """A pycaffe layer whose top grows by one row each reshape (reshape does work in
    pycaffe's layers: Caffe calls it before every forward)."""

    def setup(self, bottom, top):
        self.rows = 0

    def reshape(self, bottom, top):
        self.rows += 1
        top[0].reshape(self.rows, *bottom[0].shape[1:])

    def forward(self, bottom, top):
        top[0].data[...] = self.rows


def test_python_layers_are_reshaped_before_every_forward(monkeypatch):
    monkeypatch.setitem(sys.modules, "growing_top", type(sys)("growing_top"))
    sys.modules["growing_top"].GrowingTop = _GrowingTop
    net = build("""
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "g" type: "Python" bottom: "x" top: "y"
      python_param { module: "growing_top" layer: "GrowingTop" } }
    """)
    rows = [net.forward()["y"].shape[0] for _ in range(3)]
    assert rows == [rows[0], rows[0] + 1, rows[0] + 2]


@pytest.mark.parametrize("fuse", [True, False])
def test_outputs_match_a_net_reshaped_before_every_forward(fuse):
    """LeNet-like forwards with the memo against the same net told to forget (as Caffe,
    which reshapes every time), at two batch sizes in turn."""
    net = build()
    net.fuse = fuse
    rng = np.random.default_rng(3)
    for batch in (2, 1, 2, 5, 5):
        x = rng.standard_normal((batch, 3, 9, 9)).astype(np.float32)
        net.blobs["data"].reshape(*x.shape)
        got = net.forward(data=x)["prob"].copy()
        net.reshape()
        np.testing.assert_array_equal(got, net.forward(data=x)["prob"])


def test_split_tops_follow_an_input_grown_and_shrunk_back_before_a_forward():
    """A blob grown then shrunk back to its shape has new memory; the Split views of it
    (layers reading one blob twice) must see the values written there."""
    net = build(NET + """
    layer { name: "twice" type: "Eltwise" bottom: "data" bottom: "data" top: "twice" } """)
    net.forward()
    shape = net.blobs["data"].shape
    net.blobs["data"].reshape(8, *shape[1:])
    net.blobs["data"].reshape(*shape)
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(net.forward(data=x)["twice"], 2 * x)
