"""The harness itself must catch what it is for: a missing error, a changed input, a stray file."""
import pytest

from harness import Case, check_case
from protonet.errors import PrototxtError


def _raise(tmp):
    raise PrototxtError(f"{tmp}/net.prototxt:1:1: bad thing")


def test_a_case_passes_when_the_error_is_clear(tmp_path):
    check_case(Case("ok", _raise, PrototxtError, ("net.prototxt", "bad thing")), tmp_path)


@pytest.mark.parametrize("case", [
    Case("no error", lambda tmp: None, PrototxtError),
    Case("missing word", _raise, PrototxtError, ("layer 'conv1'",)),
    Case("input changed", lambda tmp: (tmp / "a").write_text("y") or _raise(tmp), PrototxtError,
         files={"a": "x"}),
    Case("stray file", lambda tmp: (tmp / "b").write_text("y") or _raise(tmp), PrototxtError),
], ids=str)
def test_the_harness_catches(case, tmp_path):
    with pytest.raises(AssertionError):
        check_case(case, tmp_path)
