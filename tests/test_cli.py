"""The protonet command as a user runs it: errors in one line, training end to end on real data,
Ctrl-C, atomic snapshots under kill, exact resume from the command line."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from protonet import caffe_pb2

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")


def protonet(*args, cwd=ROOT, check=False, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "protonet", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, check=check, **kw)


def one_error_line(result):
    assert result.returncode == 1, result.stderr
    lines = [l for l in result.stderr.splitlines() if "error:" in l]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_user_mistakes_exit_1_with_one_line(tmp_path):
    assert "no such file" in one_error_line(protonet("train", tmp_path / "missing.prototxt"))
    bad = tmp_path / "bad_solver.prototxt"
    (tmp_path / "x.prototxt").write_text('layer { name: "a" type: "Input" top: "a" '
                                         'input_param { shape { dim: 1 } } }')
    bad.write_text(f'net: "{tmp_path}/x.prototxt"\nbase_lr: -1\n')
    assert "base_lr must not be negative" in one_error_line(protonet("train", bad))
    bad.write_text(f'net: "{tmp_path}/x.prototxt"\nbase_lr: 0.1 type: "Sgdd"\n')
    assert 'unknown solver type "Sgdd"' in one_error_line(protonet("train", bad))
    syntax = tmp_path / "syntax.prototxt"
    syntax.write_text('layer {\n  name: "a"\n  type "Input"\n}\n')
    assert f"{syntax}:3:" in one_error_line(protonet("time", "--model", syntax))
    assert "not both" in one_error_line(protonet("train", "--solver", bad, "--weights", "a",
                                                 "--snapshot", "b"))


def small_lenet(tmp_path, data_dir, max_iter=300, extra=""):
    net = (ROOT / "models/lenet_dsn.prototxt").read_text().replace(
        "data/fashion_mnist", str(data_dir))
    (tmp_path / "net.prototxt").write_text(net)
    (tmp_path / "net_solver.prototxt").write_text(f"""
        net: "{tmp_path}/net.prototxt" test_iter: 20 test_interval: {max_iter} base_lr: 0.01
        momentum: 0.9 weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001 power: 0.75
        display: 50 max_iter: {max_iter} snapshot_prefix: "{tmp_path}/snap" random_seed: 1701
        {extra}""")
    return tmp_path / "net.prototxt"


@pytest.fixture(scope="module")
def fashion_lmdbs(tmp_path_factory):
    if not FASHION.is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI must have Debian's dataset-fashion-mnist (make test installs it)")
        pytest.skip("real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    out = tmp_path_factory.mktemp("fashion")
    protonet("data", "fashion-mnist", out, check=True)
    return out


@pytest.mark.slow
def test_train_lenet_dsn_end_to_end_on_real_fashion_mnist(tmp_path, fashion_lmdbs):
    net = small_lenet(tmp_path, fashion_lmdbs, max_iter=300)
    result = protonet("train", net)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr
    assert "Using solver" in log and "Optimization Done." in log
    losses = [float(l.rsplit("loss = ", 1)[1]) for l in log.splitlines()
              if "] Iteration" in l and "), loss = " in l]
    assert losses[0] > 2.0 and losses[-1] < 0.8 * losses[0]
    accuracy = [float(l.rsplit("= ", 1)[1]) for l in log.splitlines()
                if "Test net output" in l and "accuracy" in l]
    assert accuracy[-1] > 0.6  # chance is 0.1
    assert (tmp_path / "snap_iter_300.caffemodel").exists()
    assert (tmp_path / "snap_iter_300.solverstate").exists()
    assert (tmp_path / "snap_curve.png").stat().st_size > 10_000
    # Caffe's parse_log.py regexes find the lines they look for.
    assert "Iteration 0, lr = " in log and "    Train net output #0: " in log
    test = protonet("test", "--model", net, "--weights", tmp_path / "snap_iter_300.caffemodel",
                    "--iterations", 5)
    assert test.returncode == 0 and "accuracy = " in test.stderr


@pytest.mark.slow
def test_resume_from_the_command_line_is_exact(tmp_path, fashion_lmdbs):
    net = small_lenet(tmp_path, fashion_lmdbs, max_iter=40, extra="snapshot: 20")
    assert protonet("train", net).returncode == 0
    straight = (tmp_path / "snap_iter_40.caffemodel").read_bytes()
    (tmp_path / "snap_iter_40.caffemodel").unlink()
    result = protonet("train", net, "--snapshot", tmp_path / "snap_iter_20.solverstate")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "snap_iter_40.caffemodel").read_bytes() == straight


@pytest.mark.slow
def test_sigint_snapshots_then_stops(tmp_path, fashion_lmdbs):
    net = small_lenet(tmp_path, fashion_lmdbs, max_iter=100000)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "protonet", "train", net], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    for line in proc.stderr:
        if "Iteration 50 " in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 0, rest[-2000:]
    assert "Optimization stopped early." in rest
    models = list(tmp_path.glob("snap_iter_*.caffemodel"))
    assert len(models) == 1
    state = caffe_pb2.SolverState.FromString(models[0].with_suffix(".solverstate").read_bytes())
    assert state.iter >= 50 and state.data_reader[0].position == 64 * state.iter


KILL_SCRIPT = """
import sys, numpy as np, protonet
from protonet import caffe_pb2, prototxt
net = protonet.Net(param=prototxt.parse_net_text('''
  layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3000000 } } }
  layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
          inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }'''),
  phase=protonet.TEST)
print("ready", flush=True)
i = 0
while True:
    net.params["ip"][0].data[...] = i
    net.save(sys.argv[1])
    i += 1
"""


def test_a_killed_snapshot_never_leaves_a_partial_file(tmp_path):
    target = tmp_path / "w.caffemodel"
    for delay in (0.05, 0.3, 0.7):
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(target)],
                                stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.kill()
        proc.wait()
        if target.exists():
            model = caffe_pb2.NetParameter.FromString(target.read_bytes())
            values = np.asarray(model.layer[1].blobs[0].data[:10])
            assert model.layer[1].name == "ip" and len(model.layer[1].blobs[0].data) == 6000000
            assert (values == values[0]).all()


def test_draw_without_graphviz_never_replaces_an_existing_dot_file(tmp_path, monkeypatch, capsys):
    """Asked for net.svg on a machine without Graphviz, `protonet draw` writes the graph's
    text to net.dot instead; a net.dot the user already has must survive, with one error."""
    import shutil

    from protonet import draw
    from protonet.cli import main
    real_which = shutil.which
    monkeypatch.setattr(draw.shutil, "which",
                        lambda name, *a, **k: None if name == "dot" else real_which(name, *a, **k))
    net = tmp_path / "net.prototxt"
    net.write_text('name: "n" input: "x" input_shape { dim: 1 dim: 2 }\n'
                   'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }\n')
    mine = tmp_path / "net.dot"
    mine.write_text("the user's own graph")
    assert main(["draw", str(net), str(tmp_path / "net.svg")]) == 1
    err = capsys.readouterr().err
    assert "net.dot" in err and "already exists" in err and "Traceback" not in err
    assert mine.read_text() == "the user's own graph"
    assert not (tmp_path / "net.svg").exists()
    mine.unlink()   # with no file in the way, the fallback is written
    assert main(["draw", str(net), str(tmp_path / "net.svg")]) == 0
    assert "digraph" in mine.read_text()
