"""The .caffemodel reader and writer (protonet/io/caffemodel.py), which stream: Net.copy_from
walks the file's wire format and reads packed floats straight into the blobs, Net.save writes
each blob's floats from its array. The reader against protobuf's own parse of the whole file
(prototxt.read_net_binary + caffemodel.copy_weights) on every kind of file Caffe and its forks
wrote, and on damaged files; the writer against protobuf's serialization of the whole
NetParameter, byte for byte."""
import struct

import numpy as np
import pytest

import protonet
from protonet import caffe_pb2, prototxt, rng
from protonet.errors import NonFiniteError, PrototxtError, ProtonetError, ShapeError
from protonet.io import caffemodel, wire

NET = """name: "small"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }
layer { name: "ip" type: "InnerProduct" bottom: "c" top: "y" inner_product_param { num_output: 5 } }
"""
LEARNABLE = ("conv", "ip")


def _net(seed=1):
    rng.set_random_seed(seed)
    return protonet.Net(param=prototxt.parse_net_text(NET), phase=protonet.TEST)


def _values(seed=7):
    """Weights unlike any filler's, by layer: [weight, bias]."""
    g = np.random.default_rng(seed)
    return {name: [g.standard_normal(b.shape).astype(np.float32) for b in blobs]
            for name, blobs in _net().params.items()}


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _packed(values) -> bytes:
    return _field(5, np.asarray(values, "<f4").tobytes())


def _unpacked(values) -> bytes:
    """Float `data` as Caffe's schema never wrote it but protobuf reads it: one tag per value."""
    return b"".join(_varint(5 << 3 | 5) + struct.pack("<f", v) for v in values)


def _shape(shape) -> bytes:
    return caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=shape)).SerializeToString()


def _file(layer_blobs, v1=False) -> bytes:
    """A NetParameter of the small net's learnable layers, each blob given as raw BlobProto
    bytes: V2 `layer` (100) or V1 `layers` (2) with the V1 type enum."""
    out = caffe_pb2.NetParameter(name="small").SerializeToString()
    for name, blobs in layer_blobs.items():
        if v1:
            kind = {"conv": caffe_pb2.V1LayerParameter.CONVOLUTION,
                    "ip": caffe_pb2.V1LayerParameter.INNER_PRODUCT}[name]
            head = caffe_pb2.V1LayerParameter(name=name, type=kind).SerializeToString()
            out += _field(2, head + b"".join(_field(6, b) for b in blobs))
        else:
            head = caffe_pb2.LayerParameter(name=name, type="X").SerializeToString()
            out += _field(100, head + b"".join(_field(7, b) for b in blobs))
    return out


def _legacy(shape) -> list[int]:
    return [1] * (4 - len(shape)) + list(shape)


def _kinds(values):
    """name -> file bytes, for each way a blob's shape and values can be written."""
    def each(make):
        return {name: [make(v) for v in vs] for name, vs in values.items()}
    split = {name: [_shape(v.shape) + _packed(v.ravel()[:3]) + _packed(v.ravel()[3:])
                    for v in vs] for name, vs in values.items()}
    mixed = {name: [_shape(v.shape) + _packed(v.ravel()[:2]) + _unpacked(v.ravel()[2:4])
                    + _packed(v.ravel()[4:]) for v in vs] for name, vs in values.items()}
    return {
        "packed, shape": _file(each(lambda v: _shape(v.shape) + _packed(v.ravel()))),
        "packed, legacy num/channels/height/width": _file(each(lambda v: caffe_pb2.BlobProto(
            **dict(zip(("num", "channels", "height", "width"), _legacy(v.shape))))
            .SerializeToString() + _packed(v.ravel()))),
        "packed, no shape (1-d from the count)": _file(
            {"conv": [_shape(v.shape) + _packed(v.ravel()) for v in values["conv"]],
             "ip": [_shape(values["ip"][0].shape) + _packed(values["ip"][0].ravel()),
                    _packed(values["ip"][1])]}),
        "V1 layers, legacy dims": _file(each(lambda v: caffe_pb2.BlobProto(
            **dict(zip(("num", "channels", "height", "width"), _legacy(v.shape))))
            .SerializeToString() + _packed(v.ravel())), v1=True),
        "unpacked floats": _file(each(lambda v: _shape(v.shape) + _unpacked(v.ravel()))),
        "double_data": _file(each(lambda v: caffe_pb2.BlobProto(
            shape=caffe_pb2.BlobShape(dim=v.shape), double_data=v.ravel().astype(float))
            .SerializeToString())),
        "packed in two runs": _file(split),
        "packed and unpacked runs mixed": _file(mixed),
        "with diffs": _file(each(lambda v: _shape(v.shape) + _packed(v.ravel())
                                 + _field(6, np.full(v.size, 3, "<f4").tobytes())
                                 + _field(9, np.full(v.size, 4, "<f8").tobytes()))),
    }


def _by_protobuf(net, path, strict=False):
    """The reference: protobuf parses the whole file, then the blobs are copied."""
    return caffemodel.copy_weights(net, prototxt.read_net_binary(path), str(path), strict)


def _outcome(load, path):
    """What loading `path` into a fresh net does: ("ok", missing, weights) or the error's
    class."""
    net = _net()
    try:
        missing = load(net, path)
    except ProtonetError as e:
        return (type(e).__name__,)
    return ("ok", missing, {k: [b.data.copy() for b in v] for k, v in net.params.items()})


def _same(a, b) -> bool:
    if a[0] != "ok" or b[0] != "ok":
        return a == b
    return a[1] == b[1] and all(np.array_equal(x, y, equal_nan=True)
                                for k in a[2] for x, y in zip(a[2][k], b[2][k]))


@pytest.mark.parametrize("kind", list(_kinds(_values())))
def test_every_kind_of_file_loads_as_protobuf_reads_it(tmp_path, kind):
    values = _values()
    path = tmp_path / "w.caffemodel"
    path.write_bytes(_kinds(values)[kind])
    ours, reference = _net(), _net()
    assert ours.copy_from(path) == [] == _by_protobuf(reference, path)
    for name in LEARNABLE:
        for blob, ref, expected in zip(ours.params[name], reference.params[name], values[name]):
            assert np.array_equal(ref.data, expected)
            assert np.array_equal(blob.data, expected)


def test_saved_weights_round_trip_through_the_reader_byte_for_byte(tmp_path):
    first = _net(seed=3)
    first.save(tmp_path / "a.caffemodel")
    second = _net(seed=4)
    second.copy_from(tmp_path / "a.caffemodel")
    second.save(tmp_path / "b.caffemodel")
    assert (tmp_path / "a.caffemodel").read_bytes() == (tmp_path / "b.caffemodel").read_bytes()


def test_a_blob_bigger_than_a_read_block_is_checked_and_read_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(wire, "READ_BLOCK", 16)  # 4 floats: conv's 108 weights in 27
    values = _values()
    values["conv"][0].ravel()[-1] = np.nan
    path = tmp_path / "w.caffemodel"
    path.write_bytes(_kinds(values)["packed, shape"])
    net = _net()
    before = {k: [b.data.copy() for b in v] for k, v in net.params.items()}
    with pytest.raises(NonFiniteError, match=r"w\.caffemodel: layer 'conv' blob 0 holds 1 NaN "
                                             r"or Inf values \(of 108\)"):
        net.copy_from(path)
    for name in LEARNABLE:  # nothing was copied, not even the layers before the bad value
        for blob, old in zip(net.params[name], before[name]):
            assert np.array_equal(blob.data, old)
    values["conv"][0].ravel()[-1] = 0.5
    path.write_bytes(_kinds(values)["packed, shape"])
    net.copy_from(path)
    assert np.array_equal(net.params["conv"][0].data, values["conv"][0])


def test_errors_name_the_file_and_the_layer(tmp_path):
    values = _values()
    path = tmp_path / "w.caffemodel"
    whole = _kinds(values)["packed, shape"]
    path.write_bytes(whole[:-7])
    with pytest.raises(PrototxtError, match=r"w\.caffemodel: damaged or not a binary "
                                            r"NetParameter.*truncated.*layer 1, 'ip'"):
        _net().copy_from(path)
    short = dict(values, ip=[values["ip"][0], values["ip"][1][:3]])
    path.write_bytes(_file({k: [_shape(v.shape) + _packed(s.ravel()) for v, s in
                                zip(values[k], short[k])] for k in values}))
    with pytest.raises(PrototxtError, match=r"w\.caffemodel: layer 'ip' blob 1: shape \(5,\) "
                                            r"needs 5 values, the file has 3"):
        _net().copy_from(path)
    with pytest.raises(PrototxtError, match=r"nothing\.caffemodel: no such file"):
        _net().copy_from(tmp_path / "nothing.caffemodel")
    both = whole + _field(2, caffe_pb2.V1LayerParameter(name="z").SerializeToString())
    path.write_bytes(both)
    with pytest.raises(PrototxtError, match=r"both 'layer' and the old 'layers'"):
        _net().copy_from(path)
    wrong = {k: [_shape((7,) + v.shape[1:]) + _packed(np.zeros(7 * v[0].size)) for v in vs]
             for k, vs in values.items()}
    path.write_bytes(_file(wrong))
    with pytest.raises(ShapeError, match=r"cannot copy blob 0 of layer 'conv': shape "
                                         r"\(7, 3, 3, 3\) in the file, \(4, 3, 3, 3\)"):
        _net().copy_from(path)


def test_truncated_files_fail_or_load_exactly_as_protobuf_reads_them(tmp_path):
    whole = _kinds(_values())["packed, shape"]
    path = tmp_path / "w.caffemodel"
    outcomes = set()
    for size in range(len(whole)):
        path.write_bytes(whole[:size])
        ours, reference = _outcome(caffemodel.load, path), _outcome(_by_protobuf, path)
        assert _same(ours, reference), f"cut at {size} bytes: {ours[:2]} against {reference[:2]}"
        outcomes.add(ours[0])
    assert outcomes == {"ok", "PrototxtError"}  # cuts between layers load the layers before


def test_damaged_bytes_fail_or_load_exactly_as_protobuf_reads_them(tmp_path):
    whole = _kinds(_values())["V1 layers, legacy dims"]
    path = tmp_path / "w.caffemodel"
    g = np.random.default_rng(0)
    outcomes = set()
    for _ in range(300):
        damaged = bytearray(whole)
        for at in g.integers(0, len(whole), g.integers(1, 4)):
            damaged[at] = g.integers(0, 256)
        path.write_bytes(bytes(damaged))
        ours, reference = _outcome(caffemodel.load, path), _outcome(_by_protobuf, path)
        assert _same(ours, reference), f"{bytes(damaged)!r}: {ours[:2]} against {reference[:2]}"
        outcomes.add(ours[0])
    assert {"ok", "PrototxtError"} <= outcomes


def test_a_v0_file_takes_the_whole_parse_and_loads(tmp_path):
    values = _values()
    old = caffe_pb2.NetParameter(name="small")
    for name, vs in values.items():
        v0 = old.layers.add().layer
        v0.name, v0.type = name, {"conv": "conv", "ip": "innerproduct"}[name]
        for v in vs:
            v0.blobs.add(**dict(zip(("num", "channels", "height", "width"), _legacy(v.shape))),
                         data=v.ravel().tolist())
    path = tmp_path / "v0.caffemodel"
    path.write_bytes(old.SerializeToString())
    net = _net()
    assert net.copy_from(path) == []
    for name in LEARNABLE:
        for blob, expected in zip(net.params[name], values[name]):
            assert np.array_equal(blob.data, expected)


def test_a_zoo_caffemodel_loads_as_protobuf_reads_it(caffe_models):
    found = sorted(caffe_models.rglob("*.caffemodel"))
    with_deploy = [(w, w.parent / "deploy.prototxt") for w in found
                   if (w.parent / "deploy.prototxt").exists()]
    if not with_deploy:
        pytest.skip(f"no .caffemodel beside a deploy.prototxt under {caffe_models} (the zoo's "
                    "weights are not in ../shared)")
    weights, deploy = min(with_deploy, key=lambda p: p[0].stat().st_size)
    ours = protonet.Net(str(deploy), protonet.TEST, weights=str(weights))
    reference = protonet.Net(str(deploy), protonet.TEST)
    _by_protobuf(reference, weights)
    for name, blobs in ours.params.items():
        for a, b in zip(blobs, reference.params[name]):
            assert np.array_equal(a.data, b.data)


FILLED = NET.replace('convolution_param { num_output: 4 kernel_size: 3 }',
                     'convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: '
                     '"xavier" } bias_filler { type: "constant" value: 0.5 } }').replace(
    'inner_product_param { num_output: 5 }',
    'inner_product_param { num_output: 5 weight_filler { type: "msra" } }') + """
layer { name: "new" type: "InnerProduct" bottom: "y" top: "z"
        inner_product_param { num_output: 3 weight_filler { type: "uniform" } } }
"""


def test_weights_given_at_construction_equal_fill_then_copy_and_keep_the_random_stream(
        tmp_path):
    values = _values()
    path = tmp_path / "w.caffemodel"
    path.write_bytes(_kinds(values)["packed, shape"])
    deploy = tmp_path / "net.prototxt"
    deploy.write_text(FILLED)
    rng.set_random_seed(5)
    reference = protonet.Net(str(deploy), protonet.TEST)
    reference.copy_from(path)
    expected_state = rng.get_state()
    rng.set_random_seed(5)
    net = protonet.Net(str(deploy), protonet.TEST, weights=str(path))
    assert rng.get_state() == expected_state
    assert net.layer_dict["conv"].weights_follow and not net.layer_dict["new"].weights_follow
    for name, blobs in reference.params.items():
        for a, b in zip(blobs, net.params[name]):
            assert np.array_equal(a.data, b.data)
    assert not np.array_equal(net.params["new"][0].data, 0)  # the file lacks it: filled


VARIED = """name: "varied"
input: "x" input_shape { dim: 2 dim: 3 dim: 5 dim: 5 }
layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
        param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" }
layer { name: "scale" type: "Scale" bottom: "c" top: "s" scale_param { bias_term: true } }
layer { name: "scalar" type: "Scale" bottom: "s" top: "t"
        scale_param { num_axes: 0 filler { type: "constant" value: 1.5 } } }
layer { name: "ip" type: "InnerProduct" bottom: "t" top: "y" include { phase: TEST }
        inner_product_param { num_output: 3 bias_term: false } }
layer { name: "prob" type: "Softmax" bottom: "y" top: "p" loss_weight: 0 }
"""


@pytest.mark.parametrize("text", [NET, VARIED, VARIED.replace('name: "varied"\n', "")],
                         ids=["small", "varied", "no name"])
def test_save_writes_the_bytes_protobuf_serializes_for_the_whole_message(tmp_path, text):
    rng.set_random_seed(2)
    net = protonet.Net(param=prototxt.parse_net_text(text), phase=protonet.TEST)
    g = np.random.default_rng(0)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = g.standard_normal(blob.shape)
    if "scalar" in net.params:
        assert net.params["scalar"][0].shape == ()  # a 0-axis blob: no shape field
    net.save(tmp_path / "w.caffemodel")
    expected = caffemodel.net_to_proto(net).SerializeToString()
    assert (tmp_path / "w.caffemodel").read_bytes() == expected


def test_a_save_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    net = _net(seed=3)
    path = tmp_path / "w.caffemodel"
    path.write_bytes(b"the old weights")
    calls = []

    def failing(array):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(array)
    real = wire.blobproto_pieces
    monkeypatch.setattr(wire, "blobproto_pieces", failing)
    with pytest.raises(ProtonetError, match="w.caffemodel"):
        net.save(path)
    assert path.read_bytes() == b"the old weights"
    assert [p.name for p in tmp_path.iterdir()] == ["w.caffemodel"]


def _solverstate_data():
    from protonet.io.solverstate import SolverStateData
    g = np.random.default_rng(4)
    return SolverStateData(
        iter=7, learned_net="snap_iter_7.caffemodel", current_step=2,
        history=[g.standard_normal((4, 3, 3, 3)).astype(np.float32), np.float32(0.25),
                 np.zeros((0, 5), np.float32), g.standard_normal(6).astype(np.float32)],
        readers={"0/data": ("train_lmdb", 640)}, rank_readers={1: {"0/data": ("t", 3)}},
        solver_count=2, test_batches=[3, 4],
        random_state=np.random.default_rng(9).bit_generator.state,
        rank_random_states={1: np.random.default_rng(10).bit_generator.state})


def test_solverstate_is_written_as_protobuf_serializes_it_and_reads_back():
    # The history (momentum, as big as the weights) is streamed like a caffemodel's blobs.
    import tempfile
    from pathlib import Path

    from protonet.io import solverstate
    from protonet.io.binaryproto import blobproto_from_array
    data = _solverstate_data()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.solverstate"
        solverstate.write_solverstate(path, data)
        written = path.read_bytes()
        expected = caffe_pb2.SolverState.FromString(written)
        assert len(expected.history) == 4
        expected.ClearField("history")
        for h in data.history:
            expected.history.add().CopyFrom(blobproto_from_array(h))
        assert written == expected.SerializeToString()
        back = solverstate.read_solverstate(path)
        for a, b in zip(back.history, data.history):
            assert np.shape(a) == np.shape(b) and np.array_equal(a, b)
        fields = ("iter", "learned_net", "current_step", "readers", "rank_readers",
                  "solver_count", "test_batches", "random_state", "rank_random_states")
        assert [getattr(back, f) for f in fields] == [getattr(data, f) for f in fields]
        # Unpacked and double history values, as other writers may give them, read as
        # protobuf reads them; a history blob cut short is named.
        expected.history[0].ClearField("data")
        expected.history[0].double_data.extend(data.history[0].ravel().astype(float))
        raw = expected.SerializeToString()
        path.write_bytes(raw)
        assert np.array_equal(solverstate.read_solverstate(path).history[0], data.history[0])
        expected.history[3].shape.dim[0] = 7
        path.write_bytes(expected.SerializeToString())
        with pytest.raises(PrototxtError, match=r"s\.solverstate: history 3: shape \(7,\) needs "
                                                r"7 values, the file has 6"):
            solverstate.read_solverstate(path)
        for size in range(0, len(raw), 7):
            path.write_bytes(raw[:size])
            try:
                ours = solverstate.read_solverstate(path)
            except PrototxtError as e:
                assert "s.solverstate: not a solver state" in str(e)
                with pytest.raises(Exception):
                    caffe_pb2.SolverState.FromString(raw[:size])
            else:
                whole = caffe_pb2.SolverState.FromString(raw[:size])
                assert len(ours.history) == len(whole.history) and ours.iter == whole.iter


def test_hdf5_weights_are_checked_and_read_in_blocks(tmp_path, monkeypatch):
    pytest.importorskip("h5py", reason="HDF5 weights need h5py (protonet[hdf5])")
    monkeypatch.setattr(wire, "READ_BLOCK", 40)  # a block: one row (27 floats) of conv weights
    source = _net(seed=3)
    source.save_hdf5(tmp_path / "w.h5")
    net = _net(seed=4)
    assert net.copy_from(tmp_path / "w.h5") == []
    for name in LEARNABLE:
        for a, b in zip(source.params[name], net.params[name]):
            assert np.array_equal(a.data, b.data)
    source.params["conv"][0].data[3, 2, 2, 2] = np.inf  # in the last block
    source.save_hdf5(tmp_path / "w.h5")
    before = _net(seed=5)
    kept = before.params["conv"][0].data.copy()
    with pytest.raises(NonFiniteError, match=r"w\.h5: layer 'conv' blob 0 holds NaN or Inf"):
        before.copy_from(tmp_path / "w.h5")
    assert np.array_equal(before.params["conv"][0].data, kept)
