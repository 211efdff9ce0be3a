"""ConvolutionDepthwise: values against the direct convolution loops with group = channels,
gradients, and the one-filter-per-channel rule."""
import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

from protonet.errors import NetDefinitionError
from reference import vision

from protonet.kernels.epilogue import NONE, channel_epilogue

NO_EPILOGUE = (NONE, NONE, False, np.float32(0))

F = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'
# (prototxt, bottom shape, stride, pad, dilation)
CASES = [
    (f'type: "ConvolutionDepthwise" convolution_param {{ num_output: 3 kernel_size: 3 pad: 1 '
     f'{F} }}', (2, 3, 7, 5), (1, 1), (1, 1), (1, 1)),
    (f'type: "ConvolutionDepthwise" convolution_param {{ num_output: 4 kernel_size: 3 stride: 2 '
     f'pad: 1 bias_term: false {F} }}', (1, 4, 9, 8), (2, 2), (1, 1), (1, 1)),
    (f'type: "ConvolutionDepthwise" convolution_param {{ num_output: 2 kernel_h: 3 kernel_w: 2 '
     f'stride_h: 1 stride_w: 2 pad_h: 2 pad_w: 0 dilation: 2 {F} }}', (2, 2, 6, 7), (1, 2),
     (2, 0), (2, 2)),
    # stride 3 with a kernel wider than the stride; a plane taller than one block of rows
    (f'type: "ConvolutionDepthwise" convolution_param {{ num_output: 3 kernel_size: 5 stride: 3 '
     f'pad: 2 {F} }}', (1, 3, 11, 13), (3, 3), (2, 2), (1, 1)),
    (f'type: "ConvolutionDepthwise" convolution_param {{ num_output: 2 kernel_size: 3 pad: 1 '
     f'{F} }}', (1, 2, 70, 40), (1, 1), (1, 1), (1, 1)),
]


@pytest.mark.parametrize("case", CASES)
def test_convolution_depthwise_is_a_grouped_convolution_per_channel(case):
    text, shape, stride, pad, dilation = case
    layer, bottom, top = build(text, [shape])
    bias = layer.blobs[1].data.astype(np.float64) if len(layer.blobs) > 1 else None
    expected = vision.conv(bottom[0].data.astype(np.float64),
                           layer.blobs[0].data.astype(np.float64), bias, stride, pad, dilation,
                           shape[1])
    got = run_forward(layer, bottom, top)[0]
    assert got.shape == expected.shape and layer.blobs[0].shape[1] == 1
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    check_gradient(layer, bottom, top, max_elements=150)


def test_convolution_depthwise_needs_one_filter_per_channel():
    with pytest.raises(NetDefinitionError, match=r"num_output \(6\) must equal the bottom's "
                                                 r"channels \(3\)"):
        build('type: "ConvolutionDepthwise" convolution_param { num_output: 6 kernel_size: 3 }',
              [(1, 3, 5, 5)])


def test_depthwise_forward_inner_loop_is_vectorized():
    """The forward's multiply-add over a block of output rows compiles to packed multiplies:
    its flat, stride-1 shape (what the phase planes are for) must not regress into the
    scalar per-row loop it replaced."""
    import re

    import numba

    from protonet.kernels import depthwise
    # A fresh compile with protonet's options (a kernel from numba's disk cache has no
    # assembly to show).
    kernel = numba.njit(fastmath=False, error_model="numpy")(
        depthwise.depthwise_forward_on_phases.serial.py_func)
    kernel(np.zeros((1, 2, 8, 8), np.float32), np.zeros((2, 3, 3), np.float32),
           1, 1, 1, 1, 1, 1, np.zeros((1, 2, 8, 8), np.float32), *NO_EPILOGUE)
    assert re.search(r"\bv?mulps\b", kernel.inspect_asm(kernel.signatures[0]))


@pytest.mark.parametrize("shape, kernel, stride, pad, dilation", [
    ((2, 37, 7, 7), (3, 3), (1, 1), (1, 1), (1, 1)),     # a block and a part-filled one
    ((1, 16, 14, 14), (3, 3), (2, 2), (1, 1), (1, 1)),
    ((1, 5, 2, 3), (3, 3), (1, 1), (1, 1), (1, 1)),      # rows narrower than a tile
    ((2, 20, 9, 11), (5, 3), (3, 1), (2, 0), (1, 2)),
    ((1, 33, 6, 5), (3, 3), (1, 2), (0, 2), (2, 1)),
    ((1, 3, 21, 19), (3, 3), (1, 1), (1, 1), (1, 1)),    # 3x3 row by row too
    ((2, 2, 5, 20), (3, 3), (1, 1), (2, 0), (1, 1)),
    # Planes too big for one block: bands of output rows (MobileNet-SSD's conv2/dw, 150 ->
    # 75 at stride 2, 7 bands; a dilated 5 x 3 filter whose bands' rows overlap by 8)
    ((1, 18, 150, 150), (3, 3), (2, 2), (1, 1), (1, 1)),
    ((1, 4, 120, 100), (5, 3), (2, 1), (2, 0), (2, 1)),
    # 3x3, pad 1, read in place: odd widths (the last window reaches the padding), a plane
    # one pixel wide or tall
    ((2, 3, 15, 75), (3, 3), (2, 2), (1, 1), (1, 1)),
    ((1, 2, 6, 70), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((1, 2, 3, 1), (3, 3), (2, 2), (1, 1), (1, 1)),
    ((1, 2, 1, 4), (3, 3), (1, 1), (1, 1), (1, 1)),
])
def test_depthwise_forward_by_channel_blocks_gives_the_phase_planes_bits(
        shape, kernel, stride, pad, dilation):
    """The forwards depthwise_forward picks between sum in the same order, so a layer's
    outputs do not depend on its width: the same bits, NaN where NaN (which NaN an inf - inf
    meeting a NaN gives depends on the operands' order in the vector add); and with the
    output pass fused in, the bits of that pass run after the sums."""
    from protonet.kernels import depthwise
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::17] = np.nan
    x.reshape(-1)[5::23] = -np.inf
    w = rng.standard_normal((shape[1], *kernel)).astype(np.float32)
    out = [(size + 2 * p - d * (k - 1) - 1) // s + 1
           for size, p, d, k, s in zip(shape[2:], pad, dilation, kernel, stride)]
    geometry = (*pad, *stride, *dilation)
    kernels = [lambda y, *e: depthwise.depthwise_forward_on_phases(x, w, *geometry, y, *e),
               lambda y, *e: depthwise.depthwise_forward_by_channel_blocks(x, w, *geometry, y,
                                                                           *e)]
    if kernel == (3, 3) and stride == dilation == (1, 1):
        kernels.append(lambda y, *e: depthwise.depthwise_3x3_forward(x, w, *pad, y, *e))
    if kernel == (3, 3) and pad == dilation == (1, 1) and stride in ((1, 1), (2, 2)):
        kernels.append(lambda y, *e: depthwise.depthwise_3x3_in_place(x, w, stride[0], y, *e))
    if shape[2] > 100:
        reach = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
        columns = max(shape[3] + 2 * pad[1], (out[1] - 1) * stride[1] + reach[1])
        assert depthwise.channel_block_bands(out[0], columns, reach[0], stride[0])[1] > 1
    # Each kernel's output pass fused in (a folded BatchNorm + Scale and a leaky ReLU; a bias
    # and a ReLU) gives the bits of the sums then the pass on its own; depthwise_forward's too.
    scale, shift = (rng.standard_normal(shape[1]).astype(np.float32) for _ in range(2))
    kernels.append(lambda y, *e: depthwise.depthwise_forward(x, w, *geometry, y, e))
    for epilogue in [NO_EPILOGUE, (scale, shift, True, np.float32(0.1)),
                     (NONE, shift, True, np.float32(0))]:
        sums = np.full((shape[0], shape[1], *out), 7, np.float32)
        kernels[0](sums, *NO_EPILOGUE)
        channel_epilogue(sums.reshape(*sums.shape[:2], -1), *epilogue)
        nan = np.isnan(sums)
        assert nan.any()
        for run in kernels:
            got = np.full_like(sums, 7)
            run(got, *epilogue)
            assert np.array_equal(np.isnan(got), nan)
            np.testing.assert_array_equal(got.view(np.uint32)[~nan], sums.view(np.uint32)[~nan])


@pytest.mark.parametrize("avx512", [True, False])
def test_depthwise_channel_blocks_are_for_narrow_or_strided_outputs_and_vectorized(
        monkeypatch, avx512):
    import re

    import numba

    from protonet.kernels import depthwise
    monkeypatch.setattr(depthwise, "compiles_for_avx512", lambda: avx512)
    blocks = depthwise.by_channel_blocks
    assert blocks(7, (1, 1)) and blocks(19, (2, 2)) and blocks(38, (2, 2))  # MobileNet(-SSD)
    assert not blocks(56, (1, 1)) and not blocks(112, (1, 1))
    # Wide strided rows (MobileNet's 112 -> 56, MobileNet-SSD's 150 -> 75): with AVX-512 only
    assert blocks(56, (2, 2)) is avx512 and blocks(75, (2, 2)) is avx512
    # Stride-1 3x3 layers over 16 wide run row by row; strided, dilated or narrow ones not.
    assert depthwise.by_rows_3x3((3, 3), (1, 1), (1, 1), 150)
    assert depthwise.by_rows_3x3((3, 3), (1, 1), (1, 1), 19)
    assert not depthwise.by_rows_3x3((3, 3), (1, 1), (1, 1), 14)
    assert not depthwise.by_rows_3x3((3, 3), (2, 2), (1, 1), 75)
    assert not depthwise.by_rows_3x3((3, 3), (1, 1), (2, 2), 75)
    assert not depthwise.by_rows_3x3((5, 5), (1, 1), (1, 1), 75)
    # 3x3 with a pad of 1 in place: strided from 28 outputs wide, stride 1 from 64
    in_place = depthwise.in_place_3x3
    assert in_place((3, 3), (2, 2), (1, 1), (1, 1), 75)
    assert in_place((3, 3), (2, 2), (1, 1), (1, 1), 28)
    assert not in_place((3, 3), (2, 2), (1, 1), (1, 1), 19)
    assert in_place((3, 3), (1, 1), (1, 1), (1, 1), 150)
    assert not in_place((3, 3), (1, 1), (1, 1), (1, 1), 56)
    assert not in_place((3, 3), (2, 2), (0, 0), (1, 1), 75)
    assert not in_place((3, 3), (1, 2), (1, 1), (1, 1), 75)
    assert not in_place((3, 3), (1, 1), (1, 1), (2, 2), 75)
    assert not in_place((5, 5), (2, 2), (1, 1), (1, 1), 75)
    kernel = numba.njit(fastmath=False, error_model="numpy")(
        depthwise._depthwise_block.py_func)
    kernel(np.zeros((9, 9, 16), np.float32), np.zeros((3, 3, 16), np.float32), 1, 1, 1, 1,
           np.zeros((7, 7, 16), np.float32))
    # 16 lanes: one zmm, or two ymm where LLVM prefers 256-bit vectors (Intel's AVX-512 cores)
    assert re.search(r"\bvmulps\s+[^\n]*[yz]mm", kernel.inspect_asm(kernel.signatures[0]))
    # The 3x3 rows: packed along the row.
    rows = numba.njit(fastmath=False, error_model="numpy")(depthwise._rows_3x3.py_func)
    rows(np.zeros((22, 22), np.float32), np.zeros((3, 3), np.float32),
         np.zeros((20, 20), np.float32))
    assert re.search(r"\bvmulps\s+[^\n]*[yz]mm", rows.inspect_asm(rows.signatures[0]))
