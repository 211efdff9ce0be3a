"""The SSD fork's layers: Permute, Normalize (values, gradients), PriorBox and DetectionOutput
(values against references written from the fork's definitions, and hand-worked cases), and
Flatten/Softmax as SSD chains them."""
from collections import namedtuple

import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

from protonet import caffe_pb2
from protonet.blob import Blob
from protonet.errors import NetDefinitionError, ShapeError

# -- Permute ----------------------------------------------------------------------------------
PERMUTES = [
    ('type: "Permute" permute_param { order: 0 order: 2 order: 3 order: 1 }', (2, 3, 4, 5),
     (0, 2, 3, 1)),
    ('type: "Permute" permute_param { order: 3 order: 1 }', (2, 3, 4, 5), (3, 1, 0, 2)),
    ('type: "Permute" permute_param { order: 1 order: 0 }', (3, 4), (1, 0)),
    ('type: "Permute"', (2, 3, 4), (0, 1, 2)),
]


@pytest.mark.parametrize("text, shape, order", PERMUTES)
def test_permute_forward_and_gradient(text, shape, order):
    layer, bottom, top = build(text, [shape])
    got = run_forward(layer, bottom, top)[0]
    np.testing.assert_array_equal(got, bottom[0].data.transpose(order))
    check_gradient(layer, bottom, top)


@pytest.mark.parametrize("order, message", [
    ("order: 0 order: 4", "names axis 4"),
    ("order: 1 order: 1", "repeats an axis"),
])
def test_permute_rejects_bad_orders(order, message):
    with pytest.raises(NetDefinitionError, match=message):
        build(f'type: "Permute" permute_param {{ {order} }}', [(2, 3, 4, 5)])


# -- Normalize --------------------------------------------------------------------------------
def l2_normalize(x, scale, across_spatial, eps=1e-10):
    n, c = x.shape[:2]
    planes = x.reshape(n, c, -1)
    if across_spatial:
        norm = np.sqrt((planes ** 2).sum(axis=(1, 2), keepdims=True) + eps)
    else:
        norm = np.sqrt((planes ** 2).sum(axis=1, keepdims=True) + eps)
    s = scale.reshape(1, -1, 1) if scale.size > 1 else scale.reshape(())
    return (planes / norm * s).reshape(x.shape)


SCALES = 'scale_filler { type: "uniform" min: 0.5 max: 3 }'
NORMALIZES = [
    (f'type: "Normalize" norm_param {{ {SCALES} }}', (2, 3, 4, 5), True),
    (f'type: "Normalize" norm_param {{ across_spatial: false {SCALES} }}', (2, 3, 4, 5), False),
    (f'type: "Normalize" norm_param {{ channel_shared: false {SCALES} }}', (2, 3, 4, 5), True),
    (f'type: "Normalize" norm_param {{ across_spatial: false channel_shared: false {SCALES} }}',
     (2, 4, 3, 3), False),
    (f'type: "Normalize" norm_param {{ across_spatial: false channel_shared: false {SCALES} }}',
     (3, 5), False),
]


@pytest.mark.parametrize("text, shape, across", NORMALIZES)
def test_normalize_forward_and_gradient(text, shape, across):
    layer, bottom, top = build(text, [shape])
    expected = l2_normalize(bottom[0].data.astype(np.float64),
                            layer.blobs[0].data.astype(np.float64), across)
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0], expected, rtol=1e-5,
                               atol=1e-6)
    check_gradient(layer, bottom, top)


def test_normalize_scale_blob_defaults_and_shapes():
    layer, bottom, top = build('type: "Normalize"', [(2, 3, 4, 5)])
    assert layer.blobs[0].shape == () and layer.blobs[0].data == 1
    layer, _, _ = build('type: "Normalize" norm_param { channel_shared: false '
                        'scale_filler { type: "constant" value: 20 } }', [(2, 3, 4, 5)])
    assert layer.blobs[0].shape == (3,) and np.all(layer.blobs[0].data == 20)


def test_normalize_eps_keeps_zero_input_finite():
    layer, bottom, top = build('type: "Normalize" norm_param { across_spatial: false eps: 0.25 }',
                               [(1, 2, 2, 2)])
    bottom[0].data[...] = 0
    bottom[0].data[0, :, 0, 0] = [3, 4]
    got = run_forward(layer, bottom, top)[0]
    np.testing.assert_allclose(got[0, :, 0, 0], np.array([3, 4]) / np.sqrt(25.25), rtol=1e-6)
    assert np.all(got[0, :, 1:, :] == 0)


def test_normalize_rejects_a_scale_blob_of_the_wrong_size():
    from protonet.io.binaryproto import blobproto_from_array
    from protonet.testing import layer_from_text
    layer = layer_from_text('type: "Normalize" norm_param { channel_shared: false }')
    layer.param.blobs.add().CopyFrom(blobproto_from_array(np.ones(4, np.float32)))
    layer = type(layer)(layer.param)
    with pytest.raises(ShapeError, match=r"scale blob has shape \(4,\)"):
        layer.set_up([Blob((1, 3, 2, 2))], [Blob()])


# -- Flatten and Softmax as SSD chains them ----------------------------------------------------
def test_ssd_confidence_chain_permute_reshape_softmax_flatten():
    """SSD's head: (N, P*C, H, W) -> Permute 0 2 3 1 -> Flatten -> Reshape (0, -1, C) ->
    Softmax axis 2 -> Flatten: one row per image, C scores per prior, priors row-major."""
    from protonet import Net
    n, priors, classes, h, w = 2, 3, 4, 2, 3
    net = Net(param=_ssd_head_net(n, priors, classes, h, w), phase=caffe_pb2.TEST)
    x = np.random.default_rng(0).standard_normal((n, priors * classes, h, w)).astype(np.float32)
    out = net.forward(conf=x)["conf_flat"]
    logits = x.reshape(n, priors, classes, h, w).transpose(0, 3, 4, 1, 2).reshape(n, -1, classes)
    e = np.exp(logits - logits.max(axis=2, keepdims=True))
    np.testing.assert_allclose(out, (e / e.sum(axis=2, keepdims=True)).reshape(n, -1),
                               rtol=1e-5)


def _ssd_head_net(n, priors, classes, h, w):
    from google.protobuf import text_format
    return text_format.Parse(f"""
        input: "conf" input_shape {{ dim: {n} dim: {priors * classes} dim: {h} dim: {w} }}
        layer {{ name: "perm" type: "Permute" bottom: "conf" top: "perm"
                permute_param {{ order: 0 order: 2 order: 3 order: 1 }} }}
        layer {{ name: "flat" type: "Flatten" bottom: "perm" top: "flat"
                flatten_param {{ axis: 1 }} }}
        layer {{ name: "reshape" type: "Reshape" bottom: "flat" top: "reshaped"
                reshape_param {{ shape {{ dim: 0 dim: -1 dim: {classes} }} }} }}
        layer {{ name: "softmax" type: "Softmax" bottom: "reshaped" top: "prob"
                softmax_param {{ axis: 2 }} }}
        layer {{ name: "conf_flat" type: "Flatten" bottom: "prob" top: "conf_flat"
                flatten_param {{ axis: 1 }} }}""", caffe_pb2.NetParameter())


# -- PriorBox -----------------------------------------------------------------------------------
def prior_boxes(fh, fw, ih, iw, min_sizes, max_sizes=(), ratios=(), flip=True, clip=False,
                variances=(0.1,), step=None, offset=0.5):
    """Reference: per cell (row-major), per min size: square min, square sqrt(min*max),
    then each ratio r != 1 (and 1/r with flip), width min*sqrt(r), height min/sqrt(r)."""
    all_ratios = [1.0]
    for r in ratios:
        if all(abs(r - q) >= 1e-6 for q in all_ratios):
            all_ratios += [r, 1 / r] if flip else [r]
    step_h, step_w = step if step else (ih / fh, iw / fw)
    boxes = []
    for i in range(fh):
        for j in range(fw):
            cx, cy = (j + offset) * step_w, (i + offset) * step_h
            for s, m in enumerate(min_sizes):
                sizes = [(m, m)]
                if max_sizes:
                    sizes.append((np.sqrt(m * max_sizes[s]),) * 2)
                sizes += [(m * np.sqrt(r), m / np.sqrt(r)) for r in all_ratios if r != 1.0]
                for bw, bh in sizes:
                    boxes.append([(cx - bw / 2) / iw, (cy - bh / 2) / ih,
                                  (cx + bw / 2) / iw, (cy + bh / 2) / ih])
    boxes = np.array(boxes)
    if clip:
        boxes = boxes.clip(0, 1)
    var = np.tile(np.array(variances if len(variances) == 4 else variances * 4), len(boxes))
    return np.stack([boxes.reshape(-1), var])[None]


PRIORS = [
    ("min_size: 4", dict(min_sizes=[4])),
    ("min_size: 4 max_size: 9 aspect_ratio: 2 variance: 0.1 variance: 0.1 variance: 0.2 "
     "variance: 0.2", dict(min_sizes=[4], max_sizes=[9], ratios=[2],
                           variances=(0.1, 0.1, 0.2, 0.2))),
    ("min_size: 4 min_size: 6 max_size: 9 max_size: 12 aspect_ratio: 2 aspect_ratio: 3 "
     "aspect_ratio: 2 flip: false clip: true variance: 0.2",
     dict(min_sizes=[4, 6], max_sizes=[9, 12], ratios=[2, 3], flip=False, clip=True,
          variances=(0.2,))),
    ("min_size: 5 aspect_ratio: 0.5 step: 4 offset: 0.25",
     dict(min_sizes=[5], ratios=[0.5], step=(4, 4), offset=0.25)),
    ("min_size: 5 step_h: 3 step_w: 5", dict(min_sizes=[5], step=(3, 5))),
]


@pytest.mark.parametrize("params, expected", PRIORS)
def test_prior_box_matches_reference(params, expected):
    layer, bottom, top = build(f'type: "PriorBox" prior_box_param {{ {params} }}',
                               [(1, 2, 3, 4), (1, 3, 12, 20)])
    got = run_forward(layer, bottom, top)[0]
    want = prior_boxes(3, 4, 12, 20, **expected)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_prior_box_follows_its_bottoms_sizes_from_forward_to_forward():
    """The priors are made once per map and image size: a forward at new sizes gives that
    size's priors, and going back gives the first ones again, whatever the top held."""
    params, expected = PRIORS[1]
    layer, bottom, top = build(f'type: "PriorBox" prior_box_param {{ {params} }}',
                               [(1, 2, 3, 4), (1, 3, 12, 20)])
    first = run_forward(layer, bottom, top)[0]
    np.testing.assert_allclose(first, prior_boxes(3, 4, 12, 20, **expected), rtol=1e-6,
                               atol=1e-7)
    bottom[0].reshape(1, 2, 5, 6)
    bottom[1].reshape(1, 3, 30, 24)
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0],
                               prior_boxes(5, 6, 30, 24, **expected), rtol=1e-6, atol=1e-7)
    bottom[0].reshape(1, 2, 3, 4)
    bottom[1].reshape(1, 3, 12, 20)
    layer.reshape(bottom, top)
    top[0].data[...] = -1
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, first)


def test_prior_box_hand_worked_values_and_explicit_image_size():
    """A 1x2 map on a 10x20 image (img_size 10 overrides the second bottom's 99x99):
    step 10 across, 10 down; the first cell's center is (5, 5)."""
    layer, bottom, top = build('type: "PriorBox" prior_box_param { min_size: 4 max_size: 16 '
                               'img_h: 10 img_w: 20 }', [(1, 1, 1, 2), (1, 3, 99, 99)])
    got = run_forward(layer, bottom, top)[0].reshape(2, -1, 4)
    np.testing.assert_allclose(got[0], [[3 / 20, 3 / 10, 7 / 20, 7 / 10],      # 4x4 at (5, 5)
                                        [1 / 20, 1 / 10, 9 / 20, 9 / 10],      # 8x8
                                        [13 / 20, 3 / 10, 17 / 20, 7 / 10],    # at (15, 5)
                                        [11 / 20, 1 / 10, 19 / 20, 9 / 10]], rtol=1e-6)
    np.testing.assert_allclose(got[1], 0.1, rtol=1e-7)


@pytest.mark.parametrize("params, message", [
    ("flip: true", "needs min_size"),
    ("min_size: 4 max_size: 3", "must be greater than min_size"),
    ("min_size: 4 min_size: 5 max_size: 9", "one max_size per min_size"),
    ("min_size: 4 variance: 0.1 variance: 0.2", "1 or 4 variances"),
    ("min_size: 4 img_size: 10 img_h: 10 img_w: 10", "either img_size or img_h/img_w"),
    ("min_size: 4 step: 4 step_h: 2", "either step or step_h/step_w"),
])
def test_prior_box_rejects_bad_parameters(params, message):
    with pytest.raises(NetDefinitionError, match=message):
        build(f'type: "PriorBox" prior_box_param {{ {params} }}', [(1, 2, 3, 4), (1, 3, 8, 8)])


# -- DetectionOutput -----------------------------------------------------------------------------
Corner, CenterSize, CornerSize = 1, 2, 3


def decode(loc, priors, variances, code, encoded):
    var = np.ones_like(variances) if encoded else variances
    if code == Corner:
        return priors + var * loc
    w = priors[:, 2] - priors[:, 0]
    h = priors[:, 3] - priors[:, 1]
    if code == CornerSize:
        return priors + var * loc * np.stack([w, h, w, h], 1)
    cx = var[:, 0] * loc[:, 0] * w + (priors[:, 0] + priors[:, 2]) / 2
    cy = var[:, 1] * loc[:, 1] * h + (priors[:, 1] + priors[:, 3]) / 2
    bw = np.exp(var[:, 2] * loc[:, 2]) * w
    bh = np.exp(var[:, 3] * loc[:, 3]) * h
    return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)


def iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    area = lambda r: max(r[2] - r[0], 0) * max(r[3] - r[1], 0) \
        if r[2] >= r[0] and r[3] >= r[1] else 0.0  # noqa: E731
    return iw * ih / (area(a) + area(b) - iw * ih)


def detections(loc, conf, prior, classes, share=True, background=0, code=Corner,
               encoded=False, threshold=-np.inf, nms=0.3, top_k=-1, keep_top_k=-1, eta=1.0):
    """Reference DetectionOutput: rows (image, label, score, box) as the fork orders them."""
    num = loc.shape[0]
    priors = prior[0, 0].reshape(-1, 4)
    variances = prior[0, 1].reshape(-1, 4)
    p = len(priors)
    out = []
    for n in range(num):
        locs = loc[n].reshape(p, -1, 4)
        scores = conf[n].reshape(p, classes)
        picked = []
        for c in range(classes):
            if c == background:
                continue
            boxes = decode(locs[:, 0 if share else c], priors, variances, code, encoded)
            order = sorted((i for i in range(p) if scores[i, c] > threshold),
                           key=lambda i: -scores[i, c])
            if top_k > -1:
                order = order[:top_k]
            kept, limit = [], nms
            for i in order:
                if all(iou(boxes[i], boxes[j]) <= limit for j in kept):
                    kept.append(i)
                    if eta < 1 and limit > 0.5:
                        limit *= eta
            picked += [(c, i, scores[i, c], boxes[i]) for i in kept]
        if keep_top_k > -1 and len(picked) > keep_top_k:
            picked = sorted(sorted(picked, key=lambda t: -t[2])[:keep_top_k],
                            key=lambda t: t[0])
        out += [[n, c, s, *box] for c, i, s, box in picked]
    if not out:
        return np.array([[n, -1, -1, -1, -1, -1, -1] for n in range(num)], np.float64)
    return np.array(out, np.float64)


def detection_layer(params, loc_shape, conf_shape, prior_shape, seed=3):
    layer, bottom, top = build(f'type: "DetectionOutput" detection_output_param {{ {params} }}',
                               [loc_shape, conf_shape, prior_shape], seed=seed)
    g = np.random.default_rng(seed)
    p = prior_shape[2] // 4
    centers = g.uniform(0.2, 0.8, (p, 2))
    sizes = g.uniform(0.1, 0.4, (p, 2))
    bottom[2].data[0, 0] = np.concatenate([centers - sizes / 2, centers + sizes / 2],
                                          axis=1).reshape(-1)
    bottom[2].data[0, 1] = np.tile([0.1, 0.1, 0.2, 0.2], p)
    bottom[0].data[...] *= 0.5
    bottom[1].data[...] = g.uniform(0, 1, bottom[1].shape)
    return layer, bottom, top


Det = namedtuple("Det", "params ref classes share", defaults=(True,))
DETECTIONS = [
    Det("num_classes: 3", dict(), 3),
    Det("num_classes: 3 code_type: CENTER_SIZE nms_param { nms_threshold: 0.45 top_k: 20 } "
        "keep_top_k: 15 confidence_threshold: 0.3",
        dict(code=CenterSize, nms=0.45, top_k=20, keep_top_k=15, threshold=0.3), 3),
    Det("num_classes: 4 share_location: false background_label_id: -1 code_type: CORNER_SIZE "
        "variance_encoded_in_target: true nms_param { nms_threshold: 0.5 }",
        dict(share=False, background=-1, code=CornerSize, encoded=True, nms=0.5), 4, False),
    Det("num_classes: 3 background_label_id: 2 code_type: CENTER_SIZE "
        "nms_param { nms_threshold: 0.7 eta: 0.8 } keep_top_k: 7",
        dict(background=2, code=CenterSize, nms=0.7, eta=0.8, keep_top_k=7), 3),
]


@pytest.mark.parametrize("case", DETECTIONS, ids=lambda c: c.params)
def test_detection_output_matches_reference(case):
    p, num = 40, 2
    loc_width = p * 4 * (1 if case.share else case.classes)
    layer, bottom, top = detection_layer(case.params, (num, loc_width), (num, p * case.classes),
                                         (1, 2, p * 4))
    got = run_forward(layer, bottom, top)[0]
    want = detections(*(b.data.astype(np.float64) for b in bottom), case.classes,
                      **case.ref)
    assert got.shape == (1, 1, len(want), 7)
    np.testing.assert_allclose(got[0, 0], want, rtol=1e-5, atol=1e-6)


def test_detection_output_hand_worked_nms():
    """Three priors, zero offsets (boxes = priors): A and B overlap by 2/3 (IoU), C is apart.
    Class 1 scores A .9, B .8, C .7: B is suppressed. Class 2: only C above the threshold."""
    layer, bottom, top = build('type: "DetectionOutput" detection_output_param { '
                               'num_classes: 3 nms_param { nms_threshold: 0.5 } '
                               'confidence_threshold: 0.25 }', [(1, 12), (1, 9), (1, 2, 12)])
    a, b, c = [0, 0, 0.4, 0.5], [0, 0.1, 0.4, 0.6], [0.6, 0.6, 1, 1]  # IoU(a, b) = .16 / .24
    bottom[2].data[0, 0] = a + b + c
    bottom[2].data[0, 1] = 0.1
    bottom[0].data[...] = 0
    bottom[1].data[0] = [0, .9, .1, 0, .8, .2, 0, .7, .3]
    got = run_forward(layer, bottom, top)[0][0, 0]
    np.testing.assert_allclose(got, [[0, 1, .9, *a], [0, 1, .7, *c], [0, 2, .3, *c]],
                               rtol=1e-6)


def test_detection_output_without_detections_gives_one_marker_row_per_image():
    layer, bottom, top = detection_layer("num_classes: 2 confidence_threshold: 2",
                                         (3, 16), (3, 8), (1, 2, 16))
    got = run_forward(layer, bottom, top)[0]
    np.testing.assert_array_equal(got[0, 0], [[i, -1, -1, -1, -1, -1, -1] for i in range(3)])


@pytest.mark.parametrize("params, shapes, message, exc", [
    ("share_location: true", [(1, 16), (1, 8), (1, 2, 16)], "needs num_classes",
     NetDefinitionError),
    ("num_classes: 2", [(1, 12), (1, 8), (1, 2, 16)], r"does not hold 4 priors x 1 x 4",
     ShapeError),
    ("num_classes: 3", [(1, 16), (1, 8), (1, 2, 16)], "does not hold 4 priors x 3 classes",
     ShapeError),
    ("num_classes: 2", [(1, 16), (1, 8), (1, 16)], "must be PriorBox's", ShapeError),
    ("num_classes: 2 nms_param { eta: 1.5 }", [(1, 16), (1, 8), (1, 2, 16)], "eta must be",
     NetDefinitionError),
])
def test_detection_output_rejects_bad_inputs(params, shapes, message, exc):
    with pytest.raises(exc, match=message):
        build(f'type: "DetectionOutput" detection_output_param {{ {params} }}', shapes)


def test_channel_shared_scale_is_stored_as_caffe_stores_a_0_axis_blob(tmp_path):
    """weiliu89's Caffe writes the shared scale (shape ()) as a BlobProto with one value and no
    shape field; protonet loads such a file and writes the scale the same way."""
    from google.protobuf import text_format

    from protonet import Net
    text = ('input: "x" input_shape { dim: 1 dim: 2 dim: 3 dim: 3 } '
            'layer { name: "norm" type: "Normalize" bottom: "x" top: "y" }')
    model = text_format.Parse(text, caffe_pb2.NetParameter())
    model.layer[0].blobs.add().data.append(20.0)
    weights = tmp_path / "ssd.caffemodel"
    weights.write_bytes(model.SerializeToString())
    net = Net(param=text_format.Parse(text, caffe_pb2.NetParameter()), phase=caffe_pb2.TEST,
              weights=str(weights))
    assert net.params["norm"][0].shape == () and net.params["norm"][0].data == 20
    net.save(str(tmp_path / "again.caffemodel"))
    saved = caffe_pb2.NetParameter.FromString((tmp_path / "again.caffemodel").read_bytes())
    blob = [lp for lp in saved.layer if lp.name == "norm"][0].blobs[0]
    assert not blob.HasField("shape") and list(blob.data) == [20.0]
