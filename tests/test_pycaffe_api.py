"""pycaffe's Net, Blob, Solver and module surface on protonet: one test per contract a pycaffe
script relies on (names, orders, batching, hooks, weights files, file modes, callbacks), and
the fixes for behaviour that differed from pycaffe."""
import logging
import os
import subprocess
import sys
import time
from collections import OrderedDict

import numba
import numpy as np
import pytest

import protonet
from protonet import prototxt
from protonet.errors import ProtonetError, ShapeError
from protonet.io.binaryproto import write_binaryproto

# Two classifiers on one feature map: a ReLU in place on the last top, a loss with an explicit
# weight and one with the default, an accuracy. Samples are independent (no BatchNorm).
TWO_HEADS = """
name: "two_heads"
force_backward: true
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 dim: 5 dim: 5 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 6 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 }
                      bias_filler { type: "constant" value: 0.5 } } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
  inner_product_param { num_output: 7 weight_filler { type: "gaussian" std: 0.3 }
                        bias_filler { type: "constant" value: -1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc" }
layer { name: "aux" type: "InnerProduct" bottom: "conv" top: "aux"
  inner_product_param { num_output: 7 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "aux_loss" type: "SoftmaxWithLoss" bottom: "aux" bottom: "label" top: "aux_loss"
  loss_weight: 0.25 }
"""

# An input net: the samples come from Python; the ReLU works in place on the last top.
DEPLOY = """
name: "deploy"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 3 dim: 2 dim: 4 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 5 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 }
                      bias_filler { type: "constant" value: 0.1 } } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "fc" top: "fc" }
"""


def net_from(text, phase=protonet.TRAIN, seed=3, **kw):
    protonet.set_random_seed(seed)
    return protonet.Net(param=prototxt.parse_net_text(text), phase=phase, **kw)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- module level ------------------------------------------------------------------------------
def test_star_import_gives_every_name_in_all():
    code = ("from protonet import *\nimport protonet\n"
            "missing = [n for n in protonet.__all__ if n not in globals()]\n"
            "assert not missing, missing\n"
            "assert SGDSolver and NesterovSolver and AdaGradSolver and RMSPropSolver\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_gpu_calls_log_one_line_each_and_go_on(caplog):
    with caplog.at_level(logging.INFO, logger="protonet"):
        protonet.set_mode_gpu()
        protonet.set_device(1)
        protonet.set_mode_cpu()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("CPU" in line for line in lines)
    assert "set_device(1)" in lines[1]


def test_log_writes_one_info_line(caplog):
    with caplog.at_level(logging.INFO, logger="protonet"):
        protonet.log("Using devices [0]")
    assert [r.getMessage() for r in caplog.records] == ["Using devices [0]"]


def test_nccl_is_absent_but_constructible_and_timer_measures():
    assert protonet.has_nccl() is False
    protonet.NCCL(None, b"uid")
    timer = protonet.Timer()
    timer.start()
    time.sleep(0.02)
    assert timer.ms >= 20  # running: the time so far
    timer.stop()
    stopped = timer.ms
    time.sleep(0.01)
    assert 20 <= stopped == timer.ms  # stopped: the reading stays put


def test_layer_type_list_names_caffe_types_and_the_python_layer():
    types = protonet.layer_type_list()
    assert {"Data", "Convolution", "InnerProduct", "Python", "MemoryData"} <= set(types)


# -- Net: names, orders, views -----------------------------------------------------------------
def test_layer_and_blob_views_follow_net_order():
    net = net_from(TWO_HEADS)
    # Split layers where a blob feeds two layers, named and placed as Caffe's InsertSplits.
    assert net._layer_names == ["data", "label_data_1_split", "conv", "conv_conv_0_split", "fc",
                                "fc_fc_0_split", "loss", "acc", "aux", "aux_loss"]
    assert list(net.layer_dict) == net._layer_names
    assert [layer.type for layer in net.layers][:3] == ["DummyData", "Split", "Convolution"]
    assert net._blob_names == list(net.blobs)
    assert [b is net.blobs[n] for n, b in zip(net._blob_names, net._blobs)] == \
        [True] * len(net._blobs)
    assert list(net.params) == ["conv", "fc", "aux"]
    assert isinstance(net.blobs, OrderedDict) and isinstance(net.params, OrderedDict)


def test_top_and_bottom_names_by_layer():
    net = net_from(DEPLOY, protonet.TEST)
    assert net.top_names == OrderedDict([("data", ["data"]), ("conv", ["conv"]),
                                         ("fc", ["fc"]), ("relu", ["fc"])])
    assert net.bottom_names == OrderedDict([("data", []), ("conv", ["data"]),
                                            ("fc", ["conv"]), ("relu", ["fc"])])
    assert net._top_ids(3) == [2] and net._bottom_ids(2) == [1]


def test_outputs_count_in_place_tops_and_come_in_name_order():
    deploy = net_from(DEPLOY, protonet.TEST)
    assert deploy.inputs == ["data"] and deploy.outputs == ["fc"]  # ReLU's in-place top
    assert deploy._inputs == [0] and deploy._outputs == [2]
    heads = net_from(TWO_HEADS)
    assert heads.outputs == ["acc", "aux_loss", "loss"]  # Caffe keeps them in a std::set


def test_blob_loss_weights_per_blob():
    net = net_from(TWO_HEADS)
    weights = net.blob_loss_weights
    assert list(weights) == list(net.blobs)
    assert weights["loss"] == 1 and weights["aux_loss"] == 0.25
    assert all(w == 0 for n, w in weights.items() if n not in ("loss", "aux_loss"))


def test_stages_none_is_no_stages(tmp_path):
    path = write(tmp_path, "net.prototxt", DEPLOY)
    assert protonet.Net(path, protonet.TEST, stages=None, level=0).outputs == ["fc"]


def test_level_and_stages_may_be_positional_as_in_pycaffe(tmp_path):
    path = write(tmp_path, "net.prototxt", """
        input: "data" input_shape { dim: 1 dim: 3 }
        layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
                inner_product_param { num_output: 2 } }
        layer { name: "extra" type: "ReLU" bottom: "fc" top: "extra"
                include { min_level: 1 stage: "deploy" } }""")
    assert protonet.Net(path, protonet.TEST).outputs == ["fc"]
    assert protonet.Net(path, protonet.TEST, 1, ["deploy"]).outputs == ["extra"]
    assert protonet.Net(path, protonet.TEST, 0, ["deploy"]).outputs == ["fc"]


# -- Net: running --------------------------------------------------------------------------------
def test_backward_with_end_returns_the_end_layers_bottom_diffs():
    net = net_from(TWO_HEADS)
    net.forward()
    dy = np.random.default_rng(1).standard_normal(net.blobs["fc"].shape).astype(np.float32)
    net.blobs["fc"].diff[...] = dy
    diffs = net.backward(start="fc", end="fc")
    assert net.bottom_names["fc"] == ["conv_conv_0_split_0"]  # conv feeds two layers
    assert set(diffs) == {"conv_conv_0_split_0"}
    w = net.params["fc"][0].data
    np.testing.assert_allclose(diffs["conv_conv_0_split_0"].reshape(4, -1), dy @ w,
                               rtol=1e-5, atol=1e-6)
    assert set(net.backward(start="fc", end="fc", diffs=["fc"])) == {"conv_conv_0_split_0", "fc"}
    # pycaffe's index forms: _forward(start, end) up, _backward(start, end) down.
    net.blobs["conv_conv_0_split_0"].diff[...] = 0
    net._backward(4, 4)
    np.testing.assert_allclose(net.blobs["conv_conv_0_split_0"].diff.reshape(4, -1), dy @ w,
                               rtol=1e-5, atol=1e-6)
    before = net.blobs["fc"].data.copy()
    net.params["fc"][1].data[...] += 1
    net._forward(4, 4)
    np.testing.assert_allclose(net.blobs["fc"].data, before + 1, rtol=1e-6)


def test_forward_all_runs_any_number_of_samples_in_batches():
    net = net_from(DEPLOY, protonet.TEST)
    samples = np.random.default_rng(2).standard_normal((7, 2, 4, 4)).astype(np.float32)
    out = net.forward_all(data=samples, blobs=["conv"])
    assert set(out) == {"fc", "conv"}
    assert out["fc"].shape == (7, 4) and out["conv"].shape == (7, 5, 2, 2)
    for i in range(0, 7, 3):  # batch size 3: 3 + 3 + 1 padded
        batch = samples[i:i + 3]
        batch = np.concatenate([batch, np.zeros((3 - len(batch), 2, 4, 4), np.float32)])
        expected = net.forward(data=batch)["fc"][:len(samples[i:i + 3])]
        np.testing.assert_array_equal(out["fc"][i:i + 3], expected)
    with pytest.raises(ProtonetError, match="input arrays"):
        net.forward_all()


def test_forward_backward_all_gives_input_diffs_for_every_sample():
    net = net_from(DEPLOY, protonet.TEST)
    net.force_backward = True
    rng = np.random.default_rng(3)
    samples = rng.standard_normal((5, 2, 4, 4)).astype(np.float32)
    top_diffs = rng.standard_normal((5, 4)).astype(np.float32)
    data, diffs = net.forward_backward_all(data=samples, fc=top_diffs)
    assert data["fc"].shape == (5, 4) and diffs["data"].shape == (5, 2, 4, 4)
    net.forward(data=samples[:3])
    expected = net.backward(fc=top_diffs[:3])["data"]
    np.testing.assert_array_equal(diffs["data"][:3], expected)


def test_hooks_run_around_every_layer_in_order():
    net = net_from(DEPLOY, protonet.TEST)
    calls = []
    net.before_forward(lambda i: calls.append(("bf", i)))
    net.after_forward(lambda i: calls.append(("af", i)))
    net.before_backward(lambda i: calls.append(("bb", i)))
    net.after_backward(lambda i: calls.append(("ab", i)))
    net.forward()
    assert calls == [(k, i) for i in range(4) for k in ("bf", "af")]
    calls.clear()
    net.backward()  # also for layers with nothing to propagate (the input layer)
    assert calls == [(k, i) for i in (3, 2, 1, 0) for k in ("bb", "ab")]
    calls.clear()
    net.forward(start="fc", end="relu")
    assert calls == [("bf", 2), ("af", 2), ("bf", 3), ("af", 3)]


def test_after_forward_hook_sees_the_layers_output():
    net = net_from(DEPLOY, protonet.TEST)
    seen = {}
    net.after_forward(lambda i: seen.setdefault(net._layer_names[i],
                                                net.blobs["conv"].data.copy()))
    net.forward(data=np.ones((3, 2, 4, 4), np.float32))
    np.testing.assert_array_equal(seen["conv"], net.blobs["conv"].data)


# -- weights files -------------------------------------------------------------------------------
FINE_TUNED = TWO_HEADS.replace('name: "aux" type', 'name: "aux_new" type').replace(
    'name: "aux_loss"', 'name: "aux_new_loss"')


def test_weights_leave_layers_the_file_lacks_at_their_fillers(tmp_path, caplog):
    source = net_from(TWO_HEADS, seed=1)
    weights = str(tmp_path / "w.caffemodel")
    source.save(weights)
    path = write(tmp_path, "ft.prototxt", FINE_TUNED)
    protonet.set_random_seed(9)
    filled = protonet.Net(path, protonet.TRAIN).params["aux_new"][0].data.copy()
    for make in (lambda: protonet.Net(path, protonet.TRAIN, weights=weights),
                 lambda: protonet.Net(path, weights, protonet.TRAIN)):
        protonet.set_random_seed(9)
        net = make()
        np.testing.assert_array_equal(net.params["fc"][0].data, source.params["fc"][0].data)
        np.testing.assert_array_equal(net.params["aux_new"][0].data, filled)
    protonet.set_random_seed(9)
    net = protonet.Net(path, protonet.TRAIN)
    with caplog.at_level(logging.INFO, logger="protonet"):
        assert net.copy_from(weights) == ["aux_new"]
    assert "has no weights for learnable layer 'aux_new'; they keep their fillers" in caplog.text
    np.testing.assert_array_equal(net.params["conv"][1].data, source.params["conv"][1].data)
    with pytest.raises(ShapeError, match="aux_new"):
        net.copy_from(weights, strict=True)


def test_weights_of_another_shape_are_refused_and_nothing_is_copied(tmp_path):
    source = net_from(TWO_HEADS, seed=1)
    weights = str(tmp_path / "w.caffemodel")
    source.save(weights)
    wider = net_from(TWO_HEADS.replace("num_output: 7 weight_filler { type: \"gaussian\" "
                                       "std: 0.3 } } }\nlayer { name: \"aux_loss\"",
                                       "num_output: 9 weight_filler { type: \"gaussian\" "
                                       "std: 0.3 } } }\nlayer { name: \"aux_loss\""), seed=2)
    before = wider.params["conv"][0].data.copy()
    with pytest.raises(ShapeError, match="layer 'aux'"):
        wider.copy_from(weights)
    np.testing.assert_array_equal(wider.params["conv"][0].data, before)  # conv comes first


def test_save_hdf5_layout_and_round_trip(tmp_path):
    h5py = pytest.importorskip("h5py")
    shared = TWO_HEADS.replace('name: "aux" type: "InnerProduct" bottom: "conv" top: "aux"',
                               'name: "aux" type: "InnerProduct" bottom: "conv" top: "aux" '
                               'param { name: "w" } param { name: "b" }').replace(
        'name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"',
        'name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" '
        'param { name: "w" } param { name: "b" }')
    net = net_from(shared, seed=4)
    path = tmp_path / "w.h5"
    net.save_hdf5(str(path))
    with h5py.File(path, "r") as f:
        assert set(f["data"]) == set(net._layer_names)  # a group for every layer
        assert set(f["data/conv"]) == {"0", "1"} and set(f["data/fc"]) == {"0", "1"}
        assert len(f["data/aux"]) == 0  # shared with fc: only the owner is written
        assert f["data/conv/0"].dtype == np.float32
        np.testing.assert_array_equal(f["data/fc/0"][()], net.params["fc"][0].data)
    other = net_from(shared, seed=5)
    assert other.load_hdf5(str(path)) == []
    for name in net.params:
        for a, b in zip(net.params[name], other.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
    third = net_from(shared, seed=6)
    third.copy_from(str(path))  # .h5: Caffe's CopyTrainedLayersFrom reads HDF5
    np.testing.assert_array_equal(third.params["conv"][0].data, net.params["conv"][0].data)


def test_load_hdf5_refuses_another_shape(tmp_path):
    pytest.importorskip("h5py")
    path = str(tmp_path / "w.h5")
    net_from(TWO_HEADS).save_hdf5(path)
    narrow = net_from(TWO_HEADS.replace("num_output: 6", "num_output: 2"))
    before = narrow.params["conv"][0].data.copy()
    with pytest.raises(ShapeError, match=r"w\.h5: cannot copy blob 0 of layer '(aux|fc)': shape "
                                         r"\(7, 54\) in the file, \(7, 18\) in the net"):
        narrow.load_hdf5(path)
    np.testing.assert_array_equal(narrow.params["conv"][0].data, before)  # nothing copied


def test_share_with_uses_the_other_nets_memory():
    a, b = net_from(DEPLOY, protonet.TEST, seed=1), net_from(DEPLOY, protonet.TEST, seed=2)
    b.share_with(a)
    a.params["fc"][0].data[...] = 7
    assert (b.params["fc"][0].data == 7).all()


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        net = net_from(DEPLOY, protonet.TEST)
        net.save(tmp_path / "w.caffemodel")
        write_binaryproto(tmp_path / "mean.binaryproto", np.zeros((1, 2, 3, 3), np.float32))
        solver = protonet.get_solver(solver_file(tmp_path, max_iter=1))
        model, state = solver.snapshot()
    finally:
        os.umask(old)
    for path in (tmp_path / "w.caffemodel", tmp_path / "mean.binaryproto", model, state):
        assert os.stat(path).st_mode & 0o777 == mode, path


def test_rewriting_a_file_keeps_its_mode(tmp_path):
    path = tmp_path / "w.caffemodel"
    net = net_from(DEPLOY, protonet.TEST)
    net.save(path)
    os.chmod(path, 0o604)
    net.save(path)
    assert os.stat(path).st_mode & 0o777 == 0o604


# -- InnerProduct: a sample's output does not depend on the batch ----------------------------
@pytest.mark.parametrize("k,n,transpose", [(800, 500, False), (500, 10, False),
                                           (9216, 4096, False), (4096, 4096, False),
                                           (4096, 1000, False), (37, 7, False),
                                           (800, 500, True), (4096, 1000, True)])
def test_inner_product_output_is_bitwise_independent_of_batch_size(k, n, transpose):
    """Alone on one thread or anywhere in a batch on two: the same bits. Batches up to 9 meet
    every tail of the lane kernel's tiles (kernels/dense.py), 130 and 256 its bands of rows;
    (37, 7) has a tail of inputs and of outputs; transposed weights run the BLAS path."""
    from protonet.kernels import _jit
    text = f"""
    layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: 1 dim: {k} }} }} }}
    layer {{ name: "fc" type: "InnerProduct" bottom: "x" top: "y"
      inner_product_param {{ num_output: {n} transpose: {str(transpose).lower()}
                             weight_filler {{ type: "gaussian" std: 0.01 }}
                             bias_filler {{ type: "constant" value: 0.1 }} }} }}"""
    net = net_from(text, protonet.TEST)
    rng = np.random.default_rng(k + n)
    sample = rng.standard_normal(k).astype(np.float32)
    threads = numba.get_num_threads()
    try:
        _jit.set_num_threads(1)
        alone = net.forward(x=sample[None])["y"][0].copy()
        _jit.set_num_threads(2)
        batches = ((2, 3, 5, 16, 64, 65) if k * n > 10 ** 7 else
                   (2, 3, 4, 5, 6, 7, 8, 9, 17, 64, 65, 130, 256))
        for batch in batches:
            x = rng.standard_normal((batch, k)).astype(np.float32)
            for position in {0, batch // 2, batch - 1}:
                x[position] = sample
                net.blobs["x"].reshape(batch, k)
                y = net.forward(x=x)["y"]
                assert np.array_equal(y[position], alone), (batch, position)
    finally:
        _jit.set_num_threads(threads)


# -- Blob ------------------------------------------------------------------------------------------
def test_blob_legacy_dims_count_and_reshape():
    blob = protonet.Blob((2, 3, 4, 5))
    assert (blob.num, blob.channels, blob.height, blob.width, blob.count) == (2, 3, 4, 5, 120)
    blob.reshape(6, 7)  # missing trailing axes count as 1, as Caffe's LegacyShape
    assert (blob.num, blob.channels, blob.height, blob.width) == (6, 7, 1, 1)
    assert blob.shape == (6, 7) and blob.data.shape == (6, 7) and blob.count == 42
    blob.reshape(1, 1, 1, 1, 2)
    with pytest.raises(ShapeError, match="more than 4 axes"):
        blob.num


# -- Python layers: self.blobs is a BlobVec ------------------------------------------------------
SCALE_LAYER = '''
import protonet

class Scale(protonet.Layer):
    """y = a * x with a learnable scalar a (starts at 2)."""
    def setup(self, bottom, top):
        self.blobs.add_blob(1)
        self.blobs[0].data[0] = 2
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top):
        top[0].data[...] = self.blobs[0].data[0] * bottom[0].data
    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[0] += (top[0].diff * bottom[0].data).sum()
        bottom[0].diff[...] = self.blobs[0].data[0] * top[0].diff
    def set_scale(self, value):
        self.blobs[0].data[0] = value
'''


def test_python_layer_adds_learnable_blobs_with_add_blob(tmp_path, monkeypatch):
    (tmp_path / "scale_layer.py").write_text(SCALE_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    text = """force_backward: true
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "s" type: "Python" bottom: "x" top: "y"
      python_param { module: "scale_layer" layer: "Scale" } }"""
    net = net_from(text, protonet.TRAIN)
    assert [b.shape for b in net.params["s"]] == [(1,)]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(net.forward(x=x)["y"], 2 * x)
    net.blobs["y"].diff[...] = 1
    net.backward()
    assert net.params["s"][0].diff[0] == x.sum()
    path = str(tmp_path / "w.caffemodel")
    net.params["s"][0].data[0] = 5
    net.save(path)
    other = net_from(text, protonet.TRAIN)
    other.copy_from(path)
    assert other.layers[1].blobs[0].data[0] == 5


def test_net_layers_of_a_python_layer_reach_the_users_methods(tmp_path, monkeypatch):
    (tmp_path / "scale_layer.py").write_text(SCALE_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    net = net_from("""layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 } } }
    layer { name: "s" type: "Python" bottom: "x" top: "y"
      python_param { module: "scale_layer" layer: "Scale" } }""", protonet.TEST)
    net.layers[1].set_scale(3)  # a method only the user's class has
    np.testing.assert_array_equal(net.forward(x=np.ones(2, np.float32))["y"], [3, 3])
    assert net.layers[1].type == "Python"
    with pytest.raises(AttributeError):
        net.layers[1].no_such_method


# -- Solver -------------------------------------------------------------------------------------
def solver_file(tmp_path, max_iter=4, net_text=TWO_HEADS):
    net = write(tmp_path, "train.prototxt", net_text)
    return write(tmp_path, "solver.prototxt", f"""net: "{net}"
    base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 2 momentum: 0.9
    max_iter: {max_iter} display: 0 snapshot_after_train: false
    snapshot_prefix: "{tmp_path / 'snap'}" test_iter: 1 test_interval: 100
    test_initialization: false""")


def test_solver_callbacks_run_before_forward_and_before_the_update(tmp_path):
    solver = protonet.get_solver(solver_file(tmp_path))
    weights = solver.net.params["fc"][0].data
    events = []

    def on_start():
        events.append(("start", solver.iter, float(np.abs(solver.net.params["fc"][0].diff)
                                                   .sum())))

    def on_gradients_ready():
        events.append(("ready", solver.iter, float(np.abs(solver.net.params["fc"][0].diff)
                                                   .sum())))
        snapshots.append(weights.copy())

    snapshots = []
    before = weights.copy()
    solver.add_callback(on_start, on_gradients_ready)
    solver.step(2)
    assert [e[:2] for e in events] == [("start", 0), ("ready", 0), ("start", 1), ("ready", 1)]
    assert events[0][2] == 0 and events[1][2] > 0  # diffs cleared, then filled by backward
    np.testing.assert_array_equal(snapshots[0], before)  # not yet updated
    assert not np.array_equal(weights, before)


def test_nccl_objects_are_accepted_and_ignored_by_callbacks_and_hooks(tmp_path):
    solver = protonet.get_solver(solver_file(tmp_path))
    nccl = protonet.NCCL(solver, b"")
    solver.add_callback(nccl)
    solver.net.after_backward(nccl)
    solver.step(1)
    assert solver.iter == 1


def test_solver_lr_share_weights_and_apply_update(tmp_path):
    solver = protonet.get_solver(solver_file(tmp_path))
    assert solver.lr == pytest.approx(0.1) and solver.iter == 0
    solver.step(2)
    assert solver.iter == 2 and solver.lr == pytest.approx(0.05)
    assert len(solver.test_nets) == 1
    net = protonet.Net(write(tmp_path, "deploy.prototxt", TWO_HEADS), protonet.TEST)
    solver.share_weights(net)
    solver.net.params["fc"][0].data[...] = 3
    assert (net.params["fc"][0].data == 3).all()
    fresh = protonet.get_solver(solver_file(tmp_path))
    blob = fresh.net.params["fc"][0]
    blob.data[...] = 0
    fresh.net.clear_param_diffs()
    blob.diff[...] = 1
    fresh.apply_update()
    np.testing.assert_allclose(blob.data, -0.1, rtol=1e-6)


def test_memory_data_input_arrays_feed_batches_in_turn():
    text = """layer { name: "m" type: "MemoryData" top: "data" top: "label"
      memory_data_param { batch_size: 2 channels: 1 height: 2 width: 2 } }"""
    net = net_from(text, protonet.TEST)
    data = np.arange(16, dtype=np.float32).reshape(4, 1, 2, 2)
    net.set_input_arrays(data, np.arange(4, dtype=np.float32))
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data[:2])
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [2, 3])


def test_replacing_a_blobs_arrays_is_refused_as_in_pycaffe(tmp_path):
    net = protonet.Net(write(tmp_path, "net.prototxt", DEPLOY), protonet.TEST)
    blob = net.blobs["data"]
    before = blob.data
    with pytest.raises(AttributeError, match=r"blob 'data'.*blob.data\[\.\.\.\] = values"):
        blob.data = np.zeros(blob.shape, np.float32)
    with pytest.raises(AttributeError, match=r"blob 'data'.*blob.diff\[\.\.\.\] = values"):
        blob.diff = np.zeros(blob.shape, np.float32)
    blob.data[...] = 2.0   # the way values go in
    assert blob.data is before and (net.blobs["data"].data == 2.0).all()
    blob.data += 1.0       # in place: allowed
    assert blob.data is before and (net.blobs["data"].data == 3.0).all()
