"""The schema: generated module up to date, and Caffe's wire facts users' files rely on."""
import importlib.util
from pathlib import Path

import pytest
from google.protobuf import text_format

from protonet import caffe_pb2

ROOT = Path(__file__).resolve().parents[1]


def test_generated_module_is_not_stale():
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools not installed (pip install -e '.[test]')")
    spec = importlib.util.spec_from_file_location("build_proto", ROOT / "tools/build_proto.py")
    build_proto = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_proto)
    assert build_proto.compiled_descriptor_bytes() == build_proto.embedded_descriptor_bytes(), (
        "protonet/caffe_pb2.py is stale: run python tools/build_proto.py")


# (message, field, number) facts checked against Caffe's caffe.proto.
WIRE_FACTS = [
    ("BlobShape", "dim", 1), ("BlobProto", "shape", 7), ("BlobProto", "data", 5),
    ("BlobProto", "diff", 6), ("BlobProto", "double_data", 8), ("BlobProto", "num", 1),
    ("BlobProto", "width", 4), ("Datum", "channels", 1), ("Datum", "data", 4),
    ("Datum", "label", 5), ("Datum", "float_data", 6), ("Datum", "encoded", 7),
    ("FillerParameter", "variance_norm", 8), ("FillerParameter", "sparse", 7),
    ("NetParameter", "layer", 100), ("NetParameter", "layers", 2), ("NetParameter", "input", 3),
    ("NetParameter", "input_dim", 4), ("NetParameter", "input_shape", 8),
    ("NetParameter", "force_backward", 5), ("LayerParameter", "blobs", 7),
    ("LayerParameter", "param", 6), ("LayerParameter", "propagate_down", 11),
    ("LayerParameter", "convolution_param", 106), ("LayerParameter", "pooling_param", 121),
    ("LayerParameter", "input_param", 143), ("LayerParameter", "batch_norm_param", 139),
    ("V1LayerParameter", "blobs_lr", 7), ("V1LayerParameter", "weight_decay", 8),
    ("V1LayerParameter", "blobs", 6), ("V1LayerParameter", "type", 5),
    ("V1LayerParameter", "layer", 1), ("V1LayerParameter", "param", 1001),
    ("ConvolutionParameter", "dilation", 18), ("ConvolutionParameter", "kernel_size", 4),
    ("PoolingParameter", "global_pooling", 12), ("LossParameter", "normalization", 3),
    ("LossParameter", "normalize", 2), ("SolverParameter", "type", 40),
    ("SolverParameter", "solver_type", 30), ("SolverParameter", "net", 24),
    ("SolverParameter", "iter_size", 36), ("SolverParameter", "momentum2", 39),
    ("SolverState", "iter", 1), ("SolverState", "learned_net", 2),
    ("SolverState", "history", 3), ("SolverState", "current_step", 4),
    ("DataParameter", "backend", 8), ("DataParameter", "prefetch", 10),
]


@pytest.mark.parametrize("message, field, number", WIRE_FACTS)
def test_field_numbers_match_caffe(message, field, number):
    assert getattr(caffe_pb2, message).DESCRIPTOR.fields_by_name[field].number == number


# (message, field, number) facts of Caffe forks, checked against each fork's caffe.proto, so
# their binary caffemodels decode; where BVLC uses the fork's number, 20000 + that number.
FORK_WIRE_FACTS = [
    ("LayerParameter", "bn_param", 45),                  # alexgkendall/caffe-segnet
    ("BNParameter", "bn_mode", 3), ("BNParameter", "scale_filler", 1),
    ("LayerParameter", "upsample_param", 20000 + 137),   # SegNet 137 = BVLC embed_param
    ("UpsampleParameter", "upsample_h", 6), ("UpsampleParameter", "pad_out_h", 4),
    ("LayerParameter", "dense_image_data_param", 20000 + 138),   # SegNet 138 = tile_param
    ("LayerParameter", "interp_param", 20000 + 143),     # PSPNet 143 = BVLC input_param
    ("LayerParameter", "roi_pooling_param", 8266711),    # rbgirshick/caffe-fast-rcnn
    ("ROIPoolingParameter", "spatial_scale", 3), ("DropoutParameter", "scale_train", 2),
    ("LayerParameter", "proposal_param", 201),           # OpenCV's opencv-caffe.proto
    ("ProposalParameter", "nms_thresh", 8),
    ("LayerParameter", "shuffle_channel_param", 164),
    ("LayerParameter", "correlation_param", 150),        # lmb-freiburg/flownet2
    ("LayerParameter", "resample_param", 155), ("LayerParameter", "flow_warp_param", 159),
    ("LayerParameter", "accum_param", 160), ("CorrelationParameter", "correlation_type", 15),
    ("PoolingParameter", "round_mode", 13),              # BVLC; PR #3057's ceil_mode used 13
    ("PoolingParameter", "ceil_mode", 20000 + 13),
]


@pytest.mark.parametrize("message, field, number", FORK_WIRE_FACTS)
def test_fork_field_numbers_match_the_forks(message, field, number):
    assert getattr(caffe_pb2, message).DESCRIPTOR.fields_by_name[field].number == number


def test_protonet_extensions_sit_far_above_caffe_numbers():
    assert caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name["loss_weight_schedule"].number == 1000
    assert caffe_pb2.SolverState.DESCRIPTOR.fields_by_name["data_reader"].number == 1000
    assert caffe_pb2.SolverState.DESCRIPTOR.fields_by_name["rng_state"].number == 1001


def test_defaults_match_caffe():
    s = caffe_pb2.SolverParameter()
    assert (s.type, s.delta, s.momentum2, s.average_loss, s.iter_size) == ("SGD", pytest.approx(1e-8),
                                                                         pytest.approx(0.999), 1, 1)
    assert s.rms_decay == pytest.approx(0.99) and s.regularization_type == "L2"
    assert s.snapshot_format == caffe_pb2.SolverParameter.BINARYPROTO and s.random_seed == -1
    assert s.clip_gradients == -1 and s.test_initialization and s.snapshot_after_train
    assert caffe_pb2.NetState().phase == caffe_pb2.TEST
    assert caffe_pb2.ParamSpec().lr_mult == 1 and caffe_pb2.ParamSpec().decay_mult == 1
    assert caffe_pb2.DataParameter().backend == caffe_pb2.DataParameter.LEVELDB
    assert caffe_pb2.LossParameter().normalization == caffe_pb2.LossParameter.VALID
    assert caffe_pb2.FillerParameter().type == "constant"
    assert caffe_pb2.PoolingParameter().stride == 1


def test_text_format_parses_v1_and_v2_snippets():
    v1 = text_format.Parse('layers { name: "c" type: CONVOLUTION blobs_lr: 1 '
                           'include: { phase: TRAIN } }', caffe_pb2.NetParameter())
    assert v1.layers[0].type == caffe_pb2.V1LayerParameter.CONVOLUTION
    v2 = text_format.Parse('layer { name: "c" type: "Convolution" param { lr_mult: 1 } }',
                           caffe_pb2.NetParameter())
    assert v2.layer[0].param[0].lr_mult == 1


@pytest.mark.parametrize("shape", [(), (1,), (3,), (200,), (20, 30, 7), (4, 3, 70, 70)])
def test_blobproto_writer_gives_protobufs_own_bytes(shape):
    """The fast packed-float writer must serialize exactly as protobuf's own repeated field
    does (Caffe and OpenCV read these bytes), values and diff alike, and read back bitwise."""
    import numpy as np
    from protonet.io.binaryproto import array_from_blobproto, blobproto_from_array
    rng = np.random.default_rng(1701)
    data = rng.standard_normal(shape).astype(np.float32)
    diff = rng.standard_normal(shape).astype(np.float32)
    ours = blobproto_from_array(data, diff)
    theirs = caffe_pb2.BlobProto()
    if shape:
        theirs.shape.dim.extend(shape)
    theirs.data.extend(data.ravel().tolist())
    theirs.diff.extend(diff.ravel().tolist())
    assert ours.SerializeToString() == theirs.SerializeToString()
    assert np.array_equal(array_from_blobproto(ours), data)
    assert np.array_equal(array_from_blobproto(ours, diff=True), diff)
