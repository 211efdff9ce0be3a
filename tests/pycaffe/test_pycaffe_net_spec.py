"""NetSpec (caffe.net_spec / protonet.net_spec): the NetParameter a pycaffe script builds."""
import re
from pathlib import Path

import numpy as np
import pytest

import caffe
import protonet
from caffe import layers as L
from caffe import params as P

import tutorial_nets

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pycaffe"


@pytest.mark.parametrize("name", sorted(tutorial_nets.build_all(caffe)))
def test_text_is_pycaffes_for_the_tutorial_nets(name):
    # Each fixture is what pycaffe printed for the same script (caffenet.py, the notebooks).
    built = tutorial_nets.build_all(caffe)[name]
    assert str(built) == (FIXTURES / f"{name}.prototxt").read_text()


def test_keywords_go_to_the_type_parameter_else_to_the_layer():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3]))
    n.ip = L.InnerProduct(n.data, num_output=4, loss_weight=0.5, propagate_down=[True],
                          include=dict(phase=caffe.TEST))
    lp = n.to_proto().layer[1]
    assert lp.inner_product_param.num_output == 4
    assert list(lp.loss_weight) == [0.5]            # a LayerParameter field
    assert list(lp.propagate_down) == [True]
    assert lp.include[0].phase == caffe.TEST


def test_param_suffix_keywords_and_types_without_a_parameter_go_to_the_layer():
    data = L.Input(shape=dict(dim=[1, 2]))
    ip = L.InnerProduct(data, param=[dict(lr_mult=1), dict(lr_mult=2, decay_mult=0)],
                        inner_product_param=dict(num_output=3))
    silence = L.Silence(ip, ntop=0, propagate_down=[False])   # Silence has no parameter
    net = caffe.to_proto(ip, silence)
    ip_layer, silence_layer = net.layer[1], net.layer[2]
    assert [p.lr_mult for p in ip_layer.param] == [1, 2]
    assert ip_layer.param[1].decay_mult == 0
    assert ip_layer.inner_product_param.num_output == 3
    assert list(silence_layer.propagate_down) == [False]


def test_a_single_value_for_a_repeated_field_becomes_a_list():
    conv = L.Convolution(L.Input(shape=dict(dim=[1, 1, 8, 8])), kernel_size=3, pad=[1, 0],
                         num_output=2)
    p = conv.to_proto().layer[1].convolution_param
    assert list(p.kernel_size) == [3]
    assert list(p.pad) == [1, 0]


def test_enums_come_from_the_schema():
    assert P.Pooling.MAX == protonet.caffe_pb2.PoolingParameter.MAX
    assert P.Pooling.AVE == protonet.caffe_pb2.PoolingParameter.AVE
    assert P.Data.LMDB == protonet.caffe_pb2.DataParameter.LMDB
    assert P.Eltwise.SUM == protonet.caffe_pb2.EltwiseParameter.SUM


def test_ntop_gives_a_tuple_none_gives_the_layer_and_in_place_reuses_the_bottom():
    a, b = L.DummyData(shape=dict(dim=[2]), ntop=2)
    assert (a.n, b.n) == (0, 1) and a.fn is b.fn
    silence = L.Silence(a, b, ntop=0)
    relu = L.ReLU(a, in_place=True)
    net = caffe.to_proto(relu, silence)
    types = [lp.type for lp in net.layer]
    assert types == ["DummyData", "ReLU", "Silence"]
    assert list(net.layer[1].top) == list(net.layer[1].bottom) == ["DummyData1"]
    assert list(net.layer[2].top) == []
    assert net.layer[2].name == "Silence1"


def test_automatic_names_count_per_type_and_layers_take_their_first_tops_name():
    x = L.Input(shape=dict(dim=[1, 4]))
    y = L.InnerProduct(L.InnerProduct(x, num_output=3), num_output=2)
    net = caffe.to_proto(L.Sigmoid(y))
    assert [lp.name for lp in net.layer] == ["Input1", "InnerProduct1", "InnerProduct2",
                                             "Sigmoid1"]
    n = caffe.NetSpec()
    n.first, n.second = L.DummyData(shape=dict(dim=[1]), ntop=2)
    assert [n.to_proto().layer[0].name] == ["first"]
    assert list(n.to_proto().layer[0].top) == ["first", "second"]


def test_layers_come_out_depth_first_in_naming_order_each_once():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 4]))
    shared = L.ReLU(n.data)
    n.a = L.Sigmoid(shared)
    n.b = L.TanH(shared)
    names = [lp.name for lp in n.to_proto().layer]
    assert names == ["data", "ReLU1", "a", "b"]


def test_a_bottom_that_is_not_a_top_is_a_type_error():
    pair = L.DummyData(ntop=2)
    with pytest.raises(TypeError, match=r"^Silence input 0 is not a Top \(type is <class "
                                        r"'tuple'>\)$"):
        L.Silence(pair, ntop=0)


def test_unknown_field_is_an_attribute_error_and_missing_name_too():
    with pytest.raises(AttributeError):
        caffe.to_proto(L.Input(no_such_field=1))
    n = caffe.NetSpec()
    with pytest.raises(AttributeError):
        n.missing
    n["data"] = L.Input(shape=dict(dim=[1]))
    assert n["data"] is n.data


def test_the_spec_builds_and_runs_as_a_protonet_net(tmp_path):
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[4, 1, 12, 12]), dict(dim=[4, 1, 1, 1])],
                                  data_filler=[dict(type="gaussian", std=1),
                                               dict(type="constant", value=1)], ntop=2)
    n.conv = L.Convolution(n.data, kernel_size=3, num_output=4,
                           weight_filler=dict(type="xavier"))
    n.pool = L.Pooling(n.conv, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.relu = L.ReLU(n.pool, in_place=True)
    n.score = L.InnerProduct(n.relu, num_output=3, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    path = tmp_path / "net.prototxt"
    path.write_text(str(n.to_proto()))
    net = caffe.Net(str(path), caffe.TRAIN)
    assert list(net.blobs) == ["data", "label", "conv", "pool", "score", "loss"]
    loss = net.forward()["loss"]
    assert np.isfinite(loss) and loss > 0
    assert re.search(r'name: "relu"\s+type: "ReLU"\s+bottom: "pool"\s+top: "pool"',
                     path.read_text())
