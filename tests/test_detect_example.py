"""examples/detect.py end to end: OpenCV's res10 SSD face detector (from
../shared/conformance/real-models) with seeded random weights on a generated image."""
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, SHARED
from oracle_opencv import fill_random_weights
from PIL import Image, ImageDraw

import protonet

FACE_SSD = SHARED / "conformance" / "real-models" / "face_res10_ssd.prototxt"


@pytest.fixture
def face_ssd(tmp_path):
    if not FACE_SSD.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{FACE_SSD} is missing; CI must run the conformance tests")
        pytest.skip(f"{FACE_SSD} not present (the real-model prototxts live beside the repo "
                    "in ../shared/conformance/real-models)")
    net = protonet.Net(str(FACE_SSD), protonet.TEST)
    fill_random_weights(net, seed=5)
    weights = tmp_path / "random.caffemodel"
    net.save(str(weights))
    return FACE_SSD, weights


def run_example(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "examples" / "detect.py"), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)


def test_detect_draws_the_boxes_it_prints(face_ssd, tmp_path):
    prototxt, weights = face_ssd
    picture = Image.new("RGB", (320, 240), (40, 60, 80))
    ImageDraw.Draw(picture).ellipse((100, 50, 220, 200), fill=(230, 190, 160))
    source, output = tmp_path / "face.png", tmp_path / "boxes.png"
    picture.save(source)
    result = run_example(prototxt, weights, source, output, "--threshold", "0.3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    count = int(lines[0].split()[0])
    assert count > 0 and len(lines) == count + 1
    drawn = np.asarray(Image.open(output).convert("RGB"), np.int16)
    assert drawn.shape == (240, 320, 3)
    changed = np.abs(drawn - np.asarray(picture, np.int16)).sum(axis=2) > 0
    # Every printed box has its outline on the image: check its top-left corner pixel.
    for line in lines[1:]:
        x0, y0, x1, y1 = (int(v) for v in line.split("\t")[2:])
        near = changed[max(0, y0 - 2):y0 + 3, max(0, x0 - 2):x0 + 3]
        assert near.any(), f"no outline drawn near ({x0}, {y0}) for {line!r}"


def test_detect_reports_a_missing_image_and_writes_nothing(face_ssd, tmp_path):
    prototxt, weights = face_ssd
    result = run_example(prototxt, weights, tmp_path / "absent.png", tmp_path / "out.png")
    assert result.returncode == 1
    assert "detect.py:" in result.stderr and "absent.png" in result.stderr
    assert not (tmp_path / "out.png").exists()
