"""check_gradient: finite differences against a layer's backward (Caffe's GradientChecker).

The objective is a fixed random linear function of every top, f = sum_t <w_t, top_t.data>,
so one backward with top_t.diff = w_t gives the analytic gradient of every bottom element and
parameter, and each numeric derivative is (f(x + h) - f(x - h)) / 2h. As in Caffe, an element
passes when |analytic - numeric| <= threshold * max(|analytic|, |numeric|, 1), and elements
whose input lies within `kink_range` of `kink` (ReLU's 0, a hinge) are not checked.

Usable on users' own layers too: set the layer up, then call check_gradient.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from . import rng
from .blob import Blob


def check_gradient(layer, bottom: Sequence[Blob], top: Sequence[Blob], *,
                   step: float = 1e-2, threshold: float = 1e-3,
                   kink: float = 0.0, kink_range: float = -1.0,
                   check_bottom: Sequence[int] | None = None, check_params: bool = True,
                   seed: int = 1701, max_elements: int | None = 300) -> int:
    """Compare `layer.backward` with central differences; raise AssertionError on a mismatch.

    `layer` must already be set up on `bottom`/`top` (tops may alias bottoms: in-place).
    `check_bottom`: indices of bottoms to check (default: all the layer allows, labels not).
    `max_elements`: per blob, check at most this many elements (a seeded sample); None = all.
    Returns the number of elements checked.
    """
    if check_bottom is None:
        check_bottom = [i for i in range(len(bottom)) if layer.allow_force_backward(i)]
    saved_bottom = [b.data.copy() for b in bottom]
    weight_rng = np.random.default_rng(seed)

    def forward() -> float:
        for blob, values in zip(bottom, saved_bottom):
            blob.data[...] = values
        rng.set_random_seed(seed)   # layers that draw random numbers draw the same ones
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
        return sum(float(np.dot(t.data.ravel().astype(np.float64), w.ravel()))
                   for t, w in zip(top, weights))

    # Analytic gradients: one forward, top diffs = w, one backward.
    weights = []
    forward()
    weights = [weight_rng.standard_normal(t.shape) for t in top]
    for t, w in zip(top, weights):
        t.diff[...] = w
    for b in layer.blobs:
        b.diff[...] = 0
    propagate_down = [i in check_bottom for i in range(len(bottom))]
    layer.backward(top, propagate_down, bottom)
    analytic = {("bottom", i): bottom[i].diff.copy() for i in check_bottom}
    if check_params:
        analytic.update({("param", j): b.diff.copy() for j, b in enumerate(layer.blobs)
                         if layer.param_propagate_down[j]})

    checked = 0
    for (kind, index), grad in analytic.items():
        values = saved_bottom[index] if kind == "bottom" else layer.blobs[index].data
        elements = np.arange(values.size)
        if max_elements is not None and values.size > max_elements:
            elements = np.sort(weight_rng.choice(values.size, max_elements, replace=False))
        flat = values.reshape(-1)
        for e in elements:
            x = float(flat[e])
            if kink - kink_range < x < kink + kink_range:
                continue
            flat[e] = x + step
            f_plus = forward()
            flat[e] = x - step
            f_minus = forward()
            flat[e] = x
            numeric = (f_plus - f_minus) / (2.0 * step)
            got = float(grad.reshape(-1)[e])
            scale = max(abs(got), abs(numeric), 1.0)
            if abs(got - numeric) > threshold * scale:
                where = np.unravel_index(e, values.shape)
                raise AssertionError(
                    f"layer '{layer.name}' ({layer.type}): gradient of {kind} {index} at "
                    f"{tuple(int(i) for i in where)} (value {x:.6g}): numeric {numeric:.6g}, "
                    f"backward {got:.6g}, tolerance {threshold * scale:.3g}")
            checked += 1
    forward()  # leave the layer's tops as they were for the unperturbed input
    return checked


def layer_from_text(text: str, phase: int | None = None, name: str = "layer"):
    """A layer built from LayerParameter prototxt text, e.g.
    `layer_from_text('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 }')`."""
    from google.protobuf import text_format

    from . import caffe_pb2
    from .registry import layer_class

    param = caffe_pb2.LayerParameter()
    text_format.Parse(text, param)
    if not param.name:
        param.name = name
    if phase is None:
        phase = caffe_pb2.TRAIN
    return layer_class(param.type, param.name)(param, phase)


def random_blobs(shapes, seed: int = 1701, low: float | None = None,
                 high: float | None = None) -> list[Blob]:
    """Blobs of the given shapes filled with seeded Gaussian values (Caffe's tests use
    GaussianFiller, seed 1701), or uniform in [low, high) when both are given."""
    g = np.random.default_rng(seed)
    blobs = []
    for i, shape in enumerate(shapes):
        blob = Blob(shape, name=f"bottom{i}")
        if low is not None and high is not None:
            blob.data[...] = g.uniform(low, high, size=shape)
        else:
            blob.data[...] = g.standard_normal(shape)
        blobs.append(blob)
    return blobs
