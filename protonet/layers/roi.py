"""Layers of Fast and Faster R-CNN: ROIPooling (rbgirshick/caffe-fast-rcnn) and Proposal
(OpenCV's C++ layer in place of py-faster-rcnn's Python proposal module)."""
from __future__ import annotations

import numpy as np

from ..errors import NetDefinitionError
from ..kernels.detection import greedy_nms
from ..kernels.roi import anchor_sizes, roi_pool_backward, roi_pool_forward
from ..registry import register_layer
from .base import Layer


@register_layer("ROIPooling")
class ROIPooling(Layer):
    """Max pooling of each region of interest into pooled_h x pooled_w bins (Fast R-CNN).

    A ROI's corners are scaled by spatial_scale and rounded (halves away from zero); its
    size, at least 1 x 1, is split into equal bins, each bin the max of its cells (floor of
    its start, ceil of its end, clipped to the map), 0 when the bin lies outside the map.
    Reads roi_pooling_param pooled_h, pooled_w, spatial_scale (1).
    Bottom: features (N, C, H, W); rois (R, 5) rows (batch index, x1, y1, x2, y2).
    Top: (R, C, pooled_h, pooled_w). Gradient to the features.
    """

    in_place = False   # the top is written while the bottom is still read

    # Settings read in setup, public: the ONNX exporter (export/onnx.py) reads them.
    pooled: tuple
    spatial_scale: float

    num_bottom = 2

    def setup(self, bottom, top):
        p = self.param.roi_pooling_param
        self.pooled = (p.pooled_h, p.pooled_w)
        self.spatial_scale = p.spatial_scale
        if min(self.pooled) < 1:
            raise self.error("roi_pooling_param.pooled_h and pooled_w must be positive",
                             NetDefinitionError)

    def reshape(self, bottom, top):
        x, rois = bottom
        if x.num_axes != 4:
            raise self.error(f"features '{x.name}' must be (N, C, H, W), got {x.shape}")
        if rois.count % 5 or rois.shape[0] * 5 != rois.count:
            raise self.error(f"rois '{rois.name}' must hold 5 values per ROI, got {rois.shape}")
        shape = (rois.shape[0], x.shape[1], *self.pooled)
        top[0].reshape(shape)
        self.scratch("argmax", shape, np.int32)

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def forward(self, bottom, top):
        x, rois = bottom
        table = rois.data.reshape(-1, 5)
        index = table[:, 0]
        if index.size and (index.min() < 0 or index.max() >= x.shape[0]):
            bad = index[(index < 0) | (index >= x.shape[0])][0]
            raise self.error(f"ROI batch index {bad:g} outside the {x.shape[0]} images of "
                             f"'{x.name}'")
        roi_pool_forward(x.data, table, np.float32(self.spatial_scale), top[0].data, self.argmax)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            roi_pool_backward(top[0].diff, bottom[1].data.reshape(-1, 5), self.argmax,
                              bottom[0].diff)


@register_layer("Proposal")
class Proposal(Layer):
    """Faster R-CNN's region proposals as OpenCV computes them: an anchor of each size at each
    feature-map cell (centres feat_stride apart, the first at base_size / 2), moved by the
    predicted deltas (dx, dy scale the anchor's size, dw, dh its log size), clipped to the
    image; the pre_nms_topn best by objectness go through NMS (IoU nms_thresh), and the first
    post_nms_topn are kept, best first.

    Reads proposal_param feat_stride (16), base_size (16), ratio (0.5 1 2), scale (8 16 32),
    pre_nms_topn (6000), post_nms_topn (300), nms_thresh (0.7); min_size is read and, as in
    OpenCV, not applied. Bottom: scores (1, 2A, H, W), background for the first A channels;
    deltas (1, 4A, H, W); im_info (image height, width, ...). Top: (post_nms_topn, 5) rows
    (0, x1, y1, x2, y2), zero rows after the last proposal; optionally the scores
    (post_nms_topn, 1). Forward only.
    """

    in_place = False   # the top is written while the bottom is still read

    num_bottom = 3
    num_top = (1, 2)

    def setup(self, bottom, top):
        p = self.param.proposal_param
        self.stride, self.base_size = p.feat_stride, p.base_size
        ratios = list(p.ratio) or [0.5, 1.0, 2.0]
        scales = list(p.scale) or [8.0, 16.0, 32.0]
        self.sizes = anchor_sizes(p.base_size, ratios, scales)
        self.pre_nms, self.post_nms, self.threshold = p.pre_nms_topn, p.post_nms_topn, p.nms_thresh
        if self.stride < 1 or self.post_nms < 1:
            raise self.error("feat_stride and post_nms_topn must be positive", NetDefinitionError)

    def reshape(self, bottom, top):
        scores, deltas, im_info = bottom
        a = len(self.sizes)
        if scores.num_axes != 4 or scores.shape[0] != 1 or scores.shape[1] != 2 * a:
            raise self.error(f"scores '{scores.name}' {scores.shape} must be (1, {2 * a}, H, W) "
                             f"for {a} anchors")
        if deltas.shape != (1, 4 * a, *scores.shape[2:]):
            raise self.error(f"deltas '{deltas.name}' {deltas.shape} must be "
                             f"(1, {4 * a}, {scores.shape[2]}, {scores.shape[3]})")
        if im_info.count < 2:
            raise self.error(f"im_info '{im_info.name}' must give the image height and width")
        top[0].reshape(self.post_nms, 5)
        if len(top) == 2:
            top[1].reshape(self.post_nms, 1)
        h, w = scores.shape[2:]
        # Anchors (H * W * A, 4), cell by cell, as pixel boxes (x2 = x1 + width - 1).
        cx = (np.arange(w, dtype=np.float32) * self.stride + self.base_size / 2)
        cy = (np.arange(h, dtype=np.float32) * self.stride + self.base_size / 2)
        cy, cx = (g[:, :, None] for g in np.meshgrid(cy, cx, indexing="ij"))
        half_w, half_h = self.sizes[:, 0] / 2, self.sizes[:, 1] / 2
        self.anchors = np.stack([cx - half_w, cy - half_h, cx + half_w - 1, cy + half_h - 1],
                                axis=-1).reshape(-1, 4)

    def forward(self, bottom, top):
        scores, deltas, im_info = bottom
        a = len(self.sizes)
        objectness = scores.data[0, a:].transpose(1, 2, 0).reshape(-1)
        d = deltas.data[0].transpose(1, 2, 0).reshape(-1, 4)
        anchors = self.anchors
        width = anchors[:, 2] - anchors[:, 0] + 1
        height = anchors[:, 3] - anchors[:, 1] + 1
        cx = d[:, 0] * width + anchors[:, 0] + width / 2
        cy = d[:, 1] * height + anchors[:, 1] + height / 2
        bw, bh = np.exp(d[:, 2]) * width, np.exp(d[:, 3]) * height
        image_h, image_w = (float(v) for v in im_info.data.reshape(-1)[:2])
        boxes = np.stack([np.clip(cx - bw / 2, 0, image_w - 1), np.clip(cy - bh / 2, 0, image_h - 1),
                          np.clip(cx + bw / 2, 0, image_w - 1), np.clip(cy + bh / 2, 0, image_h - 1)],
                         axis=1).astype(np.float32)
        order = np.argsort(-objectness, kind="stable")[:self.pre_nms]
        # Pixel boxes (corners inclusive): NMS measures them with x1 + 1, y1 + 1.
        ends = boxes.copy()
        ends[:, 2:] += 1
        areas = (ends[:, 2] - ends[:, 0]) * (ends[:, 3] - ends[:, 1])
        keep = np.empty(order.size, np.int64)
        kept = keep[:greedy_nms(ends, areas, order, np.float32(self.threshold), np.float32(1),
                                keep, self.post_nms)]
        out = top[0].data
        out[...] = 0
        out[:len(kept), 1:] = boxes[kept]
        if len(top) == 2:
            top[1].data[...] = 0
            top[1].data[:len(kept), 0] = objectness[kept]
