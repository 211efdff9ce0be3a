"""Scratch memory that the layers of forward-only (TEST phase) nets share.

Layers run one at a time, so a TEST net needs one column buffer for all its convolutions, the
largest, instead of one each. Per thread, so nets run from different threads never share. A
TRAIN net's layers keep their own buffers: the backward reuses what the forward left in them.
shared_contents keeps what a buffer holds worth keeping (a layer's transformed weights) for
as long as no other contents replace it.
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


def shared_contents(name: str, size: int, what: str, owner, key, fill):
    """The shared buffer `name` (as shared_buffer) holding `owner`'s contents (owner: any
    value comparable with ==, e.g. an id): fill(buffer) writes them unless the last call was
    `owner`'s too (the buffer not replaced since) and key() names the same contents as then.
    key() is called only then, or after such a fill: when owners take turns, never (VGG-16's
    conv4/conv5 skip reading their weights for a fingerprint)."""
    buffer = shared_buffer(name, size, what)
    held = _local.__dict__.setdefault("held", {})
    previous = held.pop(name, None)   # nothing held while fill writes
    current = None
    if previous is not None and previous[0] == owner and previous[1] is buffer:
        current = key()
        if previous[2] is None or previous[2] != current:
            fill(buffer)
    else:
        fill(buffer)
    held[name] = (owner, buffer, current)
    return buffer
