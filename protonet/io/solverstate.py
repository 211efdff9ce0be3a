"""The .solverstate file (Caffe's SolverState, binary protobuf) and protonet's extensions.

Caffe's fields: the iteration, the caffemodel written with it, one history blob per learnable
parameter (two for AdaDelta and Adam), the multistep position. protonet adds where each data
reader stands and the random generator's state, so a resumed run continues exactly.

The random state is stored as plain integers (`random_state`). Files written by older protonet
hold a Python pickle in `rng_state` instead; it is never unpickled (a pickle can run any code,
and a solverstate may come from anywhere). Its opcodes are read as data instead: when they
build nothing but numpy's PCG64 state (a dict of strings and integers), that state is used;
anything else leaves the state unknown and the run resumes with a fresh one (the solver logs it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import caffe_pb2
from ..errors import PrototxtError
from . import wire
from .atomic import atomic_write

_WORD = (1 << 64) - 1


@dataclass
class SolverStateData:
    iter: int = 0
    learned_net: str = ""
    current_step: int = 0
    history: list[np.ndarray] = field(default_factory=list)
    # "<net index>/<layer name>" -> (source, position of the next record)
    readers: dict[str, tuple[str, int]] = field(default_factory=dict)
    # Data-parallel training: how many solvers wrote the state, the readers of ranks 1.. (rank
    # -> readers as above; `readers` is rank 0's), test batches read per test net over all.
    solver_count: int = 1
    rank_readers: dict[int, dict[str, tuple[str, int]]] = field(default_factory=dict)
    test_batches: list[int] = field(default_factory=list)
    # numpy's bit generator state dict, or None when the file has none we can use
    random_state: dict | None = None
    # Data-parallel training: the random states of ranks 1.. (rank -> state as above).
    rank_random_states: dict[int, dict] = field(default_factory=dict)
    # The file holds the random state in the old pickled field (random_state is None when its
    # opcodes do not build a plain PCG64 state).
    legacy_random_state: bool = False


# SolverState's repeated BlobProto history: streamed in and out by protonet/io/wire.py, so
# the momentum (as big as the weights, twice for Adam) is never held a second time as protobuf
# floats or serialized bytes.
_HISTORY = 3


def write_solverstate(path, data: SolverStateData) -> None:
    state = caffe_pb2.SolverState(iter=data.iter, learned_net=data.learned_net,
                                  current_step=data.current_step)
    for layer, (source, position) in data.readers.items():
        state.data_reader.add(layer=layer, source=source, position=position)
    for rank, readers in sorted(data.rank_readers.items()):
        for layer, (source, position) in readers.items():
            state.data_reader.add(layer=layer, source=source, position=position, rank=rank)
    if data.solver_count > 1:
        state.solver_count = data.solver_count
        state.test_batches.extend(data.test_batches)
    if data.random_state is not None:
        state.random_state.CopyFrom(_random_state_to_proto(data.random_state))
    for rank, random_state in sorted(data.rank_random_states.items()):
        state.rank_random_state.add().CopyFrom(_random_state_to_proto(random_state, rank))
    atomic_write(path, wire.with_blobs(state, _HISTORY, data.history)[0])


def read_solverstate(path) -> SolverStateData:
    """A .solverstate's contents; a damaged file is a PrototxtError naming the field."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the history is read
    except OSError as e:
        raise PrototxtError(f"{path}: cannot read solver state ({e.strerror or e})") from None
    with f:
        reader = wire.Wire(f, str(path))
        history, rest = [], bytearray()
        try:
            for number, wire_type, start, payload, stop in reader.fields(reader.size):
                if number == _HISTORY and wire_type == wire.LENGTH:
                    history.append(wire.scan_blob(reader, payload, stop))
                else:
                    rest += reader.raw(start, stop)
            state = caffe_pb2.SolverState.FromString(bytes(rest))
        except Exception as e:  # wire.Damaged, protobuf's DecodeError and friends
            raise PrototxtError(f"{path}: not a solver state ({e})") from None
        if state.iter < 0 or state.current_step < 0:
            raise PrototxtError(f"{path}: not a solver state (iteration {state.iter}, step "
                                f"{state.current_step})")
        data = SolverStateData(iter=state.iter, learned_net=state.learned_net,
                               current_step=state.current_step)
        data.history = [blob.array(f"{path}: history {i}") for i, blob in enumerate(history)]
    for r in state.data_reader:
        readers = data.rank_readers.setdefault(r.rank, {}) if r.rank else data.readers
        readers[r.layer] = (r.source, int(r.position))
    data.solver_count = state.solver_count or 1
    data.test_batches = list(state.test_batches)
    if state.HasField("random_state"):
        data.random_state = _random_state_from_proto(state.random_state, f"{path}: random_state")
    elif state.HasField("rng_state"):
        data.random_state = _legacy_random_state(state.rng_state)
        data.legacy_random_state = True
    for r in state.rank_random_state:
        data.rank_random_states[r.rank] = _random_state_from_proto(
            r, f"{path}: rank_random_state of rank {r.rank}")
    return data


def _random_state_to_proto(state: dict, rank: int | None = None):
    if state.get("bit_generator") != "PCG64":
        raise ValueError(f"cannot store a {state.get('bit_generator')} random state")
    inner = state["state"]
    return caffe_pb2.RandomState(
        bit_generator="PCG64",
        state=[inner["state"] >> 64, inner["state"] & _WORD],
        inc=[inner["inc"] >> 64, inner["inc"] & _WORD],
        has_uint32=bool(state["has_uint32"]), uinteger=int(state["uinteger"]), rank=rank)


def _random_state_from_proto(proto, where) -> dict:
    if proto.bit_generator != "PCG64":
        raise PrototxtError(f"{where}: generator {proto.bit_generator!r}, protonet uses "
                            "'PCG64' (the file is damaged or from another program)")
    if len(proto.state) != 2 or len(proto.inc) != 2:
        raise PrototxtError(f"{where}: state and inc need two 64-bit words each, the file has "
                            f"{len(proto.state)} and {len(proto.inc)}")
    inc = proto.inc[0] << 64 | proto.inc[1]
    if not inc & 1:
        raise PrototxtError(f"{where}: the increment must be odd (the field is damaged)")
    return {"bit_generator": "PCG64",
            "state": {"state": proto.state[0] << 64 | proto.state[1], "inc": inc},
            "has_uint32": int(proto.has_uint32), "uinteger": int(proto.uinteger)}


# The pickle opcodes a dict of strings and integers is made of; nothing here calls or imports.
_PUSH_VALUE = {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BININT", "BININT1", "BININT2",
               "LONG1", "INT", "LONG", "NEWTRUE", "NEWFALSE"}
_IGNORED = {"PROTO", "FRAME"}


def _legacy_random_state(raw: bytes) -> dict | None:
    """numpy's PCG64 state from an old pickled `rng_state`, decoded without unpickling (the
    opcodes are read with pickletools, nothing is executed); None unless the opcodes build
    exactly that plain dict."""
    import pickletools
    stack: list = []
    memo: dict = {}
    mark = object()
    try:
        for op, arg, _ in pickletools.genops(raw):
            name = op.name
            if name in _IGNORED:
                continue
            if name in _PUSH_VALUE:
                stack.append(arg if name not in ("NEWTRUE", "NEWFALSE") else name == "NEWTRUE")
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "MARK":
                stack.append(mark)
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[arg] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                stack.append(memo[arg])
            elif name == "SETITEMS":
                at = len(stack) - 1 - stack[::-1].index(mark)
                items, stack = stack[at + 1:], stack[:at]
                stack[-1].update(zip(items[::2], items[1::2]))
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                stack[-1][key] = value
            elif name == "STOP":
                break
            else:
                return None
        state = stack[-1] if len(stack) == 1 else None
        inner = state["state"]
        ok = (state["bit_generator"] == "PCG64" and set(inner) == {"state", "inc"}
              and set(state) == {"bit_generator", "state", "has_uint32", "uinteger"}
              and all(type(v) is int and 0 <= v < 1 << 128 for v in inner.values())
              and inner["inc"] & 1 and state["has_uint32"] in (0, 1)
              and type(state["uinteger"]) is int and 0 <= state["uinteger"] < 1 << 32)
    except (ValueError, IndexError, KeyError, TypeError, AttributeError):
        return None
    return {"bit_generator": "PCG64", "state": dict(inner),
            "has_uint32": int(state["has_uint32"]), "uinteger": state["uinteger"]} if ok else None
