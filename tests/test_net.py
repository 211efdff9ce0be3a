"""The Net executor through pycaffe's API: wiring, losses, backward rules, weights I/O."""
from pathlib import Path

import numpy as np
import pytest

import protonet
from protonet import caffe_pb2, prototxt
from protonet.errors import NetDefinitionError, ProtonetError, ShapeError, UnknownLayerTypeError

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "models" / "lenet.prototxt"

# LeNet with a companion classifier on pool1: data and labels from DummyData.
DSN = """
name: "dsn"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param {
    shape { dim: 8 dim: 1 dim: 28 dim: 28 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 3 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 5 weight_filler { type: "xavier" }
                      bias_filler { type: "constant" value: 0.1 } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 6 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
  inner_product_param { num_output: 12 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss"
  %(main)s }
layer { name: "ip_c1" type: "InnerProduct" bottom: "pool1" top: "ip_c1"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss_c1" type: "SoftmaxWithLoss" bottom: "ip_c1" bottom: "label"
  top: "loss_c1" %(companion)s }
"""


def dsn_net(main="loss_weight: 1", companion="loss_weight: 0.3", seed=5):
    protonet.set_random_seed(seed)
    param = prototxt.parse_net_text(DSN % {"main": main, "companion": companion})
    return protonet.Net(param=param, phase=protonet.TRAIN)


def param_grads(net):
    return {name: [b.diff.copy() for b in blobs] for name, blobs in net.params.items()}


def test_lenet_deploy_runs_forward_and_backward_through_the_api():
    net = protonet.Net(str(LENET), protonet.TEST)
    assert net.inputs == ["data"] and net.outputs == ["prob"]
    assert list(net.blobs) == ["data", "conv1", "pool1", "conv2", "pool2", "ip1", "ip2", "prob"]
    assert net.blobs["pool2"].shape == (64, 50, 4, 4)
    assert [b.shape for b in net.params["conv1"]] == [(20, 1, 5, 5), (20,)]
    assert [b.shape for b in net.params["ip1"]] == [(500, 800), (500,)]
    images = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    out = net.forward(data=images)
    assert out["prob"].shape == (64, 10) and out["prob"].dtype == np.float32
    np.testing.assert_allclose(out["prob"].sum(axis=1), 1, rtol=1e-5)
    net.blobs["prob"].diff[...] = 1
    diffs = net.backward()
    assert set(diffs) == {"data"}


def test_two_losses_give_the_weighted_sum_of_each_loss_alone():
    both = dsn_net()
    loss = both.forward_backward()
    assert loss == pytest.approx(float(both.blobs["loss"].data) +
                                 0.3 * float(both.blobs["loss_c1"].data), rel=1e-6)
    grads_both = param_grads(both)

    main_only = dsn_net(companion="loss_weight: 0")
    main_only.forward_backward()
    companion_only = dsn_net(main="loss_weight: 0", companion="loss_weight: 0.3")
    companion_only.forward_backward()
    for name, blobs in grads_both.items():
        for j, diff in enumerate(blobs):
            expected = param_grads(main_only)[name][j] + param_grads(companion_only)[name][j]
            np.testing.assert_allclose(diff, expected, rtol=1e-4, atol=1e-6,
                                       err_msg=f"{name}[{j}]")
    # The companion's gradient reaches conv1 (shared trunk) but not conv2 (main branch only).
    assert np.abs(param_grads(companion_only)["conv1"][0]).sum() > 0
    assert np.abs(param_grads(companion_only)["conv2"][0]).sum() == 0


def test_split_is_inserted_where_pool1_feeds_two_layers():
    net = dsn_net()
    assert "pool1_pool1_0_split" in net.layer_dict
    assert net.layer_dict["pool1_pool1_0_split"].type == "Split"


def test_split_tops_view_the_bottom_data_and_keep_their_own_diffs():
    net = dsn_net()
    net.forward()
    net.backward()
    pool1 = net.blobs["pool1"]
    for k in range(2):
        top = net.blobs[f"pool1_pool1_0_split_{k}"]
        assert np.shares_memory(top.data, pool1.data)   # no copy per branch
        assert not np.shares_memory(top.diff, pool1.diff)
    # the trunk's gradient is still the sum of both branches' (Split's backward)
    np.testing.assert_array_equal(
        pool1.diff, net.blobs["pool1_pool1_0_split_0"].diff
        + net.blobs["pool1_pool1_0_split_1"].diff)


def test_split_tops_keep_their_data_arrays_from_one_forward_to_the_next():
    # The net's arrays stay (a user or layer holding blob.data sees the next forward's values).
    net = dsn_net()
    net.forward()
    held = [net.blobs[f"pool1_pool1_0_split_{k}"].data for k in range(2)]
    net.forward()
    for k in range(2):
        assert net.blobs[f"pool1_pool1_0_split_{k}"].data is held[k]
        np.testing.assert_array_equal(held[k], net.blobs["pool1"].data)


def test_an_in_place_layer_on_a_blob_another_layer_reads_is_named(tmp_path):
    # The ReLU would read a split top and write a second blob named "x" (the input would be
    # unreachable by name); Caffe stops on it ("produced by multiple sources").
    path = tmp_path / "net.prototxt"
    path.write_text("""
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "same" type: "Power" bottom: "x" top: "y" }
layer { name: "relu" type: "ReLU" bottom: "x" top: "x" }
""")
    with pytest.raises(NetDefinitionError, match=r"net.prototxt: layer 'relu' \(ReLU\) works in "
                                                 r"place on blob 'x', which layer 'same' also "
                                                 r"reads: give its top its own name"):
        protonet.Net(str(path), protonet.TEST)


def test_param_diffs_accumulate_until_cleared():
    # Constant data, so both passes see the same batch.
    protonet.set_random_seed(5)
    net = protonet.Net(param=prototxt.parse_net_text(
        (DSN % {"main": "", "companion": ""}).replace('type: "gaussian" std: 1', 'type: "constant" '
                                                      'value: 0.7')), phase=protonet.TRAIN)
    net.forward_backward()
    once = param_grads(net)
    net.forward_backward()
    twice = param_grads(net)
    np.testing.assert_allclose(twice["conv1"][0], 2 * once["conv1"][0], rtol=1e-5, atol=1e-7)
    net.clear_param_diffs()
    assert not np.any(net.params["conv1"][0].diff)


def test_backward_skips_layers_with_lr_mult_zero_below_everything():
    net = protonet.Net(param=prototxt.parse_net_text((DSN % {"main": "", "companion": ""})
                       .replace('top: "conv1"\n', 'top: "conv1" param { lr_mult: 0 } '
                                'param { lr_mult: 0 }\n', 1)), phase=protonet.TRAIN)
    conv1 = list(net.layer_dict).index("conv1")
    assert not net._layer_need_backward[conv1]
    net.forward_backward()
    assert not np.any(net.params["conv1"][0].diff)
    assert np.any(net.params["conv2"][0].diff)


def test_propagate_down_false_stops_the_gradient_at_that_bottom():
    text = (DSN % {"main": "", "companion": "propagate_down: false propagate_down: false"})
    net = protonet.Net(param=prototxt.parse_net_text(text), phase=protonet.TRAIN)
    net.forward_backward()
    assert not np.any(net.params["ip_c1"][0].diff)


def test_force_backward_gives_input_diffs():
    net = protonet.Net(param=prototxt.parse_net_text(
        'force_backward: true\n' + LENET.read_text()), phase=protonet.TEST)
    net.forward(data=np.ones((64, 1, 28, 28), np.float32))
    net.blobs["prob"].diff[...] = np.eye(10, dtype=np.float32)[np.arange(64) % 10] - 0.1
    diffs = net.backward()
    assert np.any(diffs["data"])


def test_forward_start_end_and_unknown_input():
    net = protonet.Net(str(LENET), protonet.TEST)
    out = net.forward(end="pool1")
    assert list(out) == ["pool1"]
    with pytest.raises(ProtonetError, match="'label' is not an input"):
        net.forward(label=np.zeros(64))
    with pytest.raises(ShapeError, match="blob 'data': expected shape"):
        net.forward(data=np.zeros((2, 1, 28, 28)))


def test_reshape_after_input_blob_reshape():
    net = protonet.Net(str(LENET), protonet.TEST)
    net.blobs["data"].reshape(3, 1, 28, 28)
    net.reshape()
    assert net.blobs["prob"].shape == (3, 10)
    assert net.forward()["prob"].shape == (3, 10)


def test_caffemodel_round_trip_is_bit_identical(tmp_path):
    net = dsn_net()
    path = tmp_path / "w.caffemodel"
    net.save(path)
    other = dsn_net(seed=99)
    assert not np.array_equal(other.params["conv1"][0].data, net.params["conv1"][0].data)
    other.copy_from(path)
    for name, blobs in net.params.items():
        for a, b in zip(blobs, other.params[name]):
            assert np.array_equal(a.data, b.data)
    path2 = tmp_path / "w2.caffemodel"
    other.save(path2)
    assert path.read_bytes() == path2.read_bytes()


def test_caffemodel_with_legacy_4d_blobs_and_v1_layers_loads(tmp_path):
    net = protonet.Net(str(LENET), protonet.TEST)
    old = caffe_pb2.NetParameter(name="LeNet")
    rng = np.random.default_rng(1)
    expected = {}
    for layer in net.layers:
        if not layer.blobs:
            continue
        v1 = old.layers.add(name=layer.name, type=caffe_pb2.V1LayerParameter.CONVOLUTION
                            if layer.type == "Convolution" else
                            caffe_pb2.V1LayerParameter.INNER_PRODUCT)
        expected[layer.name] = []
        for blob in layer.blobs:
            values = rng.standard_normal(blob.shape).astype(np.float32)
            expected[layer.name].append(values)
            shape = [1] * (4 - len(blob.shape)) + list(blob.shape)
            v1.blobs.add(num=shape[0], channels=shape[1], height=shape[2], width=shape[3],
                         data=values.ravel().tolist())
    path = tmp_path / "old.caffemodel"
    path.write_bytes(old.SerializeToString())
    net.copy_from(path)
    for name, values in expected.items():
        for blob, v in zip(net.params[name], values):
            assert np.array_equal(blob.data, v)


def test_weights_shape_mismatch_and_missing_layer_name_the_layer(tmp_path):
    net = protonet.Net(str(LENET), protonet.TEST)
    path = tmp_path / "w.caffemodel"
    net.save(path)
    model = caffe_pb2.NetParameter()
    model.ParseFromString(path.read_bytes())
    ip1 = next(lp for lp in model.layer if lp.name == "ip1")
    ip1.blobs[0].shape.dim[1] = 10
    del ip1.blobs[0].data[10 * 500:]
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ShapeError, match=r"layer 'ip1'.*\(500, 10\) in the file, \(500, 800\)"):
        net.copy_from(path)
    model.layer.remove(ip1)
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ShapeError, match="no weights for learnable layer 'ip1'"):
        net.copy_from(path, strict=True)


def test_v1_and_v2_files_of_one_net_give_identical_outputs(tmp_path):
    v2 = LENET.read_text()
    v1 = """name: "LeNet"
input: "data" input_dim: 64 input_dim: 1 input_dim: 28 input_dim: 28
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1" blobs_lr: 1 blobs_lr: 2
  convolution_param { num_output: 20 kernel_size: 5 stride: 1 weight_filler { type: "xavier" } } }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "conv2" type: CONVOLUTION bottom: "pool1" top: "conv2" blobs_lr: 1 blobs_lr: 2
  convolution_param { num_output: 50 kernel_size: 5 stride: 1 weight_filler { type: "xavier" } } }
layers { name: "pool2" type: POOLING bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "ip1" type: INNER_PRODUCT bottom: "pool2" top: "ip1" blobs_lr: 1 blobs_lr: 2
  inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
layers { name: "relu1" type: RELU bottom: "ip1" top: "ip1" }
layers { name: "ip2" type: INNER_PRODUCT bottom: "ip1" top: "ip2" blobs_lr: 1 blobs_lr: 2
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layers { name: "prob" type: SOFTMAX bottom: "ip2" top: "prob" }
"""
    (tmp_path / "v1.prototxt").write_text(v1)
    (tmp_path / "v2.prototxt").write_text(v2)
    a = protonet.Net(str(tmp_path / "v2.prototxt"), protonet.TEST)
    a.save(tmp_path / "w.caffemodel")
    b = protonet.Net(str(tmp_path / "v1.prototxt"), protonet.TEST,
                     weights=str(tmp_path / "w.caffemodel"))
    x = np.random.default_rng(2).random((64, 1, 28, 28), dtype=np.float32)
    assert np.array_equal(a.forward(data=x)["prob"], b.forward(data=x)["prob"])


def test_pycaffe_older_signature_net_file_weights_phase(tmp_path):
    net = protonet.Net(str(LENET), protonet.TEST)
    net.save(tmp_path / "w.caffemodel")
    other = protonet.Net(str(LENET), str(tmp_path / "w.caffemodel"), protonet.TEST)
    assert other.phase == protonet.TEST
    assert np.array_equal(other.params["ip2"][0].data, net.params["ip2"][0].data)


def test_shared_params_by_name_share_data_and_sum_gradients():
    net = protonet.Net(param=prototxt.parse_net_text("""
      force_backward: true
      layer { name: "x" type: "DummyData" top: "a" top: "b"
        dummy_data_param { shape { dim: 2 dim: 3 } data_filler { type: "gaussian" } } }
      layer { name: "ipa" type: "InnerProduct" bottom: "a" top: "ya" param { name: "w" }
        inner_product_param { num_output: 2 bias_term: false weight_filler { type: "gaussian" } } }
      layer { name: "ipb" type: "InnerProduct" bottom: "b" top: "yb" param { name: "w" }
        inner_product_param { num_output: 2 bias_term: false weight_filler { type: "gaussian" } } }
      layer { name: "s" type: "Eltwise" bottom: "ya" bottom: "yb" top: "s" loss_weight: 1 }
    """), phase=protonet.TRAIN)
    assert len(net.learnable_params) == 1
    wa, wb = net.params["ipa"][0], net.params["ipb"][0]
    assert np.shares_memory(wa.data, wb.data) and np.shares_memory(wa.diff, wb.diff)
    net.forward_backward()
    expected = np.ones((2, 2)).T @ (net.blobs["a"].data + net.blobs["b"].data)
    np.testing.assert_allclose(wa.diff, expected, rtol=1e-5)


def test_unknown_layer_type_names_it_and_suggests():
    with pytest.raises(UnknownLayerTypeError,
                       match=r'"Convolutoin" in layer \'c\'.*did you mean.*Convolution.*known:'):
        protonet.Net(param=prototxt.parse_net_text(
            'layer { name: "c" type: "Convolutoin" }'), phase=protonet.TRAIN)
    with pytest.raises(UnknownLayerTypeError, match=r'"Xyzzy" .*known: .*Convolution'):
        protonet.Net(param=prototxt.parse_net_text('layer { name: "c" type: "Xyzzy" }'),
                     phase=protonet.TRAIN)
    with pytest.raises(UnknownLayerTypeError, match=r'"HDF5Output" .*not supported: .*h5py'):
        protonet.Net(param=prototxt.parse_net_text('layer { name: "c" type: "HDF5Output" }'),
                     phase=protonet.TRAIN)


def test_wrong_bottom_count_names_the_layer():
    with pytest.raises(NetDefinitionError, match=r"layer 'loss' \(SoftmaxWithLoss\): takes 2 "
                                                 r"bottom blobs, got 1"):
        protonet.Net(param=prototxt.parse_net_text("""
          layer { name: "x" type: "DummyData" top: "x"
                  dummy_data_param { shape { dim: 2 dim: 3 } } }
          layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" top: "l" }"""),
            phase=protonet.TRAIN)


def test_deploy_nets_from_shared_models_build_and_run(caffe_models):
    for rel in ["examples/mnist/lenet.prototxt", "examples/cifar10/cifar10_quick.prototxt",
                "examples/net_surgery/conv.prototxt", "examples/siamese/mnist_siamese.prototxt"]:
        net = protonet.Net(str(caffe_models / rel), protonet.TEST)
        for name in net.inputs:
            net.blobs[name].data[...] = np.random.default_rng(0).random(net.blobs[name].shape)
        out = net.forward()
        for name, value in out.items():
            assert np.isfinite(value).all(), (rel, name)


def test_gpu_only_engine_is_accepted_with_one_note(caplog):
    import logging
    caplog.set_level(logging.INFO, logger="protonet")
    logging.getLogger("protonet").propagate = True
    net = protonet.Net(param=prototxt.parse_net_text("""
      layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 1 dim: 2 } } }
      layer { name: "r" type: "ReLU" bottom: "a" top: "b" relu_param { engine: CUDNN } }"""),
        phase=protonet.TEST)
    notes = [r.message for r in caplog.records if "engine" in r.message]
    assert len(notes) == 1 and "layers r" in notes[0]
    assert net.forward(a=np.array([[-1, 2]]))["b"].tolist() == [[0, 2]]


def test_loss_layer_without_a_top_gets_one_and_counts(seed):
    net = protonet.Net(param=prototxt.parse_net_text("""
        layer { name: "x" type: "DummyData" top: "x" top: "y"
                dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
                                   data_filler { type: "gaussian" } data_filler { value: 1 } } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "y" }"""),
        phase=protonet.TRAIN)
    # Caffe's names and outputs: net.forward() on its pascal_finetune example returns {}.
    assert net.outputs == [] and net.forward() == {}
    assert net.top_names["loss"] == ["(automatic)"]
    assert net.forward_backward() == pytest.approx(float(net.blobs["(automatic)"].data))


def test_two_loss_layers_without_tops_both_count(seed):
    net = protonet.Net(param=prototxt.parse_net_text("""
        layer { name: "x" type: "DummyData" top: "x" top: "y"
                dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 3 }
                                   data_filler { type: "gaussian" } data_filler { value: 1 } } }
        layer { name: "a" type: "EuclideanLoss" bottom: "x" bottom: "y" }
        layer { name: "b" type: "EuclideanLoss" bottom: "x" bottom: "y" loss_weight: 2 }"""),
        phase=protonet.TRAIN)
    assert net.forward() == {}
    loss = net.forward_backward()
    assert loss == pytest.approx(3 * ((net.blobs["x"].data - 1.0) ** 2).sum() / 8, rel=1e-5)


def test_a_net_without_layers_for_its_phase_is_named():
    with pytest.raises(NetDefinitionError, match=r"<net>: the net has no layers in phase TEST "
                                                 r"\(it has layers for other phases"):
        protonet.Net(param=prototxt.parse_net_text(
            'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 } } '
            'include { phase: TRAIN } }'), phase=protonet.TEST)
