"""Property: whatever a damaged prototxt holds, reading it, building its net (both phases) and
running it forward and backward (or building its solver and stepping it) ends, in bounded
time, either fine or with a ProtonetError whose message is bounded; never another exception.

The cases are real prototxts (Caffe's examples in ../shared/caffe-models, and models/) with
hypothesis-chosen mutations (tests/bad_inputs/fuzzing.py). CI runs FUZZ_EXAMPLES (default 150)
of them; for a long run set PROTONET_FUZZ_EXAMPLES=5000, or use tools/fuzz_prototxt.py, which
counts outcomes.
"""
from __future__ import annotations

import os
import warnings

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bad_inputs.fuzzing import CAFFE_MODELS, KINDS, corpus, mutate, outcome  # noqa: E402

FUZZ_EXAMPLES = int(os.environ.get("PROTONET_FUZZ_EXAMPLES", "150"))
SEEDS = corpus()

steps = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 10**6),
                           st.integers(0, 10**6)), min_size=1, max_size=4)


@pytest.fixture(scope="module", autouse=True)
def _shared_models():
    if not CAFFE_MODELS.is_dir() and os.environ.get("CI"):
        pytest.fail(f"{CAFFE_MODELS} is missing; CI must fuzz Caffe's example prototxts")


# Fixed examples in CI (derandomized, no example database written); fresh ones on long runs.
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
          derandomize=not os.environ.get("PROTONET_FUZZ_EXAMPLES"),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.sampled_from(SEEDS), steps=steps)
def test_mutated_prototxts_end_in_protonet_errors_only(seed, steps):
    text = mutate(seed.text, steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # NaN arithmetic in fuzzed nets
        # Raises a TimeoutError on a hang, and anything that is not a ProtonetError.
        assert outcome(seed, text) in {"ok"} | _error_names()


def _error_names() -> set[str]:
    import protonet.errors as errors
    return {name for name, cls in vars(errors).items()
            if isinstance(cls, type) and issubclass(cls, errors.ProtonetError)}


def test_every_seed_builds_unmutated():
    """The corpus itself is sound: each seed reads, builds and runs (so mutations, not the
    seeds, are what the property above exercises)."""
    assert SEEDS, "no seed prototxts (models/ should always be there)"
    for seed in SEEDS:
        assert outcome(seed, seed.text) == "ok", seed.name
