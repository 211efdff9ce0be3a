"""Files are safe: snapshots survive kill -9 at any moment and resume, stale temporary files of
ours are cleaned (never the user's), a solverstate's old pickled random state is never
unpickled, a snapshot that cannot be written goes to a fallback, LMDB outputs are replaced only
when asked, numpy's warnings stay off the terminal (issue 15)."""
from __future__ import annotations

import logging
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import protonet
from protonet import caffe_pb2
from protonet.errors import OutputError
from protonet.io.atomic import atomic_write, is_our_temp, remove_stale_temps
from protonet.io.solverstate import read_solverstate
from protonet.solvers import get_solver

ROOT = Path(__file__).resolve().parents[1]

# Big enough that writing a snapshot takes a good part of each iteration (4 MB of weights,
# as much history), so kills land inside writes.
NET = """name: "wide"
layer { name: "data" type: "DummyData" top: "x" top: "t"
  dummy_data_param { shape { dim: 4 dim: 1000 } shape { dim: 4 dim: 1000 }
                     data_filler { type: "gaussian" std: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
  inner_product_param { num_output: 1000 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
"""


def _write_solver(tmp: Path, max_iter: int = 100000, snapshot: int = 1,
                  base_lr: str = "0.001", extra: str = "", prefix: str = "snap") -> Path:
    (tmp / "net.prototxt").write_text(NET)
    solver = tmp / "solver.prototxt"
    solver.write_text(f'net: "{tmp}/net.prototxt" base_lr: {base_lr} lr_policy: "fixed" '
                      f'momentum: 0.9 max_iter: {max_iter} snapshot: {snapshot} display: 0 '
                      f'snapshot_prefix: "{tmp}/{prefix}" random_seed: 5 {extra}\n')
    return solver


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if is_our_temp(p.name))


def _iteration(path: Path) -> int:
    return int(path.name.rsplit("_iter_", 1)[1].split(".")[0])


def _check_every_snapshot_loads(tmp: Path) -> int:
    """Every snapshot pair left loads (weights into the net, state parsed); the latest iter."""
    states = sorted(tmp.glob("snap_iter_*.solverstate"), key=_iteration)
    with protonet.Net(tmp / "net.prototxt", protonet.TEST) as net:
        for model in tmp.glob("snap_iter_*.caffemodel"):
            net.copy_from(model)
    for state in states:
        data = read_solverstate(state)
        assert data.iter == _iteration(state) and data.random_state is not None
        assert Path(data.learned_net).exists()
    return _iteration(states[-1]) if states else 0


def test_kill_9_during_snapshots_leaves_loadable_snapshots_and_resume_works(tmp_path):
    solver = _write_solver(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    chance = random.Random(15)
    latest = 0
    for run in range(4):
        argv = [sys.executable, "-m", "protonet", "train", "--solver", str(solver), "--no-plot"]
        if latest:
            argv += ["--snapshot", str(tmp_path / f"snap_iter_{latest}.solverstate")]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline, started = time.time() + 60, 0
        for line in proc.stderr:  # the second snapshot starts when the first is complete
            started += "Snapshotting to binary proto" in line
            if started == 2 or time.time() > deadline:
                break
        delay = chance.uniform(0.0, 1.5)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        previous, latest = latest, _check_every_snapshot_loads(tmp_path)
        assert latest > previous, f"run {run} (killed after {delay:.2f} s) lost a snapshot"
        # A killed run may leave the temporary files it was writing (a model and a state),
        # never more: those of earlier runs were cleaned when the next run started.
        assert len(_temps(tmp_path)) <= 2, (run, delay, _temps(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "protonet", "train", "--solver", str(solver), "--no-plot",
         "--snapshot", str(tmp_path / f"snap_iter_{latest}.solverstate"),
         "--iters", str(latest + 2)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"snap_iter_{latest + 2}.caffemodel" in result.stderr
    assert _temps(tmp_path) == []
    _check_every_snapshot_loads(tmp_path)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_of_ours_are_removed_and_nothing_else(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    ours_stale = [f".snap_iter_4.caffemodel.pn{dead}.abcd1234.tmp",
                  f".snap_iter_4.solverstate.pn{dead}.x_y_z_01.tmp"]
    kept = [f".snap_iter_4.caffemodel.pn{alive}.abcd1234.tmp",  # a live writer's
            ".snap_iter_4.caffemodel.tmp", ".snap_iter_4.caffemodel.1234.tmp",  # not ours
            f".snap_iter_4.caffemodel.pn{dead}.tmp", f"snap.pn{dead}.abcd1234.tmp",
            f".other_iter_4.caffemodel.pn{dead}.abcd1234.tmp"]  # another prefix's
    for name in ours_stale + kept:
        (tmp_path / name).write_text("x")
    (tmp_path / f".snap_lmdb.pn{dead}.qwertyui.tmp").mkdir()  # a killed conversion's folder
    removed = remove_stale_temps(tmp_path, "snap")
    assert sorted(p.name for p in removed) == sorted(
        ours_stale + [f".snap_lmdb.pn{dead}.qwertyui.tmp"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
    # Training start cleans the snapshot folder the same way.
    (tmp_path / ours_stale[0]).write_text("x")
    solver = get_solver(str(_write_solver(tmp_path, max_iter=1, snapshot=0)))
    solver.solve()
    solver.close()
    assert not (tmp_path / ours_stale[0]).exists()
    assert all((tmp_path / name).exists() for name in kept)


def test_old_pickled_random_state_is_never_unpickled(tmp_path):
    marker = tmp_path / "pickle-ran"

    class RunsCode:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    solver = get_solver(str(_write_solver(tmp_path, max_iter=2, snapshot=0)))
    solver.step(2)
    _, state_path = solver.snapshot()
    solver.close()
    state = caffe_pb2.SolverState.FromString(Path(state_path).read_bytes())
    state.ClearField("random_state")
    state.rng_state = pickle.dumps(RunsCode())
    Path(state_path).write_bytes(state.SerializeToString())
    resumed = get_solver(str(tmp_path / "solver.prototxt"))
    logger, seen = logging.getLogger("protonet"), []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)  # the CLI's set-up stops propagation, so not caplog
    try:
        resumed.restore(state_path)
    finally:
        logger.removeHandler(handler)
    assert not marker.exists()
    assert any("old pickled form" in m and "resuming with random seed" in m for m in seen)
    assert resumed.iter == 2
    resumed.step(1)
    resumed.close()


def test_old_pickled_plain_random_state_is_read_as_data_for_an_exact_resume(tmp_path):
    (tmp_path / "a").mkdir()
    straight = get_solver(str(_write_solver(tmp_path / "a", max_iter=4, snapshot=0)))
    straight.step(4)
    solver = get_solver(str(_write_solver(tmp_path, max_iter=4, snapshot=0)))
    solver.step(2)
    _, state_path = solver.snapshot()
    solver.close()
    # The form older protonet wrote: pickle.dumps of numpy's state dict.
    state = caffe_pb2.SolverState.FromString(Path(state_path).read_bytes())
    legacy = read_solverstate(state_path).random_state
    state.ClearField("random_state")
    state.rng_state = pickle.dumps(legacy)
    Path(state_path).write_bytes(state.SerializeToString())
    resumed = get_solver(str(tmp_path / "solver.prototxt"))
    resumed.restore(state_path)
    resumed.step(2)
    assert np.array_equal(resumed.net.params["ip"][0].data, straight.net.params["ip"][0].data)
    resumed.close()
    straight.close()


def test_random_state_is_plain_integers_and_round_trips(tmp_path):
    solver = get_solver(str(_write_solver(tmp_path, max_iter=2, snapshot=0)))
    solver.step(1)
    _, path = solver.snapshot()
    expected = protonet.rng.generator().bit_generator.state
    solver.close()
    state = caffe_pb2.SolverState.FromString(Path(path).read_bytes())
    assert not state.HasField("rng_state") and state.random_state.bit_generator == "PCG64"
    assert read_solverstate(path).random_state == expected


def test_a_snapshot_that_cannot_be_written_goes_to_a_fallback(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    solver = get_solver(str(_write_solver(tmp_path, max_iter=1, snapshot=0, prefix="out/snap")))
    solver.check_outputs()
    solver.step(1)
    out.rmdir()
    out.write_text("the folder was replaced by a file during training")
    with pytest.raises(OutputError, match="saved to .* instead") as caught:
        solver.snapshot()
    solver.close()
    saved = str(caught.value).rsplit("saved to ", 1)[1].split(" and ")[0]
    with protonet.Net(tmp_path / "net.prototxt", protonet.TEST) as net:
        net.copy_from(saved)
        assert np.array_equal(net.params["ip"][0].data, solver.net.params["ip"][0].data)
    Path(saved).unlink()
    Path(saved).with_suffix(".solverstate").unlink()


def test_an_lmdb_is_replaced_only_when_asked_and_a_user_folder_never(tmp_path):
    from PIL import Image
    from protonet.data.convert import convert_imageset
    from protonet.io.lmdb_store import iter_records
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    (tmp_path / "one.txt").write_text("a.png 0\n")
    (tmp_path / "two.txt").write_text("a.png 0\na.png 1\n")
    convert_imageset(tmp_path / "one.txt", tmp_path / "img", tmp_path / "db")
    with pytest.raises(OutputError, match="--overwrite"):
        convert_imageset(tmp_path / "two.txt", tmp_path / "img", tmp_path / "db")
    convert_imageset(tmp_path / "two.txt", tmp_path / "img", tmp_path / "db", overwrite=True)
    assert len(list(iter_records(tmp_path / "db"))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db", "img", "one.txt", "two.txt"]
    with pytest.raises(OutputError, match="not an LMDB"):
        convert_imageset(tmp_path / "two.txt", tmp_path / "img", tmp_path / "img",
                         overwrite=True)
    assert [p.name for p in (tmp_path / "img").iterdir()] == ["a.png"]


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "w.caffemodel"
    target.write_bytes(b"old")

    with pytest.raises(TypeError):
        atomic_write(target, object())  # type: ignore[arg-type]
    assert target.read_bytes() == b"old" and _temps(tmp_path) == []


def test_numpy_warnings_stay_off_the_terminal_one_error_line_instead(tmp_path):
    _write_solver(tmp_path, max_iter=1, snapshot=0, base_lr="3e38", extra="weight_decay: 1e30")
    result = subprocess.run([sys.executable, "-m", "protonet", "train", "--solver",
                             str(tmp_path / "solver.prototxt")], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert result.returncode == 1
    assert "Warning" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "NaN or Inf" in errors[0], result.stderr
    assert not list(tmp_path.glob("snap_iter_*"))
