"""ROIPooling (Fast R-CNN) and Proposal (Faster R-CNN, OpenCV's layer): values against loops
written from the papers' definitions, ROIPooling's gradient."""
import math

import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

from protonet.blob import Blob
from protonet.errors import ShapeError


def roi_pool(x, rois, ph_n, pw_n, scale):
    def rnd(v):   # C's round()
        return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)
    out = np.zeros((len(rois), x.shape[1], ph_n, pw_n))
    h_map, w_map = x.shape[2:]
    for r, (n, *corners) in enumerate(rois):
        x0, y0, x1, y1 = (rnd(c * scale) for c in corners)
        bh, bw = max(y1 - y0 + 1, 1) / ph_n, max(x1 - x0 + 1, 1) / pw_n
        for i in range(ph_n):
            hs = min(max(math.floor(i * bh) + y0, 0), h_map)
            he = min(max(math.ceil((i + 1) * bh) + y0, 0), h_map)
            for j in range(pw_n):
                ws = min(max(math.floor(j * bw) + x0, 0), w_map)
                we = min(max(math.ceil((j + 1) * bw) + x0, 0), w_map)
                if he > hs and we > ws:
                    out[r, :, i, j] = x[int(n), :, hs:he, ws:we].max(axis=(1, 2))
    return out


def rois_blob(rows):
    blob = Blob((len(rows), 5), name="rois")
    blob.data[...] = rows
    return blob


ROIS = [[0, 0, 0, 15, 11], [1, -8, 4, 40, 60], [0, 30, 30, 20, 20], [1, 50, 50, 90, 90],
        [0, 7, 3, 9, 13]]


@pytest.mark.parametrize("text, scale", [
    ('type: "ROIPooling" roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.25 }', 0.25),
    ('type: "ROIPooling" roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.5 }', 0.5),
])
def test_roi_pooling_max_pools_each_region_into_bins(text, scale):
    features = build('type: "ReLU"', [(2, 3, 9, 11)])[1][0]
    features.data[...] = np.random.default_rng(5).permutation(features.count).reshape(
        features.shape) * 0.01   # distinct values: no ties at a maximum
    layer, bottom, top = build(text, None, bottoms=[features, rois_blob(ROIS)])
    p = layer.param.roi_pooling_param
    np.testing.assert_array_equal(run_forward(layer, bottom, top)[0],
                                  roi_pool(features.data, ROIS, p.pooled_h, p.pooled_w, scale))
    check_gradient(layer, bottom, top, check_bottom=[0])


def test_roi_pooling_batch_index_out_of_range_is_named():
    layer, bottom, top = build('name: "roi" type: "ROIPooling" roi_pooling_param { pooled_h: 1 '
                               'pooled_w: 1 }', None,
                               bottoms=[Blob((1, 1, 4, 4)), rois_blob([[2, 0, 0, 1, 1]])])
    with pytest.raises(ShapeError, match="layer 'roi'.*batch index 2 outside the 1 images"):
        layer.forward(bottom, top)


def proposal_inputs(scores_fg, deltas, image_hw):
    a = scores_fg.shape[0]
    scores = Blob((1, 2 * a, *scores_fg.shape[1:]), name="scores")
    scores.data[0, a:] = scores_fg
    d = Blob((1, 4 * a, *scores_fg.shape[1:]), name="deltas")
    d.data[...] = deltas
    info = Blob((1, 3), name="im_info")
    info.data[...] = [*image_hw, 1]
    return [scores, d, info]


def test_proposal_with_zero_deltas_gives_the_clipped_anchors_best_first():
    # One anchor size (16 x 16 at scale 1), a 2 x 3 map at stride 16: six disjoint boxes.
    fg = np.array([[[0.1, 0.9, 0.5], [0.3, 0.8, 0.2]]], np.float32)
    layer, bottom, top = build('type: "Proposal" proposal_param { ratio: 1 scale: 1 '
                               'post_nms_topn: 8 }', None,
                               bottoms=proposal_inputs(fg, 0, (30, 40)))
    out = run_forward(layer, bottom, top)[0]
    cells = [(0, 1), (1, 1), (0, 2), (1, 0), (1, 2), (0, 0)]   # by falling score
    # An anchor is the pixel box (x1, x1 + 15); decoding spans centre -/+ width / 2, so the
    # box comes back one pixel wider, as in OpenCV and py-faster-rcnn's bbox_transform_inv.
    expected = [[0, 16 * c, 16 * r, min(16 * c + 16, 39), min(16 * r + 16, 29)] for r, c in cells]
    np.testing.assert_array_equal(out[:6], expected)
    assert not out[6:].any()


@pytest.mark.parametrize("threshold, kept", [(0.3, 1), (0.6, 2)])
def test_proposal_moves_anchors_by_the_deltas_and_suppresses_overlaps(threshold, kept):
    fg = np.array([[[0.9, 0.8]]], np.float32)
    deltas = np.zeros((1, 4, 1, 2), np.float32)
    deltas[0, :, 0, 1] = [-0.25, 0, math.log(2), 0]   # left by a quarter width, twice as wide
    layer, bottom, top = build('type: "Proposal" proposal_param { ratio: 1 scale: 2 '
                               f'post_nms_topn: 3 nms_thresh: {threshold} }}', None,
                               bottoms=proposal_inputs(fg, deltas, (100, 100)))
    out = run_forward(layer, bottom, top)[0]
    # Anchor 0: 32 x 32 centred at 8 -> (-8, -8, 24, 24), clipped to (0, 0, 24, 24). Anchor 1,
    # centred at 24, moved to centre 16 and 64 wide: (-16, -8, 48, 24) -> (0, 0, 48, 24);
    # IoU with the first 25 * 25 / (49 * 25) = 0.51.
    expected = [[0, 0, 0, 24, 24], [0, 0, 0, 48, 24], [0] * 5]
    np.testing.assert_allclose(out[:kept], expected[:kept])
    assert not out[kept:].any()
