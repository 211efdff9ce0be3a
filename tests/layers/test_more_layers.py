"""Im2col, SPP, BatchReindex, Filter: values against straightforward references, gradients."""
import math

import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

from protonet.blob import Blob
from protonet.errors import ShapeError
from reference import vision


def blobs(*arrays):
    out = []
    for a in arrays:
        b = Blob(np.shape(a))
        b.data[...] = a
        out.append(b)
    return out


@pytest.mark.parametrize("text, shape, k, s, p, d", [
    ('type: "Im2col" convolution_param { kernel_size: 3 }', (2, 2, 5, 4), 3, 1, 0, 1),
    ('type: "Im2col" convolution_param { kernel_size: 2 stride: 2 pad: 1 dilation: 1 }',
     (1, 3, 5, 5), 2, 2, 1, 1),
    ('type: "Im2col" convolution_param { kernel_size: 3 pad: 2 dilation: 2 }', (1, 1, 6, 5),
     3, 1, 2, 2),
])
def test_im2col_layer_lists_each_receptive_field(text, shape, k, s, p, d):
    layer, bottom, top = build(text, [shape])
    y = run_forward(layer, bottom, top)[0]
    n, c, h, w = shape
    x = np.pad(bottom[0].data, ((0, 0), (0, 0), (p, p), (p, p)))
    ho, wo = y.shape[2:]
    for ci in range(c):
        for i in range(k):
            for j in range(k):
                expect = x[:, ci, i * d:i * d + s * (ho - 1) + 1:s, j * d:j * d + s * (wo - 1) + 1:s]
                np.testing.assert_array_equal(y[:, (ci * k + i) * k + j], expect)
    check_gradient(layer, bottom, top)


@pytest.mark.parametrize("pool, height", [("MAX", 3), ("AVE", 2), ("MAX", 1)])
def test_spp_joins_each_level_pooled_into_power_of_two_bins(pool, height):
    shape = (2, 3, 7, 6)
    layer, bottom, top = build(f'type: "SPP" spp_param {{ pyramid_height: {height} '
                               f'pool: {pool} }}', [shape])
    # Distinct values 0.1 apart: no ties within the gradient check's step at a window max.
    bottom[0].data[...] = np.random.default_rng(3).permutation(252).reshape(shape) * 0.1
    y = run_forward(layer, bottom, top)[0]
    x = bottom[0].data.astype(np.float64)
    parts = []
    for level in range(height):
        bins = 2 ** level
        kh, kw = math.ceil(7 / bins), math.ceil(6 / bins)
        pads = ((kh * bins - 7 + 1) // 2, (kw * bins - 6 + 1) // 2)
        pooled = vision.pool(x, (kh, kw), (kh, kw), pads, pool)
        assert pooled.shape[2:] == (bins, bins)
        parts.append(pooled.reshape(2, -1))
    expected = np.concatenate(parts, axis=1)
    assert y.reshape(2, -1).shape == expected.shape
    np.testing.assert_allclose(y.reshape(2, -1), expected, rtol=1e-5, atol=1e-6)
    check_gradient(layer, bottom, top)


def test_batch_reindex_gathers_rows_and_sums_repeated_gradients():
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    layer, bottom, top = build('type: "BatchReindex"', None,
                               bottoms=blobs(x, [3, 0, 3, 1, 1]))
    np.testing.assert_array_equal(run_forward(layer, bottom, top)[0], x[[3, 0, 3, 1, 1]])
    check_gradient(layer, bottom, top)
    bad = blobs(x, [0, 4])
    layer, bottom, top = build('name: "r" type: "BatchReindex"', None, bottoms=bad)
    with pytest.raises(ShapeError, match=r"'r' \(BatchReindex\): index out of range"):
        layer.forward(bottom, top)


def test_filter_keeps_flagged_rows_of_every_bottom():
    g = np.random.default_rng(1)
    a, b = g.standard_normal((5, 2, 2)).astype(np.float32), g.standard_normal((5,))
    layer, bottom, top = build('type: "Filter"', None, n_top=2,
                               bottoms=blobs(a, b.astype(np.float32), [1, 0, 0, 1, 1]))
    ya, yb = run_forward(layer, bottom, top)
    np.testing.assert_array_equal(ya, a[[0, 3, 4]])
    np.testing.assert_allclose(yb, b[[0, 3, 4]], rtol=1e-6)
    check_gradient(layer, bottom, top)


def test_bad_inputs_name_the_layer():
    from protonet.errors import NetDefinitionError
    with pytest.raises(ShapeError, match=r"'f' \(Filter\): bottom '.*' has 4 rows, the "
                                         r"selector 3"):
        build('name: "f" type: "Filter"', None,
              bottoms=blobs(np.zeros((4, 2), np.float32), [1, 0, 1]))
    with pytest.raises(NetDefinitionError, match=r"'f' \(Filter\): needs one top per filtered"):
        build('name: "f" type: "Filter"', None, n_top=2,
              bottoms=blobs(np.zeros((3, 2), np.float32), [1, 0, 1]))
    with pytest.raises(ShapeError, match=r"'s' \(SPP\): bottom must be \(N, C, H, W\)"):
        build('name: "s" type: "SPP" spp_param { pyramid_height: 2 }', [(2, 3)])
    with pytest.raises(ShapeError, match=r"'i' \(Im2col\): kernel larger than the padded"):
        build('name: "i" type: "Im2col" convolution_param { kernel_size: 5 }', [(1, 1, 3, 3)])


def test_spp_told_no_backward_runs_still_gives_the_gradient_when_asked():
    """Its MAX levels keep no argmax once the net says no backward runs; a backward called
    by hand pools its bottom again with the argmax kept: the same gradient."""
    shape = (2, 3, 7, 6)
    rng = np.random.default_rng(12)
    x = rng.permutation(252).reshape(shape).astype(np.float32) * 0.1
    grads = []
    for runs in (True, False):
        layer, bottom, top = build('type: "SPP" spp_param { pyramid_height: 3 pool: MAX }',
                                   [shape])
        layer.backward_runs = runs
        bottom[0].data[...] = x
        run_forward(layer, bottom, top)
        top[0].diff[...] = np.random.default_rng(13).standard_normal(top[0].shape)
        layer.backward(top, [True], bottom)
        grads.append(bottom[0].diff.copy())
    np.testing.assert_array_equal(grads[1], grads[0])
