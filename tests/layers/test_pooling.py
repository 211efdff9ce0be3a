"""Pooling: Caffe's ceil-rounded output, clipped windows, AVE divisor, gradients."""
import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

from protonet.errors import NetDefinitionError
from protonet.kernels.pooling import pool_output_size
from reference import vision

CASES = [  # (prototxt, bottom shape, kernel, stride, pad, method)
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }', (2, 3, 6, 6),
     (2, 2), (2, 2), (0, 0), "MAX"),
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }', (2, 2, 7, 6),
     (3, 3), (2, 2), (0, 0), "MAX"),
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }', (1, 2, 7, 5),
     (3, 3), (2, 2), (1, 1), "MAX"),
    ('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }', (2, 2, 7, 5),
     (3, 3), (2, 2), (1, 1), "AVE"),
    ('type: "Pooling" pooling_param { pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 }',
     (1, 3, 6, 5), (3, 2), (2, 1), (0, 0), "AVE"),
    ('type: "Pooling" pooling_param { pool: AVE kernel_size: 2 stride: 3 pad: 1 }', (1, 1, 8, 8),
     (2, 2), (3, 3), (1, 1), "AVE"),
]


@pytest.mark.parametrize("case", CASES)
def test_pooling_forward_matches_direct_loops(case):
    text, shape, kernel, stride, pad, method = case
    layer, bottom, top = build(text, [shape])
    y = vision.pool(bottom[0].data.astype(np.float64), kernel, stride, pad, method)
    assert top[0].shape == y.shape
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0], y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_pooling_gradient(case):
    layer, bottom, top = build(case[0], [case[1]])
    # Distinct values keep the max away from ties (a kink).
    bottom[0].data[...] = np.random.default_rng(3).permutation(bottom[0].count).reshape(
        bottom[0].shape) * 0.1
    check_gradient(layer, bottom, top)


FLOOR_CASES = [  # (prototxt, bottom shape, kernel, stride, pad, method): rounded down
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR }',
     (2, 2, 8, 7), (3, 3), (2, 2), (0, 0), "MAX"),
    # DenseNet-121's pool1 as the forks write it (BVLC PR #3057's ceil_mode).
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 '
     'ceil_mode: false }', (1, 3, 9, 8), (3, 3), (2, 2), (1, 1), "MAX"),
    ('type: "Pooling" pooling_param { pool: AVE kernel_size: 2 stride: 2 ceil_mode: false '
     'round_mode: FLOOR }', (1, 2, 7, 5), (2, 2), (2, 2), (0, 0), "AVE"),
]


@pytest.mark.parametrize("case", FLOOR_CASES)
def test_pooling_round_mode_floor_and_ceil_mode_false(case):
    text, shape, kernel, stride, pad, method = case
    layer, bottom, top = build(text, [shape])
    y = vision.pool(bottom[0].data.astype(np.float64), kernel, stride, pad, method, ceil=False)
    assert top[0].shape == y.shape
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0], y, rtol=1e-5, atol=1e-6)
    bottom[0].data[...] = np.random.default_rng(3).permutation(bottom[0].count).reshape(
        bottom[0].shape) * 0.1
    check_gradient(layer, bottom, top)


def test_pooling_ceil_mode_false_pools_densenet_stem_to_56():
    """The issue's case: 112 -> 56 (ceil would give 57)."""
    layer, bottom, top = build('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 '
                               'stride: 2 pad: 1 ceil_mode: false }', [(1, 1, 112, 112)])
    assert top[0].shape == (1, 1, 56, 56)


def test_pooling_ceil_mode_contradicting_round_mode_is_named():
    with pytest.raises(NetDefinitionError, match="ceil_mode: false contradicts round_mode: CEIL"):
        build('name: "p" type: "Pooling" pooling_param { pool: MAX kernel_size: 2 '
              'ceil_mode: false round_mode: CEIL }', [(1, 1, 4, 4)])


def test_pooling_ceil_output_and_dropped_window_starting_in_padding():
    # ceil((6 + 2 - 2) / 2) + 1 = 4; the last window starts at 3*2 - 1 = 5 < 6 + 1: kept.
    assert pool_output_size(6, 2, 1, 2) == 4
    # ceil((7 - 3) / 2) + 1 = 3 (floor would give the same; 8 shows the rounding up).
    assert pool_output_size(7, 3, 0, 2) == 3
    assert pool_output_size(8, 3, 0, 2) == 4
    # ceil((5 + 2 - 2) / 2) + 1 = 4, but the last window starts at 3*2 = 6 >= 5 + 1, in the
    # padding only: Caffe drops it.
    assert pool_output_size(5, 2, 1, 2) == 3
    assert pool_output_size(4, 3, 2, 2) == 3


def test_pooling_ave_divides_by_window_clipped_to_padding_not_input():
    layer, bottom, top = build('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 pad: 1 '
                               'stride: 1 }', [(1, 1, 3, 3)])
    bottom[0].data[...] = 1
    y = run_forward(layer, bottom, top)[0]
    # Corner window covers 4 real pixels of a 3x3 padded window: 4 / 9, as in Caffe.
    assert y[0, 0, 0, 0] == pytest.approx(4 / 9)
    assert y[0, 0, 1, 1] == pytest.approx(1.0)


def test_pooling_global_and_max_mask_top():
    layer, bottom, top = build('type: "Pooling" pooling_param { pool: MAX global_pooling: true }',
                               [(2, 3, 4, 5)], n_top=2)
    assert top[0].shape == (2, 3, 1, 1)
    run_forward(layer, bottom, top)
    flat = bottom[0].data.reshape(2, 3, -1)
    np.testing.assert_array_equal(top[1].data.reshape(2, 3), flat.argmax(axis=2))


def test_pooling_stochastic_and_pad_errors():
    with pytest.raises(NetDefinitionError, match="STOCHASTIC is not supported"):
        build('type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 }', [(1, 1, 4, 4)])
    with pytest.raises(NetDefinitionError, match="pad .* must be smaller than the kernel"):
        build('type: "Pooling" pooling_param { kernel_size: 2 pad: 2 }', [(1, 1, 4, 4)])


@pytest.mark.parametrize("shape", [(2, 3, 6, 8), (1, 2, 7, 6), (3, 1, 2, 2)])
def test_max_pool_2x2_forward_matches_caffe_step_by_step(shape):
    """The 2x2 stride-2 forward (used when the windows tile the plane) gives Caffe's values
    and first-maximum indices (ties: Caffe's scan order); -inf and NaN windows keep Caffe's
    -FLT_MAX start. An odd size (clipped last window) falls back to the general kernel and
    still matches."""
    g = np.random.default_rng(5)
    x = np.round(g.random(shape) * 3).astype(np.float32)  # many ties
    x.reshape(-1)[:4] = [-np.inf, -np.inf, np.nan, -np.inf]
    layer, bottom, top = build('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 '
                               'stride: 2 }', [shape], n_top=2)
    bottom[0].data[...] = x
    layer.reshape(bottom, top)
    assert layer.tiles_2x2 == (shape[2] % 2 == 0 and shape[3] % 2 == 0)
    y, mask = run_forward(layer, bottom, top)
    y_ref, mask_ref, _ = vision.caffe_pool_float32(x, (2, 2), (2, 2), (0, 0), "MAX")
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(mask, mask_ref)


@pytest.mark.parametrize("shape, kernel, stride, pad", [
    ((3, 9, 8), (3, 3), (2, 2), (1, 1)),
    ((2, 7, 10), (3, 2), (2, 3), (1, 0)),   # ceil windows past the padding
    ((1, 120, 40), (3, 3), (1, 1), (1, 1)),   # more output rows than one block
    ((37, 5, 6), (3, 3), (1, 1), (1, 1)),     # two blocks of 16 planes and part of one
    ((18, 4, 3), (3, 3), (2, 3), (1, 1)),     # rows narrower than a tile
])
def test_max_pool_values_and_first_maximum_index_are_caffes(shape, kernel, stride, pad):
    from protonet.kernels.pooling import max_pool_forward
    rng = np.random.default_rng(4)
    x = rng.integers(0, 4, shape).astype(np.float32)   # ties everywhere: the first one wins
    x[0, :3, :3] = np.nan      # never a maximum (Caffe's >)
    x[-1, -4:, -4:] = -np.inf  # nothing beats -FLT_MAX: index -1
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    ho = pool_output_size(shape[1], kh, ph, sh)
    wo = pool_output_size(shape[2], kw, pw, sw)
    y = np.zeros((shape[0], ho, wo), np.float32)
    mask = np.zeros((shape[0], ho, wo), np.int32)
    max_pool_forward(x, kh, kw, ph, pw, sh, sw, y, mask)
    expected_y, expected_mask, _ = vision.caffe_pool_float32(x[None], kernel, stride, pad, "MAX")
    np.testing.assert_array_equal(y, expected_y[0])
    np.testing.assert_array_equal(mask, expected_mask[0])
    # Without the argmax (no backward will read it): the same maxima.
    y_alone = np.zeros_like(y)
    max_pool_forward(x, kh, kw, ph, pw, sh, sw, y_alone, None)
    np.testing.assert_array_equal(y_alone, expected_y[0])


def test_max_pool_2x2_forward_without_the_argmax_gives_the_same_maxima():
    from protonet.kernels.pooling import max_pool_2x2_forward
    x = np.random.default_rng(5).integers(0, 4, (3, 6, 8)).astype(np.float32)
    x[0, :2, :2] = np.nan
    y, y_alone = np.zeros((3, 3, 4), np.float32), np.ones((3, 3, 4), np.float32)
    max_pool_2x2_forward(x, y, np.zeros((3, 3, 4), np.int32))
    max_pool_2x2_forward(x, y_alone, None)
    np.testing.assert_array_equal(y_alone, y)


def test_pooling_inner_loops_are_vectorized():
    """The per-tap loops over a block of outputs compile to packed compares (max) and adds
    (average): the flat layout on phase planes they depend on must not regress into the
    scalar window-by-window loops it replaced."""
    import re

    import numba

    from protonet.kernels import pooling
    x = np.zeros((2, 16, 16), np.float32)
    y = np.zeros((2, 7, 7), np.float32)
    # Fresh compiles with protonet's options (a kernel from numba's disk cache has no assembly).
    max_pool = numba.njit(fastmath=False, error_model="numpy")(
        pooling.max_pool_forward.serial.py_func)
    max_pool(x, 3, 3, 0, 0, 2, 2, y, np.zeros((2, 7, 7), np.int32))
    assert re.search(r"\bvcmp\w*ps\b[^\n]*[yz]mm", max_pool.inspect_asm(max_pool.signatures[0]))
    ave_pool = numba.njit(fastmath=False, error_model="numpy")(
        pooling.ave_pool_forward.serial.py_func)
    ave_pool(x, 3, 3, 0, 0, 2, 2, y)
    assert re.search(r"\bvaddps\b[^\n]*[yz]mm", ave_pool.inspect_asm(ave_pool.signatures[0]))
    block = numba.njit(fastmath=False, error_model="numpy")(pooling._max_pool_block.py_func)
    block(np.full((9, 9, 16), -np.inf, np.float32), 3, 3, 1, 1, 1, 1, 7,
          np.zeros((7, 7, 16), np.float32), np.zeros((7, 7, 16), np.int32))
    assert re.search(r"\bvcmp\w*ps\b[^\n]*[yz]mm", block.inspect_asm(block.signatures[0]))


# (kernel, stride, pad, bottom shape): windows whole and clipped at both edges, padded and
# not, square and not, with rows long enough for the kernels' whole-window runs.
CAFFE_ORDER_CASES = [((3, 3), (1, 1), (1, 1), (2, 3, 9, 11)),   # stride 1: phase planes
                     ((3, 3), (2, 2), (0, 0), (2, 3, 15, 13)),
                     ((3, 3), (2, 2), (1, 1), (1, 2, 11, 17)),
                     ((3, 2), (2, 1), (1, 0), (2, 2, 9, 10)),
                     ((2, 2), (2, 2), (0, 0), (2, 2, 8, 12)),
                     ((5, 5), (3, 3), (2, 2), (1, 2, 16, 16))]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("kernel, stride, pad, shape", CAFFE_ORDER_CASES)
def test_pooling_is_caffe_step_by_step_exactly(kernel, stride, pad, shape, method):
    """Forward values, argmax indices (ties, -inf and NaN included) and bottom diffs equal
    Caffe's loops run in float32 bit for bit: same window order, same tie-breaking, same
    order of the gradient sums."""
    g = np.random.default_rng(7)
    x = np.round(g.random(shape) * 4).astype(np.float32)   # many ties
    x.reshape(-1)[:5] = [-np.inf, -np.inf, np.nan, -np.inf, np.nan]
    if method == "AVE":
        x = g.standard_normal(shape).astype(np.float32)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    text = (f'type: "Pooling" pooling_param {{ pool: {method} kernel_h: {kh} kernel_w: {kw} '
            f'stride_h: {sh} stride_w: {sw} pad_h: {ph} pad_w: {pw} }}')
    layer, bottom, top = build(text, [shape], n_top=2 if method == "MAX" else 1)
    bottom[0].data[...] = x
    got = run_forward(layer, bottom, top)
    y_ref, mask_ref, backward = vision.caffe_pool_float32(x, kernel, stride, pad, method)
    np.testing.assert_array_equal(got[0], y_ref)
    if method == "MAX":
        np.testing.assert_array_equal(got[1], mask_ref)
    top[0].diff[...] = g.standard_normal(top[0].shape).astype(np.float32)
    bottom[0].diff[...] = 7.0   # overwritten, not added to
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, backward(top[0].diff))


def test_the_threaded_pooling_kernels_are_caffes_on_many_planes():
    """The window-by-window AVE kernels and the channel-block MAX forward on numba's threads
    (their serial twins run the small cases above): chunks of four planes and a last partial
    group, blocks of 16 planes and a last partial one, as Caffe bit for bit."""
    from protonet.kernels import pooling
    g = np.random.default_rng(8)
    x = np.round(g.random((70, 32, 31)) * 8).astype(np.float32)   # ties
    window = (3, 3, 1, 1, 2, 2)
    y_ref, mask_ref, _ = vision.caffe_pool_float32(x[None], (3, 3), (2, 2), (1, 1), "MAX")
    y, mask = np.zeros_like(y_ref[0]), np.zeros(y_ref[0].shape, np.int32)
    pooling.max_pool_forward.parallel(x, *window, y, mask)
    np.testing.assert_array_equal(y, y_ref[0])
    np.testing.assert_array_equal(mask, mask_ref[0])
    x = g.standard_normal((70, 32, 31)).astype(np.float32)
    y_ref, _, backward = vision.caffe_pool_float32(x[None], (3, 3), (2, 2), (1, 1), "AVE")
    pooling.ave_pool_windows_forward.parallel(x, *window, y)
    np.testing.assert_array_equal(y, y_ref[0])
    dy = g.standard_normal(y.shape).astype(np.float32)
    dx = np.full(x.shape, 7.0, np.float32)
    pooling.ave_pool_backward.parallel(dy, *window, dx)
    np.testing.assert_array_equal(dx, backward(dy[None])[0])


def test_an_ave_forward_runs_on_phase_planes_for_wide_stride_1_rows_only():
    from protonet.kernels.pooling import forward_on_phases
    assert forward_on_phases(1, 1, 56)       # a wide stride-1 AVE pool
    assert not forward_on_phases(1, 1, 28)   # an inception-sized one: window by window
    assert not forward_on_phases(2, 2, 56)   # strided: window by window
    assert not forward_on_phases(2, 2, 8)    # CIFAR-10's pool2
    assert not forward_on_phases(1, 1, 1)    # GoogLeNet's pool5 (7x7 over 7x7)


NET = """
input: "data" input_shape { dim: 2 dim: 3 dim: 9 dim: 9 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
"""


@pytest.mark.parametrize("force_backward", [False, True])
def test_a_test_net_pools_without_the_argmax_unless_a_backward_may_run(tmp_path,
                                                                       force_backward):
    """A TEST net's max pooling keeps no argmax (no backward runs: Caffe's
    layer_need_backward); with force_backward (a saliency map, DeepDream) it does, and the
    data gradient through it is the TRAIN net's."""
    import protonet
    path = tmp_path / "net.prototxt"
    path.write_text(("force_backward: true\n" if force_backward else "") + NET)
    test_net = protonet.Net(str(path), protonet.TEST)
    train_net = protonet.Net(str(path), protonet.TRAIN)
    x = np.random.default_rng(6).standard_normal((2, 3, 9, 9)).astype(np.float32)
    for net in (test_net, train_net):
        net.params["conv"][0].data[...] = train_net.params["conv"][0].data
        net.params["ip"][0].data[...] = train_net.params["ip"][0].data
        net.blobs["data"].data[...] = x
        net.forward()
    pool = test_net.layers[list(test_net._layer_names).index("pool")]
    assert pool.backward_runs == force_backward
    assert (getattr(pool, "mask", None) is not None) == force_backward
    np.testing.assert_array_equal(test_net.blobs["pool"].data, train_net.blobs["pool"].data)
    if force_backward:
        for net in (test_net, train_net):
            net.blobs["ip"].diff[...] = 1.0
            net.backward()
        np.testing.assert_array_equal(test_net.blobs["data"].diff,
                                      train_net.blobs["data"].diff)


def test_a_pooling_told_no_backward_runs_still_gives_the_gradient_when_asked():
    """Driven by hand after its net said no backward would run: the forward is run again
    with the argmax kept, and the gradient is the one a TRAIN layer gives."""
    text = 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }'
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    dy = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    grads = []
    for runs in (True, False):
        layer, bottom, top = build(text, [x.shape])
        layer.backward_runs = runs
        bottom[0].data[...] = x
        run_forward(layer, bottom, top)
        assert layer.mask_is_current == runs
        top[0].diff[...] = dy
        layer.backward(top, [True], bottom)
        grads.append(bottom[0].diff.copy())
    np.testing.assert_array_equal(grads[1], grads[0])
