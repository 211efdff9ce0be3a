"""The 25 deploy prototxts people still run (../shared/conformance/real-models, manifest.json
names each source) against OpenCV's dnn as the oracle: protonet builds the net with seeded
random weights, saves a caffemodel, and OpenCV runs the same prototxt + caffemodel on the same
random input. Every net output must agree within 1e-4 relative to its largest value;
DetectionOutput tops are compared as sets of boxes.

Inputs are smaller than the manifest's where the net allows it (fully convolutional nets,
detectors), so the file stays quick; nets with fully connected heads run at their size.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from conftest import SHARED
from oracle_opencv import (fill_random_weights, match_detections, opencv_forward,
                           producing_layers, relative_difference, replace_layers,
                           rewrite_prototxt, swap_axpy_inputs)

import protonet

cv2 = pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless<5) is the oracle")

REAL_MODELS = SHARED / "conformance" / "real-models"
RTOL = 1e-4


def _manifest() -> list[dict]:
    path = REAL_MODELS / "manifest.json"
    if not path.is_file():
        return []
    return json.loads(path.read_text())["models"]


# Input sizes used instead of the manifest's (the nets are fully convolutional there).
SMALL_INPUTS = {
    "face_res10_ssd.prototxt": {"data": [1, 3, 150, 150]},
    "mobilenet_ssd.prototxt": {"data": [1, 3, 160, 160]},
    "vgg_ssd300.prototxt": {"data": [1, 3, 268, 268]},  # the smallest conv9_2 fits
    "openpose_coco.prototxt": {"image": [1, 3, 64, 64]},
    "openpose_mpi_4stages.prototxt": {"image": [1, 3, 64, 64]},
    "openpose_hand.prototxt": {"image": [1, 3, 64, 64]},
    "openpose_face.prototxt": {"image": [1, 3, 64, 64]},
    "colorization_v2.prototxt": {"data_l": [1, 1, 64, 64]},
    "hed.prototxt": {"data": [1, 3, 96, 96]},
    "fcn8s_heavy_pascal.prototxt": {"data": [1, 3, 32, 32]},  # conv1_1 pads by 100
    "faster_rcnn_zf.prototxt": {"data": [1, 3, 224, 288], "im_info": [1, 3]},
}
# Random confidence heads give near-uniform class scores, under MobileNet-SSD's 0.25 and
# (201 classes) VGG-SSD's 0.01 thresholds: their weights are scaled up so that there are
# detections to compare.
SHARPEN_CONFIDENCE = {"mobilenet_ssd.prototxt": 10, "vgg_ssd300.prototxt": 5}
# Nets OpenCV 4.x cannot read: protonet still builds them (Caffe's shapes), then the test skips.
OPENCV_CANNOT_READ = {
    "segnet.prototxt": "OpenCV's Caffe importer rejects SegNet's bn_param (a fork message it "
                       "does not know, with nested fields: 'UnknownField should have at least "
                       "2 items')",
}
# Layers swapped before the prototxt is read (the manifest's notes). SegNet's DenseImageData
# becomes an input, for both sides. Faster R-CNN's Python proposal layer is swapped for the
# Proposal layer (py-faster-rcnn's test settings) for OpenCV only, which cannot run Python
# layers: protonet runs the file as published.
SEGNET_INPUT = """layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 360 dim: 480 } } }"""
PROPOSAL = """layer { name: "proposal" type: "Proposal" bottom: "rpn_cls_prob_reshape"
  bottom: "rpn_bbox_pred" bottom: "im_info" top: "rois"
  proposal_param { feat_stride: 16 base_size: 16 min_size: 16 ratio: 0.5 ratio: 1 ratio: 2
                   scale: 8 scale: 16 scale: 32 pre_nms_topn: 6000 post_nms_topn: 300
                   nms_thresh: 0.7 } }"""
REWRITES = {"segnet.prototxt": replace_layers({"data": SEGNET_INPUT})}
# OpenCV swaps Axpy's X and Y (see swap_axpy_inputs): its copy of SE-ResNet has them swapped
# back, so that both compute SENet's a * X + Y.
OPENCV_REWRITES = {"faster_rcnn_zf.prototxt": replace_layers({"proposal": PROPOSAL}),
                   "se_resnet50.prototxt": swap_axpy_inputs}
HEAVY = {"vgg_ssd300.prototxt", "fcn8s_heavy_pascal.prototxt", "openpose_coco.prototxt",
         "bvlc_alexnet.prototxt", "densenet121.prototxt", "resnext50_32x4d.prototxt",
         "se_resnet50.prototxt", "resnet50.prototxt"}


def _params():
    models = _manifest()
    if not models:  # keep one id so the test reports the missing folder
        return [pytest.param(None, id="real-models-missing")]
    return [pytest.param(m, id=m["file"].removesuffix(".prototxt"),
                         marks=[pytest.mark.slow] if m["file"] in HEAVY else [])
            for m in models]


def _input_arrays(shapes: dict, seed: int) -> dict:
    g = np.random.default_rng(seed)
    arrays = {}
    for name, shape in shapes.items():
        if name == "im_info":  # Faster R-CNN: image height, width, scale
            arrays[name] = np.array([[shapes["data"][2], shapes["data"][3], 1.0]], np.float32)
        else:
            arrays[name] = g.uniform(-1, 1, shape).astype(np.float32)
    return arrays


@pytest.mark.parametrize("model", _params())
def test_forward_matches_opencv(model, tmp_path):
    if model is None:
        if os.environ.get("CI"):
            pytest.fail(f"{REAL_MODELS} is missing; CI must run the conformance tests")
        pytest.skip(f"{REAL_MODELS} not present (the real-model prototxts live beside the "
                    "repo in ../shared/conformance/real-models)")
    name = model["file"]
    shapes = SMALL_INPUTS.get(name, model["inputs"])
    prototxt = REAL_MODELS / name
    if name in REWRITES:
        prototxt = rewrite_prototxt(prototxt, tmp_path / name, REWRITES[name])
    started = time.perf_counter()
    net = protonet.Net(str(prototxt), protonet.TEST)
    if name in OPENCV_CANNOT_READ:  # the net builds with Caffe's shapes; nothing to compare
        pytest.skip(f"{name} builds in protonet; {OPENCV_CANNOT_READ[name]}")
    inputs = _input_arrays(shapes, seed=7)
    for blob, array in inputs.items():
        net.blobs[blob].reshape(array.shape)
    net.reshape()
    fill_random_weights(net, seed=1701)
    for layer in net.layers:
        if layer.name.endswith("mbox_conf") and layer.blobs:
            layer.blobs[0].data[...] *= SHARPEN_CONFIDENCE.get(name, 1)
    weights = tmp_path / "random.caffemodel"
    net.save(str(weights))
    net.forward(**inputs)
    built = time.perf_counter() - started
    outputs = producing_layers(net)
    if name in OPENCV_REWRITES:
        prototxt = rewrite_prototxt(prototxt, tmp_path / f"opencv_{name}",
                                    OPENCV_REWRITES[name])
    theirs = opencv_forward(prototxt, weights, inputs,
                            [(layer, blob) for blob, layer in outputs.items()])
    worst = 0.0
    for blob, layer in outputs.items():
        ours = net.blobs[blob].data
        if net.layer_dict[layer].type == "DetectionOutput":
            found, diff = match_detections(ours, theirs[layer], RTOL)
            assert found > 0, f"{name}: no detections to compare; pick another input or seed"
            print(f"{name}: {found} detections agree")
        else:
            diff = relative_difference(ours, theirs[layer])
            assert diff <= RTOL, f"{name}: output '{blob}' differs from OpenCV by {diff:.3g}"
        worst = max(worst, diff)
    print(f"{name}: max relative difference {worst:.3g} (protonet {built:.1f}s)")
