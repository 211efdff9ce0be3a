"""OpenCV's Caffe layer tests (../shared/conformance/opencv-cases): each prototxt runs in
protonet on the case's weights and inputs, and its outputs equal the reference outputs (made by
Caffe for caffe/, by OpenCV 4.14's dnn module for gen/) within 1e-4 relative.

The inputs are set the way OpenCV's tests set them (Net::setInput): a prototxt that names an
input without a shape gets the shape of the array fed to it.
"""
import os
from pathlib import Path

import numpy as np
import pytest

import protonet
from protonet import caffe_pb2, prototxt

CASES_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "conformance" / "opencv-cases"
TOLERANCE = 1e-4

C, X, G = "caffe/", "extra/", "gen/"
COMMON = C + "blob.npy"   # OpenCV's common input blob (2, 6, 75, 113)
# name: (prototxt, caffemodel or None, {input blob: .npy}, {output blob: reference .npy})
CASES = {
    "layer_batch_norm": (C + "layer_batch_norm.prototxt", C + "layer_batch_norm.caffemodel",
                         {"input": COMMON}, {"output": C + "layer_batch_norm.npy"}),
    "layer_concat": (C + "layer_concat.prototxt", None, {"input": COMMON},
                     {"output": C + "layer_concat.npy"}),
    "layer_convolution": (C + "layer_convolution.prototxt", C + "layer_convolution.caffemodel",
                          {"input": COMMON}, {"output": C + "layer_convolution.npy"}),
    "layer_deconvolution": (C + "layer_deconvolution.prototxt",
                            C + "layer_deconvolution.caffemodel",
                            {"input": C + "layer_deconvolution.input.npy"},
                            {"output": C + "layer_deconvolution.npy"}),
    "layer_dropout": (C + "layer_dropout.prototxt", None, {"input": COMMON},
                      {"output": C + "layer_dropout.npy"}),
    "layer_inner_product": (C + "layer_inner_product.prototxt",
                            C + "layer_inner_product.caffemodel", {"input": COMMON},
                            {"output": C + "layer_inner_product.npy"}),
    "layer_lrn_channels": (C + "layer_lrn_channels.prototxt", None, {"input": COMMON},
                           {"output": C + "layer_lrn_channels.npy"}),
    "layer_lrn_spatial": (C + "layer_lrn_spatial.prototxt", None, {"input": COMMON},
                          {"output": C + "layer_lrn_spatial.npy"}),
    "layer_mvn": (C + "layer_mvn.prototxt", None, {"input": COMMON},
                  {"output": C + "layer_mvn.npy"}),
    "layer_pooling_ave": (C + "layer_pooling_ave.prototxt", None, {"input": COMMON},
                          {"output": C + "layer_pooling_ave.npy"}),
    "layer_pooling_max": (C + "layer_pooling_max.prototxt", None, {"input": COMMON},
                          {"output": C + "layer_pooling_max.npy"}),
    "layer_relu": (C + "layer_relu.prototxt", None, {"input": COMMON},
                   {"output": C + "layer_relu.npy"}),
    "layer_softmax": (C + "layer_softmax.prototxt", None, {"input": COMMON},
                      {"output": C + "layer_softmax.npy"}),
    # OpenCV's Reshape_Split_Slice: the routines give back their input.
    "reshape_and_slice_routines": (C + "reshape_and_slice_routines.prototxt", None,
                                   {"input": G + "reshape_and_slice_routines.input.npy"},
                                   {"output": G + "reshape_and_slice_routines.input.npy"}),
    "accum": (X + "accum.prototxt", None,
              {"input_0": G + "accum.input_0.npy", "input_1": G + "accum.input_1.npy"},
              {"out": G + "accum.npy"}),
    "conv_2_inps": (X + "conv_2_inps.prototxt", G + "conv_2_inps.caffemodel",
                    {"input_0": G + "conv_2_inps.input_0.npy",
                     "input_1": G + "conv_2_inps.input_1.npy"},
                    {"out_0": G + "conv_2_inps_0.npy", "out_1": G + "conv_2_inps_1.npy"}),
    "correlation": (X + "correlation.prototxt", None,
                    {"input_0": G + "correlation.input_0.npy",
                     "input_1": G + "correlation.input_1.npy"},
                    {"out": G + "correlation.npy"}),
    "flow_warp": (X + "flow_warp.prototxt", None,
                  {"input_0": G + "flow_warp.input_0.npy", "input_1": G + "flow_warp.input_1.npy"},
                  {"out": G + "flow_warp.npy"}),
    "layer_batch_norm_local_stats": (X + "layer_batch_norm_local_stats.prototxt",
                                     G + "layer_batch_norm_local_stats.caffemodel",
                                     {"input": G + "layer_batch_norm_local_stats.input.npy"},
                                     {"output": G + "layer_batch_norm_local_stats.npy"}),
    "layer_concat_optim": (X + "layer_concat_optim.prototxt", G + "layer_concat_optim.caffemodel",
                           {"input": G + "layer_concat_optim.input.npy"},
                           {"output": G + "layer_concat_optim.npy"}),
    "layer_concat_shared_input": (X + "layer_concat_shared_input.prototxt",
                                  G + "layer_concat_shared_input.caffemodel",
                                  {"input": G + "layer_concat_shared_input.input.npy"},
                                  {"output": G + "layer_concat_shared_input.npy"}),
    "layer_eltwise": (X + "layer_eltwise.prototxt", None, {"input": COMMON},
                      {"output": G + "layer_eltwise.npy"}),
    "layer_interp": (X + "layer_interp.prototxt", None, {"input": G + "layer_interp.input.npy"},
                     {"output": G + "layer_interp.npy"}),
    "layer_prelu": (X + "layer_prelu.prototxt", G + "layer_prelu.caffemodel", {"input": COMMON},
                    {"output": G + "layer_prelu.npy"}),
    "layer_prelu_fc": (X + "layer_prelu_fc.prototxt", G + "layer_prelu_fc.caffemodel",
                       {"input": G + "layer_prelu_fc.input.npy"},
                       {"output": G + "layer_prelu_fc.npy"}),
    "nearest": (X + "nearest.prototxt", None, {"input": G + "nearest.input.npy"},
                {"out": G + "nearest.npy"}),
    "net_faster_rcnn_proposal": (X + "net_faster_rcnn_proposal.prototxt", None,
                                 {"rpn_cls_prob_reshape": G + "net_faster_rcnn_proposal.scores.npy",
                                  "rpn_bbox_pred": G + "net_faster_rcnn_proposal.deltas.npy",
                                  "im_info": G + "net_faster_rcnn_proposal.im_info.npy"},
                                 {"output": G + "net_faster_rcnn_proposal.npy"}),
    "net_roi_pooling": (X + "net_roi_pooling.prototxt", None,
                        {"input": G + "net_roi_pooling.input.npy",
                         "rois": G + "net_roi_pooling.rois.npy"},
                        {"output": G + "net_roi_pooling.npy"}),
    "prior_box": (X + "prior_box.prototxt", None,
                  {"data": G + "prior_box.data.npy", "shape": G + "prior_box.shape.npy"},
                  {"priorbox": G + "prior_box.npy"}),
}

# OpenCV stores this reference as (N*C*H, num_output); Caffe's InnerProduct with axis 3 gives
# (N, C, H, num_output): the same values in the same order.
FLATTENED_REFERENCES = {"layer_inner_product"}


@pytest.fixture(scope="module")
def cases_dir() -> Path:
    if not CASES_DIR.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{CASES_DIR} is missing; CI must run the OpenCV layer cases")
        pytest.skip(f"{CASES_DIR} not present (OpenCV's layer test data lives beside the repo "
                    "in ../shared/conformance/opencv-cases)")
    return CASES_DIR


def net_with_inputs(path: Path, inputs: dict[str, np.ndarray]):
    """The case's NetParameter, its inputs shaped like the arrays fed to them (OpenCV's
    setInput): top-level inputs named without dims and Input layers without a shape."""
    param = prototxt.parse_text(path.read_text(), caffe_pb2.NetParameter(), str(path))
    if len(param.input) and not len(param.input_shape) and not len(param.input_dim):
        for name in param.input:
            param.input_shape.add().dim.extend(inputs[name].shape)
    for layer in param.layer:
        if layer.type == "Input" and not len(layer.input_param.shape):
            for top in layer.top:
                layer.input_param.shape.add().dim.extend(inputs[top].shape)
    return param


def max_relative_difference(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| over the reference's largest magnitude (at least 1e-6)."""
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-6)
    return float(np.abs(got.astype(np.float64) - expected).max(initial=0.0)) / scale


@pytest.mark.parametrize("name", sorted(CASES))
def test_opencv_case_matches_its_reference(name, cases_dir):
    model, weights, input_files, output_files = CASES[name]
    inputs = {blob: np.load(cases_dir / f) for blob, f in input_files.items()}
    param = net_with_inputs(cases_dir / model, inputs)
    net = protonet.Net(param=param, phase=protonet.TEST, source=str(cases_dir / model))
    if weights:
        net.copy_from(cases_dir / weights)
    for blob, value in inputs.items():
        net.blobs[blob].reshape(*value.shape)
        net.blobs[blob].data[...] = value
    net.forward()
    for blob, f in output_files.items():
        expected = np.load(cases_dir / f).astype(np.float64)
        got = net.blobs[blob].data
        if name in FLATTENED_REFERENCES:
            expected = expected.reshape(got.shape)
        assert got.shape == expected.shape, f"{name}: '{blob}' shape {got.shape}, reference " \
                                            f"{expected.shape}"
        difference = max_relative_difference(got, expected)
        assert difference <= TOLERANCE, f"{name}: '{blob}' differs by {difference:.3g} relative"
