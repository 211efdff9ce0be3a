"""Caffe's weight fillers (filler.hpp), drawing from the one random source in `rng`.

Each filler writes into a float32 array in place. Fan-in and fan-out follow Caffe:
fan_in = count / shape[0], fan_out = count / shape[1] (for a conv weight (M, C/g, kh, kw) that
is C/g*kh*kw and M*kh*kw).
"""
from __future__ import annotations

import math

import numpy as np

from . import caffe_pb2, rng
from .errors import NetDefinitionError


# Random values are drawn DRAW_BLOCK at a time: numpy draws float64, so one draw for a whole
# blob would hold twice the blob again (VGG-16's fc6, 103M weights: 822 MB on top of its 411).
# The generator gives the same stream drawn at once or block by block.
DRAW_BLOCK = 1 << 20


def _draw(x, sample) -> None:
    """x[...] = sample(x.size), without a float64 copy of all of x."""
    if not x.flags.c_contiguous:
        x[...] = sample(x.size).reshape(x.shape)
        return
    flat = x.reshape(-1)  # a view: x is contiguous
    for start in range(0, flat.size, DRAW_BLOCK):
        block = flat[start:start + DRAW_BLOCK]
        block[...] = sample(block.size)


def _constant(p, x):
    x[...] = p.value


def _uniform(p, x):
    _draw(x, lambda n: rng.generator().uniform(p.min, p.max, size=n))


def _gaussian(p, x):
    _draw(x, lambda n: rng.generator().normal(p.mean, p.std, size=n))
    if p.sparse >= 0:
        # Caffe parity: each weight is kept with probability sparse / num_outputs.
        if x.ndim < 1:
            raise NetDefinitionError("gaussian filler with sparse needs a blob of at least 1 axis")
        keep = np.empty(x.shape, bool)
        _draw(keep, lambda n: rng.generator().random(size=n) < p.sparse / x.shape[0])
        x *= keep


def _positive_unitball(p, x):
    _draw(x, lambda n: rng.generator().uniform(0.0, 1.0, size=n))
    rows = x.reshape(x.shape[0], -1) if x.ndim else x.reshape(1, -1)
    rows /= rows.sum(axis=1, keepdims=True)


def _fan(p, x) -> float:
    count = x.size
    fan_in = count / x.shape[0]
    fan_out = count / x.shape[1] if x.ndim > 1 else count
    norm = p.variance_norm
    if norm == caffe_pb2.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    if norm == caffe_pb2.FillerParameter.FAN_OUT:
        return fan_out
    return fan_in


def _xavier(p, x):
    scale = math.sqrt(3.0 / _fan(p, x))
    _draw(x, lambda n: rng.generator().uniform(-scale, scale, size=n))


def _msra(p, x):
    std = math.sqrt(2.0 / _fan(p, x))
    _draw(x, lambda n: rng.generator().normal(0.0, std, size=n))


def _bilinear(p, x):
    # Upsampling kernel for a Deconvolution, identical for every (output, input) channel pair.
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise NetDefinitionError(f"bilinear filler needs a 4-d blob with square kernels, "
                                 f"got shape {x.shape}")
    f = math.ceil(x.shape[3] / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    ys = np.arange(x.shape[2])[:, None]
    xs = np.arange(x.shape[3])[None, :]
    x[...] = (1 - np.abs(xs / f - c)) * (1 - np.abs(ys / f - c))


FILLERS = {
    "constant": _constant,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "positive_unitball": _positive_unitball,
    "xavier": _xavier,
    "msra": _msra,
    "bilinear": _bilinear,
}


def check_filler(p, where: str = "") -> None:
    """Reject the filler values Caffe's CHECKs reject (a negative std, min > max, sparse on a
    filler other than gaussian), naming `where` (the layer)."""
    prefix = f"{where}: " if where else ""
    if p.type not in FILLERS:
        raise NetDefinitionError(f'{prefix}unknown filler type "{p.type}" '
                                 f"(known: {', '.join(sorted(FILLERS))})")
    if p.type == "gaussian" and not p.std > 0:
        raise NetDefinitionError(f"{prefix}gaussian filler needs std > 0, got {p.std:g}")
    if p.type == "uniform" and not p.min <= p.max:
        raise NetDefinitionError(f"{prefix}uniform filler needs min <= max, got min {p.min:g} "
                                 f"and max {p.max:g}")
    if p.sparse < -1 or (p.sparse != -1 and p.type != "gaussian"):
        raise NetDefinitionError(f"{prefix}sparse {p.sparse} is not valid here (only the gaussian "
                                 "filler takes sparse, and it must be -1 or more)")


def fill(filler_param, x: np.ndarray, where: str = "") -> None:
    """Fill `x` in place as the FillerParameter says."""
    check_filler(filler_param, where)
    if x.size:
        FILLERS[filler_param.type](filler_param, x)


# Fillers whose draws are one 64-bit step of the generator per value (numpy's uniform doubles),
# or none: skip() can move past them exactly. Gaussian draws (gaussian, msra) take a varying
# number of steps, and bilinear checks the blob's shape: those are filled.
_SKIPPABLE = {"constant", "uniform", "xavier", "positive_unitball"}


def skip(filler_param, shape, where: str = "") -> bool:
    """For a blob that is about to be overwritten (weights from a file): move the random
    source past the values `fill` would draw for a blob of `shape`, without drawing them, and
    return True; False when that cannot be done exactly (the caller fills instead). Either
    way every later draw is what it would have been."""
    check_filler(filler_param, where)
    bit_generator = rng.generator().bit_generator
    if filler_param.type not in _SKIPPABLE or not hasattr(bit_generator, "advance") or (
            filler_param.type == "xavier" and not len(shape)):
        return False
    count = math.prod(int(d) for d in shape)
    if filler_param.type != "constant" and count:
        state = bit_generator.state
        buffered = {k: state[k] for k in ("has_uint32", "uinteger") if k in state}
        bit_generator.advance(count)  # (advance drops a buffered 32-bit half: put it back)
        bit_generator.state = {**bit_generator.state, **buffered}
    return True
