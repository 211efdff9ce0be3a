"""Bad-input table: command lines with wrong arguments or files that do not parse. Each ends
with exit status 1 (2 for argparse's usage errors) and one error line that names the argument
or the file, and no file written."""
from __future__ import annotations

import pytest

from fuzzing import TINY_TRAIN_NET
from harness import Case, check_case, ids
from protonet.errors import ProtonetError

NET = TINY_TRAIN_NET
BROKEN_NET = NET.replace('top: "ip"\n', 'top "ip"\n')   # line 5
SOLVER = ('net: "net.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 2\ndisplay: 0\n'
          "snapshot_after_train: false\n")
FILES = {"net.prototxt": NET, "solver.prototxt": SOLVER}


def cli(name, argv, words, files=FILES):
    return Case(name, argv, ProtonetError, tuple(words), files=dict(files))


T = "{tmp}"
CASES = [
    # train
    cli("train with nothing", ["train"], ["solver"]),
    cli("train a net whose syntax is broken", ["train", f"{T}/net.prototxt"],
        ["net.prototxt:5:", "reading it as a net"], {"net.prototxt": BROKEN_NET}),
    cli("train a broken net with --solver", ["train", f"{T}/net.prototxt", "--solver",
                                             f"{T}/solver.prototxt"],
        ["net.prototxt:5:", "as a net"], {"net.prototxt": BROKEN_NET, "solver.prototxt": SOLVER}),
    cli("train a net with no solver beside it", ["train", f"{T}/net.prototxt"],
        ["net_solver.prototxt", "--solver"]),
    cli("train a missing file", ["train", f"{T}/nope.prototxt"], ["nope.prototxt"]),
    cli("train a missing solver", ["train", "--solver", f"{T}/nope.prototxt"],
        ["nope.prototxt", "no such file"]),
    cli("train a solver and --solver", ["train", f"{T}/solver.prototxt", "--solver",
                                        f"{T}/solver.prototxt"], ["--solver"]),
    cli("train --weights and --snapshot", ["train", "--solver", f"{T}/solver.prototxt",
                                           "--weights", "a", "--snapshot", "b"],
        ["--weights", "--snapshot"]),
    cli("train --iters 0", ["train", "--solver", f"{T}/solver.prototxt", "--iters", "0"],
        ["--iters"]),
    cli("train --iters -3", ["train", "--solver", f"{T}/solver.prototxt", "--iters", "-3"],
        ["--iters", "-3"]),
    cli("train --iters x", ["train", "--solver", f"{T}/solver.prototxt", "--iters", "x"],
        ["--iters", "invalid int"]),
    cli("train negative gamma", ["train", "--solver", f"{T}/solver.prototxt"],
        ["gamma"], {"net.prototxt": NET,
                    "solver.prototxt": SOLVER.replace('"fixed"', '"exp"\ngamma: -0.5')}),
    cli("train sigmoid stepsize 0", ["train", "--solver", f"{T}/solver.prototxt"],
        ["stepsize"], {"net.prototxt": NET,
                       "solver.prototxt": SOLVER.replace('"fixed"', '"sigmoid"\ngamma: 0.1')}),
    cli("train test_iter 0", ["train", "--solver", f"{T}/solver.prototxt"], ["test_iter"],
        {"net.prototxt": NET, "solver.prototxt": SOLVER + "test_iter: 0\ntest_interval: 1\n"}),
    cli("train Adam momentum2 1", ["train", "--solver", f"{T}/solver.prototxt"],
        ["momentum2"], {"net.prototxt": NET,
                        "solver.prototxt": SOLVER + 'type: "Adam"\nmomentum2: 1\n'}),
    cli("train group 0", ["train", "--solver", f"{T}/solver.prototxt"], ["group"],
        {"solver.prototxt": SOLVER, "net.prototxt": NET.replace(
            'type: "InnerProduct" bottom: "data" top: "ip"\n  inner_product_param { '
            'num_output: 2 weight_filler { type: "xavier" } }',
            'type: "Convolution" bottom: "data4" top: "ip"\n  convolution_param { '
            'num_output: 2 kernel_size: 1 group: 0 }').replace(
            'layer { name: "loss"', 'layer { name: "r" type: "Reshape" bottom: "data" '
            'top: "data4" reshape_param { shape { dim: 2 dim: 3 dim: 1 dim: 1 } } }\n'
            'layer { name: "f" type: "Flatten" bottom: "ip" top: "ipf" }\nlayer { name: "loss"')
        .replace('bottom: "ip" bottom: "label"', 'bottom: "ipf" bottom: "label"')}),
    cli("train a huge net", ["train", "--solver", f"{T}/solver.prototxt"],
        ["'data'", "bytes"], {"solver.prototxt": SOLVER, "net.prototxt": NET.replace(
            "shape { dim: 2 dim: 3 }", "shape { dim: 2 dim: 3000000000000 }")}),
    cli("train --allow-unknown then a syntax error", ["train", "--allow-unknown", "--solver",
                                                      f"{T}/solver.prototxt"],
        ["net.prototxt:", "as a net"], {"solver.prototxt": SOLVER,
                                        "net.prototxt": "fork\f: 1\n" + BROKEN_NET}),
    # test and time
    cli("test --iterations 0", ["test", "--model", f"{T}/net.prototxt", "--weights", "w",
                                "--iterations", "0"], ["--iterations"]),
    cli("test missing weights", ["test", "--model", f"{T}/net.prototxt", "--weights",
                                 f"{T}/nope.caffemodel"], ["nope.caffemodel"]),
    cli("test a broken net", ["test", "--model", f"{T}/net.prototxt", "--weights", "w"],
        ["net.prototxt:5:"], {"net.prototxt": BROKEN_NET}),
    cli("test without --weights", ["test", "--model", f"{T}/net.prototxt"], ["--weights"]),
    cli("time --iterations -1", ["time", "--model", f"{T}/net.prototxt", "--iterations", "-1"],
        ["--iterations"]),
    cli("time --warmup -1", ["time", "--model", f"{T}/net.prototxt", "--warmup", "-1"],
        ["--warmup"]),
    cli("time a broken net", ["time", "--model", f"{T}/net.prototxt"], ["net.prototxt:5:"],
        {"net.prototxt": BROKEN_NET}),
    cli("time a net with a 2^63 blob", ["time", "--model", f"{T}/net.prototxt"], ["2^63"],
        {"net.prototxt": NET.replace("shape { dim: 2 dim: 3 }",
                                     "shape { dim: 9223372036854775807 dim: 3 }")}),
    # upgrade, draw, export, fold-bn
    cli("upgrade a missing file", ["upgrade", f"{T}/nope.prototxt", f"{T}/out.prototxt"],
        ["nope.prototxt"]),
    cli("upgrade a broken net", ["upgrade", f"{T}/net.prototxt", f"{T}/out.prototxt"],
        ["net.prototxt:5:"], {"net.prototxt": BROKEN_NET}),
    cli("upgrade a 10 MB token", ["upgrade", f"{T}/net.prototxt", f"{T}/out.prototxt"],
        ["net.prototxt:1:", "more characters"], {"net.prototxt": "name: " + "x" * 10_000_000}),
    cli("draw a broken net", ["draw", f"{T}/net.prototxt", f"{T}/net.dot"],
        ["net.prototxt:5:"], {"net.prototxt": BROKEN_NET}),
    cli("draw with an unknown phase", ["draw", f"{T}/net.prototxt", f"{T}/net.dot", "--phase",
                                       "VAL"], ["--phase"]),
    cli("export without --onnx", ["export", f"{T}/net.prototxt", "w", f"{T}/o.onnx"],
        ["--onnx"]),
    cli("fold-bn a broken net", ["fold-bn", f"{T}/net.prototxt", "w", f"{T}/o.prototxt",
                                 f"{T}/o.caffemodel"], ["net.prototxt:5:"],
        {"net.prototxt": BROKEN_NET}),
    cli("unknown command", ["trian"], ["trian"]),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_command_line(case, tmp_path):
    check_case(case, tmp_path)
