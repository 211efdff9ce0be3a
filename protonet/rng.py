"""The one seedable random source (Caffe's Caffe::rng_stream()).

Fillers, Dropout, data shuffling, random crops and mirrors all draw from here, so
`set_random_seed(n)` (or a solver's `random_seed`) makes a whole run repeatable, and the state
can be saved in a solverstate for an exact resume (as plain numbers: io/solverstate.py).
"""
from __future__ import annotations

import numpy as np

_generator = np.random.default_rng()


def set_random_seed(seed: int) -> None:
    """Seed every random draw protonet makes (like caffe.set_random_seed)."""
    global _generator
    _generator = np.random.default_rng(int(seed))


def generator() -> np.random.Generator:
    return _generator


def get_state() -> dict:
    """The generator's state: numpy's dict of a name and integers (no objects)."""
    return _generator.bit_generator.state


def set_state(state: dict) -> None:
    """Restore a state from get_state (numpy checks the name and the values' ranges)."""
    _generator.bit_generator.state = state


_WORD = (1 << 64) - 1


def state_to_words(state: dict) -> list[int]:
    """A PCG64 state as six unsigned 64-bit words (state high and low, increment high and low,
    has_uint32, uinteger): how ranks exchange their states in fixed-size MPI messages."""
    inner = state["state"]
    return [inner["state"] >> 64, inner["state"] & _WORD, inner["inc"] >> 64,
            inner["inc"] & _WORD, int(state["has_uint32"]), int(state["uinteger"])]


def state_from_words(words) -> dict:
    state_high, state_low, inc_high, inc_low, has_uint32, uinteger = map(int, words)
    return {"bit_generator": "PCG64",
            "state": {"state": state_high << 64 | state_low, "inc": inc_high << 64 | inc_low},
            "has_uint32": has_uint32, "uinteger": uinteger}
