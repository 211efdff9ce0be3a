"""Caffe's fillers: statistics users rely on (xavier/msra scale from fan-in, sparsity,
bilinear kernels, unit-ball rows) and seeded repeatability."""
import math

import numpy as np
import pytest

from protonet import caffe_pb2, prototxt, rng
from protonet.errors import NetDefinitionError
from protonet.fillers import fill


def filled(text, shape, seed=1701):
    rng.set_random_seed(seed)
    param = prototxt.parse_text(text, caffe_pb2.FillerParameter())
    x = np.zeros(shape, np.float32)
    fill(param, x)
    return x


def test_constant_uniform_gaussian():
    assert (filled('type: "constant" value: 0.25', (3, 4)) == 0.25).all()
    u = filled('type: "uniform" min: -2 max: 3', (200, 100))
    assert u.min() >= -2 and u.max() < 3 and abs(u.mean() - 0.5) < 0.05
    g = filled('type: "gaussian" mean: 1 std: 2', (200, 100))
    assert abs(g.mean() - 1) < 0.05 and abs(g.std() - 2) < 0.05


def test_gaussian_sparse_keeps_sparse_over_num_outputs():
    g = filled('type: "gaussian" sparse: 5', (50, 400))
    assert abs((g != 0).mean() - 5 / 50) < 0.01


@pytest.mark.parametrize("norm, n", [("FAN_IN", 20 * 9), ("FAN_OUT", 10 * 9),
                                     ("AVERAGE", (20 * 9 + 10 * 9) / 2)])
def test_xavier_and_msra_scale_from_fan(norm, n):
    x = filled(f'type: "xavier" variance_norm: {norm}', (10, 20, 3, 3))
    scale = math.sqrt(3 / n)
    assert x.max() <= scale and x.min() >= -scale and x.max() > 0.95 * scale
    m = filled(f'type: "msra" variance_norm: {norm}', (100, 20, 3, 3))
    fan_in, fan_out = 20 * 9, 100 * 9
    n = {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2}[norm]
    assert m.std() == pytest.approx(math.sqrt(2 / n), rel=0.02)


def test_positive_unitball_rows_sum_to_one():
    x = filled('type: "positive_unitball"', (7, 3, 2))
    np.testing.assert_allclose(x.reshape(7, -1).sum(axis=1), 1, rtol=1e-5)
    assert (x >= 0).all()


def test_bilinear_is_the_upsampling_kernel():
    x = filled('type: "bilinear"', (1, 1, 4, 4))
    np.testing.assert_allclose(x[0, 0, 0], [0.0625, 0.1875, 0.1875, 0.0625])
    with pytest.raises(NetDefinitionError, match="square kernels"):
        filled('type: "bilinear"', (1, 1, 4, 3))


def test_same_seed_same_weights_and_unknown_type():
    assert np.array_equal(filled('type: "xavier"', (5, 5), 3), filled('type: "xavier"', (5, 5), 3))
    assert not np.array_equal(filled('type: "xavier"', (5, 5), 3),
                              filled('type: "xavier"', (5, 5), 4))
    with pytest.raises(NetDefinitionError, match='unknown filler type "xavir"'):
        filled('type: "xavir"', (2, 2))


BIG = (250_001, 1, 3, 3)  # fan-in 9, 2.25M values: three draw blocks


@pytest.mark.parametrize("text, draw", [
    ('type: "gaussian" mean: 1 std: 2', lambda g, n: g.normal(1, 2, n)),
    ('type: "uniform" min: -2 max: 3', lambda g, n: g.uniform(-2, 3, n)),
    ('type: "msra"', lambda g, n: g.normal(0, math.sqrt(2 / 9), n)),
    ('type: "xavier"', lambda g, n: g.uniform(-math.sqrt(3 / 9), math.sqrt(3 / 9), n)),
    ('type: "gaussian" std: 1 sparse: 50000',
     lambda g, n: g.normal(0, 1, n) * (g.random(n) < 50000 / BIG[0])),
])
def test_a_blob_bigger_than_one_draw_block_gets_one_whole_draws_values(text, draw):
    # Fillers draw DRAW_BLOCK values at a time (one float64 draw of VGG-16's fc6 would need
    # 822 MB); the values must be those of one draw of the whole blob.
    from protonet import fillers
    n = int(np.prod(BIG))
    assert n > 2 * fillers.DRAW_BLOCK
    expected = draw(np.random.default_rng(1701), n).astype(np.float32).reshape(BIG)
    assert np.array_equal(filled(text, BIG), expected)


@pytest.mark.parametrize("text", ['type: "uniform" min: -2 max: 3', 'type: "xavier"',
                                  'type: "positive_unitball"', 'type: "constant" value: 2',
                                  'type: "gaussian" std: 2', 'type: "msra"'])
def test_skipping_a_fill_leaves_every_later_draw_as_filling_would(text):
    # Net(..., weights=) skips the fillers of blobs the file overwrites; the random source
    # must then give the layers the file lacks, dropout and shuffles the same values.
    from protonet import fillers
    param = prototxt.parse_text(text, caffe_pb2.FillerParameter())
    shape = (5, 4, 3, 3)
    after = []
    for skipping in (False, True):
        rng.set_random_seed(3)
        rng.generator().integers(0, 10, size=3)   # leaves half a 64-bit draw buffered
        if not (skipping and fillers.skip(param, shape)):
            fill(param, np.zeros(shape, np.float32))
        g = rng.generator()
        after.append((g.integers(0, 10, size=5), g.random(4), g.normal(size=4)))
    for a, b in zip(*after):
        assert np.array_equal(a, b)
    assert fillers.skip(param, shape) == (param.type not in ("gaussian", "msra"))
