"""The Python layer: a user's pycaffe-style class, imported by module and class name."""
from pathlib import Path

import numpy as np
import pytest
from helpers import build, check_gradient, run_forward

from protonet.errors import NetDefinitionError

FIXTURES = str(Path(__file__).resolve().parents[1] / "fixtures")
PYLOSS = 'type: "Python" python_param { module: "pyloss" layer: "EuclideanLossLayer" }'


def test_python_layer_runs_the_users_class_forward_and_backward(monkeypatch):
    monkeypatch.syspath_prepend(FIXTURES)
    layer, bottom, top = build(PYLOSS, [(4, 3), (4, 3)])
    a, b = (blob.data.astype(np.float64) for blob in bottom)
    np.testing.assert_allclose(run_forward(layer, bottom, top)[0], [((a - b) ** 2).sum() / 8],
                               rtol=1e-6)
    check_gradient(layer, bottom, top)


def test_python_layer_that_cannot_be_imported_names_the_layer_and_module():
    with pytest.raises(NetDefinitionError, match="cannot import python_param.module 'nowhere'"):
        build('name: "py" type: "Python" python_param { module: "nowhere" layer: "L" }',
              [(2, 2)])


def test_py_faster_rcnn_proposal_module_runs_as_the_built_in_proposal_layer():
    """faster_rcnn_zf's `type: 'Python'` proposal layer, without py-faster-rcnn installed."""
    from protonet.blob import Blob
    scores, deltas, info = Blob((1, 18, 3, 4)), Blob((1, 36, 3, 4)), Blob((1, 3))
    scores.data[...] = np.random.default_rng(1).random(scores.shape)
    info.data[...] = [48, 64, 1]
    text = ('type: "Python" python_param { module: "rpn.proposal_layer" '
            'layer: "ProposalLayer" param_str: "\'feat_stride\': 16" }')
    layer, bottom, top = build(text, None, bottoms=[scores, deltas, info])
    assert layer.impl.type == "Proposal" and layer.impl.stride == 16
    rois = run_forward(layer, bottom, top)[0]
    assert rois.shape == (300, 5) and rois[:, 1:].max() <= 63 and rois[0, 3] > 0
    with pytest.raises(NetDefinitionError, match="param_str sets 'stride', which Proposal does "
                                                 "not have"):
        build(text.replace("feat_stride", "stride"), None, bottoms=[scores, deltas, info])
