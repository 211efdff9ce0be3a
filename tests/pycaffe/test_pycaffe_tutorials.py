"""Caffe's four tutorial notebooks, as the scripts in examples/, run to their end on
`import caffe` with small sizes (the scripts' defaults are the notebooks')."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
FASHION = Path("/usr/share/datasets/fashion-mnist")


def run_tutorial(tmp_path, script, *args, fashion=False):
    if fashion and not FASHION.is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI must have Debian's dataset-fashion-mnist (make test installs it)")
        pytest.skip("real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]), MPLBACKEND="Agg")
    result = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--out", str(out),
                             *map(str, args)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"done; files in {out}" in result.stdout
    return result.stdout, out


def test_00_classification(tmp_path):
    stdout, out = run_tutorial(tmp_path, "00_classification.py", "--batch", 2, "--image-size",
                               67, "--fc-width", 64, "--timing-runs", 1)
    assert "predicted class is:" in stdout and "fc8\t(1000, 64) (1000,)" in stdout
    assert {"conv1_filters.png", "pool5_output.png", "prob.png"} <= {
        p.name for p in out.iterdir()}


def test_net_surgery(tmp_path):
    stdout, out = run_tutorial(tmp_path, "net_surgery.py", "--image-size", 67, "--conv-size",
                               131, "--fc-width", 64)
    pre, post = (float(re.search(rf"{when}-surgery output mean (-?[\d.]+)", stdout).group(1))
                 for when in ("pre", "post"))
    assert post - pre == pytest.approx(1, abs=0.011)   # the first filter's bias set to 1
    assert "fc6-conv weights are (64, 256, 1, 1) dimensional" in stdout
    assert "fully convolutional and classifier outputs agree on a classifier-sized input" in stdout
    assert (out / "bvlc_caffenet_full_conv.caffemodel").is_file()


@pytest.mark.slow
def test_01_learning_lenet(tmp_path):
    stdout, out = run_tutorial(tmp_path, "01_learning_lenet.py", "--niter", 10,
                               "--test-interval", 5, "--test-iters", 2, "--custom-niter", 10, fashion=True)
    assert "LeNet test accuracy:" in stdout and "Custom net test accuracy:" in stdout
    assert (out / "lenet_auto_train.prototxt").read_text().startswith('layer {\n  name: "data"')
    assert (out / "custom_training.png").is_file()


@pytest.mark.slow
def test_02_fine_tuning(tmp_path):
    stdout, out = run_tutorial(tmp_path, "02_fine_tuning.py", "--image-size", 67, "--fc-width",
                               64, "--batch-size", 4, "--niter", 2, "--test-iters", 1,
                               "--images", 40, fashion=True)
    assert "Accuracy, finetuned from ImageNet initialization" in stdout
    assert "top 5 predicted style labels =" in stdout
    assert (out / "loss.png").is_file()
