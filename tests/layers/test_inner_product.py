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
