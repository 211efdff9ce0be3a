"""Fewer passes over memory in a forward: a built net's layers whose work another layer can do
in its own output pass (kernels/epilogue.py).

A Convolution, Deconvolution, ConvolutionDepthwise or InnerProduct (a "producer") adds its
bias in one last pass over its output. The layers that work in place on that output right
after it can join that pass instead of each going over the blob again:
- in a TEST net, a BatchNorm using its global statistics and a per-channel Scale: folded into
  a per-channel y * scale + shift (surgery.batchnorm_affine, the formula `fold-bn` uses),
  computed again whenever a parameter it uses has changed (each forward compares them), so
  net surgery and copy_from take effect at once; the weights, net.params and saved files stay
  the originals (nothing is written into them);
- in any phase, a ReLU: backward is unchanged (ReLU's backward reads its in-place top, which
  holds the same values).

Only where no one could tell: every absorbed layer works in place on the producer's top (so
net.blobs shows the same values after a forward), the producer's output has no other reader
(split layers make sure of that), no absorbed layer carries a loss weight, and, for the
BatchNorm/Scale fold, no layer of the group takes part in backward (BatchNorm and Scale keep
what their backward needs in their forward). A forward over part of the net fuses only the
groups wholly inside it, and none while pycaffe forward hooks are set (they may look at the
blob between layers). `net.fuse = False`, or PROTONET_FUSE=0 in the environment, turns it off.
"""
from __future__ import annotations

import os

import numpy as np

from .kernels.epilogue import NONE
from .layers.base import TEST, canonical_axis
from .layers.neuron import ReLU
from .layers.normalization import BatchNorm, Scale
from .surgery import batchnorm_affine


def enabled_by_default() -> bool:
    return os.environ.get("PROTONET_FUSE", "1") != "0"


class Group:
    """A producer and the in-place layers after it whose work it does (layer indices)."""

    def __init__(self, producer, index: int, channels: int | None) -> None:
        self.producer, self.index, self.channels = producer, index, channels
        self.absorbed: list[int] = []
        self.batchnorm = self.scale = None
        self.negative_slope = None   # a ReLU's, when one is fused

    @property
    def last(self) -> int:
        return self.absorbed[-1]

    @property
    def folds(self) -> bool:
        return self.batchnorm is not None or self.scale is not None

    def parameter_blobs(self) -> list:
        """The blobs the fold is computed from."""
        blobs = [b for layer in (self.batchnorm, self.scale) if layer is not None
                 for b in layer.blobs]
        return blobs + list(self.producer.blobs[1:2] if self.producer.bias_term else ())

    def _relu(self):
        relu = self.negative_slope is not None
        return relu, self.negative_slope if relu else np.float32(0)

    def epilogue(self):
        """(scale, shift, relu, negative_slope): the fold from the layers' parameters as
        they are now, or the producer's bias and the ReLU."""
        if not self.folds:
            bias = self.producer.blobs[1].data if self.producer.bias_term else NONE
            return (NONE, bias, *self._relu())
        gamma, beta = batchnorm_affine(self.batchnorm, self.scale)
        if self.producer.bias_term:
            beta = beta + self.producer.blobs[1].data.astype(np.float64) * gamma
        per_channel = (self.channels,)
        return (np.broadcast_to(gamma, per_channel).astype(np.float32),
                np.broadcast_to(beta, per_channel).astype(np.float32), *self._relu())


class FusedRange:
    """The groups wholly inside a forward over layers start..end, and their folds, kept
    until a parameter they use changes (net surgery, copy_from, weights shared with a
    training net): one comparison of all those parameters per forward, where recomputing
    every fold would cost ResNet-50 2.6 ms."""

    def __init__(self, groups: list[Group]) -> None:
        self.groups = groups
        self.skipped = frozenset(i for g in groups for i in g.absorbed)
        self._watched = [b for g in groups if g.folds for b in g.parameter_blobs()]
        self._seen = None   # the watched values the folds in _folded were computed from
        self._folded: dict[int, tuple] = {}

    def epilogues(self) -> dict:
        """{producer index: its epilogue} for this forward."""
        if self._watched:
            values = np.concatenate([b.data for b in self._watched], axis=None)
            if self._seen is None or not np.array_equal(values, self._seen):
                self._folded = {g.index: g.epilogue() for g in self.groups if g.folds}
                self._seen = values
        return {g.index: self._folded[g.index] if g.folds else g.epilogue()
                for g in self.groups}


class FusionPlan:
    """The groups of a built net (plan_fusion), and which of them a forward over layers
    start..end may use."""

    def __init__(self, groups: list[Group]) -> None:
        self.groups = groups
        self._ranges: dict[tuple[int, int], FusedRange] = {}

    def for_range(self, start: int, end: int) -> tuple[frozenset, dict]:
        """(indices of layers to skip, {producer index: its epilogue}) for a forward
        start..end."""
        fused = self._ranges.get((start, end))
        if fused is None:
            fused = self._ranges[start, end] = FusedRange(
                [g for g in self.groups if g.index >= start and g.last <= end])
        return fused.skipped, fused.epilogues()


def plan_fusion(net) -> FusionPlan:
    """The groups of `net` (a protonet.Net after construction)."""
    groups = []
    for i, producer in enumerate(net.layers):
        if not producer.takes_epilogue or len(net._tops[i]) != 1:
            continue
        group = _group(net, i, producer)
        if group.absorbed:
            groups.append(group)
    return FusionPlan(groups)


def _group(net, i: int, producer) -> Group:
    blob = net._tops[i][0]
    channels = _output_channels(producer, blob)
    group = Group(producer, i, channels)
    # BatchNorm and Scale keep state for their backward in forward: fold them only where no
    # backward runs through the group.
    may_fold = net.phase == TEST and not net._layer_need_backward[i]
    k = i
    while True:
        k = _next_in_place_reader(net, k, blob)
        if k is None or net._loss_tops[k]:
            return group
        layer = net.layers[k]
        may_fold = may_fold and not net._layer_need_backward[k]
        if (isinstance(layer, BatchNorm) and may_fold and channels and group.scale is None
                and group.batchnorm is None and layer.use_global_stats
                and layer.channels == channels):
            group.batchnorm = layer
        elif (isinstance(layer, Scale) and may_fold and channels and group.scale is None
              and _per_channel(layer, channels, blob)):
            group.scale = layer
        elif isinstance(layer, ReLU):
            group.negative_slope = layer.negative_slope
            group.absorbed.append(k)
            return group
        else:
            return group
        group.absorbed.append(k)


def _next_in_place_reader(net, k: int, blob) -> int | None:
    """The first layer after k reading `blob`, if it is its only bottom and it works in
    place; None otherwise. (A production read by two layers goes through a Split, so the
    first reader of the producer's top is its only one.)"""
    for j in range(k + 1, len(net.layers)):
        bottoms = net._bottoms[j]
        if any(b is blob for b in bottoms):
            tops = net._tops[j]
            in_place = len(bottoms) == 1 and len(tops) == 1 and tops[0] is blob
            return j if in_place else None
        if any(t is blob for t in net._tops[j]):
            return None
    return None


def _output_channels(producer, blob) -> int | None:
    """The producer's output channel count if its channels lie on axis 1 of its top (an
    InnerProduct with axis 1, every convolution), else None."""
    if getattr(producer, "axis", 1) != 1 or blob.num_axes < 2:
        return None
    return blob.shape[1]


def _per_channel(scale: Scale, channels: int, blob) -> bool:
    """A Scale with its own parameter of one value per channel (or one value in all)."""
    if not scale.scale_is_param:
        return False
    count = scale.blobs[0].count
    return count == 1 or (count == channels and scale.blobs[0].num_axes == 1
                          and canonical_axis(scale.axis, blob.num_axes, scale) == 1)
