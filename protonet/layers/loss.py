"""Loss layers other than SoftmaxWithLoss (which lives with Softmax): Euclidean, sigmoid
cross-entropy, hinge, contrastive, multinomial logistic and infogain losses.

Each backward scales by top[0].diff (the loss weight the net sets). Labels are read as Caffe's
static_cast<int> does (truncation toward zero); a label outside the class range is an error
naming the layer (Caffe only DCHECKs it).
"""
from __future__ import annotations

import numpy as np

from .. import caffe_pb2
from ..errors import DataError, NetDefinitionError, ShapeError
from ..io.binaryproto import read_binaryproto
from ..kernels.softmax import softmax_forward
from ..registry import register_layer
from .base import LossLayer, canonical_axis, count
from .neuron import sigmoid

LP = caffe_pb2.LossParameter
# Caffe's kLOG_THRESHOLD (loss_layer.hpp): probabilities are clamped before the log.
LOG_THRESHOLD = np.float32(1e-20)


def _check_label_count(layer, bottom, expected: int) -> None:
    if bottom[1].count != expected:
        raise layer.error(f"{bottom[1].count} labels (bottom '{bottom[1].name}', shape "
                          f"{bottom[1].shape}) for {expected} predictions (bottom "
                          f"'{bottom[0].name}', shape {bottom[0].shape})", ShapeError)


def _read_labels(layer, blob, classes: int, out: np.ndarray, keep=None) -> None:
    """out = int(labels); raise naming the first label outside [0, classes) (ignored ones
    excepted)."""
    np.copyto(out, blob.data.reshape(out.shape), casting="unsafe")
    bad = (out < 0) | (out >= classes)
    if keep is not None:
        bad &= keep
    if bad.any():
        raise layer.error(f"label {blob.data.reshape(out.shape)[bad][0]:g} out of range: "
                          f"predictions have {classes} classes (0 to {classes - 1})", ShapeError)


@register_layer("EuclideanLoss")
class EuclideanLoss(LossLayer):
    """loss = sum (a - b)^2 / 2N, Caffe "EuclideanLoss" (V1 EUCLIDEAN_LOSS); gradients to both
    bottoms (N = first axis)."""

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise self.error(f"bottoms need the same count: {bottom[0].shape} vs "
                             f"{bottom[1].shape}", ShapeError)
        self.scratch("delta", bottom[0].shape)

    def allow_force_backward(self, bottom_index):
        return True

    def forward(self, bottom, top):
        np.subtract(bottom[0].data, bottom[1].data.reshape(bottom[0].shape), out=self.delta)
        top[0].data[...] = np.dot(self.delta.ravel(), self.delta.ravel()) / bottom[0].shape[0] / 2

    def backward(self, top, propagate_down, bottom):
        scale = self.loss_weight(top) / bottom[0].shape[0]
        for i, (blob, down) in enumerate(zip(bottom, propagate_down)):
            if down:
                np.multiply(self.delta, scale if i == 0 else -scale,
                            out=blob.diff.reshape(self.delta.shape))


@register_layer("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(LossLayer):
    """loss = -sum [t log s(x) + (1 - t) log(1 - s(x))] / normalizer, s the sigmoid, Caffe
    "SigmoidCrossEntropyLoss" (V1 SIGMOID_CROSS_ENTROPY_LOSS). Reads loss_param.ignore_label
    (targets whose int() equals it are skipped), normalization, or the legacy normalize (true:
    VALID, false: BATCH_SIZE); with neither, Caffe's BATCH_SIZE (the first axis).
    Bottom: predictions (N, ...); targets in [0, 1], as many. Top: the scalar loss."""

    default_normalization = LP.BATCH_SIZE

    def setup(self, bottom, top):
        lp = self.param.loss_param
        self.has_ignore, self.ignore_label = lp.HasField("ignore_label"), lp.ignore_label
        self.read_normalization()

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise self.error(f"predictions {bottom[0].shape} and targets {bottom[1].shape} need "
                             "the same count", ShapeError)
        self.outer = bottom[0].shape[0]
        self.inner = bottom[0].count // max(1, self.outer)

    def forward(self, bottom, top):
        x = bottom[0].data.astype(np.float64).ravel()
        t = bottom[1].data.astype(np.float64).ravel()
        # Caffe parity: the target is compared with ignore_label after static_cast<int>.
        keep = np.trunc(t) != self.ignore_label if self.has_ignore else np.ones_like(t, bool)
        # Stable: x (t - [x >= 0]) - log(1 + exp(x - 2 x [x >= 0])) is -(per-element loss).
        pos = (x >= 0).astype(np.float64)
        per = -(x * (t - pos) - np.log1p(np.exp(x - 2 * x * pos)))
        self.keep = keep
        self.scale = 1.0 / self.normalizer(self.outer, self.inner, int(keep.sum()))
        top[0].data[...] = (per * keep).sum() * self.scale

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to the targets")
        if propagate_down[0]:
            s = sigmoid(bottom[0].data)
            grad = (s - bottom[1].data.reshape(s.shape)) * (self.loss_weight(top) * self.scale)
            bottom[0].diff[...] = grad * self.keep.reshape(s.shape)


class _PerSampleLoss(LossLayer):
    """Scores (N, ...) viewed as (N, C) with C = count / N, one integer label per sample."""

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        num = bottom[0].shape[0]
        self.view = (num, bottom[0].count // num)
        _check_label_count(self, bottom, num)
        self.scratch("label", (num,), np.int64)
        self.rows = np.arange(num)

    def _refuse_labels(self, propagate_down):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to label inputs", NetDefinitionError)


@register_layer("HingeLoss")
class HingeLoss(_PerSampleLoss):
    """loss = sum_ij max(0, 1 - t_ij x_ij)^p / N, t_ij = +1 if j = label_i else -1, p = 1 (L1)
    or 2 (L2). Caffe "HingeLoss" (V1 HINGE_LOSS). Reads hinge_loss_param.norm (L1).

    Bottom: scores (N, ...) with C = count / N classes; labels, N values in [0, C).
    Top: the scalar loss.
    """

    def setup(self, bottom, top):
        self.l2 = self.param.hinge_loss_param.norm == caffe_pb2.HingeLossParameter.L2

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.scratch("margin", self.view)

    def forward(self, bottom, top):
        _read_labels(self, bottom[1], self.view[1], self.label)
        margin, at_label = self.margin, (self.rows, self.label)
        np.copyto(margin, bottom[0].data.reshape(self.view))
        margin[at_label] *= -1
        margin += 1
        np.maximum(margin, 0, out=margin)
        flat = margin.ravel()
        total = (np.einsum("i,i->", flat, flat, dtype=np.float64) if self.l2
                 else flat.sum(dtype=np.float64))
        top[0].data[...] = total / self.view[0]

    def backward(self, top, propagate_down, bottom):
        self._refuse_labels(propagate_down)
        if not propagate_down[0]:
            return
        scale = self.loss_weight(top) / self.view[0]
        diff = bottom[0].diff.reshape(self.view)
        # Caffe parity: L1 takes sign(margin), so a margin of exactly 0 gives gradient 0.
        if self.l2:
            np.multiply(self.margin, np.float32(2 * scale), out=diff)
        else:
            np.sign(self.margin, out=diff)
            diff *= np.float32(scale)
        diff[self.rows, self.label] *= -1


@register_layer("ContrastiveLoss")
class ContrastiveLoss(LossLayer):
    """loss = sum_n [y_n d_n^2 + (1 - y_n) max(margin - d_n, 0)^2] / 2N, d_n = ||a_n - b_n||,
    Caffe "ContrastiveLoss" (V1 CONTRASTIVE_LOSS). legacy_version uses max(margin - d_n^2, 0)
    for dissimilar pairs. Reads contrastive_loss_param.margin (1), legacy_version (false).

    Bottom: a (N, C, ...), b of a's shape, similarity labels y (N values; int(y) != 0 means
    similar). Top: the scalar loss. Gradients to a and b, never to y.
    """

    num_bottom = 3

    def setup(self, bottom, top):
        p = self.param.contrastive_loss_param
        self.margin = np.float32(p.margin)
        self.legacy = p.legacy_version

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].shape != bottom[1].shape:
            raise self.error(f"bottoms '{bottom[0].name}' {bottom[0].shape} and "
                             f"'{bottom[1].name}' {bottom[1].shape} need the same shape")
        num = bottom[0].shape[0]
        if any(d != 1 for d in bottom[0].shape[2:]):   # Caffe: (N, C, 1, 1) features
            raise self.error(f"features must be (N, C) or (N, C, 1, 1), got shape "
                             f"{bottom[0].shape}")
        if bottom[2].count != num:
            raise self.error(f"{bottom[2].count} similarity labels (bottom '{bottom[2].name}', "
                             f"shape {bottom[2].shape}) for {num} pairs")
        self.view = (num, bottom[0].count // num)
        self.scratch("diff", self.view)
        self.scratch("dist_sq", (num,))
        self.scratch("similar", (num,), bool)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def forward(self, bottom, top):
        np.subtract(bottom[0].data.reshape(self.view), bottom[1].data.reshape(self.view),
                    out=self.diff)
        np.einsum("ij,ij->i", self.diff, self.diff, out=self.dist_sq)
        np.not_equal(np.trunc(bottom[2].data.reshape(-1)), 0, out=self.similar)
        if self.legacy:
            dissimilar = np.maximum(self.margin - self.dist_sq, 0)
        else:
            dissimilar = np.maximum(self.margin - np.sqrt(self.dist_sq), 0) ** 2
        per_pair = np.where(self.similar, self.dist_sq, dissimilar)
        top[0].data[...] = per_pair.sum(dtype=np.float64) / self.view[0] / 2

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise self.error("cannot backpropagate to the similarity labels",
                             NetDefinitionError)
        if not (propagate_down[0] or propagate_down[1]):
            return
        if self.legacy:
            coeff = np.where(self.margin - self.dist_sq > 0, np.float32(-1), np.float32(0))
        else:
            dist = np.sqrt(self.dist_sq)
            mdist = self.margin - dist
            # Caffe parity: contrastive_loss_layer.cpp adds 1e-4 to d to avoid dividing by 0.
            coeff = np.where(mdist > 0, -mdist / (dist + np.float32(1e-4)), np.float32(0))
        coeff = np.where(self.similar, np.float32(1), coeff).astype(np.float32)
        alpha = self.loss_weight(top) / self.view[0]
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                np.multiply(self.diff, (coeff * np.float32(sign * alpha))[:, None],
                            out=bottom[i].diff.reshape(self.view))


@register_layer("MultinomialLogisticLoss")
class MultinomialLogisticLoss(_PerSampleLoss):
    """loss = -sum_n log(max(p_n[label_n], 1e-20)) / N, Caffe "MultinomialLogisticLoss"
    (V1 MULTINOMIAL_LOGISTIC_LOSS). The input is already a probability (a Softmax's top).

    Bottom: probabilities (N, C) or (N, C, 1, 1); labels, N values in [0, C).
    Top: the scalar loss.
    """

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.scratch("prob", (self.view[0],))

    def forward(self, bottom, top):
        _read_labels(self, bottom[1], self.view[1], self.label)
        np.maximum(bottom[0].data.reshape(self.view)[self.rows, self.label], LOG_THRESHOLD,
                   out=self.prob)
        top[0].data[...] = -np.log(self.prob).sum(dtype=np.float64) / self.view[0]

    def backward(self, top, propagate_down, bottom):
        self._refuse_labels(propagate_down)
        if propagate_down[0]:
            diff = bottom[0].diff.reshape(self.view)
            diff[...] = 0
            scale = np.float32(-self.loss_weight(top) / self.view[0])
            diff[self.rows, self.label] = scale / self.prob


@register_layer("InfogainLoss")
class InfogainLoss(LossLayer):
    """loss = -sum_n sum_l H[label_n, l] log(max(p_nl, 1e-20)) / normalizer, p = softmax(x)
    along infogain_loss_param.axis, Caffe "InfogainLoss" (V1 INFOGAIN_LOSS).

    Follows current Caffe master (infogain_loss_layer.cpp at BVLC/caffe 9b89154): the layer
    applies the softmax itself (before Caffe PR #5166 it took probabilities and divided by the
    count), skips loss_param.ignore_label, and divides by loss_param.normalization (VALID: the
    labels not ignored; FULL, BATCH_SIZE, NONE as in SoftmaxWithLoss). As in Caffe, the
    deprecated loss_param.normalize is rejected. With identity H it equals SoftmaxWithLoss.

    Reads infogain_loss_param.source (a .binaryproto holding H, C x C values; required with
    two bottoms), infogain_loss_param.axis (1), loss_param.ignore_label, normalization (VALID).
    Bottom: scores (N, C, ...); labels with count N x (...); optional H (C x C values), which
    then replaces the file. Top: the scalar loss; optional second top: the probabilities.
    Gradient: dx_nl = (p_nl sum_k H[label_n, k] - H[label_n, l]) * weight / normalizer.
    """

    num_bottom = (2, 3)
    num_top = (1, 2)
    accepts_normalize = False

    def setup(self, bottom, top):
        lp, ip = self.param.loss_param, self.param.infogain_loss_param
        self.read_normalization()
        self.has_ignore, self.ignore_label = lp.HasField("ignore_label"), lp.ignore_label
        self.axis_param = ip.axis
        self.infogain = None
        if len(bottom) < 3:
            if not ip.HasField("source"):
                raise self.error("needs infogain_loss_param.source (the matrix H) or a third "
                                 "bottom", NetDefinitionError)
            try:
                self.infogain = read_binaryproto(ip.source)
            except DataError as e:
                raise self.error(f"infogain matrix: {e}", DataError) from None

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.axis = canonical_axis(self.axis_param, bottom[0].num_axes, self)
        shape = bottom[0].shape
        self.view = (count(shape, 0, self.axis), shape[self.axis], count(shape, self.axis + 1))
        outer, classes, inner = self.view
        if bottom[1].count != outer * inner:
            raise self.error(f"{bottom[1].count} labels (bottom '{bottom[1].name}', shape "
                             f"{bottom[1].shape}) for {outer * inner} predictions (bottom "
                             f"'{bottom[0].name}', shape {shape}, infogain axis {self.axis})",
                             ShapeError)
        h_count = self.infogain.size if len(bottom) < 3 else bottom[2].count
        if h_count != classes * classes:
            where = "the infogain matrix" if len(bottom) < 3 else f"bottom '{bottom[2].name}'"
            raise self.error(f"{where} has {h_count} values, expected {classes} x {classes} "
                             f"for {classes} classes", ShapeError)
        if len(top) == 2:
            top[1].reshape(shape)
        self.scratch("prob", self.view)
        self.scratch("log_prob", self.view)
        # H's row for each label, laid out (outer, inner, C) to match prob transposed.
        self.scratch("h_rows", (outer, inner, classes))
        self.scratch("label", (outer, inner), np.int64)
        self.scratch("keep", (outer, inner), bool)

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def _normalizer(self) -> float:
        outer, _, inner = self.view
        return self.normalizer(outer, inner, self.valid)

    def forward(self, bottom, top):
        outer, classes, inner = self.view
        h = (self.infogain if len(bottom) < 3 else bottom[2].data).reshape(classes, classes)
        labels = bottom[1].data.reshape(outer, inner)
        if self.has_ignore:
            np.not_equal(labels, self.ignore_label, out=self.keep)
        else:
            self.keep[...] = True
        _read_labels(self, bottom[1], classes, self.label, self.keep)
        self.valid = int(self.keep.sum())
        softmax_forward(bottom[0].data.reshape(self.view), self.prob)
        np.maximum(self.prob, LOG_THRESHOLD, out=self.log_prob)
        np.log(self.log_prob, out=self.log_prob)
        np.take(h, np.where(self.keep, self.label, 0), axis=0, out=self.h_rows)
        self.h_rows[~self.keep] = 0
        self.row_sum = self.h_rows.sum(axis=2)
        loss = -np.einsum("oic,oci->", self.h_rows, self.log_prob, dtype=np.float64)
        top[0].data[...] = loss / self._normalizer()
        if len(top) == 2:
            top[1].data.reshape(self.view)[...] = self.prob

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to label inputs", NetDefinitionError)
        if len(propagate_down) > 2 and propagate_down[2]:
            raise self.error("cannot backpropagate to the infogain matrix", NetDefinitionError)
        if not propagate_down[0]:
            return
        # (outer, inner, C) views, so H's rows broadcast along the class axis.
        diff = bottom[0].diff.reshape(self.view).transpose(0, 2, 1)
        np.multiply(self.prob.transpose(0, 2, 1), self.row_sum[:, :, None], out=diff)
        diff -= self.h_rows
        diff *= np.float32(self.loss_weight(top) / self._normalizer())
