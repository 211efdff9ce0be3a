"""VGG-16 and ResNet-50 deploy nets (models/, written by tools/make_zoo_models.py from the
published architectures): shapes as published, a batch-1 224x224 forward within 2 GB."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORWARD = """
import json, re, sys, numpy as np, protonet
protonet.set_random_seed(1701)
net = protonet.Net(sys.argv[1], protonet.TEST)
for layer in net.layers:   # trained-like statistics: unit variance (zero ones blow up)
    if layer.type == "BatchNorm":
        layer.blobs[1].data[...] = 1
        layer.blobs[2].data[...] = 1
x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
prob = net.forward(data=x)["prob"]
print(json.dumps({"shapes": {k: list(v.shape) for k, v in net.blobs.items()},
                  "prob_sum": float(prob.sum()), "finite": bool(np.isfinite(prob).all()),
                  "params": sum(b.count for blobs in net.params.values() for b in blobs),
                  # VmHWM: this process's own peak (ru_maxrss would include the parent's,
                  # inherited across the vfork+exec of subprocess).
                  "peak_mb": int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())
                                 .group(1)) / 1024}))
"""


def test_committed_prototxts_are_what_the_generator_writes():
    result = subprocess.run([sys.executable, str(ROOT / "tools/make_zoo_models.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("model, params, shapes", [
    ("vgg16_deploy", 138_357_544, {"pool1": [1, 64, 112, 112], "pool5": [1, 512, 7, 7],
                                   "fc6": [1, 4096], "prob": [1, 1000]}),
    ("resnet50_deploy", None, {"pool1": [1, 64, 56, 56], "res2c": [1, 256, 56, 56],
                               "res3d": [1, 512, 28, 28], "res4f": [1, 1024, 14, 14],
                               "res5c": [1, 2048, 7, 7], "pool5": [1, 2048, 1, 1],
                               "prob": [1, 1000]}),
])
def test_zoo_net_runs_forward_at_224_within_2_gb(model, params, shapes):
    result = subprocess.run([sys.executable, "-c", FORWARD, str(ROOT / f"models/{model}.prototxt")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for name, shape in shapes.items():
        assert report["shapes"][name] == shape, name
    assert report["finite"] and report["prob_sum"] == pytest.approx(1.0, abs=1e-4)
    if params:
        assert report["params"] == params   # the paper's 138M
    assert report["peak_mb"] < 2048
