"""Layer, NeuronLayer, LossLayer: Caffe's layer lifecycle with pycaffe's method names.

A layer is built from its LayerParameter and does no work in its constructor. The net calls
`set_up(bottom, top)` once (check blob counts, `setup`, then `reshape`), `reshape` whenever
input shapes may have changed, then `forward(bottom, top)` and
`backward(top, propagate_down, bottom)`.

The gradient contract (Caffe's): `backward` OVERWRITES bottom[i].diff for each i with
propagate_down[i], and ADDS into self.blobs[j].diff for each j with param_propagate_down[j]
(the solver zeroes parameter diffs once per step, which is how iter_size accumulates).
`setup` turns protobuf fields into plain attributes; `reshape` owns every allocation;
`forward`/`backward` never read self.param and allocate nothing large.
"""
from __future__ import annotations

import math
from typing import ClassVar, Sequence, Union

import numpy as np

from .. import caffe_pb2, memory
from ..blob import Blob, BlobVec
from ..errors import NetDefinitionError, ShapeError, clip
from ..io.binaryproto import array_from_blobproto
from ..kernels.epilogue import NONE as NO_OPERAND

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST

# An exact count, or (minimum, maximum) where maximum None means unbounded.
Arity = Union[int, tuple[int, Union[int, None]]]


class Layer:
    """One Caffe layer: its LayerParameter, its learnable blobs (weights first), four steps."""

    type: ClassVar[str] = ""
    num_bottom: ClassVar[Arity] = 1
    num_top: ClassVar[Arity] = 1
    # Loss layers put loss_weight 1 on their first top unless the prototxt says otherwise.
    default_loss_weight: ClassVar[float] = 0.0
    # Input layers' tops are the net's inputs (pycaffe's net.inputs).
    is_net_input: ClassVar[bool] = False
    # Caffe's AutoTopBlobs: missing tops are created (loss layers, so the loss is counted).
    auto_top_blobs: ClassVar[bool] = False
    # False where Caffe refuses a top that is its own bottom (AbsVal, Flatten, Reshape, Split).
    in_place: ClassVar[bool] = True
    # What a layer that reads records reads (its database); a solverstate names it.
    source: str = ""
    # Layers whose output pass is kernels/epilogue.py's (a per-channel bias): the net may hand
    # them, for one forward, the BatchNorm/Scale/ReLU after them to apply there instead
    # (protonet/fusion.py), as `epilogue`.
    takes_epilogue: ClassVar[bool] = False
    epilogue = None
    # True when reshape reads nothing but the bottoms' shapes (and the layer's settings): a
    # net then skips it while those shapes stay the same (protonet/reshape_memo.py).
    reshape_reads_only_shapes: ClassVar[bool] = True

    # Set by a net built with a weights file that has this layer's blobs (Net(..., weights=)):
    # their filled values would only be overwritten (VGG-16: 138M random draws, 2 s).
    weights_follow: bool = False

    # Whether a backward of this layer may run (Caffe's layer_need_backward, set by the net;
    # True for a layer on its own). False in a TEST net without force_backward: the layer may
    # then skip work only its backward reads (max pooling's argmax).
    backward_runs: bool = True

    def __init__(self, param, phase: int = TRAIN) -> None:
        self.name: str = param.name
        self.param = param
        self.phase = phase
        self.blobs = BlobVec()
        for i, proto in enumerate(param.blobs):
            array = array_from_blobproto(proto, where=f"layer '{param.name}' blob {i}")
            blob = Blob(array.shape, name=f"{param.name}[{i}]")
            blob.data[...] = array
            self.blobs.append(blob)
        # Set by the net from lr_mult (0 means frozen); layers skip those parameter gradients.
        self.param_propagate_down: list[bool] = []

    @property
    def blobs(self) -> BlobVec:
        """The learnable blobs, weights first (pycaffe's BlobVec: a list with add_blob)."""
        return self._blobs

    @blobs.setter
    def blobs(self, value) -> None:
        # A BlobVec is kept as is: a Python layer and its wrapper share one.
        self._blobs = value if isinstance(value, BlobVec) else BlobVec(value)

    # -- lifecycle ---------------------------------------------------------------------
    def set_up(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """Caffe's Layer::SetUp: check blob counts, then `setup`, then `reshape`."""
        self._check_count("bottom", self.num_bottom, len(bottom))
        self._check_count("top", self.num_top, len(top))
        self.setup(bottom, top)
        self.reshape(bottom, top)
        if len(self.param_propagate_down) != len(self.blobs):
            self.param_propagate_down = [True] * len(self.blobs)

    def setup(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """Once: read this layer's parameters into attributes and create or check its blobs."""

    def reshape(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """Each time input shapes may change: size the tops and any scratch buffers."""
        raise NotImplementedError(f"{type(self).__name__} must define reshape")

    def forward(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define forward")

    def backward(self, top: Sequence[Blob], propagate_down: Sequence[bool],
                 bottom: Sequence[Blob]) -> None:
        """Default: nothing to propagate (layers without bottoms or gradients)."""

    def output_epilogue(self):
        """(scale, shift, relu, negative_slope) for kernels/epilogue.py: what the net fused
        into this forward (protonet/fusion.py), else the layer's own bias (blob 1)."""
        if self.epilogue is not None:
            return self.epilogue
        return (NO_OPERAND, self.blobs[1].data if self.bias_term else NO_OPERAND, False,
                np.float32(0))

    def allow_force_backward(self, bottom_index: int) -> bool:
        """False for bottoms that never take a gradient (labels)."""
        return True

    def close(self) -> None:
        """Release threads and files (the Data layer's prefetch); the net calls it once."""

    # -- resuming: a solverstate keeps where each layer that reads a source stands ------------
    def reader_position(self) -> int | None:
        """Index of the next record this layer reads (counting from the first, not wrapped),
        for layers that read a source; None for the others."""
        return None

    def seek(self, position: int) -> None:
        """Continue reading from record `position` (a resumed run); layers that read a source
        override it."""

    # -- helpers for subclasses ----------------------------------------------------------
    def error(self, message: str, exc=ShapeError):
        """An exception naming this layer: `layer 'conv1' (Convolution): <message>`."""
        return exc(f"layer '{self.name}' ({self.type}): {message}")

    def _check_count(self, which: str, arity: Arity, got: int) -> None:
        if isinstance(arity, int):
            if got != arity:
                raise self.error(f"takes {arity} {which} blob{'s' if arity != 1 else ''}, "
                                 f"got {got}", NetDefinitionError)
            return
        low, high = arity
        if got < low or (high is not None and got > high):
            expected = f"{low} or more" if high is None else f"{low} to {high}"
            raise self.error(f"takes {expected} {which} blobs, got {got}", NetDefinitionError)

    def scratch(self, name: str, shape, dtype=np.float32, grow: bool = False) -> np.ndarray:
        """The layer's work array `name`, kept as that attribute between reshapes: reused
        when it fits, else allocated through protonet.memory, so a shape too big for memory
        is an error naming this layer before anything is allocated. The array has `shape`
        and `dtype`; with `grow`, it is flat, of at least prod(shape) elements, and kept
        while big enough (the caller views its leading part)."""
        old = getattr(self, name, None)
        shape = tuple(int(d) for d in shape)
        dtype = np.dtype(dtype)
        what = f"layer '{clip(self.name)}' ({self.type}): work array '{name}' of shape {shape}"
        if grow:
            shape = (memory.element_count(shape, what),)
            if old is not None and old.dtype == dtype and old.ndim == 1 and old.size >= shape[0]:
                return old
        elif old is not None and old.shape == shape and old.dtype == dtype:
            return old
        setattr(self, name, None)   # let the old array go before the new one is made
        (new,) = memory.allocate(shape, dtype, what)
        setattr(self, name, new)
        return new

    def make_blob(self, shape, filler, index: int) -> Blob:
        """A learnable blob of `shape`, filled by `filler` (a FillerParameter); left zero when
        the net's weights file is about to overwrite it and the filler's draws can be skipped
        exactly (fillers.skip), so later random draws are unchanged."""
        from ..fillers import fill, skip
        blob = Blob(shape, name=f"{self.name}[{index}]")
        where = f"layer '{self.name}' ({self.type})"
        if not (self.weights_follow and skip(filler, shape, where)):
            fill(filler, blob.data, where=where)
        return blob

    def learnable_blobs(self, shapes, fillers) -> None:
        """Blobs of `shapes` (weights, then bias): those that came with the LayerParameter
        (a caffemodel) must fit; otherwise they are created and filled by `fillers`."""
        if self.blobs:
            if len(self.blobs) != len(shapes):
                raise self.error(f"has {len(self.blobs)} blobs, expected {len(shapes)}")
            for i, shape in enumerate(shapes):
                self.check_blob_shape(i, shape)
        else:
            self.blobs = [self.make_blob(shape, filler, i)
                          for i, (shape, filler) in enumerate(zip(shapes, fillers))]

    def check_blob_shape(self, index: int, shape: tuple[int, ...]) -> None:
        """Weights that came with the LayerParameter must fit the shape the layer computes."""
        got = self.blobs[index].shape
        if tuple(got) != tuple(shape):
            raise self.error(f"blob {index} has shape {got}, expected {tuple(shape)}")


class NeuronLayer(Layer):
    """One bottom, one top of the same shape; may work in place (top is bottom)."""

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)


class LossLayer(Layer):
    """Two bottoms (predictions, labels/targets) to one scalar top with loss_weight 1.

    Backward scales its gradient by top[0].diff[()], which the net sets to the loss weight.
    """

    num_bottom: ClassVar[Arity] = 2
    num_top: ClassVar[Arity] = 1
    default_loss_weight: ClassVar[float] = 1.0
    auto_top_blobs: ClassVar[bool] = True

    def reshape(self, bottom, top):
        if bottom[0].shape[0] != bottom[1].shape[0]:
            raise self.error(f"bottoms must have the same num (first axis): "
                             f"{bottom[0].shape} vs {bottom[1].shape}")
        top[0].reshape(())

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 1

    # Caffe's mode when loss_param sets neither normalization nor normalize: SoftmaxWithLoss
    # and InfogainLoss take the field's default (VALID); SigmoidCrossEntropyLoss uses
    # BATCH_SIZE (sigmoid_cross_entropy_loss_layer.cpp). The others divide by a fixed count.
    default_normalization: ClassVar[int] = caffe_pb2.LossParameter.VALID
    # InfogainLoss refuses the deprecated `normalize` (Caffe CHECKs it is absent).
    accepts_normalize: ClassVar[bool] = True

    def read_normalization(self) -> None:
        """self.normalization from loss_param: `normalization`, else the legacy `normalize`
        (true: VALID, false: BATCH_SIZE), else the layer's Caffe default."""
        lp = self.param.loss_param
        if lp.HasField("normalize") and not self.accepts_normalize:
            raise self.error("loss_param.normalize is deprecated for this layer (as in Caffe); "
                             "use loss_param.normalization", NetDefinitionError)
        if lp.HasField("normalization"):
            self.normalization = lp.normalization
        elif lp.HasField("normalize"):
            mode = caffe_pb2.LossParameter
            self.normalization = mode.VALID if lp.normalize else mode.BATCH_SIZE
        else:
            self.normalization = self.default_normalization

    def normalizer(self, outer: int, inner: int, valid: int) -> float:
        """Caffe's get_normalizer: what the summed loss is divided by (at least 1, so a batch
        with every label ignored gives 0, not NaN)."""
        mode = caffe_pb2.LossParameter
        n = {mode.FULL: outer * inner, mode.VALID: valid, mode.BATCH_SIZE: outer,
             mode.NONE: 1}[self.normalization]
        return max(1.0, float(n))

    @staticmethod
    def loss_weight(top) -> float:
        """The weight the net put in the loss top's diff; every backward scales by it."""
        return float(top[0].diff.reshape(-1)[0])


def canonical_axis(axis: int, num_axes: int, layer: Layer) -> int:
    """Caffe's Blob::CanonicalAxisIndex: negative axes count from the end."""
    if not -num_axes <= axis < num_axes:
        raise layer.error(f"axis {axis} out of range for a blob with {num_axes} axes")
    return axis % num_axes if num_axes else 0


def count(shape, start: int = 0, end: int | None = None) -> int:
    """Product of shape[start:end] (Caffe's Blob::count(start, end))."""
    return math.prod(int(d) for d in shape[start:end])
