import logging
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CAFFE_MODELS = SHARED / "caffe-models"
sys.path.insert(0, str(ROOT / "tests"))  # `import reference.<family>`


@pytest.fixture
def caffe_models() -> Path:
    """../shared/caffe-models (Caffe's example and zoo prototxts), or skip with the reason."""
    if not CAFFE_MODELS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{CAFFE_MODELS} is missing; CI must run the conformance tests")
        pytest.skip(f"{CAFFE_MODELS} not present (Caffe's prototxts live beside the repo "
                    "in ../shared/caffe-models)")
    return CAFFE_MODELS


@pytest.fixture
def seed() -> int:
    from protonet import rng
    rng.set_random_seed(1701)
    return 1701


@pytest.fixture(autouse=True)
def _protonet_logger_restored():
    """Commands run in-process set up the "protonet" logger as the CLI does (own handler, no
    propagation): put it back after each test, so tests reading the log with caplog see it
    whatever ran before them."""
    logger = logging.getLogger("protonet")
    saved = logger.level, list(logger.handlers), logger.propagate
    yield
    logger.level, logger.propagate = saved[0], saved[2]
    logger.handlers[:] = saved[1]
