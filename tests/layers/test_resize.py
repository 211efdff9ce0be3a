"""Upsample (SegNet), Interp (PSPNet), Resample (FlowNet2): values against straightforward
numpy, gradients, shapes."""
import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

from protonet.blob import Blob
from protonet.errors import NetDefinitionError, ShapeError


def pooled_with_mask(shape, seed=4):
    """A MAX pooling's output and its mask (the second top), as SegNet feeds Upsample."""
    pool, bottom, (out, mask) = build('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 '
                                      'stride: 2 }', [shape], n_top=2, seed=seed)
    run_forward(pool, bottom, [out, mask])
    return bottom[0], out, mask


def unpool(x, mask, ho, wo):
    y = np.zeros(x.shape[:2] + (ho * wo,))
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            y[n, c, mask[n, c].astype(int).ravel()] = x[n, c].ravel()
    return y.reshape(x.shape[:2] + (ho, wo))


@pytest.mark.parametrize("text, shape, out", [
    ('type: "Upsample" upsample_param { scale: 2 }', (2, 3, 6, 4), (6, 4)),
    ('type: "Upsample" upsample_param { upsample_h: 7 upsample_w: 5 }', (1, 2, 7, 5), (7, 5)),
    ('type: "Upsample" upsample_param { scale_h: 2 scale_w: 2 pad_out_h: true }', (1, 2, 7, 6),
     (7, 6)),
])
def test_upsample_puts_each_value_where_max_pooling_took_it(text, shape, out):
    _, pooled, mask = pooled_with_mask(shape)
    layer, bottom, top = build(text, None, bottoms=[pooled, mask])
    y = run_forward(layer, bottom, top)[0]
    np.testing.assert_array_equal(y, unpool(pooled.data, mask.data, *out))
    check_gradient(layer, bottom, top, check_bottom=[0])


def test_upsample_mask_outside_the_output_is_named():
    _, pooled, mask = pooled_with_mask((1, 1, 6, 6))
    layer, bottom, top = build('name: "up" type: "Upsample" upsample_param { upsample_h: 4 '
                               'upsample_w: 4 }', None, bottoms=[pooled, mask])
    with pytest.raises(ShapeError, match="layer 'up'.*outside the 4 x 4 output"):
        layer.forward(bottom, top)


def interp_aligned(x, ho, wo):
    """Bilinear, corners on corners, written from the formula."""
    h, w = x.shape[2:]
    ys = np.linspace(0, h - 1, ho) if ho > 1 else np.zeros(1)
    xs = np.linspace(0, w - 1, wo) if wo > 1 else np.zeros(1)
    y = np.empty(x.shape[:2] + (ho, wo))
    for i, py in enumerate(ys):
        i0 = int(np.floor(py)); i1 = min(i0 + 1, h - 1); b = py - i0
        for j, px in enumerate(xs):
            j0 = int(np.floor(px)); j1 = min(j0 + 1, w - 1); a = px - j0
            y[:, :, i, j] = ((1 - b) * ((1 - a) * x[:, :, i0, j0] + a * x[:, :, i0, j1])
                             + b * ((1 - a) * x[:, :, i1, j0] + a * x[:, :, i1, j1]))
    return y


@pytest.mark.parametrize("text, shape, crop, out", [
    ('type: "Interp" interp_param { height: 9 width: 8 }', (2, 3, 4, 5), 0, (9, 8)),
    ('type: "Interp" interp_param { zoom_factor: 2 }', (1, 2, 5, 3), 0, (9, 5)),
    ('type: "Interp" interp_param { shrink_factor: 2 }', (1, 2, 7, 6), 0, (4, 3)),
    ('type: "Interp" interp_param { shrink_factor: 2 zoom_factor: 3 pad_beg: -1 pad_end: -1 }',
     (1, 1, 9, 8), 1, (10, 7)),
])
def test_interp_resizes_bilinearly_with_corners_aligned(text, shape, crop, out):
    layer, bottom, top = build(text, [shape])
    x = bottom[0].data.astype(np.float64)
    if crop:
        x = x[:, :, crop:-crop, crop:-crop]
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0], interp_aligned(x, *out),
                               rtol=1e-5, atol=1e-6)
    check_gradient(layer, bottom, top)


def test_interp_needs_exactly_one_size():
    with pytest.raises(NetDefinitionError, match="give one output size"):
        build('type: "Interp" interp_param { height: 3 width: 3 zoom_factor: 2 }', [(1, 1, 2, 2)])


def test_resample_nearest_as_opencv():
    layer, bottom, top = build('type: "Resample" resample_param { type: NEAREST factor: 2 }',
                               [(1, 2, 2, 3)])
    x = bottom[0].data
    np.testing.assert_array_equal(run_forward(layer, bottom, top)[0],
                                  x.repeat(2, axis=2).repeat(2, axis=3))
    with pytest.raises(NetDefinitionError, match="resample type LINEAR is not supported"):
        build('type: "Resample"', [(1, 1, 2, 2)])
