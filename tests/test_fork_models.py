"""Real fork models (../shared/conformance/real-models) that need this repo's fork layers and
fields build with Caffe's blob shapes. (Their values against OpenCV are checked by the
real-models oracle test; these are the shape facts a user sees first.)"""
import os
from pathlib import Path

import pytest

import protonet
from protonet import prototxt, surgery

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "conformance" / "real-models"


@pytest.fixture(scope="module")
def models() -> Path:
    if not MODELS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{MODELS} is missing; CI must run the fork model checks")
        pytest.skip(f"{MODELS} not present (the real-model prototxts live beside the repo in "
                    "../shared/conformance/real-models)")
    return MODELS


def build(path, **shapes):
    param = prototxt.read_net(path)
    if shapes:
        param = surgery.swap_data_layers(param, shapes, batch_size=1)
    return protonet.Net(param=param, phase=protonet.TEST)


@pytest.mark.parametrize("name, blob, shape", [
    # ceil_mode: false (BVLC PR #3057's field): 112 -> 56, where Caffe's ceil would give 57.
    ("densenet121.prototxt", "pool1", (1, 64, 56, 56)),
    ("resnext50_32x4d.prototxt", "pool1", (1, 64, 56, 56)),
    ("shufflenet_1x_g3.prototxt", "fc1000", (1, 1000, 1, 1)),   # ShuffleChannel, depthwise
    ("se_resnet50.prototxt", "prob", (1, 1000)),                # Axpy
])
def test_fork_model_builds_with_caffes_shapes(models, name, blob, shape):
    net = build(models / name)
    assert net.blobs[blob].shape == shape


def test_segnet_builds_with_its_data_layer_swapped(models):
    """SegNet's DenseImageData swapped for DummyData (the label top gets one channel of the
    image's size); BN and Upsample restore the input size."""
    net = build(models / "segnet.prototxt", data=(3, 360, 480))
    assert net.blobs["label"].shape == (1, 1, 360, 480)
    assert net.blobs["conv1_1_D"].shape == (1, 11, 360, 480)
