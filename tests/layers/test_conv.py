"""Convolution and Deconvolution: shapes, values against direct loops, gradients."""
import dataclasses

import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

from protonet import caffe_pb2
from protonet.errors import NetDefinitionError, ShapeError
from protonet.kernels import blas, threads
from protonet.layers import conv as conv_layers
from protonet.kernels.conv_plan import TUNING, plan_convolution
from reference import vision

F = 'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 }'
# (prototxt, bottom shape, stride, pad, dilation, group)
CASES = [
    (f'type: "Convolution" convolution_param {{ num_output: 3 kernel_size: 3 {F} }}',
     (2, 2, 7, 5), (1, 1), (0, 0), (1, 1), 1),
    (f'type: "Convolution" convolution_param {{ num_output: 4 kernel_size: 3 stride: 2 pad: 1 {F} }}',
     (2, 3, 7, 6), (2, 2), (1, 1), (1, 1), 1),
    (f'type: "Convolution" convolution_param {{ num_output: 4 kernel_h: 3 kernel_w: 2 stride_h: 2 '
     f'stride_w: 1 pad_h: 2 pad_w: 0 group: 2 {F} }}', (1, 4, 6, 5), (2, 1), (2, 0), (1, 1), 2),
    (f'type: "Convolution" convolution_param {{ num_output: 2 kernel_size: 3 dilation: 2 pad: 1 '
     f'bias_term: false {F} }}', (2, 1, 9, 8), (1, 1), (1, 1), (2, 2), 1),
    (f'type: "Convolution" convolution_param {{ num_output: 6 kernel_size: 1 group: 3 {F} }}',
     (1, 3, 3, 3), (1, 1), (0, 0), (1, 1), 3),
    # The direct kernel's tiles of 8 rows with leftovers (K = 54, 99 pixels), one block of
    # lanes (5 outputs), and a pad wider than the kernel (its data gradient crops the padded
    # top diff).
    (f'type: "Convolution" convolution_param {{ num_output: 5 kernel_size: 3 pad: 2 {F} }}',
     (2, 6, 7, 9), (1, 1), (2, 2), (1, 1), 1),
    (f'type: "Convolution" convolution_param {{ num_output: 18 kernel_h: 2 kernel_w: 3 pad: 3 '
     f'bias_term: false {F} }}', (1, 3, 4, 5), (1, 1), (3, 3), (1, 1), 1),
    # Fewer output pixels than a direct tile's rows (6), and 40 outputs: a tile of two blocks
    # of lanes and one of one.
    (f'type: "Convolution" convolution_param {{ num_output: 40 kernel_size: 3 {F} }}',
     (2, 3, 4, 5), (1, 1), (0, 0), (1, 1), 1),
    # Rows 13 wide: the direct forward and data gradient with the pixels in the lanes
    # (forward_image_rows): runs of 13 of 16 lanes, an odd number of them (5), 11 outputs
    # (a tile of 8 and an overlapping one).
    (f'type: "Convolution" convolution_param {{ num_output: 11 kernel_size: 3 pad: 1 {F} }}',
     (2, 3, 5, 13), (1, 1), (1, 1), (1, 1), 1),
    # 1x1 (a TEST net multiplies the bottom itself).
    (f'type: "Convolution" convolution_param {{ num_output: 7 kernel_size: 1 {F} }}',
     (3, 5, 4, 6), (1, 1), (0, 0), (1, 1), 1),
    # Depthwise, as MobileNet writes it (group = channels = num_output): the depthwise kernels.
    (f'type: "Convolution" convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 group: 4 '
     f'{F} }}', (2, 4, 7, 6), (1, 1), (1, 1), (1, 1), 4),
    (f'type: "Convolution" convolution_param {{ num_output: 3 kernel_size: 3 stride: 2 pad: 2 '
     f'dilation: 2 group: 3 bias_term: false {F} }}', (1, 3, 9, 8), (2, 2), (2, 2), (2, 2), 3),
]
DECONV = [
    (f'type: "Deconvolution" convolution_param {{ num_output: 3 kernel_size: 3 stride: 2 {F} }}',
     (2, 2, 4, 3), (2, 2), (0, 0), (1, 1), 1),
    (f'type: "Deconvolution" convolution_param {{ num_output: 4 kernel_size: 4 stride: 2 pad: 1 '
     f'group: 2 {F} }}', (1, 2, 3, 3), (2, 2), (1, 1), (1, 1), 2),
]


# The direct convolution nowhere (training and TEST nets).
NO_DIRECT = {"direct_min_k": 1 << 30, "direct_min_k_forward_only": 1 << 30}
# The direct convolution wherever it applies (Winograd off).
DIRECT = dataclasses.replace(TUNING, direct_min_k=0, direct_min_k_forward_only=0,
                             direct_max_waste=1e9,
                             direct_max_waste_forward_only=1e9,
                             direct_max_weights=1 << 30, direct_max_pixels=1 << 30,
                             direct_data_grad_max_work=1e9, winograd_min_channels=1 << 30,
                             per_image_needs_an_image_a_thread=False, depthwise_direct=False)


@pytest.fixture(params=["one GEMM per batch", "per-image forward, batch weight gradient",
                        "per-image forward, blocked backward",
                        "per-image forward on cblas, blocked backward", "one GEMM per image",
                        "Winograd F(2x2,3x3) forward",
                        "direct where it applies", "direct, GEMM data gradient",
                        "direct, batch GEMM data gradient",
                        "depthwise kernels where they apply"])
def gemm_path(request):
    """Tuning that makes Convolution take each of its ways to multiply (chosen by the layer's
    shape), each checked on every case: a test gives it to the layer it built. Winograd's
    forward is taken by the stride-1 undilated 3x3 cases, the others keep im2col. The direct
    convolution (one group, not 1x1) is off on the other paths and taken whatever its padding
    waste and size on the direct ones, its data gradient there direct (stride 1), block by
    block on the GEMMs (blocked_backward) or one GEMM over the batch. In a TEST net the
    per-image forward multiplies narrow rows by register tiles over kernel-column shifts
    (ConvPlan.tiles), but on the "cblas" path."""
    if request.param.startswith("depthwise"):
        return TUNING
    if request.param.startswith("direct"):
        return dataclasses.replace(
            DIRECT, direct_data_grad_max_work=-1 if request.param.endswith("data gradient")
            else 1e9, blocked_backward="batch GEMM" not in request.param)
    per_image_forward = request.param.startswith("per-image")
    winograd = request.param.startswith("Winograd")
    return dataclasses.replace(
        TUNING, per_image_max_k=1 << 30 if request.param.endswith("image") else 0,
        per_image_max_floats=1 << 30 if per_image_forward else 0, per_image_min_pixels=1,
        per_image_needs_an_image_a_thread=False,
        blocked_backward=request.param.endswith("blocked backward"),
        winograd_min_channels=1 if winograd else 1 << 30, winograd_min_tiles=1,
        **NO_DIRECT, depthwise_direct=False, tiles_on_shifts="cblas" not in request.param)


def expected(layer, bottom, case, ref):
    _, _, stride, pad, dilation, group = case
    b = layer.blobs[1].data.astype(np.float64) if len(layer.blobs) > 1 else None
    return ref(bottom[0].data.astype(np.float64), layer.blobs[0].data.astype(np.float64), b,
               stride, pad, dilation, group)


@pytest.mark.parametrize("case", CASES)
def test_convolution_forward_matches_direct_loops(case, gemm_path):
    layer, bottom, top = build(case[0], [case[1]])
    layer.tuning = gemm_path
    y = expected(layer, bottom, case, vision.conv)
    assert top[0].shape == y.shape and top[0].data.dtype == np.float32
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0], y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", DECONV)
def test_deconvolution_forward_matches_scatter(case):
    layer, bottom, top = build(case[0], [case[1]])
    y = expected(layer, bottom, case, vision.deconv)
    assert top[0].shape == y.shape
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0], y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES + DECONV)
def test_convolution_gradient(case, gemm_path):
    layer, bottom, top = build(case[0], [case[1]])
    layer.tuning = gemm_path
    check_gradient(layer, bottom, top, max_elements=120)


def test_convolution_group_must_divide_channels():
    with pytest.raises(ShapeError, match=r"channels \(3\) and num_output \(4\) must both be "
                                         r"multiples of group \(2\)"):
        build('name: "c" type: "Convolution" convolution_param { num_output: 4 kernel_size: 1 '
              'group: 2 }', [(1, 3, 4, 4)])


def test_convolution_needs_a_kernel_size():
    with pytest.raises(NetDefinitionError, match="kernel_size .* is required"):
        build('type: "Convolution" convolution_param { num_output: 4 }', [(1, 3, 4, 4)])


def test_convolution_weights_from_file_must_fit():
    text = ('type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 } '
            'blobs { shape { dim: 2 dim: 1 dim: 3 dim: 3 } ' + "data: 0 " * 18 + '} '
            'blobs { shape { dim: 2 } data: 0 data: 0 }')
    build(text, [(1, 1, 5, 5)])
    with pytest.raises(ShapeError, match=r"blob 0 has shape \(2, 1, 3, 3\), expected "
                                         r"\(2, 2, 3, 3\)"):
        build(text, [(1, 2, 5, 5)])


@pytest.mark.parametrize("case", [CASES[1], CASES[2], DECONV[1]])
def test_big_batches_run_in_chunks_with_the_same_results(case, gemm_path):
    """A batch whose column buffer would pass the column budget is convolved a few images at
    a time (bounded memory); values and gradients stay those of the direct loops."""
    shape = (5, *case[1][1:])
    layer, bottom, top = build(case[0], [shape])
    layer.tuning = dataclasses.replace(gemm_path, col_budget=300)
    layer.reshape(bottom, top)
    assert 1 < len(layer.plan.bounds) <= 5
    ref = vision.deconv if "Deconvolution" in case[0] else vision.conv
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0],
                               expected(layer, bottom, case, ref), rtol=1e-5, atol=1e-5)
    check_gradient(layer, bottom, top, max_elements=120)


@pytest.mark.parametrize("engine", ["numba threads", "python threads"])
@pytest.mark.parametrize("case", [CASES[2], CASES[4], DECONV[1]])
def test_grouped_gemms_split_between_threads_keep_values_and_gradients(case, engine,
                                                                         monkeypatch):
    """Each group's GEMM on a thread of its own (or cut in pieces when the groups do not go
    evenly), on numba's threads through numpy's OpenBLAS or, where that is not there, on
    protonet's Python threads: forward against the direct loops, gradients by finite
    differences."""
    monkeypatch.setattr(threads, "SPLIT_MIN_MACS", 0)
    if engine == "python threads":
        monkeypatch.setattr(blas, "_found", (0, 0))
    else:
        assert blas.available()
    pieces_run = []
    plan_gemm = threads.plan_gemm

    def spy(m, n, k, n_threads, groups=1):
        axis, bounds = plan_gemm(m, n, k, n_threads, groups)
        pieces_run.append(groups * len(bounds))
        return axis, bounds

    monkeypatch.setattr(threads, "plan_gemm", spy)
    layer, bottom, top = build(case[0], [case[1]])
    layer.tuning = dataclasses.replace(
        TUNING, per_image_max_k=0, per_image_max_floats=0, gemm_split_min_macs=0,
        winograd_min_channels=1 << 30, **NO_DIRECT, depthwise_direct=False)
    ref = vision.deconv if "Deconvolution" in case[0] else vision.conv
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0],
                               expected(layer, bottom, case, ref), rtol=1e-5, atol=1e-5)
    assert layer.plan.threads == 2 and pieces_run and min(pieces_run) >= 2
    check_gradient(layer, bottom, top, max_elements=120)


def _threads_and_split_gemms(monkeypatch, engine, n_threads):
    """n_threads compute threads on `engine` (numba's, or the Python threads where numpy's
    BLAS is not OpenBLAS); the list that records the thread count of each GEMM split over
    a whole batch or image (threads.grouped_matmul)."""
    monkeypatch.setattr(threads, "compute_threads", lambda: n_threads)
    if engine == "python threads":
        monkeypatch.setattr(blas, "_found", (0, 0))
    calls = []
    grouped_matmul = threads.grouped_matmul
    monkeypatch.setattr(threads, "grouped_matmul", lambda a, b, out, n_threads=None: (
        calls.append(n_threads), grouped_matmul(a, b, out, n_threads)))
    return calls


# One-group cases with more than one output row, for bands (not the one of 40 outputs: bands
# need at least as many output pixels as the threads' weight rows, 3 x 40).
BAND_CASES = [case for case in CASES if case[5] == 1 and "num_output: 40" not in case[0]]


@pytest.mark.parametrize("engine", ["numba threads", "python threads"])
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
@pytest.mark.parametrize("case", BAND_CASES)
def test_lone_image_in_bands_of_rows_matches_direct_loops(case, phase, engine, monkeypatch):
    """A lone image (batch below the threads) cut into bands of output rows, one per thread
    (3 here, so bands of unequal rows): the same values as the loops, the gradient checked,
    in a TEST net too (whose 1x1 layers multiply the bottom's planes in place of columns).
    Where numpy's BLAS is not OpenBLAS (the Python threads), the plan's bands give way to
    the split GEMM over the whole image."""
    split_gemms = _threads_and_split_gemms(monkeypatch, engine, 3)
    shape = (1, *case[1][1:])
    layer, bottom, top = build(case[0], [shape], phase=getattr(caffe_pb2, phase))
    layer.tuning = dataclasses.replace(TUNING, band_min_macs=0, winograd_min_channels=1 << 30)
    y = run_forward(layer, bottom, top)[0]
    assert layer.plan.bands == min(3, layer.ho) > 1 and layer.plan.per_image_forward
    assert split_gemms == ([] if engine == "numba threads" else [3])
    np.testing.assert_allclose(y, expected(layer, bottom, (None, *case[1:]), vision.conv),
                               rtol=1e-5, atol=1e-5)
    if phase == "TRAIN":
        check_gradient(layer, bottom, top, max_elements=120)


@pytest.mark.parametrize("engine", ["numba threads", "python threads"])
@pytest.mark.parametrize("case", [CASES[0], CASES[1]])
def test_images_whose_columns_outgrow_a_block_run_in_bands(case, engine, monkeypatch):
    """A batch of images each with more columns than a block (tuning.block_floats) on the
    per-image path: each image cut into bands of output rows on numba's threads, whole images
    on the Python threads (numpy's BLAS not OpenBLAS), never one GEMM over the batch; values
    and gradients those of the direct loops."""
    batch_gemms = _threads_and_split_gemms(monkeypatch, engine, 2)
    shape = (3, *case[1][1:])
    layer, bottom, top = build(case[0], [shape])
    layer.tuning = dataclasses.replace(TUNING, block_floats=16, winograd_min_channels=1 << 30,
                                       **NO_DIRECT, depthwise_direct=False)
    y = run_forward(layer, bottom, top)[0]
    assert layer.plan.per_image_forward and layer.plan.bands == min(
        layer.ho, -(-layer.blobs[0].data[0].size * layer.ho * layer.wo // 16)) > 1
    assert len(layer.plan.forward_block_array(3, layer.ho)) == 3 * layer.plan.bands
    assert batch_gemms == []
    np.testing.assert_allclose(y, expected(layer, bottom, (None, *case[1:]), vision.conv),
                               rtol=1e-5, atol=1e-5)
    check_gradient(layer, bottom, top, max_elements=120)


@pytest.mark.parametrize("backward", ["blocked backward", "per-image weight gradient"])
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[2], CASES[4]])
def test_per_image_path_on_numba_threads_is_the_python_threads_bit_for_bit(case, backward,
                                                                          monkeypatch):
    """The per-image forward, the blocked backward and the per-image weight gradient as
    kernels on numba's threads (im2col, a cblas_sgemm per image and group, the epilogue; the
    top diff's layout, the two gradient GEMMs and col2im, block by block) against the same
    steps on protonet's Python threads: the same calls, so the same bits, groups and strides
    included."""
    shape = (5, *case[1][1:])
    blocked = backward == "blocked backward"
    tuning = dataclasses.replace(TUNING, per_image_max_k=0 if blocked else 1 << 30,
                                 per_image_max_floats=1 << 30, per_image_min_pixels=1,
                                 per_image_needs_an_image_a_thread=False,
                                 blocked_backward=blocked, winograd_min_channels=1 << 30,
                                 **NO_DIRECT, depthwise_direct=False, tiles_on_shifts=False)
    kernel_calls = []
    for name in ("per_image_forward", "per_image_backward", "per_image_weight_grads"):
        over = getattr(conv_layers, name).over
        monkeypatch.setattr(getattr(conv_layers, name), "over",
                            lambda pieces, over=over, name=name: (kernel_calls.append(name),
                                                                  over(pieces))[1])
    results = []
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape).astype(np.float32)
    for engine in ("numba threads", "python threads"):
        if engine == "python threads":
            monkeypatch.setattr(blas, "_found", (0, 0))
        layer, bottom, top = build(case[0], [shape])
        layer.tuning = tuning
        bottom[0].data[...] = x
        layer.blobs[0].data[...] = np.random.default_rng(9).standard_normal(
            layer.blobs[0].shape)
        y = run_forward(layer, bottom, top)[0].copy()
        assert layer.plan.per_image_forward and len(layer.plan.blocks(5)) > 1
        assert layer.plan.blocked_backward == blocked
        top[0].diff[...] = np.random.default_rng(10).standard_normal(top[0].shape)
        layer.blobs[0].diff[...] = 0
        layer.backward(top, [True], bottom)
        results.append((y, bottom[0].diff.copy(), layer.blobs[0].diff.copy()))
        used = {"per_image_forward", "per_image_backward" if blocked else
                "per_image_weight_grads"}
        assert set(kernel_calls) == (used if engine == "numba threads" else set())
        kernel_calls.clear()
    # The forward bit for bit; both gradients too, but where a group has one input (1x1,
    # group = channels) their products have one row (the data gradient's W_g.T @ dy, the
    # weight gradient's dy @ cols.T per output), which numpy runs as a matrix-vector product:
    # its last bits may differ from cblas_sgemm's (OpenBLAS's Zen kernels: 34 of 135 values
    # of the data gradient, 2.4e-7 apart).
    np.testing.assert_array_equal(results[0][0], results[1][0])
    one_input = layer.blobs[0].count // layer.num_output == 1
    for numba_result, python_result in zip(results[0][1:], results[1][1:]):
        np.testing.assert_allclose(numba_result, python_result, rtol=1e-6, atol=1e-6)
        if not one_input:
            np.testing.assert_array_equal(numba_result, python_result)
    np.testing.assert_allclose(results[0][0], expected(layer, bottom, case, vision.conv),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("other", ["cblas", "direct"])
def test_test_net_tiles_over_shifts_match_the_other_paths(other):
    """LeNet's conv2 shape in a TEST net: its per-image forward by register tiles over each
    image's kernel-column shifts (ConvPlan.tiles), against cblas_sgemm on its columns
    (outputs within float32 rounding) and against the direct path it replaces (the same
    sums in the same order: the same bits); the backward builds the columns again (the
    shared buffer) and gives the other path's gradients. A TRAIN net keeps cblas."""
    if not blas.available():
        pytest.skip("numpy's BLAS is not callable from a kernel here")
    text = f'type: "Convolution" convolution_param {{ num_output: 50 kernel_size: 5 {F} }}'
    shape = (6, 20, 12, 12)
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    dy = np.random.default_rng(6).standard_normal((6, 50, 8, 8)).astype(np.float32)
    results = []
    for tiles in (True, False):
        layer, bottom, top = build(text, [shape], phase=caffe_pb2.TEST)
        layer.tuning = dataclasses.replace(TUNING, tiles_on_shifts=tiles,
                                           per_image_needs_an_image_a_thread=False,
                                           **(NO_DIRECT if other == "cblas" else {}))
        layer.blobs[0].data[...] = np.random.default_rng(7).standard_normal(
            layer.blobs[0].shape) * 0.1
        bottom[0].data[...] = x
        y = run_forward(layer, bottom, top)[0].copy()
        assert layer.plan.per_image_forward and layer.plan.tiles == tiles
        assert layer.plan.direct == (other == "direct" and not tiles)
        top[0].diff[...] = dy
        layer.blobs[0].diff[...] = 0
        layer.backward(top, [True], bottom)
        results.append((y, bottom[0].diff.copy(), layer.blobs[0].diff.copy()))
    if other == "direct":
        np.testing.assert_array_equal(results[0][0], results[1][0])
    for with_tiles, with_other in zip(*results):   # sums of 384 products in float32
        np.testing.assert_allclose(with_tiles, with_other, rtol=1e-5,
                                   atol=1e-5 * np.abs(with_other).max())
    np.testing.assert_allclose(results[0][0], vision.conv(
        x.astype(np.float64), layer.blobs[0].data.astype(np.float64),
        layer.blobs[1].data.astype(np.float64), (1, 1), (0, 0), (1, 1), 1),
        rtol=1e-5, atol=1e-5)
    train, _, _ = build(text, [shape], phase=caffe_pb2.TRAIN)   # planned with TUNING
    assert train.plan.per_image_forward and not train.plan.tiles


@pytest.mark.parametrize("case", [CASES[1], DECONV[0]])
def test_convolution_applies_one_set_of_weights_to_each_bottom_top_pair(case, gemm_path):
    """Caffe allows any number of bottom/top pairs (OpenCV's conv_2_inps): each top is the
    one-pair result of its bottom, and the weight gradient sums over the pairs."""
    layer, bottom, top = build(case[0], [case[1]] * 2, n_top=2)
    ref = vision.deconv if "Deconvolution" in case[0] else vision.conv
    got = run_forward(layer, bottom, top)
    for i in range(2):
        np.testing.assert_allclose(got[i], expected(layer, bottom[i:], case, ref),
                                   rtol=1e-5, atol=1e-5)
    check_gradient(layer, bottom, top, max_elements=120)


def test_convolution_pairs_need_one_top_per_bottom_of_one_shape():
    text = 'name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 1 }'
    with pytest.raises(NetDefinitionError, match="one top per bottom, got 2 bottoms and 1 top"):
        build(text, [(1, 3, 4, 4)] * 2)
    with pytest.raises(ShapeError, match="all bottoms must have one shape"):
        build(text, [(1, 3, 4, 4), (1, 3, 5, 4)], n_top=2)


@pytest.mark.parametrize("case", CASES[:3] + [CASES[4], CASES[7]])
def test_test_phase_convolutions_share_columns_and_stay_exact(case, gemm_path):
    """In a TEST net every convolution uses one shared column buffer: a layer's backward after
    another layer's forward overwrote it still gives the TRAIN layer's gradients. A TEST 1x1
    convolution multiplies the bottom itself (no columns): bitwise the TRAIN layer's output.
    (The tiles over kernel-column shifts, a TEST net's only, are off here: both phases take
    one path.)"""
    layers = {}
    for phase in (caffe_pb2.TRAIN, caffe_pb2.TEST):
        layer, bottom, top = build(case[0], [case[1]], phase=phase)
        layer.tuning = dataclasses.replace(gemm_path, tiles_on_shifts=False)
        layers[phase] = (layer, bottom, top)
    other, o_bottom, o_top = build(CASES[3][0], [(2, 1, 30, 30)], phase=caffe_pb2.TEST)
    results = {}
    for phase, (layer, bottom, top) in layers.items():
        y = run_forward(layer, bottom, top)[0]
        run_forward(other, o_bottom, o_top)  # a bigger shared buffer, other columns in it
        top[0].diff[...] = np.random.default_rng(3).standard_normal(top[0].shape)
        layer.blobs[0].diff[...] = 0
        layer.backward(top, [True], bottom)
        results[phase] = (y, bottom[0].diff.copy(), layer.blobs[0].diff.copy())
    test_layer = layers[caffe_pb2.TEST][0]
    # no columns at all on the direct and depthwise paths
    assert test_layer.shares_scratch or test_layer.plan.direct_data_grad or \
        test_layer.plan.depthwise
    assert not layers[caffe_pb2.TRAIN][0].shares_scratch
    for a, b in zip(results[caffe_pb2.TRAIN], results[caffe_pb2.TEST]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", CASES[:4])
def test_blocked_backward_tuning_takes_the_blocked_path(case):
    """The fixture's blocked-backward path really runs it, groups and strides included."""
    layer, bottom, top = build(case[0], [case[1]])
    layer.tuning = dataclasses.replace(TUNING, per_image_max_k=0, per_image_max_floats=1 << 30,
                                       per_image_min_pixels=1,
                                       per_image_needs_an_image_a_thread=False,
                                       winograd_min_channels=1 << 30,
                                       **NO_DIRECT, depthwise_direct=False)
    layer.reshape(bottom, top)
    assert layer.plan.blocked_backward and layer.plan.per_image_forward


@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[5], CASES[6], CASES[8]])
def test_direct_tuning_takes_the_direct_path_on_stride_1_single_group_cases(case):
    """The fixture's direct paths really run the direct kernels on these cases, and their
    GEMM data gradients block by block or over the batch."""
    layer, bottom, top = build(case[0], [case[1]])
    layer.tuning = DIRECT
    layer.reshape(bottom, top)
    assert layer.plan.direct and layer.plan.direct_data_grad
    for blocked in (True, False):
        layer.tuning = dataclasses.replace(DIRECT, direct_data_grad_max_work=-1,
                                           blocked_backward=blocked)
        layer.reshape(bottom, top)
        assert layer.plan.direct and not layer.plan.direct_data_grad
        assert layer.plan.blocked_backward == blocked


def test_strided_direct_forward_and_weight_gradient_with_the_data_gradient_on_the_gemms():
    """At stride 2 (CASES[1]) the direct kernels run the forward and the weight gradient; the
    data gradient, which the direct kernels make at stride 1 only, runs on the GEMMs."""
    case = CASES[1]
    layer, bottom, top = build(case[0], [case[1]])
    layer.tuning = DIRECT
    y = run_forward(layer, bottom, top)[0]
    assert layer.plan.direct and not layer.plan.direct_data_grad and layer.plan.blocked_backward
    np.testing.assert_allclose(y, expected(layer, bottom, case, vision.conv), rtol=1e-5,
                               atol=1e-5)
    check_gradient(layer, bottom, top, max_elements=120)


def test_direct_forward_uses_weights_changed_in_place():
    """The direct path keeps its weights in lane blocks across forwards: a change written
    through an array kept from before (a user's script, a finite-difference check) still
    reaches the next forward, one element as the whole."""
    case = CASES[5]
    layer, bottom, top = build(case[0], [case[1]])
    layer.tuning = DIRECT
    kept = layer.blobs[0].data
    for change in (lambda: None, lambda: kept.__setitem__((1, 2, 0, 2), kept[1, 2, 0, 2] + 0.5),
                   lambda: kept.__imul__(-1)):
        change()
        y = run_forward(layer, bottom, top)[0]
        assert layer.plan.direct
        np.testing.assert_allclose(y, expected(layer, bottom, case, vision.conv), rtol=1e-5,
                                   atol=1e-5)


def _plan(batch, channels, outputs, kernel, pad, size, stride=1, group=1, forward_only=False):
    """plan_convolution for a square Convolution as the layer asks for it, on 2 threads."""
    ho = (size + 2 * pad - kernel) // stride + 1
    return plan_convolution(batch, channels * kernel * kernel, ho * ho, group, 2,
                            geometry=(kernel, kernel, pad, pad, stride, stride, 1, 1),
                            outputs=outputs, out_shape=(ho, ho), forward_only=forward_only)


def test_planner_takes_the_direct_path_where_it_measured_faster():
    """Default tuning: CIFAR-10's conv2/conv3 direct, LeNet's conv2 (50 outputs in 64
    lanes) nowhere (a TEST net's by tiles over shifts), CIFAR-10's conv1, strided ones
    (CaffeNet's conv1); LeNet's conv1 (few inputs per output), outputs wasting many lanes,
    grouped, 1x1 or big convolutions not, nor where Winograd takes the forward; the
    data gradient direct only when the bottom is no bigger than the top, else blocked on
    the GEMMs."""
    cifar2 = _plan(100, 32, 32, 5, 2, 16)
    assert cifar2.direct and cifar2.direct_data_grad
    cifar3 = _plan(100, 32, 64, 5, 2, 8)
    assert cifar3.direct and cifar3.direct_data_grad
    # The direct path splits the batch between the threads: a lone image runs direct on one
    # thread only where it is too small for bands of rows on every thread (52M multiply-adds
    # here).
    assert _plan(2, 32, 32, 5, 2, 16).direct and _plan(1, 32, 32, 5, 2, 16).direct
    assert _plan(2, 64, 32, 5, 2, 32).direct and not _plan(1, 64, 32, 5, 2, 32).direct
    # A bottom bigger than the top (no padding): the data gradient as a GEMM.
    bigger = _plan(64, 20, 64, 5, 0, 12)
    assert bigger.direct and not bigger.direct_data_grad and bigger.blocked_backward
    lenet2 = _plan(64, 20, 50, 5, 0, 12, forward_only=True)
    assert lenet2.tiles and not lenet2.direct
    assert _plan(64, 20, 64, 5, 0, 12, forward_only=True).direct   # no lane of padding
    winograd = _plan(100, 32, 32, 3, 1, 16)
    assert winograd.winograd and not winograd.direct
    # Strided: the data gradient on the GEMMs. CaffeNet's conv1 (3025 pixels, stride 4).
    strided = _plan(100, 32, 32, 5, 2, 16, stride=2)
    assert strided.direct and not strided.direct_data_grad
    assert _plan(16, 3, 96, 11, 0, 227, stride=4, forward_only=True).direct
    # CIFAR-10's conv1 (K 75, 32 wide: the pixels in the lanes) in training and in a TEST
    # net; K 75 on rows 8 wide (half of each run's lanes) only in training.
    assert _plan(100, 3, 32, 5, 2, 32).direct
    assert _plan(16, 3, 32, 5, 2, 32, forward_only=True).direct
    assert _plan(100, 3, 32, 5, 2, 8).direct
    assert not _plan(16, 3, 32, 5, 2, 8, forward_only=True).direct
    for plan in (_plan(64, 20, 50, 5, 0, 12),             # LeNet's conv2 in training
                 _plan(64, 1, 20, 5, 0, 28),              # LeNet's conv1
                 _plan(100, 32, 32, 5, 2, 16, group=2),
                 _plan(64, 20, 17, 5, 0, 12),             # 17 outputs padded to 32
                 # Zoo shapes where the GEMMs win: big weights, big images, 1x1.
                 _plan(1, 512, 512, 3, 1, 14), _plan(1, 64, 64, 5, 2, 224),
                 _plan(1, 256, 64, 1, 0, 28)):
        assert not (plan.direct or plan.direct_data_grad)


@pytest.mark.parametrize("case", CASES[-2:])
def test_depthwise_shaped_convolutions_take_the_depthwise_path(case):
    layer, bottom, top = build(case[0], [case[1]])
    layer.reshape(bottom, top)
    assert layer.plan.depthwise


def test_planner_runs_depthwise_convolutions_on_the_depthwise_kernels():
    """group = channels = num_output (MobileNet's 3x3 dw layers, any stride): the depthwise
    kernels; a channel multiplier above 1 or a group of several channels: the GEMMs."""
    for plan in (_plan(1, 32, 32, 3, 1, 112, group=32), _plan(16, 512, 512, 3, 1, 14, group=512),
                 _plan(1, 64, 64, 3, 1, 112, stride=2, group=64)):
        assert plan.depthwise and not (plan.winograd or plan.direct)
    for plan in (_plan(1, 32, 64, 3, 1, 56, group=32), _plan(1, 32, 32, 3, 1, 56, group=16)):
        assert not plan.depthwise
    no = dataclasses.replace(TUNING, depthwise_direct=False)
    assert not plan_convolution(1, 32 * 9, 56 * 56, 32, 2, no, geometry=(3, 3, 1, 1, 1, 1, 1, 1),
                                outputs=32, out_shape=(56, 56)).depthwise


def test_direct_convolution_of_an_image_does_not_depend_on_its_batch():
    text = CASES[5][0]
    outputs = []
    for n in (1, 3):
        layer, bottom, top = build(text, [(n, *CASES[5][1][1:])])
        layer.tuning = DIRECT
        bottom[0].data[0] = np.linspace(-1, 1, bottom[0].data[0].size).reshape(
            bottom[0].data[0].shape)
        outputs.append(run_forward(layer, bottom, top)[0][0])
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("outputs, channels, size, kernel, pad", [
    (32, 3, 32, 5, 2),    # CIFAR-10's conv1: two runs a row, four tiles of outputs
    (3, 4, 16, 3, 1),     # fewer outputs than a tile
    (21, 5, 29, 3, 1),    # a short run each row, a tile overlapping the one before
    (9, 2, 10, 2, 3),     # a pad wider than the kernel; 15 runs (the last one alone)
])
def test_direct_rows_give_the_pixel_major_kernels_bits(outputs, channels, size, kernel, pad):
    """forward_image_rows (the pixels in the lanes) sums each output as forward_images does
    (bias, then the products u by u fused in): the same bits, with and without a bias."""
    from protonet.kernels import direct_conv as dc
    g = np.random.default_rng(11)
    x = g.standard_normal((3, channels, size, size)).astype(np.float32)
    w = g.standard_normal((outputs, channels * kernel * kernel)).astype(np.float32)
    ho = size + 2 * pad - kernel + 1
    conv = dc.DirectConvolution((kernel, kernel, pad, pad, 1, 1, 1, 1), (channels, size, size),
                                (outputs, ho, ho))
    runs = dc.row_runs(ho, ho, conv.padded[2])
    for bias in (g.standard_normal(outputs).astype(np.float32), np.empty(0, np.float32)):
        by_pixels = np.full((3, outputs, ho * ho), 7.0, np.float32)
        by_rows = np.full_like(by_pixels, -7.0)
        taps = dc.live_taps(dc.padding_mask(x.shape[1:], pad, pad, conv.padded),
                            dc.tile_reads(conv.pixels), conv.window)
        dc.forward_images(x, pad, pad, conv.padded, conv.pixels, conv.window, *taps,
                          dc.lane_blocks(w.T), bias, by_pixels)
        dc.forward_image_rows(x, pad, pad, conv.padded, runs, conv.window,
                              np.ascontiguousarray(w.T), bias, by_rows)
        np.testing.assert_array_equal(by_rows.view(np.uint32), by_pixels.view(np.uint32))


def every_tap(taps, total):
    """Spans of every u, one per tile: the tiles as they were before padding was skipped."""
    spans = np.zeros((len(taps[1]), 1, 2), np.uint64)
    spans[:, 0, 1] = total
    return spans, np.ones(len(taps[1]), np.int64)


@pytest.mark.parametrize("outputs, channels, size, kernel, pad, stride", [
    (40, 6, 8, 5, 2, 1),     # CIFAR-10's conv3 shape: output rows of 8, a tile each
    (20, 3, 12, 5, 0, 1),    # LeNet's conv2 shape: no pad, but its data gradient's 4
    (9, 2, 10, 3, 4, 1),     # a pad wider than the kernel: tiles wholly in the padding
    (17, 3, 19, 7, 3, 2),    # a strided first layer (forward and weight gradient)
])
def test_direct_tiles_skip_padding_taps_and_keep_the_bits(outputs, channels, size, kernel, pad,
                                                          stride):
    """The gathered tiles sum only over the u some of their rows read outside the padding
    (live_taps): the forward, weight gradient and data gradient bits are those of tiles
    summing every u, and some u are skipped."""
    from protonet.kernels import direct_conv as dc
    from protonet.kernels.conv_plan import plan_convolution
    g = np.random.default_rng(5)
    n = 5
    ho = (size + 2 * pad - kernel) // stride + 1
    geometry = (kernel, kernel, pad, pad, stride, stride, 1, 1)
    conv = dc.DirectConvolution(geometry, (channels, size, size), (outputs, ho, ho))
    k = channels * kernel * kernel
    plan = plan_convolution(n, k, ho * ho, 1, 2, geometry=geometry, outputs=outputs,
                            out_shape=(ho, ho))
    x = g.standard_normal((n, channels, size, size)).astype(np.float32)
    w = g.standard_normal((outputs, k)).astype(np.float32)
    bias = g.standard_normal(outputs).astype(np.float32)
    dy = g.standard_normal((n, outputs, ho * ho)).astype(np.float32)

    def run():
        out = np.empty((n, outputs, ho * ho), np.float32)
        grad = np.zeros((outputs, k), np.float32)
        dx = np.empty_like(x) if stride == 1 else None
        conv.forward(x, w, bias, out, plan)
        conv.backward(x, dy, w.reshape(outputs, channels, kernel, kernel), grad, dx, plan)
        return [a.view(np.uint32) for a in (out, grad, dx) if a is not None]

    live = [conv.forward_taps, conv.pixel_taps, conv.flipped_taps]
    skipped = run()
    totals = [len(conv.window), ho * ho, len(conv.flipped_window)]
    spans = [taps[0][:, :, 1].astype(np.int64) - taps[0][:, :, 0].astype(np.int64)
             for taps in live]
    summed = [sum(s[t, :c].sum() for t, c in enumerate(taps[1])) for s, taps in zip(spans, live)]
    assert any(s < total * len(taps[1]) for s, total, taps in zip(summed, totals, live))
    conv.forward_taps, conv.pixel_taps, conv.flipped_taps = (
        every_tap(taps, total) for taps, total in zip(live, totals))
    for a, b in zip(skipped, run()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("outputs, pixels", [(32, 1024), (40, 37), (5, 9), (16, 16)])
def test_top_diff_goes_into_lane_blocks_whole(outputs, pixels):
    """The weight gradient's top diff in lane blocks, squares and leftovers: every element
    where it belongs, the padding lanes untouched (they stay zero)."""
    from protonet.kernels.direct_conv import LANES, _lane_blocks_of_rows, padded_width
    rows = np.arange(outputs * pixels, dtype=np.float32).reshape(outputs, pixels) + 1
    blocks = np.zeros((padded_width(outputs) // LANES, 3 + pixels, LANES), np.float32)
    _lane_blocks_of_rows(rows, blocks, 3)
    expected = np.zeros((padded_width(outputs), pixels), np.float32)
    expected[:outputs] = rows
    np.testing.assert_array_equal(blocks[:, 3:].transpose(0, 2, 1).reshape(-1, pixels), expected)
    assert not blocks[:, :3].any()


def test_a_shifts_inside_span_is_every_output_reading_inside_the_row():
    """_inside_span(shift, sw, width, wo): the outputs ox whose input column ox*sw + shift is
    in [0, width), as one range lo <= ox < hi (lo = hi when none is), for shifts reaching
    past either edge, every stride up to 4 and rows and outputs up to 14."""
    from protonet.kernels.conv import _inside_span
    for shift in range(-20, 21):
        for sw in range(1, 5):
            for width in range(1, 15):
                for wo in range(1, 15):
                    inside = [ox for ox in range(wo) if 0 <= ox * sw + shift < width]
                    lo, hi = _inside_span(shift, sw, width, wo)
                    assert 0 <= lo <= hi <= wo
                    assert list(range(lo, hi)) == inside, (shift, sw, width, wo)


@pytest.mark.parametrize("shape, kernel, pad, stride_w, dilation", [
    ((3, 20, 12, 12), (5, 5), (0, 0), 1, (1, 1)),   # LeNet's conv2
    ((2, 4, 8, 8), (5, 5), (2, 2), 1, (1, 1)),      # CIFAR-10's conv3, padded past the row
    ((3, 3, 13, 13), (3, 3), (1, 1), 1, (1, 1)),    # CaffeNet's conv3-5
    ((2, 2, 6, 11), (3, 2), (2, 1), 2, (2, 2)),     # strided columns, dilated, pad > kernel
    ((2, 1, 5, 4), (1, 3), (0, 3), 1, (1, 1)),      # a pad wider than the input
])
@pytest.mark.parametrize("compile_", ["parallel", "serial"])
def test_narrow_rows_go_through_kernel_column_shifts(shape, kernel, pad, stride_w, dilation,
                                                     compile_):
    """im2col of two or more images with narrow output rows copies each image's
    kernel-column shifts (by_shifts): the same columns as the row loop a lone image takes,
    bit for bit, nothing written outside the images' own columns; col2im adds through the
    shifts the same sums as its row loop, and stays im2col's adjoint."""
    from protonet.kernels import conv as kernels
    n, c, h, w = shape
    geometry = (*kernel, *pad, 1, stride_w, *dilation)
    ho = kernels.conv_output_size(h, kernel[0], pad[0], 1, dilation[0])
    wo = kernels.conv_output_size(w, kernel[1], pad[1], stride_w, dilation[1])
    assert kernels.by_shifts(n, 1, wo, 0, ho, ho) and not kernels.by_shifts(1, 1, wo, 0, ho, ho)
    x = np.random.default_rng(3).standard_normal(shape, dtype=np.float32)
    rows, p = c * kernel[0] * kernel[1], ho * wo
    shifted = np.full((rows, (n + 2) * p + 5), 7.0, np.float32)
    by_rows = shifted.copy()
    getattr(kernels.im2col, compile_)(x, *geometry, ho, wo, shifted, 1, 0, ho)
    for i in range(n):
        getattr(kernels.im2col, compile_)(x[i:i + 1], *geometry, ho, wo, by_rows, 1 + i, 0, ho)
    np.testing.assert_array_equal(shifted, by_rows)
    assert (shifted[:, :p] == 7).all() and (shifted[:, (n + 1) * p:] == 7).all()
    # and the row loop's columns are the convolution's windows
    padded = np.pad(x, ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2))
    i, j = kernel[0] - 1, kernel[1] - 1
    window = padded[:, 0, i * dilation[0]:i * dilation[0] + ho,
                    j * dilation[1]:j * dilation[1] + (wo - 1) * stride_w + 1:stride_w]
    np.testing.assert_array_equal(by_rows[i * kernel[1] + j, p:(n + 1) * p], window.reshape(-1))
    # col2im, its adjoint, through the same shifts: the row loop's sums (in another order)
    columns = np.random.default_rng(4).standard_normal(shifted.shape, dtype=np.float32)
    summed, looped = np.full(shape, 5.0, np.float32), np.full(shape, 5.0, np.float32)
    getattr(kernels.col2im, compile_)(columns, *geometry, ho, wo, summed, 1)
    for i in range(n):
        getattr(kernels.col2im, compile_)(columns, *geometry, ho, wo, looped[i:i + 1], 1 + i)
    np.testing.assert_allclose(summed, looped, rtol=1e-6, atol=1e-6)
    images = slice(p, (n + 1) * p)
    assert np.isclose(np.vdot(summed, x), np.vdot(columns[:, images], by_rows[:, images]),
                      rtol=1e-5)


def test_direct_rows_run_where_the_runs_fill_their_lanes():
    from protonet.kernels.direct_conv import RUN_MIN_LANES_USED, by_runs, run_lanes_used
    for width in (13, 16, 27, 29, 32, 64):   # CIFAR-10's conv1 and conv2: 32 and 16
        assert run_lanes_used(width) >= RUN_MIN_LANES_USED and by_runs((1, 1), width)
        assert not by_runs((2, 2), width) and not by_runs((1, 2), width)
    for width in (8, 12, 17, 20):            # CIFAR-10's conv3 and LeNet's conv2: 8
        assert run_lanes_used(width) < RUN_MIN_LANES_USED and not by_runs((1, 1), width)


def test_direct_kernel_inner_loop_is_vectorized():
    """gathered_matmul's register tiles compile to packed fused multiply-adds (vfmadd...ps),
    on zmm registers where the CPU has AVX-512 (lanes.prefer_wide_vectors), with every sum in
    a register across the loop (none stored to the stack: with AVX2, 8-row tiles spilled
    and ran at 0.4x): the loop shape they depend on (one vector of lanes per row, contiguous
    rows, unsigned offsets, TILE_ROWS for the CPU) must not regress into scalar code, ymm
    halves or spills, nor its options lose the contraction."""
    import re

    import numba

    from protonet.kernels.direct_conv import TILE_ROWS, TILE_SUMS, _tile
    from protonet.kernels.lanes import compiles_for_avx512
    # A fresh compile with protonet's options (one loaded from numba's disk cache has no
    # assembly to show), called as gathered_matmul calls it (pair a constant: numba compiles
    # the tile for the literal).
    tile = numba.njit(fastmath=_tile.targetoptions["fastmath"], error_model="numpy")(_tile.py_func)

    @numba.njit
    def pair_of_blocks(src, offsets, taps, counts, blocks):
        tile(src, offsets, offsets, taps, counts, 0, 0, 0, blocks, 0, 1, blocks, 0, blocks, 1,
             True)

    pair_of_blocks(np.zeros(64, np.float32), np.zeros(8, np.uint64),
                   np.array([[[0, 8]]], np.uint64), np.ones(1, np.int64),
                   np.zeros((2, 8, 16), np.float32))
    (signature,) = [s for s in tile.signatures if getattr(s[-1], "literal_value", None)]
    asm = tile.inspect_asm(signature)
    # The loop over u: the block of code with the most multiply-adds, to its branch back.
    loop = max(re.split(r"\n\.LBB\d+_\d+:", asm), key=lambda b: len(re.findall("vfmadd", b)))
    loop = loop[:loop.index("\n\tj", loop.rindex("vfmadd"))]
    wide = compiles_for_avx512()   # NUMBA_CPU_FEATURES, else the host's
    register = "zmm" if wide else "[yz]mm"
    assert len(re.findall(rf"\bvfmadd\d+ps\s+[^\n]*{register}", loop)) == TILE_SUMS * (
        1 if wide else 2)
    assert not re.search(r"\bvmov\w+\s+%[xyz]mm\d+, -?\d*\(%rsp\)", loop), loop
    assert TILE_ROWS == (8 if wide else 3)


def test_direct_kernel_tiles_take_no_views():
    """gathered_matmul hands its register tiles the whole arrays and indices: a view (b[v],
    out[v], a row of taps) counts a reference, an atomic add on one line that both threads
    write when the array is shared, and at a few views a tile CIFAR-10's conv3 ran 1.4x
    slower on 2 threads. Its compiled code counts one reference, at entry, and none in its
    loops (six before)."""
    import numba

    from protonet.kernels.direct_conv import TILE_ROWS, gathered_matmul
    kernel = numba.njit(fastmath=gathered_matmul.targetoptions["fastmath"],
                        error_model="numpy")(gathered_matmul.py_func)
    tiles = -(-8 // TILE_ROWS)                   # 8 rows, each tile summing over 8 u
    blocks = np.zeros((3, 8, 16), np.float32)   # an odd count: the lone block's call too
    kernel(np.zeros(64, np.float32), np.zeros(8, np.uint64), np.zeros(8, np.uint64),
           np.tile(np.array([[[0, 8]]], np.uint64), (tiles, 1, 1)), np.ones(tiles, np.int64),
           blocks, blocks.copy())
    asm = kernel.inspect_asm(kernel.signatures[0])
    assert asm.count("$NRT_incref") <= 1, asm.count("$NRT_incref")


def test_direct_rows_inner_loop_is_vectorized():
    """_run_tile (forward_image_rows' tile) as _tile above: packed multiply-adds of whole
    registers over every u, the sums never on the stack (its pixel offsets unsigned, lanes
    included: uint64 plus int64 is float64 in numba and the loop went 4-9x slower)."""
    import re

    import numba

    from protonet.kernels.direct_conv import TILE_SUMS, _run_tile
    from protonet.kernels.lanes import compiles_for_avx512
    tile = numba.njit(fastmath=_run_tile.targetoptions["fastmath"],
                      error_model="numpy")(_run_tile.py_func)

    @numba.njit
    def pair_of_runs(src, runs, cols, wt, out):
        tile(src, runs, 0, 1, cols, wt, 0, 0, out, True)

    pair_of_runs(np.zeros(64, np.float32), np.zeros((2, 3), np.uint64), np.zeros(8, np.uint64),
                 np.zeros((8, 8), np.float32), np.zeros((8, 32), np.float32))
    (signature,) = [s for s in tile.signatures if getattr(s[-1], "literal_value", None)]
    asm = tile.inspect_asm(signature)
    loop = max(re.split(r"\n\.LBB\d+_\d+:", asm), key=lambda b: len(re.findall("vfmadd", b)))
    loop = loop[:loop.index("\n\tj", loop.rindex("vfmadd"))]
    wide = compiles_for_avx512()
    register = "zmm" if wide else "[yz]mm"
    assert len(re.findall(rf"\bvfmadd\d+ps\s+[^\n]*{register}", loop)) == TILE_SUMS * (
        1 if wide else 2)
    assert not re.search(r"\bvmov\w+\s+%[xyz]mm\d+, -?\d*\(%rsp\)", loop), loop


def test_planner_multiplies_the_bottom_itself_only_for_1x1_stride_1_unpadded():
    def plan(kernel, pad, stride, dilation=1):
        geometry = (kernel, kernel, pad, pad, stride, stride, dilation, dilation)
        return plan_convolution(1, 64 * kernel * kernel, 196, 1, 2, geometry=geometry,
                                outputs=32, out_shape=(14, 14))
    assert plan(1, 0, 1).columns_are_input
    assert plan(1, 0, 1, dilation=2).columns_are_input   # a 1x1 kernel has no gaps
    assert not plan(1, 0, 2).columns_are_input           # ResNet's strided 1x1: subsampled
    assert not plan(1, 1, 1).columns_are_input
    assert not plan(3, 1, 1).columns_are_input


@pytest.mark.parametrize("in_place", [False, True])
def test_one_image_lands_in_the_top_unless_the_top_is_the_bottom(in_place):
    """At batch 1 the GEMM writes into the top itself; a convolution whose top is its bottom
    (a 1x1 layer keeping the shape, which Caffe's nets may write) must still read the whole
    bottom before anything is written over it: with K = 1024 the GEMM runs in blocks of K,
    and writing into the top read partial outputs back as inputs."""
    import protonet
    from protonet import prototxt
    top = "data" if in_place else "out"
    text = f"""
    input: "data" input_shape {{ dim: 1 dim: 1024 dim: 14 dim: 14 }}
    layer {{ name: "c" type: "Convolution" bottom: "data" top: "{top}"
      convolution_param {{ num_output: 1024 kernel_size: 1
        weight_filler {{ type: "gaussian" std: 0.1 }}
        bias_filler {{ type: "constant" value: 0.5 }} }} }}
    """
    net = protonet.Net(param=prototxt.parse_net_text(text), phase=protonet.TEST)
    layer = net.layers[1]
    x = np.random.default_rng(3).standard_normal((1, 1024, 14, 14)).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    assert not (layer.plan.per_image_forward or layer.plan.winograd or layer.plan.direct)
    w, b = layer.blobs[0].data.reshape(1024, 1024), layer.blobs[1].data
    want = (w.astype(np.float64) @ x.reshape(1024, -1) + b[:, None]).reshape(1, 1024, 14, 14)
    np.testing.assert_allclose(net.blobs[top].data, want, rtol=1e-4, atol=1e-5)
