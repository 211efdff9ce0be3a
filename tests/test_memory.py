"""The memory gate (protonet/memory.py): arrays too big for the limit are refused before they
are allocated, naming layer, blob and bytes; the limit can be moved; Layer.scratch reuses."""
import ctypes
import mmap
import os
import sys

import numpy as np
import pytest

from protonet import memory, prototxt
from protonet.errors import MemoryLimitError
from protonet.layers.base import Layer
from protonet.net import TEST, TRAIN, Net


def _net(dims, layers=1):
    shape = " ".join(f"dim: {d}" for d in dims)
    text = f'layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ {shape} }} }} }}\n'
    bottoms = ["x"] + [f"y{i}" for i in range(layers)]
    text += "".join(f'layer {{ name: "r{i}" type: "TanH" bottom: "{bottoms[i]}" top: "y{i}" }}\n'
                    for i in range(layers))
    return prototxt.parse_net_text(text)


@pytest.fixture
def limit():
    previous = memory.set_limit(None)
    yield memory.set_limit
    memory.set_limit(previous)


def test_a_blob_over_the_limit_names_layer_blob_and_bytes_and_the_override(limit):
    limit(1 << 20)
    with pytest.raises(MemoryLimitError, match=r"layer 'in' \(Input\): blob 'x' of shape "
                                               r"\(1024, 256\).*2097152 bytes.*set_limit"):
        Net(param=_net((1024, 256)), phase=TEST)
    limit(4 << 20)
    assert Net(param=_net((1024, 256)), phase=TEST).blobs["x"].shape == (1024, 256)


def test_the_nets_total_counts_too(limit):
    limit(3 << 20)   # each blob's data is 1 MB: one fits, four do not
    with pytest.raises(MemoryLimitError, match=r"the net's blobs.*biggest layers: 'in'"):
        Net(param=_net((1024, 256), layers=3), phase=TEST)


def test_the_total_counts_gradients_only_where_training_touches_them(limit):
    limit(5 << 20)   # four blobs: 4 MB of data, 8 MB with their diffs
    assert len(Net(param=_net((1024, 256), layers=3), phase=TEST).blobs) == 4
    with pytest.raises(MemoryLimitError, match=r"the net's blobs.*biggest layers: 'in'"):
        Net(param=_net((1024, 256), layers=3), phase=TRAIN)


def test_a_test_nets_inner_product_makes_its_weight_gradient_only_for_a_backward(limit):
    # 4 MB of weights, allocated with their diff (8 MB, untouched in TEST, not counted in the
    # net's total): a 4 MB weight-gradient work array made at set-up would not fit the total.
    limit((8 << 20) + 4096)
    text = ('force_backward: true\n'
            'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 1024 } } }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
            'inner_product_param { num_output: 1024 } }\n')
    net = Net(param=prototxt.parse_net_text(text), phase=TEST)
    ip = net.layers[1]
    assert getattr(ip, "w_grad", None) is None
    x = np.random.default_rng(0).standard_normal((2, 1024)).astype(np.float32)
    net.forward(x=x)
    net.blobs["y"].diff[...] = 1
    limit(None)
    net.backward()   # pycaffe scripts run backward on deploy nets (saliency maps)
    np.testing.assert_allclose(ip.blobs[0].diff, np.broadcast_to(x.sum(0), (1024, 1024)),
                               rtol=1e-6)


def test_overflowing_element_counts_are_errors_not_empty_arrays():
    with pytest.raises(MemoryLimitError, match=r"2\^63"):
        Net(param=_net((1 << 32, 1 << 32, 4)), phase=TEST)


def test_the_environment_variable_sets_the_limit(monkeypatch, limit):
    monkeypatch.setenv(memory.ENV_VAR, "1.5K")
    assert memory.limit() == 1536
    monkeypatch.setenv(memory.ENV_VAR, "64G")
    assert memory.limit() == 64 << 30
    monkeypatch.setenv(memory.ENV_VAR, "lots")
    with pytest.raises(MemoryLimitError, match="PROTONET_MEMORY_LIMIT='lots'"):
        memory.limit()
    monkeypatch.delenv(memory.ENV_VAR)
    assert 0 < memory.limit() < memory.physical_memory()


def test_scratch_reuses_what_fits_and_names_the_layer(limit):
    from protonet import caffe_pb2
    layer = Layer(caffe_pb2.LayerParameter(name="conv9", type="Convolution"))
    a = layer.scratch("work", (4, 5))
    assert layer.work is a and a.shape == (4, 5) and a.dtype == np.float32
    assert layer.scratch("work", (4, 5)) is a
    assert layer.scratch("work", (5, 4)) is not a
    flat = layer.scratch("col", (10, 10), grow=True)
    assert flat.shape == (100,) and layer.scratch("col", (3, 3), grow=True) is flat
    assert layer.scratch("col", (11, 10), grow=True).shape == (110,)
    assert layer.scratch("mask", (3,), np.int32).dtype == np.int32
    limit(1000)
    with pytest.raises(MemoryLimitError, match=r"layer 'conv9'.*work array 'big' of shape "
                                               r"\(1000,\) needs 3.9 KiB"):
        layer.scratch("big", (1000,))


def test_shared_contents_are_filled_again_only_when_another_owner_or_a_change_came_between():
    from protonet import scratch
    fills, keys = [], []
    version = {"a": 1, "b": 1}

    def use(owner, size=8):
        def key():
            keys.append(owner)
            return version[owner]

        def fill(buffer):
            fills.append(owner)
            buffer[:size] = version[owner]

        buffer = scratch.shared_contents("test.shared_contents", size, "test", owner, key, fill)
        assert (buffer[:size] == version[owner]).all()
        return buffer

    first = use("a")
    assert fills == ["a"] and keys == []
    # The same owner again: its key is read (after the first fill it was never read), and
    # read again the next time, when it tells the contents are still current.
    use("a")
    use("a")
    assert fills == ["a", "a"] and keys == ["a", "a"]
    version["a"] = 2   # e.g. the weights changed
    assert use("a") is first and fills == ["a", "a", "a"]
    # Owners taking turns fill every time and never read their keys.
    del keys[:]
    for owner in "baba":
        use(owner)
    assert fills[3:] == list("baba") and keys == []
    # A bigger request replaces the buffer: filled again, whoever held the old one.
    use("a")
    assert use("a", 16).size >= 16 and fills[-1] == "a" and len(fills) == 9
    # A fill that fails leaves nothing held.
    with pytest.raises(RuntimeError):
        scratch.shared_contents("test.shared_contents", 16, "test", "a", lambda: 2,
                                lambda b: (_ for _ in ()).throw(RuntimeError("half written")))
    use("a", 16)
    assert len(fills) == 10



def _resident_pages(a: np.ndarray) -> int:
    """How many of the pages under array `a` are resident (mincore(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    first = a.ctypes.data // mmap.PAGESIZE * mmap.PAGESIZE
    length = a.ctypes.data + a.nbytes - first
    pages = (ctypes.c_ubyte * -(-length // mmap.PAGESIZE))()
    if libc.mincore(ctypes.c_void_p(first), ctypes.c_size_t(length), pages) != 0:
        pytest.skip(f"mincore failed: {os.strerror(ctypes.get_errno())}")
    return sum(page & 1 for page in pages)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore(2) as Linux has it")
def test_a_test_nets_diffs_take_no_memory():
    # Blobs of 8 MB, each with an 8 MB diff no TEST forward writes. Once a 16 MB block was
    # freed, glibc serves blocks of 8 MB from its heap, and np.zeros there wrote memory freed
    # before to zero it: every diff was resident (ResNet-50 at batch 1 held 191 MB after
    # loading 98 MB of weights).
    np.ones(16 << 20, np.uint8)
    freed = [np.ones(8 << 20, np.uint8) for _ in range(8)]
    pin = np.ones(1 << 16, np.uint8)   # noqa: F841 - keeps the heap from shrinking below it
    del freed
    net = Net(param=_net((2048, 1024), layers=3), phase=TEST)
    net.blobs["x"].data[...] = 0.5
    net.forward()
    for name, blob in net.blobs.items():
        assert _resident_pages(blob.diff) == 0, name
        assert _resident_pages(blob.data) > 0, name


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork(2)")
def test_big_arrays_are_zero_and_private_to_a_forked_process():
    (a,) = memory.allocate((1 << 20,), np.float32, "test array", zero=True)
    assert a.nbytes >= memory.MAPPED_BYTES and not a.any() and a.flags.writeable
    pid = os.fork()
    if pid == 0:   # the child writes its copy, as a data worker forked by a user's script might
        a[...] = 7
        os._exit(0 if a.all() else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert not a.any()


def test_a_mapping_the_system_refuses_is_the_memory_error_naming_the_array(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")
    monkeypatch.setattr(memory.mmap, "mmap", refuse)
    with pytest.raises(MemoryLimitError, match=r"blob 'x' .*needs 8\.0 MiB, which could not be "
                                               r"allocated \(.*Cannot allocate memory\)"):
        Net(param=_net((1024, 1024)), phase=TEST)
