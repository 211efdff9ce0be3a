"""NetState filtering, layer ordering and Split insertion, on NetParameters alone."""
import pytest

from protonet import caffe_pb2, graph, prototxt
from protonet.errors import NetDefinitionError


def names(net):
    return [layer.name for layer in net.layer]


def state(phase=caffe_pb2.TRAIN, level=0, stages=()):
    return caffe_pb2.NetState(phase=phase, level=level, stage=list(stages))


RULES = prototxt.parse_net_text("""
  layer { name: "always" type: "ReLU" }
  layer { name: "train" type: "ReLU" include { phase: TRAIN } }
  layer { name: "test" type: "ReLU" include { phase: TEST } }
  layer { name: "not_test" type: "ReLU" exclude { phase: TEST } }
  layer { name: "level2" type: "ReLU" include { min_level: 2 } }
  layer { name: "upto1" type: "ReLU" include { max_level: 1 } }
  layer { name: "stage_a" type: "ReLU" include { stage: "a" } }
  layer { name: "a_and_b" type: "ReLU" include { stage: "a" stage: "b" } }
  layer { name: "a_or_b" type: "ReLU" include { stage: "a" } include { stage: "b" } }
  layer { name: "not_a" type: "ReLU" include { not_stage: "a" } }
""")


@pytest.mark.parametrize("st, expected", [
    (state(), ["always", "train", "not_test", "upto1", "not_a"]),
    (state(caffe_pb2.TEST), ["always", "test", "upto1", "not_a"]),
    (state(level=2), ["always", "train", "not_test", "level2", "not_a"]),
    (state(stages=["a"]), ["always", "train", "not_test", "upto1", "stage_a", "a_or_b"]),
    (state(stages=["a", "b"]),
     ["always", "train", "not_test", "upto1", "stage_a", "a_and_b", "a_or_b"]),
    (state(stages=["b"]), ["always", "train", "not_test", "upto1", "a_or_b", "not_a"]),
])
def test_filter_net_applies_caffe_state_rules(st, expected):
    assert names(graph.filter_net(RULES, st)) == expected


def test_include_and_exclude_together_is_an_error():
    net = prototxt.parse_net_text(
        'layer { name: "x" type: "ReLU" include { phase: TRAIN } exclude { phase: TEST } }')
    with pytest.raises(NetDefinitionError, match="'x'.*either include rules or exclude"):
        graph.filter_net(net, state())


def test_order_keeps_definition_order_when_valid_and_fixes_it_otherwise():
    net = prototxt.parse_net_text("""
      layer { name: "c" type: "ReLU" bottom: "b" top: "c" }
      layer { name: "a" type: "Input" top: "a" }
      layer { name: "b" type: "ReLU" bottom: "a" top: "b" }
      layer { name: "d" type: "ReLU" bottom: "a" top: "d" }""")
    assert names(graph.order_layers(net)) == ["a", "b", "c", "d"]


def test_unknown_bottom_is_named_with_a_suggestion():
    net = prototxt.parse_net_text("""
      layer { name: "in" type: "Input" top: "label" }
      layer { name: "loss" type: "ReLU" bottom: "lable" top: "x" }""")
    with pytest.raises(NetDefinitionError,
                       match="layer 'loss'.*unknown bottom blob 'lable'.*did you mean 'label'"):
        graph.order_layers(net)


def test_cycle_is_rejected_naming_its_layers():
    net = prototxt.parse_net_text("""
      layer { name: "p" type: "ReLU" bottom: "y" top: "x" }
      layer { name: "q" type: "ReLU" bottom: "x" top: "y" }""")
    with pytest.raises(NetDefinitionError, match="cycle.*'p', 'q'"):
        graph.order_layers(net)


def test_top_produced_twice_is_rejected_but_in_place_is_fine():
    ok = prototxt.parse_net_text("""
      layer { name: "a" type: "Input" top: "x" }
      layer { name: "r" type: "ReLU" bottom: "x" top: "x" }""")
    graph.order_layers(ok)
    bad = prototxt.parse_net_text("""
      layer { name: "a" type: "Input" top: "x" }
      layer { name: "b" type: "Input" top: "x" }""")
    with pytest.raises(NetDefinitionError, match="layer 'b'.*top blob 'x' is already produced "
                                                 "by layer 'a'"):
        graph.order_layers(bad)


def test_insert_splits_uses_caffe_names_and_rewires_readers():
    net = prototxt.parse_net_text("""
      layer { name: "data" type: "Input" top: "data" }
      layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }
      layer { name: "a" type: "ReLU" bottom: "data" top: "a" }
      layer { name: "b" type: "ReLU" bottom: "data" top: "b" }""")
    out = graph.insert_splits(net)
    assert names(out) == ["data", "relu", "data_relu_0_split", "a", "b"]
    split = out.layer[2]
    assert split.type == "Split" and list(split.bottom) == ["data"]
    assert list(split.top) == ["data_relu_0_split_0", "data_relu_0_split_1"]
    assert list(out.layer[3].bottom) == ["data_relu_0_split_0"]
    assert list(out.layer[4].bottom) == ["data_relu_0_split_1"]


def test_a_loss_top_that_is_also_read_gets_a_split_carrying_the_weight():
    net = prototxt.parse_net_text("""
      layer { name: "x" type: "Input" top: "x" loss_weight: 0.5 }
      layer { name: "r" type: "ReLU" bottom: "x" top: "y" }""")
    out = graph.insert_splits(net)
    assert names(out) == ["x", "x_x_0_split", "r"]
    assert not len(out.layer[0].loss_weight)
    assert list(out.layer[1].loss_weight) == [0.5, 0.0]
    assert list(out.layer[2].bottom) == ["x_x_0_split_1"]


def test_single_reader_gets_no_split():
    net = prototxt.parse_net_text("""
      layer { name: "x" type: "Input" top: "x" }
      layer { name: "r" type: "ReLU" bottom: "x" top: "y" }""")
    assert names(graph.insert_splits(net)) == ["x", "r"]
