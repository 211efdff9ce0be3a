"""Blob: the named N-d array every layer reads and writes, with its gradient.

Like Caffe's Blob, `data` and `diff` are views into buffers that keep their capacity: a
reshape to a smaller or equal count re-views the same memory, so reshaping every iteration
(a net whose input size changes) allocates nothing.
"""
from __future__ import annotations

import math
import operator

import numpy as np

from . import memory
from .errors import ShapeError, clip

DTYPE = np.float32


def _fixed_array(name: str) -> property:
    """A Blob attribute whose array can be written into but not replaced (pycaffe refuses the
    assignment too): `blob.data += x` passes, numpy having changed the array in place."""
    get = operator.attrgetter(f"_{name}")

    def refuse(blob, values) -> None:
        if values is not get(blob):
            raise AttributeError(f"blob '{blob.name}': its {name} array is the net's memory and "
                                 f"cannot be replaced; copy values into it: blob.{name}[...] = "
                                 "values (pycaffe refuses the assignment too)")

    return property(get, refuse)


class Blob:
    """`data` and `diff`: float32 arrays of `shape`. `count` is the number of elements."""

    __slots__ = ("_data_buf", "_diff_buf", "_shape", "_data", "_diff", "name")

    def __init__(self, shape=(), name: str = "") -> None:
        self.name = name
        self._shape: tuple[int, ...] = None   # made by the reshape below
        self._data_buf = np.zeros(0, DTYPE)
        self._diff_buf = np.zeros(0, DTYPE)
        self.reshape(*shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    # The net's layers hold these arrays: values go in (blob.data[...] = x), the arrays stay.
    data = _fixed_array("data")
    diff = _fixed_array("diff")

    @property
    def count(self) -> int:
        # math.prod of Python ints: np.prod took 3 us, a Split's reshape asks 8 times per
        # forward (GoogLeNet's 13 Splits: 0.3 ms of a 28 ms batch-1 forward).
        return math.prod(self._shape)

    @property
    def num_axes(self) -> int:
        return len(self._shape)

    def legacy_dim(self, index: int) -> int:
        """Caffe's Blob::LegacyShape: axis `index` of a blob of at most 4 axes, 1 past the
        last axis (so a (5,) blob has num 5 and channels 1)."""
        if len(self._shape) > 4:
            raise ShapeError(f"blob '{self.name}': shape {self._shape} has more than 4 axes; "
                             "num/channels/height/width are undefined")
        return self._shape[index] if index < len(self._shape) else 1

    # pycaffe's legacy 4-d accessors.
    num = property(lambda self: self.legacy_dim(0))
    channels = property(lambda self: self.legacy_dim(1))
    height = property(lambda self: self.legacy_dim(2))
    width = property(lambda self: self.legacy_dim(3))

    def reshape(self, *shape) -> None:
        """Change the shape; memory is reallocated only when the count grows (contents then zero)."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        shape = tuple(int(s) for s in shape)
        if shape == self._shape:   # the views stay (a Split's tops before every forward)
            return
        if any(s < 0 for s in shape):
            raise ShapeError(f"blob '{self.name}': negative dimension in shape {shape}")
        what = f"blob '{clip(self.name)}' of shape {shape} (data and diff)"
        count = memory.element_count(shape, what)
        if count > self._data_buf.size:
            self._data_buf, self._diff_buf = memory.allocate((count,), DTYPE, what, copies=2,
                                                             zero=True)
        self._shape = shape
        self._data = self._data_buf[:count].reshape(shape)
        self._diff = self._diff_buf[:count].reshape(shape)

    def share_data(self, other: "Blob") -> None:
        """Use `other`'s data memory (Caffe's ShareData): shared weights, train/test nets."""
        if other.count != self.count:
            raise ShapeError(f"blob '{self.name}': cannot share data of shape {other.shape} "
                             f"with shape {self.shape}")
        if self._data_buf is other._data_buf:
            # Shared already (a Split's tops, shared again before every forward): data is a
            # view of the buffer's start, as other's, and keeps its identity.
            return
        self._data_buf = other._data_buf
        self._data = other.data.reshape(self._shape)

    def share_diff(self, other: "Blob") -> None:
        """Use `other`'s diff memory (Caffe's ShareDiff): gradients of shared weights add up."""
        if other.count != self.count:
            raise ShapeError(f"blob '{self.name}': cannot share diff of shape {other.shape} "
                             f"with shape {self.shape}")
        self._diff_buf = other._diff_buf
        self._diff = other.diff.reshape(self._shape)

    def set_data(self, values) -> None:
        """Copy `values` into data, with a clear error when the shape differs."""
        values = np.asarray(values)
        if values.shape != self._shape:
            raise ShapeError(f"blob '{self.name}': expected shape {self._shape}, got {values.shape}")
        self.data[...] = values

    def __repr__(self) -> str:
        return f"Blob({self.name!r}, shape={self._shape})"


class BlobVec(list):
    """A layer's learnable blobs (pycaffe's BlobVec): a list of Blob with `add_blob(*shape)`,
    which a Python layer's setup uses to create its parameters."""

    def add_blob(self, *shape) -> None:
        self.append(Blob(shape))
