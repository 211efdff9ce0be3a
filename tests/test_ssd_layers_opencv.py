"""The SSD fork's layers in small nets, against OpenCV's dnn on the same prototxt, caffemodel
and input: the options the real SSD models leave at one setting (Normalize across the image,
one shared scale; PriorBox's flip, clip, steps and offset; DetectionOutput's code types,
per-class locations, thresholds, top_k and keep_top_k).

Where OpenCV departs from the fork the prototxts spell the setting out or leave the case to
tests/layers/test_detection.py's references: OpenCV's PriorBox clips by default and requires
`variance` (the fork: no clipping, variance 0.1), ignores img_size/img_h/img_w (it always
divides by the image bottom's size) and keeps fractional sizes (min_size 7.5; the fork
truncates them to whole pixels, and so does protonet); its DetectionOutput requires background_label_id and
keep_top_k (and crashes on keep_top_k: -1, "keep all", so 1000 stands in for it here) and,
with variance_encoded_in_target, wants PriorBox's output without its variance channel; its
Normalize cannot scale per channel across the whole image (across_spatial with
channel_shared: false)."""
import numpy as np
import pytest
from oracle_opencv import (fill_random_weights, match_detections, opencv_forward,
                           relative_difference)

import protonet

cv2 = pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless<5) is the oracle")

RTOL = 1e-4


def run_both(tmp_path, text, inputs, output):
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(text)
    net = protonet.Net(str(prototxt), protonet.TEST)
    fill_random_weights(net, seed=11)
    weights = tmp_path / "net.caffemodel"
    net.save(str(weights))
    ours = net.forward(**inputs)[output]
    return ours, opencv_forward(prototxt, weights, inputs, [output])[output]


def image_input(name, shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'input: "{name}" input_shape {{ {dims} }}\n'


@pytest.mark.parametrize("norm_param", [
    "across_spatial: true channel_shared: true",
    "across_spatial: false channel_shared: true eps: 0.001",
    "across_spatial: false channel_shared: false",
])
def test_normalize_matches_opencv(tmp_path, norm_param):
    text = image_input("data", (2, 4, 5, 6)) + f"""
        layer {{ name: "norm" type: "Normalize" bottom: "data" top: "norm"
                norm_param {{ {norm_param} }} }}"""
    x = np.random.default_rng(1).standard_normal((2, 4, 5, 6)).astype(np.float32)
    ours, theirs = run_both(tmp_path, text, {"data": x}, "norm")
    assert relative_difference(ours, theirs) <= RTOL


def test_permute_matches_opencv(tmp_path):
    text = image_input("data", (2, 3, 4, 5)) + """
        layer { name: "perm" type: "Permute" bottom: "data" top: "perm"
                permute_param { order: 0 order: 3 order: 1 order: 2 } }"""
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 5)).astype(np.float32)
    ours, theirs = run_both(tmp_path, text, {"data": x}, "perm")
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("prior_box_param", [
    "min_size: 8 clip: false variance: 0.1",
    "min_size: 8 max_size: 20 aspect_ratio: 2 aspect_ratio: 3 flip: true clip: false "
    "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2",
    "min_size: 8 max_size: 20 aspect_ratio: 2 flip: false clip: true variance: 0.2",
    "min_size: 10 aspect_ratio: 2 step: 6 offset: 0.3 clip: false variance: 0.1",
    "min_size: 6 max_size: 11 step_h: 9 step_w: 7 clip: false variance: 0.1",
    "min_size: 6 min_size: 12 max_size: 12 max_size: 24 aspect_ratio: 2 clip: false "
    "variance: 0.1",
])
def test_prior_box_matches_opencv(tmp_path, prior_box_param):
    text = image_input("feature", (1, 2, 5, 7)) + image_input("image", (1, 3, 40, 56)) + f"""
        layer {{ name: "priors" type: "PriorBox" bottom: "feature" bottom: "image"
                top: "priors" prior_box_param {{ {prior_box_param} }} }}"""
    g = np.random.default_rng(3)
    inputs = {"feature": g.standard_normal((1, 2, 5, 7)).astype(np.float32),
              "image": g.standard_normal((1, 3, 40, 56)).astype(np.float32)}
    ours, theirs = run_both(tmp_path, text, inputs, "priors")
    assert relative_difference(ours, theirs) <= RTOL


def detection_inputs(num, priors, classes, share, seed):
    g = np.random.default_rng(seed)
    centers = g.uniform(0.2, 0.8, (priors, 2))
    sizes = g.uniform(0.1, 0.4, (priors, 2))
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    prior = np.stack([boxes.reshape(-1), np.tile([0.1, 0.1, 0.2, 0.2], priors)])[None]
    loc_classes = 1 if share else classes
    logits = 3 * g.standard_normal((num, priors, classes))
    conf = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    return {"loc": (0.5 * g.standard_normal((num, priors * loc_classes * 4))).astype(np.float32),
            "conf": conf.reshape(num, -1).astype(np.float32),
            "prior": prior.astype(np.float32)}


@pytest.mark.parametrize("params, share", [
    ("code_type: CENTER_SIZE nms_param { nms_threshold: 0.45 top_k: 100 } keep_top_k: 50 "
     "confidence_threshold: 0.05", True),
    ("code_type: CORNER nms_param { nms_threshold: 0.3 } confidence_threshold: 0.1", True),
    ("code_type: CENTER_SIZE nms_param { nms_threshold: 0.5 top_k: 30 } keep_top_k: 20 "
     "confidence_threshold: 0.02", True),
    ("code_type: CENTER_SIZE nms_param { nms_threshold: 0.4 } "
     "keep_top_k: 40 confidence_threshold: 0.05", False),
    ("background_label_id: 3 code_type: CENTER_SIZE nms_param { nms_threshold: 0.6 } "
     "confidence_threshold: 0.1", True),
])
def test_detection_output_matches_opencv(tmp_path, params, share):
    num, priors, classes = 2, 60, 4
    inputs = detection_inputs(num, priors, classes, share, seed=4)
    text = "".join(image_input(k, v.shape) for k, v in inputs.items()) + f"""
        layer {{ name: "detections" type: "DetectionOutput" bottom: "loc" bottom: "conf"
                bottom: "prior" top: "detections"
                detection_output_param {{ num_classes: {classes} share_location: {str(share).lower()}
                                         {params} }} }}"""
    if "background_label_id" not in params:
        text = text.replace("num_classes:", "background_label_id: 0 num_classes:")
    if "keep_top_k" not in params:
        text = text.replace("num_classes:", "keep_top_k: 1000 num_classes:")
    ours, theirs = run_both(tmp_path, text, inputs, "detections")
    found, _ = match_detections(ours, theirs, RTOL)
    assert found > 10
