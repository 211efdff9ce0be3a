"""Registry sweep: every layer type builds, V1 names resolve, and every layer with a backward
is gradient-checked in some table (a new layer without one fails here)."""
from pathlib import Path

import pytest

from protonet import registry
from protonet.layers.base import Layer

HERE = Path(__file__).parent


def test_every_v1_name_resolves_to_its_v2_class():
    for v1, v2 in registry.V1_TO_V2.items():
        if v2 in registry.layer_type_list():
            assert registry.layer_class(v1) is registry.layer_class(v2)


@pytest.mark.parametrize("type_name", registry.layer_type_list())
def test_every_layer_with_a_backward_is_gradient_checked(type_name):
    cls = registry.layer_class(type_name)
    if cls.backward is Layer.backward or type_name in ("Input", "DummyData", "Data",
                                                       "MemoryData"):
        return
    tables = "".join(p.read_text() for p in HERE.glob("test_*.py"))
    assert f'type: "{type_name}"' in tables, f"{type_name} has a backward but no test table row"
