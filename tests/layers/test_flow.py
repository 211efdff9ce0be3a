"""FlowNet2's Correlation, FlowWarp and Accum: values against loops written from the
definitions, shapes, bad inputs."""
import math

import numpy as np
import pytest
from helpers import build, run_forward

from protonet.errors import NetDefinitionError, ShapeError


def correlation(a, b, pad, k, md, s1, s2):
    a = np.pad(a, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    b = np.pad(b, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, w = a.shape
    border = md + (k - 1) // 2
    ho, wo = math.ceil((h - 2 * border) / s1), math.ceil((w - 2 * border) / s1)
    shifts = [(dy, dx) for dy in range(-md // s2 * s2, md + 1, s2)
              for dx in range(-md // s2 * s2, md + 1, s2)]
    out = np.zeros((n, len(shifts), ho, wo))
    for d, (dy, dx) in enumerate(shifts):
        for i in range(ho):
            for j in range(wo):
                y, x = i * s1 + md, j * s1 + md
                out[:, d, i, j] = (a[:, :, y:y + k, x:x + k]
                                   * b[:, :, y + dy:y + dy + k, x + dx:x + dx + k]).sum(
                                       axis=(1, 2, 3)) / (k * k * c)
    return out


@pytest.mark.parametrize("params, shape", [
    ((1, 1, 1, 1, 1), (1, 3, 4, 5)),
    ((2, 3, 2, 1, 2), (2, 2, 7, 6)),
    ((0, 1, 2, 2, 1), (1, 2, 9, 8)),
])
def test_correlation_means_products_over_patches_and_channels(params, shape):
    pad, k, md, s1, s2 = params
    text = (f'type: "Correlation" correlation_param {{ pad: {pad} kernel_size: {k} '
            f'max_displacement: {md} stride_1: {s1} stride_2: {s2} }}')
    layer, bottom, top = build(text, [shape, shape])
    expected = correlation(bottom[0].data.astype(np.float64), bottom[1].data.astype(np.float64),
                           *params)
    got = run_forward(layer, bottom, top)[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_correlation_needs_an_odd_kernel():
    with pytest.raises(NetDefinitionError, match="kernel_size must be odd"):
        build('type: "Correlation" correlation_param { kernel_size: 2 max_displacement: 1 }',
              [(1, 1, 4, 4)] * 2)


def test_flow_warp_samples_bilinearly_and_zeroes_outside():
    layer, bottom, top = build('type: "FlowWarp"', [(1, 2, 4, 5), (1, 2, 4, 5)])
    image = bottom[0].data.astype(np.float64)
    flow = bottom[1].data
    flow[...] = np.random.default_rng(2).uniform(-1.5, 1.5, flow.shape)
    expected = np.zeros(image.shape)
    for i in range(4):
        for j in range(5):
            px, py = j + flow[0, 0, i, j], i + flow[0, 1, i, j]
            if 0 <= px < 5 and 0 <= py < 4:
                x0, y0 = int(px), int(py)
                a, b = px - x0, py - y0
                x1, y1 = min(x0 + 1, 4), min(y0 + 1, 3)
                expected[0, :, i, j] = ((1 - a) * (1 - b) * image[0, :, y0, x0]
                                        + (1 - a) * b * image[0, :, y1, x0]
                                        + a * (1 - b) * image[0, :, y0, x1]
                                        + a * b * image[0, :, y1, x1])
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0], expected, rtol=1e-5,
                               atol=1e-6)
    assert (expected == 0).any()   # some samples fell outside


def test_flow_warp_flow_must_have_two_channels():
    with pytest.raises(ShapeError, match=r"must be \(1, 2, 4, 5\)"):
        build('type: "FlowWarp"', [(1, 3, 4, 5), (1, 3, 4, 5)])


def test_accum_joins_channels_resizing_smaller_bottoms_to_the_largest():
    layer, bottom, top = build('type: "Accum"', [(1, 2, 2, 3), (1, 3, 5, 7)])
    out = run_forward(layer, bottom, top)[0]
    assert out.shape == (1, 5, 5, 7)
    np.testing.assert_array_equal(out[:, 2:], bottom[1].data)
    small = bottom[0].data.astype(np.float64)
    # Corners aligned: the corners of the resized map are the small map's corners.
    np.testing.assert_allclose(out[:, :2, ::4, ::6], small[:, :, ::1, ::2], rtol=1e-6)


def test_accum_with_reference_takes_the_last_bottoms_size():
    layer, bottom, top = build('type: "Accum" accum_param { have_reference: true }',
                               [(1, 2, 3, 3), (1, 1, 6, 4)])
    assert top[0].shape == (1, 2, 6, 4)
