"""Scratch memory that the layers of forward-only (TEST phase) nets share.

Layers run one at a time, so a TEST net needs one column buffer for all its convolutions, the
largest, instead of one each: VGG-16 at batch 1 keeps 115 MB (conv1_2) instead of about
330 MB. Per thread, so nets run from different threads never share. A TRAIN net's layers keep
their own buffers: the backward reuses what the forward left in them.
"""
from __future__ import annotations

import threading

from . import memory

_local = threading.local()


def shared_buffer(name: str, size: int, what: str):
    """A flat float32 buffer of at least `size` elements, the same for every caller of `name`
    on this thread until a bigger one is asked for (then the old one is let go first). `what`
    names the asker in the error when the memory limit refuses it (protonet/memory.py)."""
    pool = _local.__dict__.setdefault("pool", {})
    buffer = pool.get(name)
    if buffer is None or buffer.size < size:
        pool[name] = None
        (buffer,) = memory.allocate((size,), "float32", what)
        pool[name] = buffer
    return buffer
