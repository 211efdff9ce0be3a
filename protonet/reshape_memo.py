"""Which layers a forward must reshape again.

Caffe reshapes every layer before every forward. A layer's reshape depends on its bottoms'
shapes only (the rule every built-in layer keeps, `Layer.reshape_reads_only_shapes`), so while
those shapes, the shapes its last reshape left on its tops and protonet's thread count (the
convolution plans use it) are unchanged, another reshape would compute the same thing: the
forward skips it. At batch 1 that was a tenth of LeNet's and CIFAR-10's forward (3-15 us a
layer: plans, scratch look-ups, top reshapes), 1.1 ms of GoogLeNet's.

Always reshaped: layers without bottoms (data layers: their shapes come from what they read,
and the user may reshape an Input's top) and layers whose reshape reads more than shapes
(Python layers, Filter; Split, whose tops view the bottom's memory).
"""
from __future__ import annotations

from .kernels.threads import compute_threads


def _shapes(blobs) -> tuple:
    return tuple([blob.shape for blob in blobs])


class ReshapeMemo:
    """The shapes each layer of a net was last reshaped for."""

    def __init__(self, layers, bottoms) -> None:
        self._seen: list = [None] * len(layers)
        self._always = [not bottom or not layer.reshape_reads_only_shapes
                        for layer, bottom in zip(layers, bottoms)]
        self._threads = compute_threads()

    def start(self) -> None:
        """Before a forward: forget everything if the thread count changed."""
        threads = compute_threads()
        if threads != self._threads:
            self._threads = threads
            self._seen = [None] * len(self._seen)

    def reshape(self, i: int, layer, bottom, top) -> None:
        """layer.reshape(bottom, top) unless layer `i` was last reshaped for the same shapes."""
        seen = self._seen[i]
        if seen is not None and seen[0] == _shapes(bottom) and seen[1] == _shapes(top):
            return
        self._seen[i] = None   # a reshape that raises leaves nothing remembered
        layer.reshape(bottom, top)
        self.remember(i, bottom, top)

    def remember(self, i: int, bottom, top) -> None:
        """Layer `i` was just reshaped for these bottoms and left these tops."""
        if not self._always[i]:
            self._seen[i] = (_shapes(bottom), _shapes(top))
