"""caffe.Classifier (ten-crop prediction) and caffe.Detector (window crops with context)."""
import numpy as np
import pytest
from PIL import Image

import caffe
from caffe import layers as L

MEAN_BGR = np.array([10.0, 20.0, 30.0])


@pytest.fixture
def deploy(tmp_path):
    """A deploy net on (2, 3, 6, 6) inputs and a weights file for it."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 6, 6]))
    n.score = L.InnerProduct(n.data, num_output=4, weight_filler=dict(type="gaussian", std=0.01),
                             bias_filler=dict(type="constant", value=0.1))
    n.prob = L.Softmax(n.score)
    model = tmp_path / "deploy.prototxt"
    model.write_text(str(n.to_proto()))
    caffe.set_random_seed(5)
    weights = tmp_path / "w.caffemodel"
    caffe.Net(str(model), caffe.TEST).save(str(weights))
    return str(model), str(weights)


def classifier(deploy, **settings):
    return caffe.Classifier(*deploy, mean=MEAN_BGR, raw_scale=255, channel_swap=(2, 1, 0),
                            **settings)


def test_classifier_configures_its_transformer(deploy):
    clf = classifier(deploy, image_dims=(8, 8))
    t = clf.transformer
    assert t.transpose["data"] == (2, 0, 1) and t.channel_swap["data"] == (2, 1, 0)
    assert t.raw_scale["data"] == 255 and t.mean["data"].shape == (3, 1, 1)
    assert list(clf.crop_dims) == [6, 6] and list(clf.image_dims) == [8, 8]
    assert list(classifier(deploy).image_dims) == [6, 6]


def one_by_one(clf, crops):
    """The net's output for each crop, fed one at a time through the transformer."""
    out = []
    for crop in crops:
        clf.blobs["data"].data[0] = clf.transformer.preprocess("data", crop)
        out.append(clf.forward()["prob"][0].copy())
    return np.array(out)


def test_predict_averages_the_ten_crops(deploy):
    clf = classifier(deploy, image_dims=(8, 8))
    rng = np.random.default_rng(0)
    images = [rng.random((10, 12, 3)).astype(np.float32) for _ in range(3)]
    predictions = clf.predict(images)
    assert predictions.shape == (3, 4)
    resized = [caffe.io.resize_image(im, (8, 8)) for im in images]
    expected = one_by_one(clf, caffe.io.oversample(resized, (6, 6))).reshape(3, 10, 4)
    assert np.allclose(predictions, expected.mean(axis=1), atol=1e-6)


def test_predict_without_oversampling_uses_the_centre_crop(deploy):
    clf = classifier(deploy, image_dims=(8, 8))
    image = np.random.default_rng(1).random((8, 8, 3)).astype(np.float32)
    predictions = clf.predict([image], oversample=False)
    assert np.allclose(predictions, one_by_one(clf, [image[1:7, 1:7]]), atol=1e-6)


@pytest.fixture
def detector(deploy):
    return caffe.Detector(*deploy, mean=MEAN_BGR, raw_scale=255, channel_swap=(2, 1, 0),
                          context_pad=1)


def test_detector_crop_mean_is_the_mean_in_image_space(detector):
    assert list(detector.crop_dims) == [6, 6, 3]
    assert detector.crop_mean.shape == (6, 6, 3)
    assert np.allclose(detector.crop_mean[0, 0], MEAN_BGR[::-1] / 255)


def test_detector_crop_without_context_is_the_window(deploy):
    det = caffe.Detector(*deploy)
    image = np.arange(20 * 20 * 3, dtype=np.float32).reshape(20, 20, 3)
    assert np.array_equal(det.crop(image, np.array([2, 3, 9, 12])), image[2:9, 3:12])


def test_detector_context_crop_fills_what_lies_beyond_the_image_with_the_mean(detector):
    image = np.ones((20, 20, 3), np.float32)
    inside = detector.crop(image, np.array([5, 5, 12, 12]))
    assert inside.shape == (6, 6, 3) and np.allclose(inside, 1)
    corner = detector.crop(image, np.array([0, 0, 7, 7]))
    assert corner.shape == (6, 6, 3)
    assert np.allclose(corner[0], detector.crop_mean[0])        # the row above the image
    assert np.allclose(corner[:, 0], detector.crop_mean[:, 0])  # the column left of it
    assert np.allclose(corner[1:, 1:], 1)


def test_detect_windows_returns_one_prediction_per_window(detector, tmp_path):
    path = tmp_path / "im.png"
    Image.fromarray((np.random.default_rng(2).random((20, 24, 3)) * 255).astype(np.uint8)
                    ).save(path)
    windows = [np.array([0, 0, 10, 10]), np.array([5, 6, 19, 23]), np.array([2, 2, 8, 9])]
    detections = detector.detect_windows([(str(path), windows)])
    assert [d["filename"] for d in detections] == [str(path)] * 3
    assert [d["window"] is w for d, w in zip(detections, windows)] == [True] * 3
    image = caffe.io.load_image(str(path))
    expected = one_by_one(detector, [detector.crop(image, w) for w in windows])
    assert np.allclose(np.array([d["prediction"] for d in detections]), expected, atol=1e-6)
