"""Parsing every dialect Caffe reads, and upgrading it to the current form."""
import pytest

from protonet import caffe_pb2, prototxt
from protonet.errors import PrototxtError

V1_LENET_PART = """
name: "LeNet"
layers {
  name: "mnist" type: DATA top: "data" top: "label"
  data_param { source: "x_lmdb" batch_size: 64 scale: 0.00390625 }
  include: { phase: TRAIN }
}
layers {
  name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } }
}
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "conv1" bottom: "label" top: "loss"
         loss_weight: 2 }
"""

V2_LENET_PART = """
name: "LeNet"
layer {
  name: "mnist" type: "Data" top: "data" top: "label"
  transform_param { scale: 0.00390625 }
  data_param { source: "x_lmdb" batch_size: 64 }
  include { phase: TRAIN }
}
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } }
}
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv1" bottom: "label" top: "loss"
        loss_weight: 2 }
"""


def test_v1_upgrades_to_the_same_net_as_v2():
    v1 = prototxt.parse_net_text(V1_LENET_PART)
    v2 = prototxt.parse_net_text(V2_LENET_PART)
    assert not len(v1.layers)
    assert v1 == v2


def test_v1_include_with_colon_and_param_names_and_share_mode():
    net = prototxt.parse_net_text("""
      layers { name: "ip" type: INNER_PRODUCT bottom: "x" top: "y" param: "w" param: "b"
               blob_share_mode: PERMISSIVE include: { phase: TEST stage: "s" } }""")
    layer = net.layer[0]
    assert layer.type == "InnerProduct"
    assert [p.name for p in layer.param] == ["w", "b"]
    assert layer.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE
    assert layer.include[0].phase == caffe_pb2.TEST and list(layer.include[0].stage) == ["s"]


def test_v0_layers_upgrade_with_padding_folded_into_conv():
    net = prototxt.parse_net_text("""
      name: "old"
      input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
      layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
      layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 2
                       biasterm: false blobs_lr: 1 blobs_lr: 2 weight_decay: 1 }
               bottom: "pad1" top: "conv1" }
      layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 2 stride: 2 }
               bottom: "conv1" top: "pool1" }
      layers { layer { name: "data" type: "data" source: "db" batchsize: 10 cropsize: 5
                       mirror: true scale: 0.5 meanfile: "m.binaryproto" }
               top: "d" top: "l" }
    """)
    types = [layer.type for layer in net.layer]
    assert types == ["Input", "Convolution", "Pooling", "Data"]
    conv = net.layer[1]
    assert list(conv.bottom) == ["data"]
    assert list(conv.convolution_param.pad) == [2]
    assert list(conv.convolution_param.kernel_size) == [3]
    assert list(conv.convolution_param.stride) == [2]
    assert conv.convolution_param.bias_term is False
    assert [p.lr_mult for p in conv.param] == [1, 2]
    assert net.layer[2].pooling_param.pool == caffe_pb2.PoolingParameter.AVE
    data = net.layer[3]
    assert data.data_param.source == "db" and data.data_param.batch_size == 10
    assert data.transform_param.crop_size == 5 and data.transform_param.mirror
    assert data.transform_param.scale == 0.5
    assert data.transform_param.mean_file == "m.binaryproto"
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 8, 8]


def test_v0_unknown_type_is_named():
    with pytest.raises(PrototxtError, match=r'"convolution".*known'):
        prototxt.parse_net_text('layers { layer { name: "c" type: "convolution" } }')


def test_input_fields_become_an_input_layer():
    net = prototxt.parse_net_text("""
      input: "a" input_shape { dim: 2 dim: 3 }
      input: "b" input_shape { dim: 2 }
      layer { name: "f" type: "Flatten" bottom: "a" top: "f" }""")
    first = net.layer[0]
    assert first.type == "Input" and list(first.top) == ["a", "b"]
    assert [list(s.dim) for s in first.input_param.shape] == [[2, 3], [2]]
    assert not len(net.input)


def test_input_dim_count_must_be_four_per_input():
    with pytest.raises(PrototxtError, match="4 values per input"):
        prototxt.parse_net_text('input: "a" input_dim: 1 input_dim: 2')


def test_input_names_without_shape_are_dropped_as_caffe_does(tmp_path):
    # Caffemodels saved by 2014-2015 Caffe from deploy nets (OpenCV's layer_convolution) list
    # `input` names alone; Caffe's UpgradeNetInput strips them.
    saved = caffe_pb2.NetParameter(name="old", input=["data"])
    saved.layer.add(name="conv", type="Convolution", bottom=["data"], top=["conv"])
    path = tmp_path / "old.caffemodel"
    path.write_bytes(saved.SerializeToString())
    net = prototxt.read_net_binary(path)
    assert not len(net.input) and [l.name for l in net.layer] == ["conv"]


def test_both_layer_and_layers_is_an_error():
    with pytest.raises(PrototxtError, match="both 'layer' and the old 'layers'"):
        prototxt.parse_net_text('layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }')


def test_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  type: "ReLU"\n  bottom "b"\n')
    with pytest.raises(PrototxtError, match=rf"{path}:5:\d+: "):
        prototxt.read_net(path)


def test_unknown_field_is_named_with_its_line(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  typo_field: 3\n}\n')
    with pytest.raises(PrototxtError, match=rf"{path}:4:\d+: .*typo_field"):
        prototxt.read_net(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(PrototxtError, match="no such file"):
        prototxt.read_net(tmp_path / "nope.prototxt")


def test_solver_type_enum_upgrades_to_type_string(tmp_path):
    path = tmp_path / "s.prototxt"
    path.write_text('net: "n.prototxt" base_lr: 0.1 solver_type: NESTEROV\n')
    solver = prototxt.read_solver(path)
    assert solver.type == "Nesterov" and not solver.HasField("solver_type")


def test_gpu_only_fields_are_accepted():
    solver = caffe_pb2.SolverParameter()
    prototxt.parse_text("solver_mode: GPU device_id: 1", solver)
    net = prototxt.parse_net_text(
        'layer { name: "c" type: "Convolution" convolution_param { engine: CUDNN } }')
    assert net.layer[0].convolution_param.engine == caffe_pb2.ConvolutionParameter.CUDNN


def test_every_shared_caffe_prototxt_parses(caffe_models):
    files = sorted(caffe_models.rglob("*.prototxt"))
    assert len(files) > 40
    for path in files:
        if "solver" in path.name:
            prototxt.read_solver(path)
        else:
            net = prototxt.read_net(path)
            assert len(net.layer) > 0, path
            assert not len(net.layers)
