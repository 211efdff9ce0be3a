"""The SSD fork's layers (weiliu89/caffe, branch ssd): Permute, Normalize, PriorBox and
DetectionOutput, which the SSD detectors (VGG-SSD, MobileNet-SSD, OpenCV's res10 face
detector) need on top of BVLC's layers.

PriorBox and DetectionOutput have no backward in the fork (they sit outside the trained
path); Permute and Normalize train.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from .. import caffe_pb2
from ..errors import NetDefinitionError
from ..kernels.detection import greedy_nms
from ..registry import register_layer
from .base import Layer, count

log = logging.getLogger("protonet")

CodeType = caffe_pb2.PriorBoxParameter


@register_layer("Permute")
class Permute(Layer):
    """Axes reordered, Caffe-SSD "Permute". Reads permute_param.order (the new order; axes it
    leaves out follow in their old order). SSD turns (N, C, H, W) predictions into
    (N, H, W, C) with order 0 2 3 1 before flattening them."""

    def setup(self, bottom, top):
        n = bottom[0].num_axes
        order = [int(a) for a in self.param.permute_param.order]
        for axis in order:
            if axis >= n:
                raise self.error(f"permute_param.order {order} names axis {axis}, but the "
                                 f"bottom has {n} axes", NetDefinitionError)
        if len(set(order)) != len(order):
            raise self.error(f"permute_param.order {order} repeats an axis", NetDefinitionError)
        self.order = tuple(order + [a for a in range(n) if a not in order])
        self.inverse = tuple(int(a) for a in np.argsort(self.order))

    def reshape(self, bottom, top):
        if bottom[0].num_axes != len(self.order):
            raise self.error(f"bottom has {bottom[0].num_axes} axes, set up for "
                             f"{len(self.order)}")
        top[0].reshape([bottom[0].shape[a] for a in self.order])

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data.transpose(self.order)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.transpose(self.inverse)


@register_layer("Normalize")
class Normalize(Layer):
    """L2 normalisation with a learned scale, Caffe-SSD "Normalize" (SSD's conv4_3_norm).
    Reads norm_param: across_spatial (true: one norm over C*H*W per image; false: one per
    position over the channels), channel_shared (one scale, a 0-axis blob, or one per
    channel), scale_filler (constant 1), eps (1e-10).
    top = scale * x / sqrt(sum x^2 + eps).

    Backward is the exact gradient. With per-channel scales the fork's own backward leaves
    the scales out of the dot product x . top_diff (it is exact only while all channels have
    the same scale, as when they are first filled); protonet's is exact for any scales.
    """

    def setup(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise self.error(f"bottom must have at least 2 axes, got shape {bottom[0].shape}")
        p = self.param.norm_param
        self.across_spatial = p.across_spatial
        self.channel_shared = p.channel_shared
        self.eps = float(p.eps)
        # Sum of products over what one norm covers: (C, H*W) per image, or C per position.
        self.norm_sum = "ncs,ncs->n" if self.across_spatial else "ncs,ncs->ns"
        channels = bottom[0].shape[1]
        shape = () if self.channel_shared else (channels,)
        if self.blobs:
            if self.blobs[0].count != (1 if self.channel_shared else channels):
                raise self.error(f"scale blob has shape {self.blobs[0].shape}, expected "
                                 f"{'one value (channel_shared)' if self.channel_shared else shape}")
        else:
            filler = caffe_pb2.FillerParameter(type="constant", value=1.0)
            if p.HasField("scale_filler"):
                filler = p.scale_filler
            self.blobs = [self.make_blob(shape, filler, 0)]

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise self.error(f"bottom must have at least 2 axes, got shape {bottom[0].shape}")
        top[0].reshape(bottom[0].shape)
        n, c = bottom[0].shape[:2]
        self.planes = (n, c, count(bottom[0].shape, 2))
        self.norm = np.empty((n, 1, 1) if self.across_spatial else (n, 1, self.planes[2]),
                             np.float32)

    def _scale(self):
        """The scale, shaped to multiply (N, C, H*W) planes."""
        scale = self.blobs[0].data
        return scale.reshape(()) if self.channel_shared else scale.reshape(1, -1, 1)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.planes)
        squares = np.einsum(self.norm_sum, x, x, dtype=np.float64)
        self.norm[...] = np.sqrt(squares + self.eps).reshape(self.norm.shape)
        y = top[0].data.reshape(self.planes)
        np.divide(x, self.norm, out=y)
        y *= self._scale()

    def backward(self, top, propagate_down, bottom):
        x = bottom[0].data.reshape(self.planes)
        dy = top[0].diff.reshape(self.planes)
        normalized = x / self.norm
        if self.param_propagate_down[0]:
            if self.channel_shared:
                self.blobs[0].diff[...] += np.einsum("ncs,ncs->", normalized, dy,
                                                     dtype=np.float64)
            else:
                self.blobs[0].diff[...] += np.einsum("ncs,ncs->c", normalized, dy,
                                                     dtype=np.float64)
        if propagate_down[0]:
            scaled = dy * self._scale()  # gradient with respect to x / norm
            dot = np.einsum(self.norm_sum, normalized, scaled,
                            dtype=np.float64).astype(np.float32)
            dot = dot.reshape(self.norm.shape)
            dx = bottom[0].diff.reshape(self.planes)
            np.subtract(scaled, normalized * dot, out=dx)
            dx /= self.norm


@register_layer("PriorBox")
class PriorBox(Layer):
    """Default boxes for one feature map, Caffe-SSD "PriorBox". Bottoms: the feature map
    (N, C, H, W) and the image (its height and width are the default image size).
    Top (1, 2, H*W*P*4): channel 0 the boxes (xmin, ymin, xmax, ymax, divided by the image
    size) cell by cell in row-major order, P per cell; channel 1 their four variances.

    Per cell and per min_size: a square of min_size, a square of sqrt(min_size * max_size)
    when max_size is given, then one box per aspect ratio r other than 1 (width
    min_size*sqrt(r), height min_size/sqrt(r)); flip adds 1/r for each r. As in the fork,
    sizes are truncated to whole pixels. Reads prior_box_param: min_size, max_size,
    aspect_ratio, flip (true), clip (false), variance (0.1), img_size or img_h/img_w, step or
    step_h/step_w (default image size / feature map size), offset (0.5)."""

    num_bottom = 2

    def setup(self, bottom, top):
        p = self.param.prior_box_param
        bad = lambda message: self.error(message, NetDefinitionError)  # noqa: E731
        if not p.min_size:
            raise bad("prior_box_param needs min_size")
        if any(s <= 0 for s in p.min_size):
            raise bad(f"min_size must be positive, got {list(p.min_size)}")
        if p.max_size:
            if len(p.max_size) != len(p.min_size):
                raise bad(f"{len(p.max_size)} max_size for {len(p.min_size)} min_size; give "
                          "one max_size per min_size")
            if any(hi <= lo for lo, hi in zip(p.min_size, p.max_size)):
                raise bad(f"max_size {list(p.max_size)} must be greater than min_size "
                          f"{list(p.min_size)}")
        self.min_sizes = [int(s) for s in p.min_size]
        self.max_sizes = [int(s) for s in p.max_size]
        ratios = [1.0]
        for r in p.aspect_ratio:
            if any(abs(r - known) < 1e-6 for known in ratios):
                continue
            ratios.append(r)
            if p.flip:
                ratios.append(1.0 / r)
        self.aspect_ratios = np.array(ratios, np.float32)
        if len(p.variance) not in (0, 1, 4):
            raise bad(f"give 1 or 4 variances, got {len(p.variance)}")
        if any(v <= 0 for v in p.variance):
            raise bad(f"variances must be positive, got {list(p.variance)}")
        self.variance = np.array(list(p.variance) or [0.1], np.float32)
        self.img_h, self.img_w = self._pair(p, "img_size", "img_h", "img_w")
        self.step_h, self.step_w = self._pair(p, "step", "step_h", "step_w")
        self.clip = p.clip
        self.offset = np.float32(p.offset)
        self.num_priors = len(ratios) * len(self.min_sizes) + len(self.max_sizes)
        self._priors, self._priors_for = None, None   # the last sizes' priors (forward)

    def _pair(self, p, both: str, first: str, second: str):
        """(height, width) from `both` or from `first`/`second`; 0 when none is set."""
        if p.HasField(first) or p.HasField(second):
            if p.HasField(both):
                raise self.error(f"give either {both} or {first}/{second}, not both",
                                 NetDefinitionError)
            values = getattr(p, first), getattr(p, second)
        elif p.HasField(both):
            values = getattr(p, both), getattr(p, both)
        else:
            return 0, 0
        if min(values) <= 0:
            raise self.error(f"{first}/{second} must be positive, got {values}",
                             NetDefinitionError)
        return values

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error(f"bottom '{bottom[0].name}' must be 4-d (N, C, H, W), got "
                             f"{bottom[0].shape}")
        height, width = bottom[0].shape[2:]
        top[0].reshape(1, 2, height * width * self.num_priors * 4)

    def _box_sizes(self) -> np.ndarray:
        """(P, 2) width and height of each prior of one cell, in the fork's order."""
        sizes = []
        for s, min_size in enumerate(self.min_sizes):
            sizes.append((min_size, min_size))
            if self.max_sizes:
                side = np.float32(math.sqrt(min_size * self.max_sizes[s]))
                sizes.append((side, side))
            for r in self.aspect_ratios:
                if abs(r - 1) < 1e-6:
                    continue
                root = np.sqrt(r)
                sizes.append((np.float32(min_size) * root, np.float32(min_size) / root))
        return np.array(sizes, np.float32)

    def forward(self, bottom, top):
        height, width = bottom[0].shape[2:]
        img_h, img_w = self.img_h, self.img_w
        if not (img_h and img_w):
            if bottom[1].num_axes != 4:
                raise self.error(f"bottom '{bottom[1].name}' (the image) must be 4-d, got "
                                 f"{bottom[1].shape}")
            img_h, img_w = bottom[1].shape[2:]
        # The priors depend on the sizes alone: made once per sizes, copied at each forward
        # (MobileNet-SSD's six PriorBox layers: 0.27 ms a forward, 4% of them copying).
        key = (height, width, img_h, img_w)
        if self._priors_for != key:
            self._priors = self._make_priors(height, width, img_h, img_w)
            self._priors_for = key
        top[0].data[0] = self._priors

    def _make_priors(self, height, width, img_h, img_w) -> np.ndarray:
        """(2, H * W * P * 4): the boxes, then their variances."""
        step_h, step_w = self.step_h, self.step_w
        if not (step_h and step_w):
            step_h, step_w = np.float32(img_h / height), np.float32(img_w / width)
        step_h, step_w = np.float32(step_h), np.float32(step_w)
        cy = (np.arange(height, dtype=np.float32) + self.offset) * step_h
        cx = (np.arange(width, dtype=np.float32) + self.offset) * step_w
        half = self._box_sizes().astype(np.float64) / 2.0            # (P, 2)
        centers_x = cx.astype(np.float64)[None, :, None]              # (1, W, 1)
        centers_y = cy.astype(np.float64)[:, None, None]              # (H, 1, 1)
        boxes = np.empty((height, width, self.num_priors, 4), np.float32)
        boxes[..., 0] = (centers_x - half[:, 0]) / img_w
        boxes[..., 1] = (centers_y - half[:, 1]) / img_h
        boxes[..., 2] = (centers_x + half[:, 0]) / img_w
        boxes[..., 3] = (centers_y + half[:, 1]) / img_h
        if self.clip:
            np.clip(boxes, 0.0, 1.0, out=boxes)
        priors = np.empty((2, boxes.size), np.float32)
        priors[0] = boxes.reshape(-1)
        priors[1].reshape(-1, self.variance.size)[...] = self.variance
        return priors


@register_layer("DetectionOutput")
class DetectionOutput(Layer):
    """Boxes decoded from SSD's predictions, filtered per class by NMS, Caffe-SSD
    "DetectionOutput". Bottoms: location predictions (N, P*L*4) (L = 1 with share_location,
    else num_classes), class confidences (N, P*num_classes) (already softmaxed), and
    PriorBox's output (1, 2, P*4). Top (1, 1, K, 7): rows [image, label, score, xmin, ymin,
    xmax, ymax], images in order, labels ascending within an image; an image list with no
    detection at all gives one row [image, -1, -1, -1, -1, -1, -1] per image.

    Per image and class (background skipped): scores above confidence_threshold, the top_k
    best, greedy NMS at nms_threshold (eta < 1: adaptive); then the keep_top_k best over all
    classes. code_type CORNER / CENTER_SIZE / CORNER_SIZE decodes against the priors, with the
    prior variances unless variance_encoded_in_target. Result files (save_output_param) and
    visualize are not supported: protonet says so and computes the top as usual.
    """

    num_bottom = 3

    def setup(self, bottom, top):
        p = self.param.detection_output_param
        if not p.HasField("num_classes"):
            raise self.error("detection_output_param needs num_classes", NetDefinitionError)
        self.num_classes = int(p.num_classes)
        self.share_location = p.share_location
        self.num_loc_classes = 1 if self.share_location else self.num_classes
        self.background = int(p.background_label_id)
        self.code_type = int(p.code_type)
        self.variance_encoded = p.variance_encoded_in_target
        self.keep_top_k = int(p.keep_top_k)
        self.confidence_threshold = np.float32(
            p.confidence_threshold if p.HasField("confidence_threshold")
            else -np.finfo(np.float32).max)
        nms = p.nms_param
        if nms.nms_threshold < 0:
            raise self.error(f"nms_threshold must be non-negative, got {nms.nms_threshold}",
                             NetDefinitionError)
        if not 0 < nms.eta <= 1:
            raise self.error(f"nms_param.eta must be in (0, 1], got {nms.eta}",
                             NetDefinitionError)
        self.nms_threshold = np.float32(nms.nms_threshold)
        self.eta = np.float32(nms.eta)
        self.top_k = int(nms.top_k) if nms.HasField("top_k") else -1
        save = p.save_output_param
        if save.output_directory or p.visualize:
            log.warning("layer '%s' (DetectionOutput): protonet does not write result files "
                        "(save_output_param) or draw detections (visualize); read the top "
                        "blob instead", self.name)

    def reshape(self, bottom, top):
        loc, conf, prior = bottom
        if loc.shape[0] != conf.shape[0]:
            raise self.error(f"location bottom '{loc.name}' has {loc.shape[0]} images, "
                             f"confidence bottom '{conf.name}' {conf.shape[0]}")
        if prior.num_axes != 3 or prior.shape[1] != 2 or prior.shape[2] % 4:
            raise self.error(f"prior bottom '{prior.name}' must be PriorBox's (1, 2, P*4), "
                             f"got {prior.shape}")
        self.num_priors = prior.shape[2] // 4
        if count(loc.shape, 1) != self.num_priors * self.num_loc_classes * 4:
            raise self.error(f"location bottom '{loc.name}' {loc.shape} does not hold "
                             f"{self.num_priors} priors x {self.num_loc_classes} x 4 values")
        if count(conf.shape, 1) != self.num_priors * self.num_classes:
            raise self.error(f"confidence bottom '{conf.name}' {conf.shape} does not hold "
                             f"{self.num_priors} priors x {self.num_classes} classes")
        top[0].reshape(1, 1, 1, 7)
        self.keep = np.empty(self.num_priors, np.int64)

    def decode(self, loc, priors, variances):
        """Boxes (P, 4) from location predictions (P, 4) against priors (P, 4)."""
        if self.variance_encoded:
            variances = np.ones_like(variances)
        if self.code_type == CodeType.CORNER:
            boxes = priors + variances * loc
        elif self.code_type in (CodeType.CENTER_SIZE, CodeType.CORNER_SIZE):
            width = priors[:, 2] - priors[:, 0]
            height = priors[:, 3] - priors[:, 1]
            if self.code_type == CodeType.CORNER_SIZE:
                size = np.stack([width, height, width, height], axis=1)
                boxes = priors + variances * loc * size
            else:
                center_x = (priors[:, 0] + priors[:, 2]) / np.float32(2)
                center_y = (priors[:, 1] + priors[:, 3]) / np.float32(2)
                cx = variances[:, 0] * loc[:, 0] * width + center_x
                cy = variances[:, 1] * loc[:, 1] * height + center_y
                half_w = np.exp(variances[:, 2] * loc[:, 2]) * width / np.float32(2)
                half_h = np.exp(variances[:, 3] * loc[:, 3]) * height / np.float32(2)
                boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
        else:
            raise self.error(f"unknown code_type {self.code_type}", NetDefinitionError)
        return np.ascontiguousarray(boxes, dtype=np.float32)

    def nms(self, boxes, areas, scores):
        """Indices kept by NMS among `scores` above the confidence threshold, best first."""
        candidates = np.flatnonzero(scores > self.confidence_threshold)
        order = candidates[np.argsort(-scores[candidates], kind="stable")]
        if self.top_k > -1:
            order = order[:self.top_k]
        n = greedy_nms(boxes, areas, order, self.nms_threshold, self.eta, self.keep)
        return self.keep[:n].copy()

    def detect(self, loc, conf, priors, variances):
        """Rows (label, score, xmin, ymin, xmax, ymax) of one image's detections."""
        loc = loc.reshape(self.num_priors, self.num_loc_classes, 4)
        conf = conf.reshape(self.num_priors, self.num_classes)
        boxes = [self.decode(loc[:, j], priors, variances) for j in range(self.num_loc_classes)]
        areas = [np.where((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]), np.float32(0),
                          (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])) for b in boxes]
        kept = []  # (label, index) in label order, best first within a label
        for c in range(self.num_classes):
            if c == self.background:
                continue
            j = 0 if self.share_location else c
            kept.extend((c, i) for i in self.nms(boxes[j], areas[j], conf[:, c]))
        if self.keep_top_k > -1 and len(kept) > self.keep_top_k:
            scores = np.array([conf[i, c] for c, i in kept], np.float32)
            best = np.argsort(-scores, kind="stable")[:self.keep_top_k]
            # Labels ascending, best first within a label (sorted is stable).
            kept = sorted((kept[k] for k in best), key=lambda pair: pair[0])
        rows = np.empty((len(kept), 6), np.float32)
        for r, (c, i) in enumerate(kept):
            rows[r, 0] = c
            rows[r, 1] = conf[i, c]
            rows[r, 2:] = boxes[0 if self.share_location else c][i]
        return rows

    def forward(self, bottom, top):
        loc, conf, prior = bottom
        num = loc.shape[0]
        priors = prior.data[0, 0].reshape(self.num_priors, 4)
        variances = prior.data[0, 1].reshape(self.num_priors, 4)
        per_image = [self.detect(loc.data[i], conf.data[i], priors, variances)
                     for i in range(num)]
        total = sum(len(rows) for rows in per_image)
        if total == 0:
            top[0].reshape(1, 1, num, 7)
            top[0].data[...] = -1
            top[0].data[0, 0, :, 0] = np.arange(num)
            return
        top[0].reshape(1, 1, total, 7)
        out = top[0].data[0, 0]
        start = 0
        for i, rows in enumerate(per_image):
            out[start:start + len(rows), 0] = i
            out[start:start + len(rows), 1:] = rows
            start += len(rows)
