"""Bad-input table: damaged prototxt text (syntax, unknown fields, odd whitespace, huge tokens,
old dialects) and broken graphs. Each case reads a file as a user would (protonet.Net, or the
command line), must end quickly, and must say which file, where, and what it was read as."""
from __future__ import annotations

import time

import pytest

from harness import Case, check_case, ids
from protonet import prototxt
from protonet.errors import (NetDefinitionError, PrototxtError, ProtonetError,
                             UnknownLayerTypeError)
from protonet.net import TEST, TRAIN, Net

RELU = 'layer { name: "relu" type: "ReLU" bottom: "x" top: "y" }\n'
INPUT = 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }\n'


def _net(tmp):
    Net(str(tmp / "net.prototxt"), TEST)


def net_case(name, text, error, words=(), where=True):
    """`text` as net.prototxt, built with protonet.Net; the message names the file."""
    return Case(name, _net, error, (("net.prototxt",) if where else ()) + tuple(words),
                files={"net.prototxt": text})


def upgrade_case(name, text, words=(), allow_unknown=False):
    """`protonet upgrade` of `text`: one error line naming the file; no output written."""
    argv = ["upgrade", "{tmp}/net.prototxt", "{tmp}/out.prototxt"]
    if allow_unknown:
        argv.append("--allow-unknown")
    return Case(name, argv, ProtonetError, ("net.prototxt",) + tuple(words),
                files={"net.prototxt": text})


P = PrototxtError
N = NetDefinitionError

SYNTAX = [
    net_case("missing colon", INPUT + 'layer { name "a" }', P, [":2:", "Expected"]),
    net_case("unclosed block", INPUT + 'layer { name: "a" ', P, ["Expected"]),
    net_case("extra closing brace", INPUT + "}", P, [":2:1"]),
    net_case("unterminated string", INPUT + 'layer { name: "a }', P, ["quote"]),
    net_case("string for a number", INPUT + 'layer { name: "a" type: "ReLU" bottom: "x" '
             'top: "y" relu_param { negative_slope: "x" } }', P, ["negative_slope"]),
    net_case("number for a string", 'name: 5\n' + INPUT, P, [":1:"]),
    net_case("unknown top-level field", "nmae: \"x\"\n" + INPUT, P, ["nmae", ":1:1"]),
    net_case("unknown layer field", INPUT + 'layer { name: "a" tpye: "ReLU" }', P,
             ["tpye", ":2:"]),
    net_case("unknown enum value", INPUT + 'layer { name: "p" type: "Pooling" bottom: "x" '
             'top: "y" pooling_param { pool: MEDIAN } }', P, ["MEDIAN"]),
    net_case("bool as word", 'force_backward: yes\n' + INPUT, P, ["force_backward"]),
    net_case("int out of range", INPUT + 'layer { name: "c" type: "Convolution" bottom: "x" '
             'top: "y" convolution_param { num_output: 4294967296 } }', P, ["num_output"]),
    net_case("negative unsigned", INPUT + 'layer { name: "c" type: "Convolution" bottom: "x" '
             'top: "y" convolution_param { num_output: -1 } }', P, ["num_output"]),
    net_case("float for an int", INPUT + 'layer { name: "c" type: "Convolution" bottom: "x" '
             'top: "y" convolution_param { num_output: 1.5 } }', P, ["integer"]),
    net_case("hex garbage", INPUT + 'layer { name: "c" type: "Convolution" bottom: "x" '
             'top: "y" convolution_param { num_output: 0xZZ } }', P, ["num_output"]),
    net_case("scalar given twice", 'name: "a"\nname: "b"\n' + INPUT, P, ["name"]),
    net_case("message given a value", 'state: 3\n' + INPUT, P, ["state"]),
    net_case("binary garbage", b"\x00\x01\x02\xff\xfe garbage", P,
             ["binary NetParameter"]),
    net_case("utf-16 file", (INPUT + RELU).encode("utf-16"), P, ["UTF-8"]),
    net_case("stray quote in a long line", INPUT + 'layer { name: "a" ' + "x " * 50000
             + '"', P, []),
    net_case("10 MB token", 'name: ' + "a" * 10_000_000, P, ["more characters"]),
    net_case("10 MB quoted token", 'name: "' + "a" * 10_000_000, P, ["more characters"]),
    net_case("100,000 open braces", "layer " + "{ " * 100_000, P, ["Expected"]),
    net_case("100,000 nested layers", "layer { " * 100_000 + "}" * 100_000, P, []),
    net_case("100,000 closing braces", "}" * 100_000, P, [":1:1"]),
    net_case("1 MB of unknown lines", "bogus: 1\n" * 100_000, P, ["bogus"]),
    net_case("form feed before unknown field", 'name: "x"\f bogus: 3\n' + INPUT, P,
             ["bogus", ":1:"]),
    net_case("nul byte in a name", 'name: "a\x00b"\n' + 'layer { name: "in" type: "Input" '
             'top: "x" input_param { shape { dim: 1 } } }\x00', P, []),
    net_case("empty file", "", N, ["no layers"]),
    net_case("only comments", "# nothing here\n# at all\n", N, ["no layers"]),
    net_case("extension syntax", "[caffe.foo]: 1\n" + INPUT, P, ["extension"]),
    net_case("angle brackets unbalanced", INPUT + 'layer < name: "a" }', P, []),
    net_case("comma list in scalar", INPUT + 'layer { name: "a" type: "ReLU" bottom: ["x", '
             '"x"] top: "y" }', N, ["bottom"], where=False),
]

# --allow-unknown: odd line breaks before unknown fields once hung; a stray quote once made
# the skipping quadratic. Each must end quickly with the field listed or a clear error.
ODD_BREAKS = ["\f", "\r", "\v", "\u2028", "\u2029", "\x85", "\x1c", "\r\n"]
ALLOW_UNKNOWN = [
    upgrade_case(f"allow-unknown, {sep!r} before an unknown field, then a syntax error",
                 f'name: "x"{sep}fork_field: 3{sep}' + INPUT + 'layer { name "a" }',
                 ["Expected"], allow_unknown=True)
    for sep in ODD_BREAKS
] + [
    upgrade_case("allow-unknown, stray quote after unknown fields",
                 "fork: 1\n" * 20_000 + 'name: "x', ["quote"], allow_unknown=True),
    upgrade_case("allow-unknown, unknown block never closed",
                 'fork_block { a: 1 b { c: "x" ', ["Expected identifier"], allow_unknown=True),
    upgrade_case("allow-unknown, unknown field without value", "fork_flag:", ["fork_flag"],
                 allow_unknown=True),
    upgrade_case("allow-unknown, unknown field with an invalid value", "fork_flag: ]",
                 ["]"], allow_unknown=True),
]

GRAPH = [
    net_case("undefined bottom", INPUT + 'layer { name: "r" type: "ReLU" bottom: "q" top: "y" }',
             N, ["'r'", "'q'"], where=False),
    net_case("undefined bottom with a near name", INPUT + 'layer { name: "r" type: "ReLU" '
             'bottom: "xx" top: "y" }', N, ["did you mean 'x'"], where=False),
    net_case("cycle", INPUT + 'layer { name: "a" type: "ReLU" bottom: "b" top: "a" }\n'
             'layer { name: "b" type: "ReLU" bottom: "a" top: "b" }', N, ["cycle", "'a'"],
             where=False),
    net_case("long cycle lists 10 layers", INPUT + "".join(
        f'layer {{ name: "l{i}" type: "ReLU" bottom: "b{(i + 1) % 500}" top: "b{i}" }}\n'
        for i in range(500)), N, ["cycle", "and 490 more"], where=False),
    net_case("top produced twice", INPUT + 'layer { name: "a" type: "ReLU" bottom: "x" '
             'top: "y" }\nlayer { name: "b" type: "ReLU" bottom: "x" top: "y" }', N,
             ["'y'", "already produced"], where=False),
    net_case("no layers in this phase", 'layer { name: "in" type: "Input" top: "x" '
             'input_param { shape { dim: 1 } } include { phase: TRAIN } }', N,
             ["no layers in phase TEST"]),
    net_case("unknown layer type", INPUT + 'layer { name: "a" type: "Relu" bottom: "x" '
             'top: "y" }', UnknownLayerTypeError, ["Relu", "ReLU"], where=False),
    net_case("unsupported layer type", INPUT + 'layer { name: "a" type: "WindowData" '
             'top: "y" }', UnknownLayerTypeError, ["WindowData"], where=False),
    net_case("layer and layers both", INPUT + 'layers { name: "r" type: RELU bottom: "x" '
             'top: "y" }', P, ["both"]),
    net_case("input_dim not 4 per input", 'input: "x"\ninput_dim: 1\ninput_dim: 2\n', P,
             ["input_dim"]),
    net_case("input_shape count", 'input: "x"\ninput: "y"\ninput_shape { dim: 1 }\n'
             'input_shape { dim: 1 }\ninput_shape { dim: 1 }\n', P, ["input_shape"]),
    net_case("V1 unknown enum type", 'layers { name: "r" type: FANCY bottom: "x" top: "y" }',
             P, ["FANCY"]),
]

V0_PAD = ('input: "data"\ninput_dim: 1\ninput_dim: 1\ninput_dim: 5\ninput_dim: 5\n'
          'layers {{ layer {{ name: "pad1" type: "padding" pad: 1 }} {pad_io} }}\n'
          'layers {{ layer {{ name: "conv1" type: "conv" num_output: 2 kernelsize: 3 }} '
          '{conv_io} }}\n')
V0 = [
    net_case("V0 padding layer without a bottom",
             V0_PAD.format(pad_io='top: "p"', conv_io='bottom: "p" top: "c"'), P,
             ["pad1", "bottom"]),
    upgrade_case("upgrade: V0 padding layer without a bottom",
                 V0_PAD.format(pad_io='top: "p"', conv_io='bottom: "p" top: "c"'), ["pad1"]),
    net_case("V0 padding layer with two bottoms",
             V0_PAD.format(pad_io='bottom: "data" bottom: "data" top: "p"',
                           conv_io='bottom: "p" top: "c"'), P, ["pad1", "one bottom"]),
    net_case("V0 padding layer with two tops",
             V0_PAD.format(pad_io='bottom: "data" top: "p" top: "q"',
                           conv_io='bottom: "p" top: "c"'), P, ["pad1"]),
    net_case("V0 padding into a two-bottom conv",
             V0_PAD.format(pad_io='bottom: "data" top: "p"',
                           conv_io='bottom: "p" bottom: "data" top: "c"'), P, ["conv1"]),
    net_case("V0 padding into a relu",
             V0_PAD.format(pad_io='bottom: "data" top: "p"', conv_io='bottom: "p" top: "c"')
             .replace('type: "conv" num_output: 2 kernelsize: 3', 'type: "relu"'), P,
             ["pad1", "not a convolution"]),
    net_case("V0 unknown type", 'layers { layer { name: "a" type: "fancy" } }', P, ["fancy"]),
    net_case("V0 field of another type", 'layers { layer { name: "a" type: "relu" '
             'num_output: 3 } }', P, ["num_output"]),
]

CASES = SYNTAX + ALLOW_UNKNOWN + GRAPH + V0


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_prototxt(case, tmp_path):
    check_case(case, tmp_path)


def test_syntax_errors_say_what_the_file_was_read_as(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text("base_lr: 0.1\nmax_iter: x\n")
    with pytest.raises(PrototxtError, match=r"solver.prototxt:2:11: .*reading it as a solver"):
        prototxt.read_solver(path)
    with pytest.raises(PrototxtError, match=r"reading it as a net \(NetParameter\)"):
        prototxt.parse_net_text('layer { name "a" }', "x.prototxt")


def test_unknown_fields_after_odd_line_breaks_are_dropped_where_protobuf_counts_them():
    for sep in ODD_BREAKS[:-1]:   # all but \r\n: protobuf breaks lines at \n only
        text = f'name: "x"{sep}fork: 3\n' + INPUT + 'layer { name: "a" fork2 { b: "}" } }\n'
        with prototxt.allowing_unknown_fields() as dropped:
            net = prototxt.parse_net_text(text, "f")
        assert [d.split(": ", 1)[1] for d in dropped] == ["NetParameter.fork",
                                                          "LayerParameter.fork2"], sep
        assert dropped[0].startswith("f:1:") and dropped[1].startswith("f:3:"), (sep, dropped)
        assert net.name == "x" and [lp.name for lp in net.layer] == ["in", "a"]


def _chain(n: int) -> str:
    """n ReLU layers, each reading the one before, written last first."""
    layers = [f'layer {{ name: "r{i}" type: "ReLU" bottom: "b{i - 1}" top: "b{i}" }}'
              for i in range(1, n + 1)]
    return ('layer { name: "in" type: "Input" top: "b0" input_param { shape { dim: 1 } } }\n'
            + "\n".join(reversed(layers)))


def test_a_20000_layer_chain_in_reverse_order_builds_in_linear_time(tmp_path):
    path = tmp_path / "chain.prototxt"
    path.write_text(_chain(20_000))
    start = time.perf_counter()
    net = Net(str(path), TRAIN)
    took = time.perf_counter() - start
    assert [layer.name for layer in net.layers[:3]] == ["in", "r1", "r2"]
    assert net.layers[-1].name == "r20000"
    # It took over 400 s when ordering was quadratic; about 3 s now (on a busy 2-core box).
    assert took < 40, f"{took:.1f} s"
