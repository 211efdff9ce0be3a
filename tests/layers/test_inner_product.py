"""InnerProduct: axis, transpose, bias, gradients, and weight/input mismatch errors."""
import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

from protonet.errors import ShapeError
from reference import vision

F = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'
CASES = [  # (prototxt, bottom shape, axis, transpose)
    (f'type: "InnerProduct" inner_product_param {{ num_output: 5 {F} }}', (3, 2, 3, 2), 1, False),
    (f'type: "InnerProduct" inner_product_param {{ num_output: 4 axis: 2 {F} }}', (2, 3, 5), 2,
     False),
    (f'type: "InnerProduct" inner_product_param {{ num_output: 3 transpose: true {F} }}', (4, 7),
     1, True),
    (f'type: "InnerProduct" inner_product_param {{ num_output: 3 bias_term: false {F} }}', (2, 5),
     1, False),
    # Every kind of tile of the lane kernel (kernels/dense.py): 4 + 1 batch rows, 4 + 3 weight
    # rows, 2 x 16 lanes + 5 inputs; two blocks of weight rows, inputs a multiple of 16.
    (f'type: "InnerProduct" inner_product_param {{ num_output: 7 {F} }}', (5, 37), 1, False),
    (f'type: "InnerProduct" inner_product_param {{ num_output: 18 {F} }}', (9, 2, 4, 4), 1,
     False),
    (f'type: "InnerProduct" inner_product_param {{ num_output: 6 transpose: true {F} }}',
     (5, 37), 1, True),
    # 8 x 16 lanes + 2 inputs, 4 + 4 + 1 weight rows, batch rows one by one
    (f'type: "InnerProduct" inner_product_param {{ num_output: 9 {F} }}', (3, 2, 5, 13), 1,
     False),
]


@pytest.mark.parametrize("case", CASES)
def test_inner_product_forward(case):
    text, shape, axis, transpose = case
    layer, bottom, top = build(text, [shape])
    b = layer.blobs[1].data if len(layer.blobs) > 1 else None
    y = vision.inner_product(bottom[0].data.astype(np.float64), layer.blobs[0].data, b, axis,
                             transpose)
    assert top[0].shape == y.shape
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0], y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_inner_product_gradient(case):
    layer, bottom, top = build(case[0], [case[1]])
    check_gradient(layer, bottom, top)


def test_inner_product_input_size_mismatch_names_layer_and_blob():
    layer, bottom, top = build('name: "ip1" type: "InnerProduct" inner_product_param { '
                               'num_output: 500 }', [(2, 800)])
    bottom[0].reshape(2, 10)
    bottom[0].name = "pool2"
    with pytest.raises(ShapeError, match=r"layer 'ip1' \(InnerProduct\): bottom 'pool2' has 10 "
                                         r"inputs per sample, weights expect 800"):
        layer.reshape(bottom, top)


def test_lane_kernel_adds_in_the_documented_order():
    """The lane kernel gives the bits of its documented order (lane sums along k, then the
    lanes left to right) for every tile kind, on one thread and split between two: the
    property batch invariance rests on."""
    import numba

    from protonet.kernels import _jit
    from protonet.kernels.dense import dense, lane_ordered_reference
    rng = np.random.default_rng(5)
    threads = numba.get_num_threads()
    try:
        for m, k, n in [(1, 16, 4), (5, 37, 7), (9, 100, 19), (3, 7, 2), (6, 300, 600),
                        (5, 1000, 1001)]:
            x = rng.standard_normal((m, k)).astype(np.float32)
            w = rng.standard_normal((n, k)).astype(np.float32)
            expected = lane_ordered_reference(x, w)
            for n_threads in (1, 2):
                _jit.set_num_threads(n_threads)
                y = np.full((m, n), np.nan, np.float32)
                dense(w, x, y)
                np.testing.assert_array_equal(y, expected)
    finally:
        _jit.set_num_threads(threads)


def test_lane_kernel_inner_loop_is_vectorized():
    """_dot_tile's full tile compiles to packed multiplies (mulps), one per accumulator and
    vector of lanes (zmm where the CPU has AVX-512, else two ymm a sum), with its sums in
    registers across the loop (none stored to the stack: AVX2 spilled the 4 x 4 tile): the loop
    shape and the CPU's TILE_ROWS must not regress into scalar code or accumulators kept in
    memory."""
    import re

    import numba

    from protonet.kernels import dense
    from protonet.kernels.lanes import compiles_for_avx512
    # A fresh compile with protonet's options (one loaded from numba's disk cache has no
    # assembly to show), called as dense_forward calls it (rows a constant: numba compiles
    # the tile for the literal).
    tile = numba.njit(fastmath=False, error_model="numpy")(dense._dot_tile.py_func)
    rows = dense.TILE_ROWS   # a constant of the closure, as dense_forward's global is

    @numba.njit
    def full_tile(x, y):
        tile(x, x, y, 0, 0, 0, rows)

    full_tile(np.zeros((4, 64), np.float32), np.zeros((4, 4), np.float32))
    (signature,) = [s for s in tile.signatures
                    if getattr(s[-1], "literal_value", None) == dense.TILE_ROWS]
    asm = tile.inspect_asm(signature)
    # The loop over k: the block of code with the most multiplies, to its branch back.
    loop = max(re.split(r"\n\.LBB\d+_\d+:", asm), key=lambda b: len(re.findall("vmulps", b)))
    loop = loop[:loop.index("\n\tj", loop.rindex("vmulps"))]
    wide = compiles_for_avx512()   # NUMBA_CPU_FEATURES, else the host's
    register = "zmm" if wide else "[yz]mm"
    # (LLVM may unroll the loop over k: a whole number of steps.)
    products = len(re.findall(rf"\bvmulps\s+[^\n]*{register}", loop))
    step = dense.TILE_SUMS * (1 if wide else 2)
    assert products >= step and products % step == 0, (products, step)
    assert not re.search(r"\bvmov\w+\s+%[xyz]mm\d+, -?\d*\(%rsp\)", loop), loop
    assert dense.TILE_ROWS == (4 if wide else 1)


def test_transposed_weights_run_the_lane_kernel_and_follow_changes():
    """Transposed weights (K, num_output) give the bits of the same weights in Caffe's layout
    (both run the lane kernel, from a transposed copy), and the copy follows any change of
    the blob: one element written through an array kept from before."""
    from protonet.kernels.dense import lane_ordered_reference
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 37)).astype(np.float32)
    w = rng.standard_normal((7, 37)).astype(np.float32)
    outputs = {}
    for transpose in (False, True):
        text = (f'type: "InnerProduct" inner_product_param {{ num_output: 7 transpose: '
                f'{str(transpose).lower()} bias_term: false }}')
        layer, bottom, top = build(text, [(5, 37)])
        layer.blobs[0].data[...] = w.T if transpose else w
        bottom[0].data[...] = x
        outputs[transpose] = run_forward(layer, bottom, top)[0].copy()
    np.testing.assert_array_equal(outputs[True], outputs[False])
    np.testing.assert_array_equal(outputs[True], lane_ordered_reference(x, w))
    kept = layer.blobs[0].data
    kept[3, 2] += 1.0
    w[2, 3] += 1.0
    np.testing.assert_array_equal(run_forward(layer, bottom, top)[0],
                                  lane_ordered_reference(x, w))
