"""Bad files and bad output paths: data loss, unwritable outputs, non-finite numbers, damaged
solverstates and LMDBs, IDX files and image lists, output arguments (issue 15 classes 1, 2, 4,
6, 9). Each case: the input, the command or call, the error class and the words it must say;
inputs left byte-identical, no stray files."""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from harness import Case, check_case, ids
from protonet import caffe_pb2, prototxt
from protonet.errors import (DataError, NonFiniteError, OutputError, PrototxtError,
                             ProtonetError, SolverConfigError)

LONG = "n" * 300  # longer than any file system's NAME_MAX (255)

# -- inputs ----------------------------------------------------------------------------------
DEPLOY = """name: "small"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 1 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""

SCORED = """name: "scored"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
    data_filler { type: "%s" %s } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
  include { phase: TEST } }
"""
GOOD_NET = SCORED % ("gaussian", "std: 1")
NAN_DATA_NET = SCORED % ("constant", "value: nan")

SOLVER = {"net": '"{tmp}/net.prototxt"', "base_lr": "0.01", "lr_policy": '"fixed"',
          "max_iter": "2", "display": "0", "snapshot_prefix": '"{tmp}/snap"', "random_seed": "3"}


def _net_file(tmp: Path, text: str = GOOD_NET) -> Path:
    (tmp / "net.prototxt").write_text(text)
    return tmp / "net.prototxt"


def _solver_file(tmp: Path, extra: str = "", prefix: str | None = None) -> Path:
    """The solver for net.prototxt; fields in `extra` replace the defaults."""
    fields = dict(SOLVER)
    if prefix is not None:
        fields["snapshot_prefix"] = f'"{prefix}"'
    given = set(re.findall(r"(\w+)\s*:", extra))
    text = " ".join(f"{k}: {v}" for k, v in fields.items() if k not in given)
    (tmp / "solver.prototxt").write_text(f"{text.replace('{tmp}', str(tmp))}\n{extra}\n")
    return tmp / "solver.prototxt"


def _save_weights(tmp: Path, text: str, name: str, poke=None) -> None:
    """A caffemodel of `text`'s net (TEST phase); `poke(net_param)` damages it first."""
    import protonet
    from protonet.io.caffemodel import net_to_proto
    with protonet.Net(param=prototxt.parse_net_text(text), phase=protonet.TEST) as net:
        proto = net_to_proto(net)
    if poke is not None:
        poke(proto)
    (tmp / name).write_bytes(proto.SerializeToString())


def _deploy(tmp: Path, poke=None) -> None:
    (tmp / "deploy.prototxt").write_text(DEPLOY)
    _save_weights(tmp, DEPLOY, "w.caffemodel", poke)


def _scored(tmp: Path, poke=None, net=GOOD_NET) -> None:
    _net_file(tmp, net)
    _save_weights(tmp, net, "w.caffemodel", poke)


def _blob_value(layer: str, blob: int, value: float, index: int = 0):
    def poke(proto):
        for lp in proto.layer:
            if lp.name == layer:
                lp.blobs[blob].data[index] = value
    return poke


def _file_in_the_way(tmp: Path) -> None:
    (tmp / "afile").write_text("a regular file\n")


def _folder(tmp: Path) -> None:
    for name in ("out", "out.dot", "out.svg"):
        (tmp / name).mkdir()
        (tmp / name / "keep.txt").write_text("the user's file\n")


# -- LMDBs -------------------------------------------------------------------------------------
def _lmdb(path: Path, count: int = 300, shape=(1, 28, 28), float_data=None, values=None) -> None:
    from protonet.io.datum import datum_from_array
    from protonet.io.lmdb_store import write_lmdb

    def records():
        for i in range(count):
            if values is not None:
                yield b"%08d" % i, values(i)
            elif float_data is not None:
                d = caffe_pb2.Datum(channels=1, height=1, width=3, label=0)
                d.float_data.extend(float_data(i))
                yield b"%08d" % i, d.SerializeToString()
            else:
                yield b"%08d" % i, datum_from_array(np.full(shape, i % 256, np.uint8), i % 10)
    write_lmdb(path, records())


def _scribbled(page: int, how: str):
    def setup(tmp):
        _lmdb(tmp / "db")
        with open(tmp / "db" / "data.mdb", "r+b") as f:
            if how == "ff":
                f.seek(page * 4096 + 16)
                f.write(b"\xff" * 512)
            else:
                f.seek(page * 4096)
                f.write(np.random.default_rng(page).bytes(4096))
    return setup


def _truncated(size: int):
    def setup(tmp):
        _lmdb(tmp / "db")
        os.truncate(tmp / "db" / "data.mdb", size)
    return setup


DATA_NET = """layer { name: "d" type: "Data" top: "data" top: "label"
  data_param { source: "{tmp}/db" batch_size: 4 backend: LMDB } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def _data_net(tmp: Path) -> None:
    text = DATA_NET.replace("{tmp}", str(tmp))
    if (tmp / "mean.binaryproto").exists():
        text = text.replace("backend: LMDB }", "backend: LMDB }\n  transform_param { "
                            f'mean_file: "{tmp}/mean.binaryproto" }}')
    (tmp / "net.prototxt").write_text(text)
    _solver_file(tmp)


def _mean_file(tmp: Path, values) -> None:
    blob = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=2)
    blob.data.extend(values)
    (tmp / "mean.binaryproto").write_bytes(blob.SerializeToString())


def _with_data_net(setup):
    def both(tmp):
        setup(tmp)
        _data_net(tmp)
    return both


def _open_data_net(tmp: Path):
    import protonet
    net = protonet.Net(param=prototxt.parse_net_text(DATA_NET.replace("{tmp}", str(tmp))),
                       phase=protonet.TRAIN)
    try:
        net.forward()
    finally:
        net.close()


# -- solverstates ----------------------------------------------------------------------------
def _snapshot(tmp: Path) -> None:
    """A real snapshot of a 2-iteration run: snap_iter_2.caffemodel and .solverstate."""
    from protonet.solvers import get_solver
    _net_file(tmp)
    solver = get_solver(str(_solver_file(tmp)))
    try:
        solver.step(2)
        solver.snapshot()
    finally:
        solver.close()


def _state(edit):
    """A snapshot whose .solverstate `edit(state)` damages (bad.solverstate)."""
    def setup(tmp):
        _snapshot(tmp)
        state = caffe_pb2.SolverState.FromString((tmp / "snap_iter_2.solverstate").read_bytes())
        edit(state)
        (tmp / "bad.solverstate").write_bytes(state.SerializeToString())
    return setup


def _state_bytes(make):
    def setup(tmp):
        _snapshot(tmp)
        (tmp / "bad.solverstate").write_bytes(make((tmp / "snap_iter_2.solverstate").read_bytes()))
    return setup


def _set_random(**fields):
    def edit(state):
        for name, value in fields.items():
            f = getattr(state.random_state, name)
            if isinstance(value, list):
                del f[:]
                f.extend(value)
            else:
                setattr(state.random_state, name, value)
    return edit


RESUME = ["train", "--solver", "{tmp}/solver.prototxt", "--snapshot", "{tmp}/bad.solverstate"]


def _resume_api(tmp: Path):
    from protonet.solvers import get_solver
    solver = get_solver(str(tmp / "solver.prototxt"))
    try:
        solver.restore(tmp / "bad.solverstate")
    finally:
        solver.close()


# -- IDX datasets ------------------------------------------------------------------------------
def _idx(images: bytes | None = None, labels: bytes | None = None):
    """Four IDX files in src/ (3 test and 3 train images); `images`/`labels` replace the
    training ones."""
    from protonet.io.idx import write_idx

    def setup(tmp):
        src = tmp / "src"
        src.mkdir()
        write_idx(src / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28)))
        write_idx(src / "t10k-labels-idx1-ubyte", np.zeros(3))
        write_idx(src / "train-images-idx3-ubyte", np.zeros((3, 28, 28)))
        write_idx(src / "train-labels-idx1-ubyte", np.zeros(3))
        if images is not None:
            (src / "train-images-idx3-ubyte").write_bytes(images)
        if labels is not None:
            (src / "train-labels-idx1-ubyte").write_bytes(labels)
    return setup


def _idx_header(type_byte: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, type_byte, len(dims)]) + np.asarray(dims, ">u4").tobytes()


GOOD_IMAGES = _idx_header(8, (3, 28, 28)) + bytes(3 * 784)
MNIST = ["data", "mnist", "{tmp}/out", "--from", "{tmp}/src"]


# -- image lists -------------------------------------------------------------------------------
def _images(tmp: Path) -> None:
    from PIL import Image
    (tmp / "img").mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((4, 5, 3), 40, np.uint8)).save(tmp / "img" / f"{name}.png")
    (tmp / "list.txt").write_text("a.png 0\nb.png 1\n")


def _images_and(extra):
    def setup(tmp):
        _images(tmp)
        extra(tmp)
    return setup


def _existing_lmdb(tmp: Path) -> None:
    _lmdb(tmp / "db", count=2)


def _lmdb_with_user_file(tmp: Path) -> None:
    _lmdb(tmp / "db", count=2)
    (tmp / "db" / "notes.txt").write_text("mine\n")


IMAGES = ["data", "images", "{tmp}/list.txt", "{tmp}/img"]


# ============================================================================================
# Class 1: data loss. An output never replaces a folder or file the tool did not create.
# ============================================================================================
DATA_LOSS = [
    Case("images: OUT is the image folder itself", IMAGES + ["{tmp}/img"], ProtonetError,
         ("img", "not an LMDB"), setup=_images),
    Case("images: OUT is a folder of the user's files", IMAGES + ["{tmp}/out"], ProtonetError,
         ("out", "not an LMDB"), setup=_images_and(_folder)),
    Case("images: OUT is an empty folder", IMAGES + ["{tmp}/out"], ProtonetError,
         ("not an LMDB",), setup=_images_and(lambda t: (t / "out").mkdir())),
    Case("images: OUT is an LMDB, no --overwrite", IMAGES + ["{tmp}/db"], ProtonetError,
         ("db", "already exists", "--overwrite"), setup=_images_and(_existing_lmdb)),
    Case("images: OUT is an LMDB plus a user's file, --overwrite", IMAGES + ["{tmp}/db",
         "--overwrite"], ProtonetError, ("not an LMDB",),
         setup=_images_and(_lmdb_with_user_file)),
    Case("images: OUT is a regular file", IMAGES + ["{tmp}/afile"], ProtonetError,
         ("afile", "is a file"), setup=_images_and(_file_in_the_way)),
    Case("images: OUT is the list file", IMAGES + ["{tmp}/list.txt"], ProtonetError,
         ("list.txt", "is a file"), setup=_images),
    Case("images: OUT is the filesystem root", IMAGES + ["/"], ProtonetError,
         ("not an LMDB",), setup=_images),
    Case("images: OUT is the home of the process", IMAGES + ["{tmp}"], ProtonetError,
         ("not an LMDB",), setup=_images),
    Case("images API: OUT is a folder (OutputError)", lambda t: __import__(
         "protonet.data.convert", fromlist=["x"]).convert_imageset(
         t / "list.txt", t / "img", t / "img"), OutputError, ("not an LMDB",), setup=_images),
    Case("images API: existing LMDB without overwrite (OutputError)", lambda t: __import__(
         "protonet.data.convert", fromlist=["x"]).convert_imageset(
         t / "list.txt", t / "img", t / "db"), OutputError, ("--overwrite",),
         setup=_images_and(_existing_lmdb)),
    Case("mnist: train LMDB already there", MNIST, ProtonetError,
         ("mnist_train_lmdb", "--overwrite"),
         setup=lambda t: (_idx()(t), (t / "out").mkdir(), _lmdb(t / "out/mnist_train_lmdb", 2))),
    Case("mnist: test LMDB path is a user's folder", MNIST + ["--overwrite"], ProtonetError,
         ("mnist_test_lmdb", "not an LMDB"),
         setup=lambda t: (_idx()(t), (t / "out/mnist_test_lmdb").mkdir(parents=True),
                          (t / "out/mnist_test_lmdb/x").write_text("x"))),
    Case("mnist: OUT_DIR is a regular file", ["data", "mnist", "{tmp}/afile", "--from",
         "{tmp}/src"], ProtonetError, ("afile", "is a file"),
         setup=lambda t: (_idx()(t), _file_in_the_way(t))),
    Case("fashion-mnist: train LMDB already there", ["data", "fashion-mnist", "{tmp}/out",
         "--from", "{tmp}/src"], ProtonetError, ("fashion_mnist_train_lmdb", "--overwrite"),
         setup=lambda t: (_idx()(t), (t / "out").mkdir(),
                          _lmdb(t / "out/fashion_mnist_train_lmdb", 2))),
    Case("mean: output is the database's data.mdb", ["data", "mean", "{tmp}/db",
         "{tmp}/db/data.mdb"], ProtonetError, ("data.mdb", "would overwrite"),
         setup=_existing_lmdb),
    Case("mean: output is the database folder", ["data", "mean", "{tmp}/db", "{tmp}/db"],
         ProtonetError, ("would overwrite",), setup=_existing_lmdb),
    Case("upgrade: output is the input", ["upgrade", "{tmp}/net.prototxt",
         "{tmp}/net.prototxt"], ProtonetError, ("would overwrite", "net.prototxt"),
         setup=_net_file),
    Case("upgrade --binary: output is the input", ["upgrade", "--binary", "{tmp}/w.caffemodel",
         "{tmp}/w.caffemodel"], ProtonetError, ("would overwrite",), setup=_scored),
    Case("fold-bn: folded weights onto the weights read", ["fold-bn", "{tmp}/deploy.prototxt",
         "{tmp}/w.caffemodel", "{tmp}/f.prototxt", "{tmp}/w.caffemodel"], ProtonetError,
         ("out weights", "would overwrite"), setup=_deploy),
    Case("fold-bn: folded net onto the net read", ["fold-bn", "{tmp}/deploy.prototxt",
         "{tmp}/w.caffemodel", "{tmp}/deploy.prototxt", "{tmp}/f.caffemodel"], ProtonetError,
         ("out net", "would overwrite"), setup=_deploy),
    Case("fold-bn: both outputs one file", ["fold-bn", "{tmp}/deploy.prototxt",
         "{tmp}/w.caffemodel", "{tmp}/f", "{tmp}/f"], ProtonetError, ("would overwrite",),
         setup=_deploy),
    Case("export: ONNX onto the caffemodel", ["export", "--onnx", "{tmp}/deploy.prototxt",
         "{tmp}/w.caffemodel", "{tmp}/w.caffemodel"], ProtonetError, ("would overwrite",),
         setup=_deploy),
    Case("draw: picture onto the net", ["draw", "{tmp}/net.prototxt", "{tmp}/net.prototxt"],
         ProtonetError, ("would overwrite",), setup=_net_file),
    Case("test: --log onto the net prototxt", ["test", "--model", "{tmp}/net.prototxt",
         "--weights", "{tmp}/w.caffemodel", "--log", "{tmp}/net.prototxt"], ProtonetError,
         ("log file", "would overwrite"), setup=_scored),
    Case("test: --log onto the weights", ["test", "--model", "{tmp}/net.prototxt",
         "--weights", "{tmp}/w.caffemodel", "--log", "{tmp}/w.caffemodel"], ProtonetError,
         ("would overwrite",), setup=_scored),
]


# ============================================================================================
# Class 4: outputs that cannot be written are refused before the work starts.
# ============================================================================================
WRITERS = {
    # name: (command with OUT for the output, setup)
    "upgrade": (["upgrade", "{tmp}/net.prototxt", "OUT"], _net_file),
    "upgrade --binary": (["upgrade", "--binary", "{tmp}/w.caffemodel", "OUT"], _scored),
    "draw .dot": (["draw", "{tmp}/net.prototxt", "OUT.dot"], _net_file),
    "draw .svg": (["draw", "{tmp}/net.prototxt", "OUT.svg"], _net_file),
    "fold-bn net": (["fold-bn", "{tmp}/deploy.prototxt", "{tmp}/w.caffemodel", "OUT",
                     "{tmp}/f.caffemodel"], _deploy),
    "fold-bn weights": (["fold-bn", "{tmp}/deploy.prototxt", "{tmp}/w.caffemodel",
                         "{tmp}/f.prototxt", "OUT"], _deploy),
    "export": (["export", "--onnx", "{tmp}/deploy.prototxt", "{tmp}/w.caffemodel", "OUT"],
               _deploy),
    "data mean": (["data", "mean", "{tmp}/db", "OUT"], _existing_lmdb),
    "test --log": (["test", "--model", "{tmp}/net.prototxt", "--weights", "{tmp}/w.caffemodel",
                    "--iterations", "1", "--log", "OUT"], _scored),
    "data images": (IMAGES + ["OUT"], _images),
}
PLACES = {
    # name: (path replacing OUT, extra setup, words)
    "onto a folder": ("{tmp}/out", _folder, ("out",)),
    "under a regular file": ("{tmp}/afile/x", _file_in_the_way, ("afile", "is a file")),
    "in a read-only place (/proc)": ("/proc/protonet-out", None, ("/proc",)),
    "with a name longer than NAME_MAX": ("{tmp}/" + LONG, None, ("characters long",)),
    "under a missing folder under a file": ("{tmp}/afile/sub/x", _file_in_the_way,
                                            ("afile",)),
}


def _both(a, b):
    def setup(tmp):
        a(tmp)
        if b is not None:
            b(tmp)
    return setup


UNWRITABLE = []
for writer, (command, setup) in WRITERS.items():
    for place, (path, extra, words) in PLACES.items():
        if writer == "data images" and place == "onto a folder":
            continue  # in DATA_LOSS
        argv = [a.replace("OUT", path) for a in command]
        UNWRITABLE.append(Case(f"{writer}: output {place}", argv, ProtonetError, words,
                               setup=_both(setup, extra)))

TRAIN = ["train", "--solver", "{tmp}/solver.prototxt"]


def _train_with_prefix(prefix: str, extra=None):
    def setup(tmp):
        _net_file(tmp)
        _solver_file(tmp, prefix=prefix.replace("{tmp}", str(tmp)))
        if extra is not None:
            extra(tmp)
    return setup


UNWRITABLE += [
    Case("train: snapshot_prefix under a regular file", TRAIN, ProtonetError,
         ("snapshot_prefix", "afile", "is a file"),
         setup=_train_with_prefix("{tmp}/afile/snap", _file_in_the_way)),
    Case("train: snapshot_prefix in /proc", TRAIN, ProtonetError,
         ("snapshot_prefix", "/proc", "cannot write"),
         setup=_train_with_prefix("/proc/protonet/snap")),
    Case("train: snapshot_prefix with a name longer than NAME_MAX", TRAIN, ProtonetError,
         ("snapshot_prefix", "characters long"), setup=_train_with_prefix("{tmp}/" + LONG)),
    Case("train: snapshot file is a folder", TRAIN, ProtonetError,
         ("snapshot_prefix", "is a folder"),
         setup=_train_with_prefix("{tmp}/snap", lambda t: (t / "snap_iter_0.caffemodel").mkdir())),
    Case("train: learning curve path is a folder", TRAIN, ProtonetError,
         ("learning curve", "snap_curve.png", "folder"),
         setup=_train_with_prefix("{tmp}/snap", lambda t: (t / "snap_curve.png").mkdir())),
    Case("train: --log onto a folder", TRAIN + ["--log", "{tmp}/out"], ProtonetError,
         ("log file", "folder"), setup=_train_with_prefix("{tmp}/snap", _folder)),
    Case("train: --log under a regular file", TRAIN + ["--log", "{tmp}/afile/log"],
         ProtonetError, ("log file", "is a file"),
         setup=_train_with_prefix("{tmp}/snap", _file_in_the_way)),
    Case("train: --log in /proc", TRAIN + ["--log", "/proc/protonet.log"], ProtonetError,
         ("log file", "cannot write"), setup=_train_with_prefix("{tmp}/snap")),
    Case("train: --log onto the solver", TRAIN + ["--log", "{tmp}/solver.prototxt"],
         ProtonetError, ("would overwrite",), setup=_train_with_prefix("{tmp}/snap")),
    Case("Net.save under a regular file (OutputError)", lambda t: __import__("protonet").Net(
         t / "net.prototxt", __import__("protonet").TEST).save(t / "afile" / "w.caffemodel"),
         OutputError, ("afile", "not a folder"), setup=_both(_net_file, _file_in_the_way)),
    Case("Net.save onto a folder (OutputError)", lambda t: __import__("protonet").Net(
         t / "net.prototxt", __import__("protonet").TEST).save(t / "out"),
         OutputError, ("out", "folder"), setup=_both(_net_file, _folder)),
    Case("write_binaryproto in /proc (OutputError)", lambda t: __import__(
         "protonet.io.binaryproto", fromlist=["x"]).write_binaryproto(
         "/proc/protonet-mean.binaryproto", np.zeros((1, 1, 2, 2))), OutputError,
         ("/proc",)),
]


# ============================================================================================
# Class 6: NaN and Inf never pass silently.
# ============================================================================================
TEST_CMD = ["test", "--model", "{tmp}/net.prototxt", "--weights", "{tmp}/w.caffemodel",
            "--iterations", "2"]
NONFINITE = []
for value, label in ((float("nan"), "NaN"), (float("inf"), "Inf"), (float("-inf"), "-Inf")):
    for layer, blob in (("ip", 0), ("ip", 1)):
        NONFINITE.append(Case(f"test: {label} in caffemodel layer {layer} blob {blob}", TEST_CMD,
                              ProtonetError, ("w.caffemodel", f"layer '{layer}' blob {blob}",
                                              "NaN or Inf"),
                              setup=lambda t, v=value, l=layer, b=blob: _scored(
                                  t, _blob_value(l, b, v))))
    NONFINITE.append(Case(f"Net(weights=) with {label} weights (NonFiniteError)",
                          lambda t: __import__("protonet").Net(t / "net.prototxt",
                                                               __import__("protonet").TEST,
                                                               weights=t / "w.caffemodel"),
                          NonFiniteError, ("layer 'ip' blob 0", "NaN or Inf"),
                          setup=lambda t, v=value: _scored(t, _blob_value("ip", 0, v, 5))))
    NONFINITE.append(Case(f"fold-bn: {label} in the BatchNorm variance",
                          ["fold-bn", "{tmp}/deploy.prototxt", "{tmp}/w.caffemodel",
                           "{tmp}/f.prototxt", "{tmp}/f.caffemodel"], ProtonetError,
                          ("layer 'bn' blob 1", "NaN or Inf"),
                          setup=lambda t, v=value: _deploy(t, _blob_value("bn", 1, v))))
    NONFINITE.append(Case(f"export: {label} in conv weights",
                          ["export", "--onnx", "{tmp}/deploy.prototxt", "{tmp}/w.caffemodel",
                           "{tmp}/m.onnx"], ProtonetError, ("layer 'conv' blob 0",),
                          setup=lambda t, v=value: _deploy(t, _blob_value("conv", 0, v))))
    NONFINITE.append(Case(f"train --weights: {label} weights to fine-tune from",
                          TRAIN + ["--weights", "{tmp}/w.caffemodel"], ProtonetError,
                          ("w.caffemodel", "NaN or Inf"),
                          setup=lambda t, v=value: (_scored(t, _blob_value("ip", 1, v, 2)),
                                                    _solver_file(t))))

def _hdf5_weights(value: float):
    def setup(tmp):
        import h5py
        import protonet
        _net_file(tmp)
        with protonet.Net(tmp / "net.prototxt", protonet.TEST) as net:
            net.save_hdf5(tmp / "w.h5")
        with h5py.File(tmp / "w.h5", "r+") as f:
            f["data/ip/0"][0, 0] = value
    return setup


for value in ("nan", "inf"):
    NONFINITE.append(Case(f"test: {value} in HDF5 weights", ["test", "--model",
                          "{tmp}/net.prototxt", "--weights", "{tmp}/w.h5"], ProtonetError,
                          ("w.h5", "layer 'ip' blob 0", "NaN or Inf"),
                          setup=_hdf5_weights(float(value))))

for field_name in ("base_lr", "momentum", "weight_decay", "gamma", "power", "delta",
                   "clip_gradients", "momentum2", "rms_decay"):
    for value in ("nan", "inf"):
        NONFINITE.append(Case(f"train: solver {field_name}: {value}", TRAIN, ProtonetError,
                              ("solver.prototxt", field_name, "finite"),
                              setup=lambda t, f=field_name, v=value: (
                                  _net_file(t), _solver_file(t, f"{f}: {v}"))))
NONFINITE.append(Case("solver API: base_lr: -inf (SolverConfigError)", lambda t: __import__(
    "protonet.solvers", fromlist=["x"]).get_solver(str(t / "solver.prototxt")),
    SolverConfigError, ("base_lr",), setup=lambda t: (_net_file(t),
                                                      _solver_file(t, "base_lr: -inf"))))

NONFINITE += [
    Case("test: NaN data makes NaN loss and scores", ["test", "--model", "{tmp}/net.prototxt",
         "--weights", "{tmp}/w.caffemodel", "--iterations", "1"], ProtonetError,
         ("batch 0", "NaN or Inf", "layer 'data'"),
         setup=lambda t: _scored(t, net=NAN_DATA_NET)),
    Case("train: the one iteration overflows the weights, no snapshot",
         TRAIN, ProtonetError, ("iteration 1", "NaN or Inf", "ip"),
         setup=lambda t: (_net_file(t), _solver_file(
             t, "base_lr: 3e38 weight_decay: 1e30 max_iter: 1"))),
    Case("train: NaN data in the test net", TRAIN, ProtonetError,
         ("test net #0", "NaN or Inf", "layer 'data'"),
         setup=lambda t: (_net_file(t, NAN_DATA_NET), _solver_file(
             t, "test_iter: 1 test_interval: 1 test_initialization: true"))),
    Case("train: mean_file holding NaN", TRAIN, ProtonetError,
         ("mean.binaryproto", "NaN or Inf"),
         setup=_with_data_net(lambda t: (_lmdb(t / "db", 4, shape=(1, 2, 2)), _mean_file(
             t, [1.0, float("nan"), 0.0, 0.0])))),
    Case("read_binaryproto: Inf values (NonFiniteError)", lambda t: __import__(
         "protonet.io.binaryproto", fromlist=["x"]).read_binaryproto(t / "mean.binaryproto"),
         NonFiniteError, ("mean.binaryproto", "1 of 4"),
         setup=lambda t: _mean_file(t, [float("inf"), 0.0, 0.0, 0.0])),
    Case("data mean: NaN float_data", ["data", "mean", "{tmp}/db", "{tmp}/mean.binaryproto"],
         ProtonetError, ("db", "record 00000001", "NaN or Inf"),
         setup=lambda t: _lmdb(t / "db", 3, float_data=lambda i: [1.0, float("nan") if i == 1
                                                                  else 2.0, 3.0])),
    Case("data mean: Inf float_data", ["data", "mean", "{tmp}/db", "{tmp}/mean.binaryproto"],
         ProtonetError, ("record 00000000", "NaN or Inf"),
         setup=lambda t: _lmdb(t / "db", 3, float_data=lambda i: [float("inf"), 0.0, 0.0])),
]


# ============================================================================================
# Class 2: solverstates. Read as data, never unpickled; damage is a clear error.
# ============================================================================================
SOLVERSTATES = [
    Case("resume: random_state from another generator", RESUME, ProtonetError,
         ("bad.solverstate", "random_state", "MT19937"),
         setup=_state(_set_random(bit_generator="MT19937"))),
    Case("resume: random_state with one state word", RESUME, ProtonetError,
         ("random_state", "two 64-bit words"), setup=_state(_set_random(state=[5]))),
    Case("resume: random_state with three inc words", RESUME, ProtonetError,
         ("random_state", "two 64-bit words"), setup=_state(_set_random(inc=[1, 2, 3]))),
    Case("resume: random_state with an even increment", RESUME, ProtonetError,
         ("random_state", "odd"), setup=_state(_set_random(inc=[0, 2]))),
    Case("resume: random_state empty", RESUME, ProtonetError, ("random_state",),
         setup=_state(lambda s: s.random_state.Clear() or s.random_state.SetInParent())),
    Case("resume API: damaged random_state (PrototxtError)", _resume_api, PrototxtError,
         ("random_state",), setup=_state(_set_random(state=[]))),
    Case("resume: garbage bytes", RESUME, ProtonetError, ("bad.solverstate",
         "not a solver state"), setup=_state_bytes(lambda raw: b"\xff\xfe garbage" * 10)),
    Case("resume: truncated in the middle", RESUME, ProtonetError, ("bad.solverstate",),
         setup=_state_bytes(lambda raw: raw[:len(raw) // 2 + 1])),
    Case("resume: a pickle instead of a solverstate", RESUME, ProtonetError,
         ("bad.solverstate", "not a solver state"),
         setup=_state_bytes(lambda raw: pickle.dumps({"iter": 3}))),
    Case("resume: missing file", ["train", "--solver", "{tmp}/solver.prototxt", "--snapshot",
         "{tmp}/none.solverstate"], ProtonetError, ("none.solverstate", "cannot read"),
         setup=_snapshot),
    Case("resume: a folder", ["train", "--solver", "{tmp}/solver.prototxt", "--snapshot",
         "{tmp}"], ProtonetError, ("cannot read",), setup=_snapshot),
    Case("resume: negative iteration", RESUME, ProtonetError, ("iteration -5",),
         setup=_state(lambda s: setattr(s, "iter", -5))),
    Case("resume: one history blob too many", RESUME, ProtonetError, ("3 history blobs",),
         setup=_state(lambda s: s.history.add().CopyFrom(s.history[0]))),
    Case("resume: history of the wrong size", RESUME, ProtonetError, ("history 0",),
         setup=_state(lambda s: s.history[0].data.append(1.0))),
    Case("resume: history holding NaN", RESUME, ProtonetError, ("history 1", "NaN or Inf"),
         setup=_state(lambda s: s.history[1].data.__setitem__(0, float("nan")))),
    Case("resume: learned_net with NaN weights", RESUME, ProtonetError,
         ("snap_iter_2.caffemodel", "NaN or Inf"),
         setup=lambda t: (_state(lambda s: None)(t), _save_weights(
             t, GOOD_NET, "snap_iter_2.caffemodel", _blob_value("ip", 0, float("nan"))))),
    Case("resume: learned_net missing", RESUME, ProtonetError, ("gone.caffemodel",),
         setup=_state(lambda s: setattr(s, "learned_net", "/nonexistent/gone.caffemodel"))),
]


# ============================================================================================
# Class 9: damaged LMDBs are named, record and database, never a crash of the process.
# ============================================================================================
MEAN = ["data", "mean", "{tmp}/db", "{tmp}/mean.binaryproto"]
LMDBS = []
for page, how in ((2, "ff"), (3, "rand"), (5, "rand"), (6, "rand"), (8, "rand"), (34, "rand"),
                  (40, "ff"), (63, "ff"), (70, "ff")):
    LMDBS.append(Case(f"mean: page {page} scribbled ({how})", MEAN, ProtonetError,
                      ("LMDB", "db", "damaged"), setup=_scribbled(page, how)))
    LMDBS.append(Case(f"train: page {page} scribbled ({how})", TRAIN, ProtonetError,
                      ("layer 'd'", "db", "damaged"),
                      setup=_with_data_net(_scribbled(page, how))))
for size in (100_000, 50_000, 12_288):
    LMDBS.append(Case(f"mean: data.mdb truncated to {size} bytes", MEAN, ProtonetError,
                      ("db", "damaged"), setup=_truncated(size)))
    LMDBS.append(Case(f"Net API: data.mdb truncated to {size} bytes (DataError)",
                      _open_data_net, DataError, ("layer 'd'", "db"),
                      setup=_truncated(size)))
LMDBS += [
    Case("mean: meta pages scribbled", MEAN, ProtonetError, ("db", "not an LMDB"),
         setup=_scribbled(0, "ff")),
    Case("mean: data.mdb empty", MEAN, ProtonetError, ("db",), setup=_truncated(0)),
    Case("mean: folder without data.mdb", MEAN, ProtonetError, ("db",),
         setup=lambda t: (t / "db").mkdir()),
    Case("mean: no such database", MEAN, ProtonetError, ("db", "does not exist")),
    Case("mean: records that are not Datums", MEAN, ProtonetError,
         ("LMDB", "db", "record 00000000", "not a Datum"),
         setup=lambda t: _lmdb(t / "db", 2, values=lambda i: b"\xff\xff\xff")),
    Case("mean: record with too few pixels", MEAN, ProtonetError,
         ("db", "record 00000001", "values for shape"),
         setup=lambda t: _lmdb(t / "db", 3, values=lambda i: caffe_pb2.Datum(
             channels=1, height=2, width=2, data=b"\0" * (4 if i != 1 else 3)
         ).SerializeToString())),
    Case("mean: records of two shapes", MEAN, ProtonetError, ("db", "record 00000001"),
         setup=lambda t: _lmdb(t / "db", 2, values=lambda i: caffe_pb2.Datum(
             channels=1, height=2, width=2 + i, data=b"\0" * (4 + 2 * i)
         ).SerializeToString())),
    Case("mean: encoded record that does not decode", MEAN, ProtonetError,
         ("db", "record 00000000", "cannot decode"),
         setup=lambda t: _lmdb(t / "db", 1, values=lambda i: caffe_pb2.Datum(
             channels=3, height=2, width=2, data=b"\x89PNG broken", encoded=True
         ).SerializeToString())),
    Case("mean: empty database", MEAN, ProtonetError, ("db", "empty"),
         setup=lambda t: _lmdb(t / "db", 0)),
    Case("train: records that are not Datums", TRAIN, ProtonetError,
         ("layer 'd'", "db", "record 00000000", "not a Datum"),
         setup=_with_data_net(lambda t: _lmdb(t / "db", 2, values=lambda i: b"\xff\xff"))),
    Case("train: a bad record further on", TRAIN + ["--iters", "2"], ProtonetError,
         ("layer 'd'", "db", "record 00000005"),
         setup=_with_data_net(lambda t: _lmdb(t / "db", 8, values=lambda i: caffe_pb2.Datum(
             channels=1, height=2, width=2, data=b"\0" * (4 if i != 5 else 2)
         ).SerializeToString()))),
    Case("train: source is a regular file", TRAIN, ProtonetError, ("layer 'd'", "db"),
         setup=_with_data_net(lambda t: (t / "db").write_bytes(b"\0" * 8192))),
]


# ============================================================================================
# IDX files and image lists.
# ============================================================================================
DATASETS = [
    Case("mnist: images with a bad magic number", MNIST, ProtonetError,
         ("train-images-idx3-ubyte", "not an IDX file"),
         setup=_idx(images=b"\x12\x34\x08\x03" + GOOD_IMAGES[4:])),
    Case("mnist: images with an unknown type byte", MNIST, ProtonetError,
         ("train-images-idx3-ubyte", "not an IDX file"),
         setup=_idx(images=b"\0\0\x07\x03" + GOOD_IMAGES[4:])),
    Case("mnist: images with 2 dimensions", MNIST, ProtonetError,
         ("train-images-idx3-ubyte", "2 dimensions"),
         setup=_idx(images=_idx_header(8, (3, 784)) + bytes(3 * 784))),
    Case("mnist: images truncated", MNIST, ProtonetError,
         ("train-images-idx3-ubyte", "truncated"), setup=_idx(images=GOOD_IMAGES[:-10])),
    Case("mnist: images with bytes after the end", MNIST, ProtonetError,
         ("train-images-idx3-ubyte",), setup=_idx(images=GOOD_IMAGES + b"\0")),
    Case("mnist: images header truncated", MNIST, ProtonetError,
         ("train-images-idx3-ubyte", "truncated"), setup=_idx(images=GOOD_IMAGES[:9])),
    Case("mnist: images empty file", MNIST, ProtonetError,
         ("train-images-idx3-ubyte", "not an IDX file"), setup=_idx(images=b"")),
    Case("mnist: images a broken gzip", MNIST, ProtonetError,
         ("train-images-idx3-ubyte", "decompress"), setup=_idx(images=b"\x1f\x8b\x08broken")),
    Case("mnist: labels count differs", MNIST, ProtonetError, ("3 images", "4 labels"),
         setup=_idx(labels=_idx_header(8, (4,)) + bytes(4))),
    Case("mnist: huge dimensions in the header", MNIST, ProtonetError,
         ("train-images-idx3-ubyte",),
         setup=_idx(images=_idx_header(8, (4_000_000_000, 28, 28)) + bytes(10))),
    Case("mnist: --from folder missing files", MNIST, ProtonetError, ("src", "missing"),
         setup=lambda t: (t / "src").mkdir()),
    Case("images: list file missing", IMAGES + ["{tmp}/db"], ProtonetError,
         ("list.txt", "cannot read"), setup=lambda t: (t / "img").mkdir()),
    Case("images: list file is a folder", IMAGES + ["{tmp}/db"], ProtonetError,
         ("list.txt",), setup=lambda t: ((t / "img").mkdir(), (t / "list.txt").mkdir())),
    Case("images: list line without a label", IMAGES + ["{tmp}/db"], ProtonetError,
         ("list.txt:2", "path label"),
         setup=_images_and(lambda t: (t / "list.txt").write_text("a.png 0\nb.png\n"))),
    Case("images: list with a non-integer label", IMAGES + ["{tmp}/db"], ProtonetError,
         ("list.txt:1",),
         setup=_images_and(lambda t: (t / "list.txt").write_text("a.png 0.5\n"))),
    Case("images: empty list", IMAGES + ["{tmp}/db"], ProtonetError, ("no entries",),
         setup=_images_and(lambda t: (t / "list.txt").write_text("\n\n"))),
]

# Inputs whose name is longer than NAME_MAX: an error naming the path, not an OSError.
LONG_INPUT = "{tmp}/" + LONG
DATASETS += [
    Case(f"input name longer than NAME_MAX: {' '.join(argv[:2])}", argv, ProtonetError,
         ("nnnnnnnn",), setup=setup)
    for argv, setup in [
        (["data", "mean", LONG_INPUT, "{tmp}/mean.binaryproto"], None),
        (["data", "mnist", "{tmp}/out", "--from", LONG_INPUT], None),
        (IMAGES[:1] + [LONG_INPUT, "{tmp}/img", "{tmp}/db"], _images),
        (["test", "--model", LONG_INPUT, "--weights", "{tmp}/w.caffemodel"], _scored),
        (["train", "--solver", LONG_INPUT], None),
        (["upgrade", LONG_INPUT, "{tmp}/up.prototxt"], None),
        (["draw", LONG_INPUT, "{tmp}/net.dot"], None),
        (["export", "--onnx", "{tmp}/deploy.prototxt", LONG_INPUT, "{tmp}/m.onnx"], _deploy),
    ]]

ALL = DATA_LOSS + UNWRITABLE + NONFINITE + SOLVERSTATES + LMDBS + DATASETS


def test_the_table_is_large_and_names_are_unique():
    assert len(ALL) >= 100
    assert len({c.name for c in ALL}) == len(ALL)


@pytest.mark.parametrize("case", ALL, ids=ids(ALL))
def test_bad_file(case, tmp_path):
    check_case(case, tmp_path)
