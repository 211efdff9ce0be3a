"""Mutation fuzzing of real prototxts: the corpus, the mutations, and what one case runs.

Shared by the property-based test (test_parse_fuzz.py, bounded for CI) and
tools/fuzz_prototxt.py (thousands of cases, with counts). A case is a real prototxt with a few
mutations (a character replaced, a token deleted, duplicated or swapped for another, a number
made extreme, unicode whitespace inserted, the text cut short); it is read and, for nets,
built in both phases and run forward (solvers: built around a tiny net and stepped twice).
Only a ProtonetError may come out, and every case must end.

The corpus is Caffe's example prototxts in ../shared/caffe-models (data layers swapped for
DummyData, so nets build without their datasets) plus the repo's models/ folder.
"""
from __future__ import annotations

import contextlib
import logging
import re
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from protonet import caffe_pb2, graph, memory, prototxt, surgery
from protonet.errors import MAX_MESSAGE_CHARS, ProtonetError
from protonet.net import Net

ROOT = Path(__file__).resolve().parents[2]
CAFFE_MODELS = ROOT.parent / "shared" / "caffe-models"

# Nets small enough to build and run for every case (a second or less); the others are read
# and put through the graph transforms only. linreg is left out: its Python layer imports a
# module named in the file, and a mutated name could import anything.
BUILD = [
    "examples/mnist/lenet.prototxt", "examples/mnist/lenet_train_test.prototxt",
    "examples/cifar10/cifar10_quick_train_test.prototxt",
    "examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt",
    "examples/siamese/mnist_siamese_train_test.prototxt",
    "examples/hdf5_classification/nonlinear_train_val.prototxt",
    "examples/net_surgery/conv.prototxt",
]
GRAPH_ONLY = [
    "models/bvlc_googlenet/train_val.prototxt", "models/bvlc_alexnet/deploy.prototxt",
    "examples/finetune_pascal_detection/pascal_finetune_trainval_test.prototxt",
    "models/bvlc_reference_rcnn_ilsvrc13/deploy.prototxt",
]
SOLVERS = [
    "examples/mnist/lenet_solver.prototxt", "examples/mnist/lenet_solver_adam.prototxt",
    "examples/mnist/lenet_solver_rmsprop.prototxt", "examples/mnist/lenet_adadelta_solver.prototxt",
    "examples/mnist/lenet_multistep_solver.prototxt",
    "examples/mnist/mnist_autoencoder_solver_nesterov.prototxt",
    "examples/mnist/mnist_autoencoder_solver_adagrad.prototxt",
    "examples/cifar10/cifar10_full_sigmoid_solver_bn.prototxt",
    "models/bvlc_googlenet/quick_solver.prototxt",
]
DATA_SHAPES = {"data": (1, 28, 28), "pair_data": (2, 28, 28)}

# A tiny trainable net (DummyData, so no dataset is read): the solver and command-line tables
# build their cases on it; every fuzzed solver trains it with an Accuracy layer for testing.
TINY_TRAIN_NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
TINY_NET = TINY_TRAIN_NET + """layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc"
  include { phase: TEST } }
"""

# What one case may take: memory (mutated shapes are refused, not allocated) and time.
FUZZ_MEMORY_LIMIT = 256 << 20
CASE_SECONDS = 60   # as the bad-input table's bound: a hang, not a slow case on a busy box


@dataclass(frozen=True)
class Seed:
    name: str
    kind: str   # "net" (built and run), "graph" (read and ordered), "solver"
    text: str


def corpus() -> list[Seed]:
    """The seeds: Caffe's example prototxts (when ../shared is there) and models/*.prototxt."""
    seeds = []
    quiet = logging.getLogger("protonet")
    level, quiet.level = quiet.level, logging.ERROR
    try:
        for kind, names in (("net", BUILD), ("graph", GRAPH_ONLY), ("solver", SOLVERS)):
            for name in names:
                path = CAFFE_MODELS / name
                if not path.is_file():
                    continue
                seeds.append(_seed(name, kind, path))
        for path in sorted((ROOT / "models").glob("lenet*.prototxt")):
            kind = "solver" if "solver" in path.name else "net"
            seeds.append(_seed(f"models/{path.name}", kind, path))
    finally:
        quiet.level = level
    return seeds


def _seed(name: str, kind: str, path: Path) -> Seed:
    if kind != "net":
        return Seed(name, kind, path.read_text())
    param = surgery.swap_data_layers(prototxt.read_net(path), DATA_SHAPES, batch_size=2)
    return Seed(name, kind, text_format.MessageToString(param))


# -- mutations -------------------------------------------------------------------------------
TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|[A-Za-z_][\w.]*|[-+]?\.?\d[\w.+-]*|\S')
NUMBER = re.compile(r"[-+]?\.?\d")
EXTREMES = [
    "0", "-1", "1", "2", "-2147483648", "2147483647", "2147483648", "4294967295", "4294967296",
    "2000000000", "100000", "9223372036854775807", "-9223372036854775808",
    "18446744073709551615", "18446744073709551616", "1e308", "-1e308", "1e-45", "1e39",
    "nan", "inf", "-inf", "-0.0", "0.5", "-0.5", "0x7fffffff", "1e", "--1", "3.", "1_000",
]
WHITESPACE = ["\f", "\v", "\r", "\u2028", "\u2029", "\x85", "\xa0", "\u3000", "\t", "\x1c",
              "\ufeff", "\x00", "\r\n"]
CHARACTERS = ['"', "'", "{", "}", "<", ">", "[", "]", ":", ";", ",", "#", "\\", "-", ".",
              "0", "9", "a", "_", "é", "\u0301", "💥", "\x7f", " ", "\n"] + WHITESPACE
# Mutations that break the syntax, and (listed twice, so drawn more often) ones that keep it
# and so reach the net and solver checks: a number made extreme, a token swapped for one of
# its kind (a name for a name, a string for a string), a whole line dropped or repeated.
KINDS = ("flip", "delete", "duplicate", "swap", "space", "truncate", "repeat",
         "number", "alike", "line", "number", "alike", "line")


def mutate(text: str, steps) -> str:
    """`text` after each (kind, where, choice) in `steps`; `where` and `choice` are any
    non-negative integers, taken modulo what they index."""
    for kind, where, choice in steps:
        spans = [m.span() for m in TOKEN.finditer(text)]
        if not spans or not text:
            return text + CHARACTERS[choice % len(CHARACTERS)]
        a, b = spans[where % len(spans)]
        if kind == "flip":
            i = where % len(text)
            text = text[:i] + CHARACTERS[choice % len(CHARACTERS)] + text[i + 1:]
        elif kind == "delete":
            text = text[:a] + text[b:]
        elif kind == "duplicate":
            text = text[:b] + " " + text[a:b] + text[b:]
        elif kind == "swap":
            c, d = spans[choice % len(spans)]
            text = text[:a] + text[c:d] + text[b:]
        elif kind == "number":
            numbers = [s for s in spans if NUMBER.match(text, s[0])] or spans
            a, b = numbers[where % len(numbers)]
            text = text[:a] + EXTREMES[choice % len(EXTREMES)] + text[b:]
        elif kind == "space":
            text = text[:a] + WHITESPACE[choice % len(WHITESPACE)] + text[a:]
        elif kind == "truncate":
            text = text[:where % len(text)]
        elif kind == "alike":
            same = [s for s in spans if _token_class(text[s[0]:s[1]]) ==
                    _token_class(text[a:b])]
            c, d = same[choice % len(same)]
            text = text[:a] + text[c:d] + text[b:]
        elif kind == "line":
            lines = text.split("\n")
            i = where % len(lines)
            lines[i:i + 1] = [] if choice % 2 else [lines[i], lines[i]]
            text = "\n".join(lines)
        elif kind == "repeat":   # a token many times over: long lines, deep nesting
            text = text[:b] + (" " + text[a:b]) * (1 + choice % 2000) + text[b:]
    return text


def _token_class(token: str) -> str:
    if token.startswith('"'):
        return "string"
    if NUMBER.match(token):
        return "number"
    return "name" if token[0].isalpha() or token[0] == "_" else token


# -- one case --------------------------------------------------------------------------------
@contextlib.contextmanager
def bounded(seconds: int = CASE_SECONDS):
    """Within the block: a hang is a TimeoutError, and arrays over FUZZ_MEMORY_LIMIT are
    refused (a MemoryLimitError), so a mutated shape cannot take the machine's memory."""
    def hang(signum, frame):
        raise TimeoutError(f"case did not finish within {seconds} s")
    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    previous_limit = memory.set_limit(FUZZ_MEMORY_LIMIT)
    log = logging.getLogger("protonet")
    level, log.level = log.level, logging.CRITICAL
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        memory.set_limit(previous_limit)
        log.level = level


def exercise(seed: Seed, text: str) -> None:
    """What a user would do with the file: read it; build and run a net, order a big net's
    layers, or build a solver around a tiny net and step it. Raises what protonet raises."""
    name = f"fuzzed/{seed.name}"
    if seed.kind == "solver":
        _exercise_solver(name, text)
        return
    param = prototxt.parse_net_text(text, name)
    for phase in (caffe_pb2.TRAIN, caffe_pb2.TEST):
        if seed.kind == "graph":
            state = caffe_pb2.NetState(phase=phase)
            graph.insert_splits(graph.order_layers(graph.filter_net(param, state)))
            continue
        with Net(param=param, phase=phase, source=name) as net:
            net.forward()
            if phase == caffe_pb2.TRAIN:
                net.backward()


def _exercise_solver(name: str, text: str) -> None:
    from protonet.solvers import get_solver
    param = prototxt.upgrade_solver(
        prototxt.parse_text(text, caffe_pb2.SolverParameter(), name), name)
    with tempfile.TemporaryDirectory(prefix="protonet-fuzz-") as tmp:
        net_file = Path(tmp) / "tiny.prototxt"
        net_file.write_text(TINY_NET)
        solver = get_solver(param, train_net_file=str(net_file))
        try:
            # Train briefly and write nothing: the checks under test come before this.
            p = solver.param
            p.snapshot, p.snapshot_after_train, p.snapshot_prefix = 0, False, ""
            del p.test_iter[:]
            p.test_iter.extend([1] * len(solver.test_nets))
            solver.step(2)
        finally:
            solver.close()


def outcome(seed: Seed, text: str) -> str:
    """'ok', or the name of the ProtonetError subclass raised (the user is told what is
    wrong); anything else propagates (a bug: a stray exception, a hang, an unbounded
    message)."""
    with bounded():
        try:
            exercise(seed, text)
        except ProtonetError as e:
            message = str(e)
            if len(message) > MAX_MESSAGE_CHARS:
                raise AssertionError(f"error message of {len(message)} characters") from None
            return type(e).__name__
    return "ok"
