import logging
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CAFFE_MODELS = SHARED / "caffe-models"
sys.path.insert(0, str(ROOT / "tests"))  # `import reference.<family>`


def shared_folder(path: Path, what: str) -> Path:
    """`path` under ../shared, or skip the test saying what is missing (fail under CI)."""
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing; CI must run the conformance tests")
        pytest.skip(f"{path} not present ({what} live beside the repo in "
                    f"../shared/{path.relative_to(SHARED)})")
    return path


@pytest.fixture
def caffe_models() -> Path:
    """../shared/caffe-models (Caffe's example and zoo prototxts), or skip with the reason."""
    return shared_folder(CAFFE_MODELS, "Caffe's prototxts")


@pytest.fixture
def real_models() -> Path:
    """../shared/conformance/real-models (deploy prototxts of models people run), or skip."""
    return shared_folder(SHARED / "conformance" / "real-models", "the real deploy prototxts")


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
