"""ArgMax, Reduction, Embed, Crop, Tile: values against loop references, gradients, errors."""
import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

from protonet.blob import Blob
from protonet.errors import NetDefinitionError, ShapeError


def blob(values, name):
    values = np.asarray(values, dtype=np.float32)
    b = Blob(values.shape, name=name)
    b.data[...] = values
    return b


# -- ArgMax ------------------------------------------------------------------------------------
def argmax_ref(x, top_k, out_max_val, axis):
    """Sort (value, index) pairs descending per searched vector, as Caffe's std::greater does."""
    if axis is None:
        flat = x.reshape(x.shape[0], -1)
        out = np.ones([x.shape[0], 1 + out_max_val, top_k] + [1] * (x.ndim - 3))
        for n in range(flat.shape[0]):
            best = sorted(((flat[n, j], j) for j in range(flat.shape[1])), reverse=True)[:top_k]
            for k, (value, j) in enumerate(best):
                out[(n, 0, k) + (0,) * (out.ndim - 3)] = j
                if out_max_val:
                    out[(n, 1, k) + (0,) * (out.ndim - 3)] = value
        return out
    moved = np.moveaxis(x, axis, -1)
    out = np.empty(moved.shape[:-1] + (top_k,))
    for idx in np.ndindex(moved.shape[:-1]):
        best = sorted(((moved[idx][j], j) for j in range(moved.shape[-1])), reverse=True)
        out[idx] = [v if out_max_val else j for v, j in best[:top_k]]
    return np.moveaxis(out, -1, axis)


def ties(shape, seed=3):
    """Small integers: many equal values, so the tie order is exercised."""
    return [blob(np.random.default_rng(seed).integers(0, 3, shape), "x")]


# (prototxt, bottom shape or bottoms, top_k, out_max_val, axis, expected top shape)
ARGMAX_CASES = [
    ('type: "ArgMax"', (4, 6), 1, False, None, (4, 1, 1)),
    ('type: "ArgMax" argmax_param { top_k: 3 }', (2, 3, 4, 5), 3, False, None, (2, 1, 3, 1)),
    ('type: "ArgMax" argmax_param { out_max_val: true top_k: 2 }', (3, 5, 2), 2, True, None,
     (3, 2, 2)),
    ('type: "ArgMax" argmax_param { top_k: 4 }', lambda: ties((3, 7)), 4, False, None,
     (3, 1, 4)),
    ('type: "ArgMax" argmax_param { axis: 1 top_k: 2 }', (2, 5, 3), 2, False, 1, (2, 2, 3)),
    ('type: "ArgMax" argmax_param { axis: 1 top_k: 2 out_max_val: true }', (2, 5, 3), 2, True,
     1, (2, 2, 3)),
    ('type: "ArgMax" argmax_param { axis: -1 top_k: 3 }', lambda: ties((2, 3, 6)), 3, False, 2,
     (2, 3, 3)),
    ('type: "ArgMax" argmax_param { axis: 0 }', (5, 3), 1, False, 0, (1, 3)),
]


@pytest.mark.parametrize("text, shape, top_k, out_max_val, axis, top_shape", ARGMAX_CASES)
def test_argmax_forward(text, shape, top_k, out_max_val, axis, top_shape):
    bottoms = shape() if callable(shape) else None
    layer, bottom, top = build(text, None if bottoms else [shape], bottoms=bottoms)
    assert top[0].shape == top_shape
    expected = argmax_ref(bottom[0].data.astype(np.float64), top_k, out_max_val, axis)
    np.testing.assert_array_equal(run_forward(layer, bottom, top)[0], expected)


@pytest.mark.parametrize("text, shape, match", [
    ('type: "ArgMax" argmax_param { top_k: 7 }', (2, 3, 2), "top_k 7 is more than the 6"),
    ('type: "ArgMax" argmax_param { axis: 1 top_k: 4 }', (2, 3, 2), r"top_k 4 .* 3 values of "
     r"axis 1"),
])
def test_argmax_top_k_larger_than_the_axis_names_the_layer(text, shape, match):
    with pytest.raises(ShapeError, match=rf"layer 'am' \(ArgMax\): {match}"):
        build(f'name: "am" {text}', [shape])


# -- Reduction ---------------------------------------------------------------------------------
def reduction_ref(op, axis, coeff):
    def ref(x):
        axis_ = axis % x.ndim
        rows = x.reshape(x.shape[:axis_] + (-1,))
        out = np.empty(rows.shape[:-1])
        for idx in np.ndindex(out.shape):
            values = rows[idx]
            out[idx] = {"SUM": sum(values), "ASUM": sum(abs(v) for v in values),
                        "SUMSQ": sum(v * v for v in values),
                        "MEAN": sum(values) / len(values)}[op]
        return coeff * out
    return ref


# (prototxt, bottom shape, reference, expected top shape, gradient keywords)
REDUCTION_CASES = [
    ('type: "Reduction"', (2, 3, 4), reduction_ref("SUM", 0, 1), (), {}),
    ('type: "Reduction" reduction_param { operation: SUM axis: 1 coeff: -2 }', (2, 3, 4, 5),
     reduction_ref("SUM", 1, -2), (2,), {}),
    ('type: "Reduction" reduction_param { operation: ASUM axis: 2 }', (2, 3, 4, 5),
     reduction_ref("ASUM", 2, 1), (2, 3), {"kink": 0.0, "kink_range": 0.02}),
    ('type: "Reduction" reduction_param { operation: SUMSQ axis: -1 coeff: 0.5 }', (3, 4, 5),
     reduction_ref("SUMSQ", -1, 0.5), (3, 4), {}),
    ('type: "Reduction" reduction_param { operation: MEAN axis: 1 coeff: 3 }', (3, 7),
     reduction_ref("MEAN", 1, 3), (3,), {}),
]


@pytest.mark.parametrize("text, shape, ref, top_shape, kw", REDUCTION_CASES)
def test_reduction_forward_and_gradient(text, shape, ref, top_shape, kw):
    layer, bottom, top = build(text, [shape])
    assert top[0].shape == top_shape
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0],
                               ref(bottom[0].data.astype(np.float64)), rtol=1e-5, atol=1e-5)
    check_gradient(layer, bottom, top, **kw)


# -- Embed -------------------------------------------------------------------------------------
EMBED = ('type: "Embed" embed_param {{ num_output: 4 input_dim: 5 bias_term: {bias} '
         'weight_filler {{ type: "gaussian" }} bias_filler {{ type: "gaussian" }} }}')


@pytest.mark.parametrize("bias", ["true", "false"])
@pytest.mark.parametrize("indices", [[[0, 4, 2], [2, 2, 1]], [3, 0, 3, 3]])
def test_embed_forward_and_gradient(bias, indices):
    layer, bottom, top = build(EMBED.format(bias=bias), None, bottoms=[blob(indices, "words")])
    index = np.asarray(indices)
    assert top[0].shape == index.shape + (4,)
    w = layer.blobs[0].data.astype(np.float64)
    assert w.shape == (5, 4)
    expected = np.empty(index.shape + (4,))
    for idx in np.ndindex(index.shape):
        expected[idx] = w[index[idx]] + (layer.blobs[1].data if bias == "true" else 0)
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0], expected, rtol=1e-6)
    assert not layer.allow_force_backward(0)
    # Repeated indices: each occurrence adds its row of top diff into the weight diff.
    assert check_gradient(layer, bottom, top) == 20 + (4 if bias == "true" else 0)


@pytest.mark.parametrize("bad", [5, -1, 1.5])
def test_embed_bad_index_names_the_layer(bad):
    layer, bottom, top = build(f'name: "emb" {EMBED.format(bias="true")}', None,
                               bottoms=[blob([0, bad, 1], "words")])
    with pytest.raises(ShapeError, match=rf"layer 'emb' \(Embed\): index {bad:g} in bottom "
                                         r"'words' is not an integer in \[0, 5\)"):
        layer.forward(bottom, top)


def test_embed_refuses_gradient_to_indices():
    layer, bottom, top = build(EMBED.format(bias="true"), None, bottoms=[blob([1, 2], "words")])
    layer.forward(bottom, top)
    with pytest.raises(NetDefinitionError, match="cannot backpropagate to the indices"):
        layer.backward(top, [True], bottom)


# -- Crop --------------------------------------------------------------------------------------
def crop_ref(a, b_shape, axis, offsets):
    offsets = [0] * axis + list(offsets)
    out_shape = a.shape[:axis] + b_shape[axis:]
    out = np.empty(out_shape)
    for idx in np.ndindex(out_shape):
        out[idx] = a[tuple(i + o for i, o in zip(idx, offsets))]
    return out


# (prototxt, A shape, B shape, axis, offsets per cropped axis)
CROP_CASES = [
    ('type: "Crop"', (2, 3, 7, 5), (1, 1, 4, 3), 2, [0, 0]),
    ('type: "Crop" crop_param { offset: 2 }', (2, 3, 7, 5), (2, 3, 4, 3), 2, [2, 2]),
    ('type: "Crop" crop_param { axis: 1 offset: 1 offset: 3 offset: 1 }', (2, 4, 7, 5),
     (2, 2, 3, 3), 1, [1, 3, 1]),
    ('type: "Crop" crop_param { axis: -1 offset: 1 }', (3, 4, 5), (3, 4, 2), 2, [1]),
    ('type: "Crop" crop_param { axis: 0 offset: 1 offset: 0 }', (4, 5), (2, 3), 0, [1, 0]),
]


@pytest.mark.parametrize("text, a_shape, b_shape, axis, offsets", CROP_CASES)
def test_crop_forward_and_gradient(text, a_shape, b_shape, axis, offsets):
    layer, bottom, top = build(text, [a_shape, b_shape])
    expected = crop_ref(bottom[0].data.astype(np.float64), b_shape, axis, offsets)
    assert top[0].shape == expected.shape
    np.testing.assert_array_equal(run_forward(layer, bottom, top)[0], expected)
    assert [layer.allow_force_backward(i) for i in range(2)] == [True, False]
    check_gradient(layer, bottom, top)


@pytest.mark.parametrize("text, b_shape, error, match", [
    ('type: "Crop"', (2, 3, 8, 5), ShapeError,
     r"crop of axis 2 out of bounds: size 8 \(bottom 'bottom1' \(2, 3, 8, 5\)\) at offset 0 "
     r"does not fit size 7"),
    ('type: "Crop" crop_param { offset: 3 }', (2, 3, 4, 4), ShapeError,
     "crop of axis 3 out of bounds: size 4 .* at offset 3 does not fit size 5"),
    ('type: "Crop" crop_param { offset: 0 offset: 0 offset: 0 }', (2, 3, 4, 4),
     NetDefinitionError, "3 crop_param.offset values for the 2 axes"),
    ('type: "Crop"', (2, 3, 4), ShapeError, ".*has fewer axes than"),
])
def test_crop_bad_reference_names_the_layer(text, b_shape, error, match):
    with pytest.raises(error, match=rf"layer 'crop' \(Crop\): {match}"):
        build(f'name: "crop" {text}', [(2, 3, 7, 5), b_shape])


# -- Tile --------------------------------------------------------------------------------------
def tile_ref(x, axis, tiles):
    return np.concatenate([x] * tiles, axis=axis)


@pytest.mark.parametrize("text, shape, axis, tiles", [
    ('type: "Tile" tile_param { tiles: 3 }', (2, 3, 4), 1, 3),
    ('type: "Tile" tile_param { axis: 0 tiles: 2 }', (2, 3, 5), 0, 2),
    ('type: "Tile" tile_param { axis: -1 tiles: 4 }', (3, 2, 3), 2, 4),
    ('type: "Tile" tile_param { axis: 2 tiles: 1 }', (2, 3, 4, 5), 2, 1),
])
def test_tile_forward_and_gradient(text, shape, axis, tiles):
    layer, bottom, top = build(text, [shape])
    expected = tile_ref(bottom[0].data, axis, tiles)
    assert top[0].shape == expected.shape
    np.testing.assert_array_equal(run_forward(layer, bottom, top)[0], expected)
    check_gradient(layer, bottom, top)


def test_tile_without_tiles_is_an_error():
    with pytest.raises(NetDefinitionError, match=r"layer 't' \(Tile\): tile_param.tiles"):
        build('name: "t" type: "Tile"', [(2, 3)])


def test_every_layer_here_resolves_by_its_v2_and_v1_names():
    from protonet import registry
    for name in ("ArgMax", "ARGMAX", "Reduction", "Embed", "Crop", "Tile"):
        assert registry.layer_class(name).type == registry.canonical_type(name)
