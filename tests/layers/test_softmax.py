"""Softmax, SoftmaxWithLoss, the other losses, and Accuracy."""
import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

from protonet.blob import Blob
from protonet.errors import NetDefinitionError, ShapeError
from protonet.testing import random_blobs


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def with_labels(shape, label_shape, classes, seed=1, ignore=None):
    x = random_blobs([shape], seed)[0]
    labels = Blob(label_shape, name="label")
    labels.data[...] = np.random.default_rng(seed).integers(0, classes, label_shape)
    if ignore is not None:
        labels.data.reshape(-1)[::3] = ignore
    return [x, labels]


@pytest.mark.parametrize("text, shape, axis", [
    ('type: "Softmax"', (3, 5), 1),
    ('type: "Softmax"', (2, 4, 3, 2), 1),
    ('type: "Softmax" softmax_param { axis: -1 }', (2, 3, 4), 2),
])
def test_softmax_forward_and_gradient(text, shape, axis):
    layer, bottom, top = build(text, [shape])
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0],
                               softmax(bottom[0].data.astype(np.float64), axis), rtol=1e-5)
    check_gradient(layer, bottom, top)


def reference_loss(x, labels, axis, ignore, normalization):
    p = np.moveaxis(softmax(x, axis), axis, -1).reshape(-1, x.shape[axis])
    lab = labels.reshape(-1).astype(int)
    keep = lab != ignore if ignore is not None else np.ones_like(lab, bool)
    losses = -np.log(np.maximum(p[np.arange(len(lab)), np.where(keep, lab, 0)], 1.17549435e-38))
    total = (losses * keep).sum()
    norm = {"VALID": keep.sum(), "FULL": len(lab), "BATCH_SIZE": x.shape[0], "NONE": 1}
    return total / max(1, norm[normalization])


@pytest.mark.parametrize("loss_param, ignore, norm", [
    ("", None, "VALID"),
    ("loss_param { ignore_label: 2 }", 2, "VALID"),
    ("loss_param { ignore_label: 2 normalization: FULL }", 2, "FULL"),
    ("loss_param { normalization: BATCH_SIZE }", None, "BATCH_SIZE"),
    ("loss_param { normalization: NONE }", None, "NONE"),
    ("loss_param { normalize: false }", None, "BATCH_SIZE"),
])
def test_softmax_with_loss_values_and_gradient(loss_param, ignore, norm):
    bottom = with_labels((3, 4, 2, 3), (3, 2, 3), 4, ignore=ignore)
    layer, bottom, top = build(f'type: "SoftmaxWithLoss" {loss_param}', None, bottoms=bottom)
    loss = run_forward(layer, bottom, top)[0]
    expected = reference_loss(bottom[0].data.astype(np.float64), bottom[1].data, 1, ignore, norm)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    check_gradient(layer, bottom, top)


def test_softmax_with_loss_label_out_of_range_is_named():
    bottom = with_labels((2, 3), (2,), 3)
    bottom[1].data[1] = 7
    layer, bottom, top = build('name: "loss" type: "SoftmaxWithLoss"', None, bottoms=bottom)
    with pytest.raises(ShapeError, match=r"layer 'loss'.*label 7 out of range.*3 classes"):
        layer.forward(bottom, top)


def test_softmax_with_loss_refuses_gradient_to_labels():
    layer, bottom, top = build('type: "SoftmaxWithLoss"', None, bottoms=with_labels((2, 3), (2,), 3))
    layer.forward(bottom, top)
    with pytest.raises(NetDefinitionError, match="cannot backpropagate to label"):
        layer.backward(top, [True, True], bottom)


def test_euclidean_loss_value_and_gradient_to_both_bottoms():
    layer, bottom, top = build('type: "EuclideanLoss"', [(4, 3, 2), (4, 3, 2)])
    d = bottom[0].data.astype(np.float64) - bottom[1].data
    assert float(run_forward(layer, bottom, top)[0]) == pytest.approx((d ** 2).sum() / 8,
                                                                      rel=1e-5)
    check_gradient(layer, bottom, top, check_bottom=[0, 1])


@pytest.mark.parametrize("loss_param, divisor", [
    ("", 4),                                        # Caffe's default: BATCH_SIZE
    ("loss_param { normalize: false }", 4),         # legacy false: BATCH_SIZE
    ("loss_param { normalize: true }", 20),         # legacy true: VALID
    ("loss_param { normalization: FULL }", 20),
    ("loss_param { normalization: NONE }", 1),
    ("loss_param { normalization: BATCH_SIZE normalize: true }", 4),   # normalization wins
])
def test_sigmoid_cross_entropy_loss_value_and_gradient(loss_param, divisor):
    x = random_blobs([(4, 5)], 2)[0]
    t = Blob((4, 5), name="t")
    t.data[...] = np.random.default_rng(2).random((4, 5)) > 0.5
    layer, bottom, top = build(f'type: "SigmoidCrossEntropyLoss" {loss_param}', None,
                               bottoms=[x, t])
    xs, ts = x.data.astype(np.float64), t.data.astype(np.float64)
    s = 1 / (1 + np.exp(-xs))
    expected = -(ts * np.log(s) + (1 - ts) * np.log(1 - s)).sum() / divisor
    assert float(run_forward(layer, bottom, top)[0]) == pytest.approx(expected, rel=1e-5)
    check_gradient(layer, bottom, top)


def test_sigmoid_cross_entropy_loss_divides_by_the_batch_as_caffe():
    """The value BVLC Caffe computes for these inputs (the issue's example; Caffe's
    mnist_autoencoder trains on this scale)."""
    x, t = Blob((2, 3), name="x"), Blob((2, 3), name="t")
    x.data[...] = [[0, 1, -1], [2, 0, 0.5]]
    t.data[...] = [[0, 1, 0], [1, 0.5, 1]]
    layer, bottom, top = build('type: "SigmoidCrossEntropyLoss"', None, bottoms=[x, t])
    assert float(run_forward(layer, bottom, top)[0]) == pytest.approx(1.3069113, rel=1e-6)


def test_sigmoid_cross_entropy_loss_ignores_targets_by_their_integer_part():
    x, t = Blob((2, 2), name="x"), Blob((2, 2), name="t")
    x.data[...] = [[0, 1], [-1, 2]]
    t.data[...] = [[-1, -1.5], [1, 0]]   # int(-1.5) == -1 (Caffe's static_cast<int>)
    layer, bottom, top = build('type: "SigmoidCrossEntropyLoss" loss_param { ignore_label: -1 '
                               'normalization: VALID }', None, bottoms=[x, t])
    kept = np.log1p(np.exp(-np.array([-1.0]))) + np.log1p(np.exp(2.0))
    assert float(run_forward(layer, bottom, top)[0]) == pytest.approx(kept.sum() / 2, rel=1e-6)


def test_accuracy_top_k_ties_ignore_label_and_per_class():
    scores = Blob((4, 3))
    scores.data[...] = [[0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.9, 0.0, 0.1], [0.2, 0.2, 0.6]]
    labels = Blob((4,))
    labels.data[...] = [1, 0, 2, 1]
    layer, bottom, top = build('type: "Accuracy"', None, bottoms=[scores, labels], n_top=2)
    run_forward(layer, bottom, top)
    assert float(top[0].data) == pytest.approx(1 / 4)
    np.testing.assert_allclose(top[1].data, [0, 1 / 2, 0])
    # top_k 2: right when at most 2 classes (the label's included) score >= the label's score.
    # Row 1's label ties with another class and a third is higher: 3 -> wrong (ties count
    # against, Caffe's rule); row 2 has 2 -> right.
    layer, bottom, top = build('type: "Accuracy" accuracy_param { top_k: 2 }', None,
                               bottoms=[scores, labels])
    assert float(run_forward(layer, bottom, top)[0]) == pytest.approx(2 / 4)
    layer, bottom, top = build('type: "Accuracy" accuracy_param { ignore_label: 1 }', None,
                               bottoms=[scores, labels])
    assert float(run_forward(layer, bottom, top)[0]) == pytest.approx(0 / 2)
