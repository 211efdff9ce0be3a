"""Exceptions for users' mistakes.

Every message says where (file:line:col, layer, blob), what is wrong, what was expected and
what was found. The CLI prints a ProtonetError as one line and exits 1; anything else is a bug
in protonet and keeps its traceback.
"""


class ProtonetError(Exception):
    """Base of every error caused by a user's input (files, prototxt, arguments)."""


class PrototxtError(ProtonetError):
    """A prototxt or binary proto that does not parse, or a field Caffe would reject."""


class NetDefinitionError(ProtonetError):
    """A net whose graph is wrong: undefined bottoms, cycles, tops produced twice, bad counts."""


class ShapeError(ProtonetError):
    """Blob shapes that do not fit a layer, or weights that do not fit the net."""


class UnknownLayerTypeError(NetDefinitionError):
    """A layer type protonet does not run."""


class SolverConfigError(ProtonetError):
    """A solver prototxt with a value Caffe would reject."""


class DataError(ProtonetError):
    """A dataset (LMDB, IDX, image list, mean file) that is missing or malformed."""


class NonFiniteError(ProtonetError):
    """Training produced NaN or Inf."""
