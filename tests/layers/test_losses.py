"""HingeLoss, ContrastiveLoss, MultinomialLogisticLoss, InfogainLoss: values against loop
references, gradients, and the errors users meet."""
import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

from protonet.blob import Blob
from protonet.errors import DataError, NetDefinitionError, ShapeError
from protonet.io.binaryproto import write_binaryproto


def blob(values, name):
    values = np.asarray(values, dtype=np.float32)
    b = Blob(values.shape, name=name)
    b.data[...] = values
    return b


# -- bottoms ---------------------------------------------------------------------------------
def hinge_bottoms(shape, seed):
    """Scores near +-1.8, +-1.4, +-0.6, +-0.2 plus noise: away from the hinge at t x = 1."""
    g = np.random.default_rng(seed)
    centres = np.array([-1.8, -1.4, -0.6, -0.2, 0.2, 0.6, 1.4, 1.8])
    x = g.choice(centres, size=shape) + g.uniform(-0.05, 0.05, size=shape)
    dim = int(np.prod(shape[1:]))
    return [blob(x, "score"), blob(g.integers(0, dim, shape[0]), "label")]


def pair_bottoms(shape, distances, seed):
    """a, b = a - d_n u_n (u_n a random unit vector) so ||a_n - b_n|| = d_n exactly, and
    similarity labels alternating 1, 0 (1.0 and 0.4 and 0, to test int truncation)."""
    g = np.random.default_rng(seed)
    a = g.standard_normal(shape)
    u = g.standard_normal((shape[0], int(np.prod(shape[1:]))))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    b = a - (u * np.asarray(distances)[:, None]).reshape(shape)
    y = np.resize([1.0, 0.0, 1.0, 0.4], shape[0])
    return [blob(a, "a"), blob(b, "b"), blob(y.reshape(shape[0], 1, 1, 1), "sim")]


def prob_bottoms(shape, seed):
    """'Probabilities' in [0.5, 1]: the log's curvature stays small for the finite differences."""
    g = np.random.default_rng(seed)
    return [blob(g.uniform(0.5, 1.0, shape), "prob"),
            blob(g.integers(0, int(np.prod(shape[1:])), shape[0]), "label")]


def infogain_bottoms(shape, axis, seed, ignore=None, with_h=True):
    g = np.random.default_rng(seed)
    classes = shape[axis]
    label_shape = shape[:axis] + shape[axis + 1:]
    labels = g.integers(0, classes, label_shape).astype(np.float32)
    if ignore is not None:
        labels.reshape(-1)[::3] = ignore
    bottoms = [blob(g.standard_normal(shape), "score"), blob(labels, "label")]
    if with_h:
        bottoms.append(blob(g.uniform(0, 1, (classes, classes)), "H"))
    return bottoms


# -- references (loops, float64) -------------------------------------------------------------
def hinge_ref(norm):
    def ref(x, label):
        x = x.reshape(len(x), -1)
        total = 0.0
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                t = 1.0 if j == int(label[i]) else -1.0
                m = max(0.0, 1.0 - t * x[i, j])
                total += m if norm == "L1" else m * m
        return total / x.shape[0]
    return ref


def contrastive_ref(margin, legacy):
    def ref(a, b, y):
        a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
        total = 0.0
        for n in range(len(a)):
            d2 = sum((a[n, c] - b[n, c]) ** 2 for c in range(a.shape[1]))
            if int(y.ravel()[n]):
                total += d2
            elif legacy:
                total += max(margin - d2, 0.0)
            else:
                total += max(margin - np.sqrt(d2), 0.0) ** 2
        return total / len(a) / 2
    return ref


def multinomial_ref(p, label):
    p = p.reshape(len(p), -1)
    return -sum(np.log(max(p[i, int(label[i])], 1e-20)) for i in range(len(p))) / len(p)


def infogain_ref(axis=1, ignore=None, normalization="VALID"):
    def ref(x, label, h):
        outer = int(np.prod(x.shape[:axis]))
        x = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
        label = label.reshape(-1)
        total, valid = 0.0, 0
        for n in range(len(x)):
            if ignore is not None and int(label[n]) == ignore:
                continue
            e = np.exp(x[n] - x[n].max())
            p = e / e.sum()
            total -= sum(h[int(label[n]), c] * np.log(max(p[c], 1e-20)) for c in range(len(p)))
            valid += 1
        norm = {"VALID": valid, "FULL": label.size, "BATCH_SIZE": outer, "NONE": 1}
        return total / max(1, norm[normalization])
    return ref


# (prototxt, bottoms, reference of the bottoms' data, check_gradient keywords)
CASES = [
    ('type: "HingeLoss"', lambda: hinge_bottoms((5, 4), 1), hinge_ref("L1"), {}),
    ('type: "HingeLoss" hinge_loss_param { norm: L1 }', lambda: hinge_bottoms((3, 2, 3, 1), 2),
     hinge_ref("L1"), {}),
    ('type: "HingeLoss" hinge_loss_param { norm: L2 }', lambda: hinge_bottoms((5, 4), 3),
     hinge_ref("L2"), {}),
    ('type: "ContrastiveLoss"',
     lambda: pair_bottoms((6, 4, 1, 1), [0.4, 0.7, 1.3, 1.6, 0.9, 1.2], 4),
     contrastive_ref(1.0, False), {}),
    ('type: "ContrastiveLoss" contrastive_loss_param { margin: 2 }',
     lambda: pair_bottoms((6, 3), [1.1, 0.5, 2.3, 2.6, 1.7, 1.5], 5),
     contrastive_ref(2.0, False), {}),
    ('type: "ContrastiveLoss" contrastive_loss_param { legacy_version: true }',
     lambda: pair_bottoms((6, 4, 1, 1), [0.4, 0.7, 1.3, 1.6, 0.9, 1.2], 6),
     contrastive_ref(1.0, True), {}),
    ('type: "MultinomialLogisticLoss"', lambda: prob_bottoms((5, 4), 7), multinomial_ref, {}),
    ('type: "MultinomialLogisticLoss"', lambda: prob_bottoms((5, 4, 1, 1), 8),
     multinomial_ref, {}),
    ('type: "InfogainLoss"', lambda: infogain_bottoms((5, 4), 1, 9), infogain_ref(), {}),
    ('type: "InfogainLoss" loss_param { ignore_label: 1 }',
     lambda: infogain_bottoms((2, 3, 2, 3), 1, 10, ignore=1), infogain_ref(1, 1), {}),
    ('type: "InfogainLoss" loss_param { ignore_label: 1 normalization: FULL }',
     lambda: infogain_bottoms((2, 3, 2, 3), 1, 11, ignore=1), infogain_ref(1, 1, "FULL"), {}),
    ('type: "InfogainLoss" loss_param { normalization: BATCH_SIZE }',
     lambda: infogain_bottoms((2, 3, 4), 1, 12), infogain_ref(1, None, "BATCH_SIZE"), {}),
    ('type: "InfogainLoss" loss_param { normalization: NONE }',
     lambda: infogain_bottoms((3, 4), 1, 13), infogain_ref(1, None, "NONE"), {}),
    ('type: "InfogainLoss" infogain_loss_param { axis: -1 }',
     lambda: infogain_bottoms((2, 3, 4), 2, 14), infogain_ref(2), {}),
]
IDS = [f"{i}-{text.split()[1]}" for i, (text, *_) in enumerate(CASES)]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_extra_loss_forward(case):
    text, make_bottoms, ref, _ = case
    layer, bottom, top = build(text, None, bottoms=make_bottoms())
    loss = float(run_forward(layer, bottom, top)[0])
    assert loss == pytest.approx(ref(*[b.data.astype(np.float64) for b in bottom]), rel=1e-5)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_extra_loss_gradient(case):
    text, make_bottoms, _, kw = case
    layer, bottom, top = build(text, None, bottoms=make_bottoms())
    assert check_gradient(layer, bottom, top, **kw) > 0
    # The loss weight reaches the gradient (the net writes it into top[0].diff).
    top[0].diff[...] = 1.0
    layer.backward(top, [True] + [False] * (len(bottom) - 1), bottom)
    unit = bottom[0].diff.copy()
    top[0].diff[...] = 2.5
    layer.backward(top, [True] + [False] * (len(bottom) - 1), bottom)
    np.testing.assert_allclose(bottom[0].diff, 2.5 * unit, rtol=1e-6)


def test_contrastive_loss_gradient_reaches_both_sides_but_not_the_labels():
    layer, bottom, top = build('type: "ContrastiveLoss"', None,
                               bottoms=pair_bottoms((6, 3), [0.4, 0.7, 1.3, 1.6, 0.9, 1.2], 3))
    assert [layer.allow_force_backward(i) for i in range(3)] == [True, True, False]
    check_gradient(layer, bottom, top, check_bottom=[0, 1])
    with pytest.raises(NetDefinitionError, match="similarity labels"):
        layer.backward(top, [True, True, True], bottom)


def test_multinomial_logistic_loss_clamps_zero_probability():
    prob = blob([[0.0, 1.0], [0.5, 0.5]], "prob")
    layer, bottom, top = build('type: "MultinomialLogisticLoss"', None,
                               bottoms=[prob, blob([0, 1], "label")])
    expected = (-np.log(np.float32(1e-20)) - np.log(0.5)) / 2
    assert float(run_forward(layer, bottom, top)[0]) == pytest.approx(expected, rel=1e-6)


def test_infogain_loss_with_identity_h_is_softmax_with_loss():
    bottoms = infogain_bottoms((3, 4, 2), 1, 15, ignore=2, with_h=False)
    eye = blob(np.eye(4), "H")
    layer, bottom, top = build('type: "InfogainLoss" loss_param { ignore_label: 2 }', None,
                               bottoms=bottoms + [eye], n_top=2)
    infogain = float(run_forward(layer, bottom, top)[0])
    prob = top[1].data.copy()
    layer, bottom, top = build('type: "SoftmaxWithLoss" loss_param { ignore_label: 2 }', None,
                               bottoms=bottoms, n_top=2)
    assert infogain == pytest.approx(float(run_forward(layer, bottom, top)[0]), rel=1e-6)
    np.testing.assert_allclose(prob, top[1].data, rtol=1e-6)


def test_infogain_loss_reads_h_from_source(tmp_path):
    bottoms = infogain_bottoms((4, 3), 1, 16)
    h = bottoms.pop().data.copy()
    write_binaryproto(tmp_path / "H.binaryproto", h)   # legacy 1 x 1 x 3 x 3, as Caffe writes
    text = f'type: "InfogainLoss" infogain_loss_param {{ source: "{tmp_path / "H.binaryproto"}" }}'
    layer, bottom, top = build(text, None, bottoms=bottoms)
    expected = infogain_ref()(*[b.data.astype(np.float64) for b in bottom], h.astype(np.float64))
    assert float(run_forward(layer, bottom, top)[0]) == pytest.approx(expected, rel=1e-5)
    check_gradient(layer, bottom, top)


@pytest.mark.parametrize("text, error, match", [
    ('type: "InfogainLoss"', NetDefinitionError, "infogain_loss_param.source"),
    ('type: "InfogainLoss" infogain_loss_param { source: "/nonexistent/H.binaryproto" }',
     DataError, "infogain matrix: /nonexistent/H.binaryproto: cannot read"),
    ('type: "InfogainLoss" infogain_loss_param { source: "x" } loss_param { normalize: true }',
     NetDefinitionError, "normalize is deprecated"),
])
def test_infogain_loss_setup_errors_name_the_layer(text, error, match):
    with pytest.raises(error, match=rf"layer 'loss' \(InfogainLoss\): .*{match}"):
        build(f'name: "loss" {text}', None, bottoms=infogain_bottoms((2, 3), 1, 0, with_h=False))


def test_infogain_loss_h_of_the_wrong_size_is_an_error():
    bottoms = infogain_bottoms((2, 3), 1, 0, with_h=False) + [blob(np.eye(4), "H")]
    with pytest.raises(ShapeError, match=r"bottom 'H' has 16 values, expected 3 x 3"):
        build('type: "InfogainLoss"', None, bottoms=bottoms)


@pytest.mark.parametrize("text, bottoms", [
    ('type: "HingeLoss"', lambda: hinge_bottoms((3, 4), 0)),
    ('type: "MultinomialLogisticLoss"', lambda: prob_bottoms((3, 4), 0)),
    ('type: "InfogainLoss"', lambda: infogain_bottoms((3, 4), 1, 0)),
])
def test_label_out_of_range_names_the_layer(text, bottoms):
    layer, bottom, top = build(f'name: "loss" {text}', None, bottoms=bottoms())
    bottom[1].data.reshape(-1)[1] = 4
    with pytest.raises(ShapeError, match=r"layer 'loss' .*label 4 out of range.*4 classes"):
        layer.forward(bottom, top)
    bottom[1].data.reshape(-1)[1] = 0
    layer.forward(bottom, top)
    with pytest.raises(NetDefinitionError, match="cannot backpropagate to label"):
        layer.backward(top, [True, True] + [False] * (len(bottom) - 2), bottom)


def test_label_count_mismatch_is_a_shape_error():
    x, _ = hinge_bottoms((3, 4), 0)
    with pytest.raises(ShapeError, match=r"6 labels .* for 3 predictions"):
        build('type: "HingeLoss"', None, bottoms=[x, blob(np.zeros((3, 2)), "label")])
