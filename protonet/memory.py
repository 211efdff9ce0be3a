"""The one gate every big array goes through: blob buffers (Blob.reshape) and layers' work
arrays (Layer.scratch) are sized here, so a shape that cannot fit in memory is an error naming
the layer, the blob and the bytes, raised before anything is allocated.

The limit for one net's arrays is a share of this machine's memory (the smaller of physical
memory and a cgroup's memory.max), MEMORY_SHARE of it: beyond that the process swaps or is
killed. Override it with the PROTONET_MEMORY_LIMIT environment variable (bytes, or with a
K/M/G/T suffix: "64G") or `set_limit(nbytes)`; `set_limit(None)` goes back to the default.
"""
from __future__ import annotations

import functools
import math
import mmap
import os
import re
from pathlib import Path

import numpy as np

from .errors import MemoryLimitError

MEMORY_SHARE = 0.75
ENV_VAR = "PROTONET_MEMORY_LIMIT"
# numpy indexes with int64: no array may hold more elements than this.
MAX_ELEMENTS = np.iinfo(np.int64).max

_override: int | None = None


@functools.cache
def physical_memory() -> int:
    """Bytes of memory this process may use: RAM, or less under a cgroup limit (read once)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            total = min(total, int(text))
    except OSError:
        pass
    return total


def _parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise MemoryLimitError(f"{ENV_VAR}={text!r}: expected a number of bytes, e.g. 64G")
    scale = 1024 ** " KMGT".index(m.group(2).upper() or " ")
    return int(float(m.group(1)) * scale)


def limit() -> int:
    """The most bytes one net's arrays (and any one array) may take."""
    if _override is not None:
        return _override
    if os.environ.get(ENV_VAR):
        return _parse_size(os.environ[ENV_VAR])
    return int(physical_memory() * MEMORY_SHARE)


def set_limit(nbytes: int | None) -> int | None:
    """Override the limit for this process (None: back to the environment or the default);
    returns the override it replaces, to put back."""
    global _override
    previous, _override = _override, None if nbytes is None else int(nbytes)
    return previous


def size_text(nbytes: int) -> str:
    if nbytes < 1024:
        return f"{nbytes} bytes"
    unit = min(int(math.log(nbytes, 1024)), 6)
    return f"{nbytes / 1024 ** unit:.1f} {'BKMGTPE'[unit]}iB"


def _limit_note() -> str:
    if _override is not None:
        source = "set by protonet.memory.set_limit"
    elif os.environ.get(ENV_VAR):
        source = f"set by {ENV_VAR}"
    else:
        source = (f"{MEMORY_SHARE:.0%} of this machine's {size_text(physical_memory())}; "
                  f"set {ENV_VAR} to change it")
    return f"the limit is {size_text(limit())} ({source})"


def element_count(shape, what: str) -> int:
    """The exact number of elements of `shape` (no int64 wrap-around to a small number)."""
    n = 1
    for d in shape:
        n *= int(d)
    if n > MAX_ELEMENTS:
        raise MemoryLimitError(f"{what} holds {n:.3g} elements, more than "
                               "an array can index (2^63)")
    return n


def check_bytes(nbytes: int, what: str) -> None:
    """Raise MemoryLimitError when `nbytes` for `what` exceed the limit."""
    if nbytes > limit():
        raise MemoryLimitError(f"{what} needs {size_text(nbytes)} ({nbytes} bytes); "
                               f"{_limit_note()}")


def allocate(shape, dtype, what: str, copies: int = 1, zero: bool = False) -> list[np.ndarray]:
    """`copies` arrays of `shape` and `dtype` (zeroed when `zero`), after checking their bytes
    against the limit; numpy's own MemoryError (the limit set above what is free) is turned
    into the same error, naming `what`. Arrays of MAPPED_BYTES or more are pages mapped for
    them alone (_mapped): zero, and resident only once written."""
    shape = tuple(int(d) for d in shape)
    dtype = np.dtype(dtype)
    nbytes = element_count(shape, what) * dtype.itemsize * copies
    check_bytes(nbytes, what)
    try:
        if nbytes >= MAPPED_BYTES * copies and _CAN_MAP:
            return [_mapped(shape, dtype) for _ in range(copies)]
        make = np.zeros if zero else np.empty
        return [_cache_line_aligned(make, shape, dtype) for _ in range(copies)]
    except (MemoryError, ValueError, OSError) as e:
        raise MemoryLimitError(f"{what} needs {size_text(nbytes)}, which could not be "
                               f"allocated ({e})") from None


# Arrays at least this big get pages of their own. np.zeros zeroes what malloc hands out from
# its heap by writing it (glibc serves requests up to 32 MB from the heap once a block that
# size was freed), so every blob's diff was resident in a TEST net that never reads one:
# ResNet-50 at batch 1 held 191 MB after loading 98 MB of weights. A private anonymous
# mapping is zero without being written, and goes back to the system when its array does.
MAPPED_BYTES = 1 << 18
# Private anonymous mappings as POSIX has them (not on Windows: malloc's memory there).
_CAN_MAP = hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "MAP_ANONYMOUS")


def _mapped(shape, dtype):
    """A zeroed array of `shape` and `dtype` on pages mapped for it alone (page-aligned;
    private, so a forked process writes its own copy, as with malloc's memory)."""
    nbytes = math.prod(shape) * dtype.itemsize
    pages = mmap.mmap(-1, max(1, nbytes), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(pages, np.uint8, nbytes).view(dtype).reshape(shape)


# Bytes of a cache line. numpy's big arrays start 16 bytes into a page (malloc's header), so
# two threads writing neighbouring pieces of one array (a convolution's columns, image by
# image) shared a cache line at every boundary.
CACHE_LINE = 64


def _cache_line_aligned(make, shape, dtype):
    """make(shape, dtype) (np.empty or np.zeros), starting on a cache line."""
    nbytes = math.prod(shape) * dtype.itemsize
    raw = make(nbytes + CACHE_LINE, np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    return raw[start:start + nbytes].view(dtype).reshape(shape)
