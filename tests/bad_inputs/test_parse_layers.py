"""Bad-input table: layer parameters and shapes Caffe's layer SetUp CHECKs reject, and shapes
too big for memory. Each case is a small net (an Input layer, then the layer at fault) built
from a file and run forward and backward; the error must name the layer."""
from __future__ import annotations

import pytest

from harness import Case, check_case, ids
from protonet.errors import DataError, MemoryLimitError, NetDefinitionError, ShapeError
from protonet.net import TRAIN, Net

# Blobs every case can use: x (2, 3, 8, 8), v (2, 5), label (2,) of zeros, idx (2,) of zeros.
INPUT = """layer { name: "input" type: "Input" top: "x" top: "v" top: "label" top: "idx"
  input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 dim: 5 }
                shape { dim: 2 } shape { dim: 2 } } }
"""


def _build_and_run(tmp):
    with Net(str(tmp / "net.prototxt"), TRAIN) as net:
        net.forward()
        net.backward()


def layer_case(name, body, error, words=(), layer="bad"):
    """A net of INPUT and `body` (whose layer at fault is named `layer`); the message must name
    the layer and hold `words`."""
    text = INPUT + body
    return Case(name, _build_and_run, error, (f"'{layer}'",) + tuple(words),
                files={"net.prototxt": text})


def L(type_, bottoms, tops, params="", name="bad"):  # noqa: N802 - reads like the prototxt
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {params} }}\n'


def conv(params, type_="Convolution"):
    return L(type_, ["x"], ["y"], f"convolution_param {{ {params} }}")


def pool(params):
    return L("Pooling", ["x"], ["y"], f"pooling_param {{ {params} }}")


def ip(params):
    return L("InnerProduct", ["v"], ["y"], f"inner_product_param {{ {params} }}")


D = NetDefinitionError
S = ShapeError
M = MemoryLimitError

CASES = [
    # -- Convolution / Deconvolution (base_conv_layer.cpp) -------------------------------
    layer_case("conv group 0", conv("num_output: 3 kernel_size: 3 group: 0"), D, ["group"]),
    layer_case("deconv group 0", conv("num_output: 3 kernel_size: 3 group: 0", "Deconvolution"),
               D, ["group"]),
    layer_case("conv num_output 0", conv("num_output: 0 kernel_size: 3"), D, ["num_output"]),
    layer_case("conv kernel 0", conv("num_output: 2 kernel_size: 0"), D, ["kernel"]),
    layer_case("conv no kernel", conv("num_output: 2"), D, ["kernel"]),
    layer_case("conv stride 0", conv("num_output: 2 kernel_size: 3 stride: 0"), D, ["stride"]),
    layer_case("conv dilation 0", conv("num_output: 2 kernel_size: 3 dilation: 0"), D,
               ["dilation"]),
    layer_case("conv 3 kernel sizes", conv("num_output: 2 kernel_size: 3 kernel_size: 3 "
                                           "kernel_size: 3"), D, ["kernel"]),
    layer_case("conv kernel_size with kernel_h", conv("num_output: 2 kernel_size: 3 "
                                                      "kernel_h: 3 kernel_w: 3"), D, ["kernel"]),
    layer_case("conv kernel_h without kernel_w", conv("num_output: 2 kernel_h: 3"), D,
               ["kernel"]),
    layer_case("conv pad with pad_h", conv("num_output: 2 kernel_size: 3 pad: 1 pad_h: 1 "
                                           "pad_w: 1"), D, ["pad"]),
    layer_case("conv group not dividing channels", conv("num_output: 4 kernel_size: 3 "
                                                        "group: 2"), S, ["group"]),
    layer_case("conv group not dividing num_output", conv("num_output: 4 kernel_size: 3 "
                                                          "group: 3"), S, ["group"]),
    layer_case("conv kernel larger than input", conv("num_output: 2 kernel_size: 9"), S,
               ["kernel"]),
    layer_case("conv on a 2-d blob", L("Convolution", ["v"], ["y"],
                                       "convolution_param { num_output: 2 kernel_size: 1 }"),
               S, ["(2, 5)"]),
    layer_case("conv bad weight filler", conv('num_output: 2 kernel_size: 3 '
                                              'weight_filler { type: "gausian" }'), D,
               ["gausian"]),
    layer_case("conv negative std", conv('num_output: 2 kernel_size: 3 '
                                         'weight_filler { type: "gaussian" std: -1 }'), D,
               ["std"]),
    layer_case("conv zero std", conv('num_output: 2 kernel_size: 3 '
                                     'weight_filler { type: "gaussian" std: 0 }'), D, ["std"]),
    layer_case("conv uniform min > max", conv('num_output: 2 kernel_size: 3 '
                                              'weight_filler { type: "uniform" min: 1 max: 0 }'),
               D, ["min", "max"]),
    layer_case("conv sparse on xavier", conv('num_output: 2 kernel_size: 3 '
                                             'weight_filler { type: "xavier" sparse: 2 }'), D,
               ["sparse"]),
    layer_case("conv sparse -2", conv('num_output: 2 kernel_size: 3 '
                                      'weight_filler { type: "gaussian" sparse: -2 }'), D,
               ["sparse"]),
    layer_case("conv bias filler nan std", conv('num_output: 2 kernel_size: 3 '
                                                'bias_filler { type: "gaussian" std: nan }'), D,
               ["std"]),
    layer_case("conv pad 2e9", conv("num_output: 2 kernel_size: 3 pad: 2000000000"), M,
               ["'y'"]),
    layer_case("conv num_output 2e9", conv("num_output: 2000000000 kernel_size: 1"), M,
               ["bad[0]", "bytes"]),
    layer_case("deconv stride 2e9", conv("num_output: 2 kernel_size: 3 stride: 2000000000",
                                         "Deconvolution"), M, ["'y'", "2^63"]),
    layer_case("conv axis 0", conv("num_output: 2 kernel_size: 3 axis: 0"), S, ["axis"]),
    # -- Pooling ------------------------------------------------------------------------
    layer_case("pool kernel 0", pool("kernel_size: 0"), D, ["kernel"]),
    layer_case("pool no kernel", pool(""), D, ["kernel"]),
    layer_case("pool stride 0", pool("kernel_size: 2 stride: 0"), D, ["stride"]),
    layer_case("pool pad >= kernel", pool("kernel_size: 2 pad: 2"), D, ["pad"]),
    layer_case("pool pad 2e9", pool("kernel_size: 3 pad: 2000000000"), D, ["pad"]),
    layer_case("pool kernel bigger than input", pool("kernel_size: 9"), S, ["kernel"]),
    layer_case("pool global with kernel", pool("global_pooling: true kernel_size: 2"), D,
               ["global"]),
    layer_case("pool global with stride", pool("global_pooling: true stride: 2"), D,
               ["global"]),
    layer_case("pool kernel_size and kernel_h", pool("kernel_size: 2 kernel_h: 2 "
                                                     "kernel_w: 2"), D, ["kernel"]),
    layer_case("pool on a 2-d blob", L("Pooling", ["v"], ["y"],
                                       "pooling_param { kernel_size: 1 }"), S,
               ["(N, C, H, W)"]),
    layer_case("pool stochastic", pool("kernel_size: 2 pool: STOCHASTIC"), D, ["STOCHASTIC"]),
    layer_case("pool 2 tops for ave", L("Pooling", ["x"], ["y", "mask"],
                                        "pooling_param { kernel_size: 2 pool: AVE }"), D,
               ["top"]),
    # -- InnerProduct -------------------------------------------------------------------
    layer_case("ip num_output 0", ip("num_output: 0"), D, ["num_output"]),
    layer_case("ip num_output 2e9", ip("num_output: 2000000000"), M, ["bytes"]),
    layer_case("ip axis 5", ip("num_output: 2 axis: 5"), S, ["axis"]),
    layer_case("ip axis -9", ip("num_output: 2 axis: -9"), S, ["axis"]),
    layer_case("ip two bottoms", L("InnerProduct", ["v", "v"], ["y"],
                                   "inner_product_param { num_output: 2 }"), D, ["bottom"]),
    layer_case("ip no top", L("InnerProduct", ["v"], [],
                              "inner_product_param { num_output: 2 }"), D, ["top"]),
    # -- Concat / Slice -----------------------------------------------------------------
    layer_case("concat axis and concat_dim", L("Concat", ["x", "x"], ["y"],
                                               "concat_param { axis: 1 concat_dim: 1 }"),
               D, ["axis", "concat_dim"]),
    layer_case("concat_dim out of range", L("Concat", ["x", "x"], ["y"],
                                            "concat_param { concat_dim: 7 }"), D,
               ["concat_dim"]),
    layer_case("concat axis out of range", L("Concat", ["x", "x"], ["y"],
                                             "concat_param { axis: 4 }"), S, ["axis"]),
    layer_case("concat shapes differ", L("Concat", ["x", "v"], ["y"]), S, ["shape"]),
    layer_case("slice axis and slice_dim", L("Slice", ["x"], ["y", "z"],
                                             "slice_param { axis: 1 slice_dim: 1 }"), D,
               ["slice_dim"]),
    layer_case("slice_dim out of range", L("Slice", ["x"], ["y", "z"],
                                           "slice_param { slice_dim: 9 }"), D,
               ["slice_dim"]),
    layer_case("slice points unsorted", L("Slice", ["x"], ["y", "z", "w"],
                                          "slice_param { slice_point: 2 slice_point: 1 }"),
               S, ["slice_point"]),
    layer_case("slice point repeated", L("Slice", ["x"], ["y", "z", "w"],
                                         "slice_param { slice_point: 1 slice_point: 1 }"),
               S, ["slice_point"]),
    layer_case("slice point 0", L("Slice", ["x"], ["y", "z"], "slice_param { slice_point: 0 }"),
               S, ["slice_point"]),
    layer_case("slice point past the end", L("Slice", ["x"], ["y", "z"],
                                             "slice_param { slice_point: 3 }"), S,
               ["slice_point"]),
    layer_case("slice too many tops", L("Slice", ["x"], ["y", "z"],
                                        "slice_param { slice_point: 1 slice_point: 2 }"),
               S, ["slice_point"]),
    layer_case("slice uneven", L("Slice", ["x"], ["y", "z"]), S, ["divisible"]),
    # -- element-wise and neuron layers -------------------------------------------------
    layer_case("eltwise coeff with prod", L("Eltwise", ["x", "x"], ["y"],
                                            "eltwise_param { operation: PROD coeff: 1 "
                                            "coeff: 1 }"), D, ["coeff"]),
    layer_case("eltwise coeff count", L("Eltwise", ["x", "x"], ["y"],
                                        "eltwise_param { coeff: 1 }"), D, ["coeff"]),
    layer_case("eltwise shapes differ", L("Eltwise", ["x", "v"], ["y"]), S, ["shape"]),
    layer_case("eltwise one bottom", L("Eltwise", ["x"], ["y"]), D, ["bottom"]),
    layer_case("dropout ratio 1", L("Dropout", ["x"], ["y"],
                                    "dropout_param { dropout_ratio: 1 }"), D,
               ["dropout_ratio"]),
    layer_case("dropout ratio -0.5", L("Dropout", ["x"], ["y"],
                                       "dropout_param { dropout_ratio: -0.5 }"), D,
               ["dropout_ratio"]),
    layer_case("dropout ratio nan", L("Dropout", ["x"], ["y"],
                                      "dropout_param { dropout_ratio: nan }"), D,
               ["dropout_ratio"]),
    layer_case("exp base 0", L("Exp", ["x"], ["y"], "exp_param { base: 0 }"), D, ["base"]),
    layer_case("exp base -2", L("Exp", ["x"], ["y"], "exp_param { base: -2 }"), D, ["base"]),
    layer_case("exp base inf", L("Exp", ["x"], ["y"], "exp_param { base: inf }"), D, ["base"]),
    layer_case("log base 0", L("Log", ["x"], ["y"], "log_param { base: 0 }"), D, ["base"]),
    layer_case("log base nan", L("Log", ["x"], ["y"], "log_param { base: nan }"), D, ["base"]),
    layer_case("log base 1", L("Log", ["x"], ["y"], "log_param { base: 1 }"), D, ["base"]),
    layer_case("absval in place", L("AbsVal", ["x"], ["x"]), D, ["in place"]),
    layer_case("flatten in place", L("Flatten", ["x"], ["x"]), D, ["in place"]),
    layer_case("reshape in place", L("Reshape", ["x"], ["x"],
                                     "reshape_param { shape { dim: -1 } }"), D, ["in place"]),
    layer_case("split in place", L("Split", ["x"], ["x", "y"]), D, ["in place"]),
    layer_case("prelu on 1-d blob", L("PReLU", ["label"], ["y"]), S, ["channel"]),
    layer_case("prelu bad filler", L("PReLU", ["x"], ["y"],
                                     'prelu_param { filler { type: "nope" } }'), D, ["nope"]),
    layer_case("threshold 2 bottoms", L("Threshold", ["x", "x"], ["y"]), D, ["bottom"]),
    # -- shape layers -------------------------------------------------------------------
    layer_case("reshape two -1", L("Reshape", ["x"], ["y"],
                                   "reshape_param { shape { dim: -1 dim: -1 } }"), D, ["-1"]),
    layer_case("reshape count differs", L("Reshape", ["x"], ["y"],
                                          "reshape_param { shape { dim: 7 } }"), S, ["reshape"]),
    layer_case("reshape dim -2", L("Reshape", ["x"], ["y"],
                                   "reshape_param { shape { dim: -2 } }"), S, ["-2"]),
    layer_case("reshape axis out of range", L("Reshape", ["x"], ["y"],
                                              "reshape_param { axis: 9 shape { dim: 1 } }"), S,
               ["axis"]),
    layer_case("reshape num_axes -2", L("Reshape", ["x"], ["y"],
                                        "reshape_param { num_axes: -2 shape { dim: 1 } }"), S,
               ["num_axes"]),
    layer_case("reshape copy past the end", L("Reshape", ["v"], ["y"],
                                              "reshape_param { shape { dim: 0 dim: 0 dim: 0 }"
                                              " }"), S, ["0"]),
    layer_case("flatten axis out of range", L("Flatten", ["x"], ["y"],
                                              "flatten_param { axis: 7 }"), S, ["axis"]),
    layer_case("flatten end before start", L("Flatten", ["x"], ["y"],
                                             "flatten_param { axis: 3 end_axis: 1 }"), S,
               ["axis"]),
    layer_case("tile 0", L("Tile", ["x"], ["y"], "tile_param { tiles: 0 }"), D, ["tiles"]),
    layer_case("tile missing", L("Tile", ["x"], ["y"]), D, ["tiles"]),
    layer_case("tile 2e9", L("Tile", ["x"], ["y"], "tile_param { tiles: 2000000000 }"), M,
               ["'y'", "bytes"]),
    layer_case("tile axis out of range", L("Tile", ["x"], ["y"],
                                           "tile_param { tiles: 2 axis: 4 }"), S, ["axis"]),
    layer_case("crop one bottom", L("Crop", ["x"], ["y"]), D, ["bottom"]),
    layer_case("crop bigger than bottom", L("Crop", ["v", "x"], ["y"]), S, ["crop"]),
    layer_case("crop offset count", L("Crop", ["x", "x"], ["y"],
                                      "crop_param { axis: 2 offset: 1 offset: 1 offset: 1 }"),
               D, ["offset"]),
    layer_case("crop offset too big", L("Crop", ["x", "x"], ["y"],
                                        "crop_param { axis: 2 offset: 3 }"), S, ["crop"]),
    layer_case("batch_reindex 2-d index", L("BatchReindex", ["x", "v"], ["y"]), S, ["axis"]),
    layer_case("filter tops", L("Filter", ["x", "label"], ["y", "z"]), D, ["top"]),
    layer_case("argmax top_k 0", L("ArgMax", ["v"], ["y"], "argmax_param { top_k: 0 }"), D,
               ["top_k"]),
    layer_case("argmax top_k too big", L("ArgMax", ["v"], ["y"], "argmax_param { top_k: 6 }"),
               S, ["top_k"]),
    layer_case("argmax axis out of range", L("ArgMax", ["v"], ["y"],
                                             "argmax_param { axis: 3 }"), S, ["axis"]),
    layer_case("reduction axis out of range", L("Reduction", ["x"], ["y"],
                                                "reduction_param { axis: 5 }"), S, ["axis"]),
    # -- normalization ------------------------------------------------------------------
    layer_case("lrn even local_size", L("LRN", ["x"], ["y"], "lrn_param { local_size: 4 }"),
               D, ["local_size"]),
    layer_case("lrn local_size 0", L("LRN", ["x"], ["y"], "lrn_param { local_size: 0 }"),
               D, ["local_size"]),
    layer_case("lrn on 2-d blob", L("LRN", ["v"], ["y"]), S, ["(N, C, H, W)"]),
    layer_case("batchnorm lr_mult", L("BatchNorm", ["x"], ["y"], "param { lr_mult: 1 }"), D,
               ["lr_mult"]),
    layer_case("batchnorm channels differ from its blobs",
               L("BatchNorm", ["x"], ["y"], "blobs { shape { dim: 4 } data: [0, 0, 0, 0] } "
                 "blobs { shape { dim: 4 } data: [1, 1, 1, 1] } blobs { shape { dim: 1 } "
                 "data: 1 }"), S, ["blob"]),
    layer_case("scale num_axes -2", L("Scale", ["x"], ["y"], "scale_param { num_axes: -2 }"),
               D, ["num_axes"]),
    layer_case("scale shapes", L("Scale", ["x", "v"], ["y"]), S, ["shape"]),
    layer_case("bias axis out of range", L("Bias", ["x"], ["y"],
                                           "bias_param { axis: 6 }"), S, ["axis"]),
    # -- losses ---------------------------------------------------------------------------
    layer_case("softmax loss label count", L("SoftmaxWithLoss", ["x", "label"], ["loss"]), S,
               ["label"]),
    layer_case("softmax loss axis", L("SoftmaxWithLoss", ["v", "label"], ["loss"],
                                      "softmax_param { axis: 3 }"), S, ["axis"]),
    layer_case("euclidean shapes", L("EuclideanLoss", ["x", "v"], ["loss"]), S, ["count"]),
    layer_case("sigmoid xent counts", L("SigmoidCrossEntropyLoss", ["x", "v"], ["loss"]), S,
               ["count"]),
    layer_case("contrastive bottoms", L("ContrastiveLoss", ["x", "x", "label"], ["loss"]), S,
               ["shape"]),
    layer_case("multinomial label shape", L("MultinomialLogisticLoss", ["v", "v"], ["loss"]),
               S, ["label"]),
    layer_case("infogain no source", L("InfogainLoss", ["v", "label"], ["loss"]), D,
               ["infogain"]),
    layer_case("accuracy top_k too big", L("Accuracy", ["v", "label"], ["acc"],
                                           "accuracy_param { top_k: 6 }"), S, ["top_k"]),
    layer_case("accuracy label count", L("Accuracy", ["x", "label"], ["acc"]), S, ["label"]),
    layer_case("loss_weight count", L("EuclideanLoss", ["v", "v"], ["loss"],
                                      "loss_weight: 1 loss_weight: 1"), D, ["loss_weight"]),
    layer_case("hinge label count", L("HingeLoss", ["x", "v"], ["loss"]), S, ["label"]),
    # -- embed, recurrent ---------------------------------------------------------------
    layer_case("embed input_dim 0", L("Embed", ["label"], ["y"],
                                      "embed_param { num_output: 2 input_dim: 0 }"), D,
               ["input_dim"]),
    layer_case("embed num_output 0", L("Embed", ["label"], ["y"],
                                       "embed_param { num_output: 0 input_dim: 3 }"), D,
               ["num_output"]),
    layer_case("rnn 1-d input", L("RNN", ["label", "label"], ["y"],
                                  "recurrent_param { num_output: 2 }"), S, ["(T, N, ...)"]),
    layer_case("lstm num_output 0", L("LSTM", ["v", "v"], ["y"],
                                      "recurrent_param { num_output: 0 }"), D, ["num_output"]),
    # -- data-free sources --------------------------------------------------------------
    layer_case("dummy data 2 fillers 3 tops", L("DummyData", [], ["a", "b", "c"],
                                                "dummy_data_param { shape { dim: 1 } "
                                                'data_filler { type: "constant" } '
                                                'data_filler { type: "constant" } }'), S,
               ["data_filler"]),
    layer_case("dummy data shape and num", L("DummyData", [], ["a"],
                                             "dummy_data_param { shape { dim: 1 } num: 1 "
                                             "channels: 1 height: 1 width: 1 }"), D, ["shape"]),
    layer_case("dummy data 1e5 x 1e5", L("DummyData", [], ["a"],
                                         "dummy_data_param { shape { dim: 100000 "
                                         "dim: 100000 } }"), M, ["'a'", "GiB"]),
    layer_case("dummy negative std", L("DummyData", [], ["a"],
                                       'dummy_data_param { shape { dim: 2 } '
                                       'data_filler { type: "gaussian" std: -1 } }'), D,
               ["std"]),
    layer_case("input shape count", L("Input", [], ["a", "b", "c"],
                                      "input_param { shape { dim: 1 } shape { dim: 1 } }"), S,
               ["shape"]),
    layer_case("input 1e5 x 1e5", L("Input", [], ["a"],
                                    "input_param { shape { dim: 100000 dim: 100000 } }"), M,
               ["'a'", "GiB"]),
    layer_case("input dims near 2^63", L("Input", [], ["a"],
                                         "input_param { shape { dim: 9223372036854775807 "
                                         "dim: 2 } }"), M, ["'a'"]),
    layer_case("input element count overflows int64", L(
        "Input", [], ["a"], "input_param { shape { dim: 4294967296 dim: 4294967296 "
        "dim: 4 } }"), M, ["2^63"]),
    layer_case("input negative dim", L("Input", [], ["a"],
                                       "input_param { shape { dim: 2 dim: -3 } }"), D,
               ["at least 1"]),
    layer_case("input zero batch", L("Input", [], ["a"],
                                     "input_param { shape { dim: 0 dim: 3 } }"), D,
               ["(0, 3)", "at least 1"]),
    layer_case("dummy data zero channels", L("DummyData", [], ["a"],
                                             "dummy_data_param { num: 2 channels: 0 height: 1 "
                                             "width: 1 }"), D, ["at least 1"]),
    layer_case("parameter huge", L("Parameter", [], ["a"],
                                   "parameter_param { shape { dim: 100000 dim: 100000 } }"),
               M, ["GiB"]),
    layer_case("memory data batch 0", L("MemoryData", [], ["a", "b"],
                                        "memory_data_param { batch_size: 0 channels: 1 "
                                        "height: 1 width: 1 }"), D, ["batch_size"]),
    # -- net-level wiring ---------------------------------------------------------------
    layer_case("propagate_down count", L("ReLU", ["x"], ["y"],
                                         "propagate_down: true propagate_down: false"), D,
               ["propagate_down"]),
    layer_case("param specs exceed blobs", L("ReLU", ["x"], ["y"], "param { lr_mult: 1 }"),
               D, ["param"]),
    layer_case("include and exclude", L("ReLU", ["x"], ["y"],
                                        "include { phase: TRAIN } exclude { phase: TEST }"), D,
               ["include"]),
    layer_case("python layer is a function", L("Python", ["x"], ["y"],
                                               'python_param { module: "os.path" '
                                               'layer: "join" }'), D, ["class"]),
    layer_case("python layer empty module", L("Python", ["x"], ["y"],
                                              'python_param { module: "" layer: "X" }'), D,
               ["module"]),
    layer_case("python layer missing class", L("Python", ["x"], ["y"],
                                               'python_param { module: "os" layer: "Nope" }'),
               D, ["Nope"]),
    layer_case("unknown layer type", L("Convolutoin", ["x"], ["y"]), D, ["Convolutoin"]),
]


def _broken_jpeg_lmdb(tmp):
    import io

    import numpy as np
    from PIL import Image

    from protonet.io.datum import encoded_datum
    from protonet.io.lmdb_store import write_lmdb
    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(jpeg, "JPEG")
    good = jpeg.getvalue()
    write_lmdb(tmp / "db", [(b"00000000", encoded_datum(good, 1, 3, 8, 8)),
                            (b"00000001", encoded_datum(good[:60], 1, 3, 8, 8))])


DATA = ('layer {{ name: "bad" type: "Data" top: "data" top: "label" data_param {{ '
        'source: "{tmp}/db" batch_size: 2 backend: LMDB }} }}\n')
CASES.append(Case("encoded record with a broken JPEG", lambda tmp: Net(
    param=_parse(DATA.format(tmp=tmp)), phase=TRAIN).forward(), DataError,
    ("00000001", "decode"), setup=_broken_jpeg_lmdb))


def _parse(text):
    from protonet import prototxt
    return prototxt.parse_net_text(text)


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_layer(case, tmp_path):
    check_case(case, tmp_path)
