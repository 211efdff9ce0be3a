"""IDX files (MNIST's format), raw or gzip-compressed.

Header: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, then
each dimension as a big-endian uint32; then the values.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import DataError

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path, expect_ndim: int | None = None, expect_count: int | None = None) -> np.ndarray:
    """The array an IDX file holds; errors name the file and what was expected."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read or decompress ({e})") from None
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in _TYPES:
        raise DataError(f"{path}: not an IDX file (magic number {raw[:4].hex() or 'missing'}; "
                        "expected 0000 then a type byte such as 08 and the number of dimensions)")
    ndim = raw[3]
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(f"{path}: IDX file has {ndim} dimensions, expected {expect_ndim} "
                        f"(magic {raw[:4].hex()})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_TYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: header says {dims} values ({expected} bytes), the file has "
                        f"{len(raw) - header} bytes after the header (truncated or corrupt)")
    if expect_count is not None and dims[0] != expect_count:
        raise DataError(f"{path}: {dims[0]} items, expected {expect_count}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def write_idx(path, array: np.ndarray) -> None:
    """Write a uint8 array as an uncompressed IDX file (tests and tools)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    Path(path).write_bytes(header + array.tobytes())
