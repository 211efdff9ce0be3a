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
