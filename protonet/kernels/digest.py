"""A digest of an array's bits, to tell when a layer's weights changed."""
from __future__ import annotations

import numpy as np

from ._jit import jit


@jit()
def fingerprint(bits):
    """A 64-bit digest of an array's bits (its uint32 view, flat): sum of bits[i] times an odd
    multiplier per position, modulo 2^64. Any change of a single element changes it (odd
    numbers are invertible modulo 2^64); other changes are missed only when their weighted
    differences cancel modulo 2^64. It tells a layer its weights changed whatever wrote
    them, also through an array kept from net.params before (numpy cannot report writes):
    VGG-16's 3x3 weights (2.4M floats for the biggest layer) in 0.4 ms. Kernels that keep
    weights laid out their own way (Winograd's transform, the direct convolution's lane
    blocks) lay them out again only when it changes."""
    digest = np.uint64(0)
    for i in range(bits.size):
        digest += np.uint64(bits[i]) * ((np.uint64(i) * np.uint64(0x9E3779B97F4A7C15))
                                        | np.uint64(1))
    return digest


class KeptLayout:
    """An array laid out another way for a kernel (transposed weights, lane blocks), made
    again only when the array's bits change (its fingerprint): a solver step, net.params,
    copy_from, an element written through an array kept from before."""

    def __init__(self) -> None:
        self.key = self.value = None

    def of(self, array, make):
        """make(array), or the one made last if array's shape and bits are the same since."""
        key = (array.shape, fingerprint(array.reshape(-1).view(np.uint32)))
        if key != self.key:
            self.key = None   # not valid while make runs
            self.value = make(array)
            self.key = key
        return self.value
