"""Exceptions for users' mistakes.

Every message says where (file:line:col, layer, blob), what is wrong, what was expected and
what was found. The CLI prints a ProtonetError as one line and exits 1; anything else is a bug
in protonet and keeps its traceback.
"""


# Longest message a ProtonetError shows, and longest piece of a user's token one repeats:
# a 10 MB token or 100,000 braces in a file must not come back whole.
MAX_MESSAGE_CHARS = 1500
MAX_TOKEN_CHARS = 80


def clip(text: str, limit: int = MAX_TOKEN_CHARS) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class ProtonetError(Exception):
    """Base of every error caused by a user's input (files, prototxt, arguments)."""

    def __str__(self) -> str:
        text = super().__str__()
        if len(text) <= MAX_MESSAGE_CHARS:
            return text
        keep = (MAX_MESSAGE_CHARS - 60) // 2   # room for the note in the middle
        return f"{text[:keep]} ... ({len(text) - 2 * keep} characters left out) ... {text[-keep:]}"


class PrototxtError(ProtonetError):
    """A prototxt or binary proto that does not parse, or a field Caffe would reject."""


class NetDefinitionError(ProtonetError):
    """A net whose graph is wrong: undefined bottoms, cycles, tops produced twice, bad counts."""


class ShapeError(ProtonetError):
    """Blob shapes that do not fit a layer, or weights that do not fit the net."""


class MemoryLimitError(ShapeError):
    """Shapes whose arrays would not fit in memory (or overflow an element count); the
    message names the layer, the blob and the bytes (see protonet.memory for the limit)."""


class UnknownLayerTypeError(NetDefinitionError):
    """A layer type protonet does not run."""


class SolverConfigError(ProtonetError):
    """A solver prototxt with a value Caffe would reject."""


class DataError(ProtonetError):
    """A dataset (LMDB, IDX, image list, mean file) that is missing or malformed."""


class NonFiniteError(ProtonetError):
    """NaN or Inf where numbers must be finite: a loss or output in training or testing,
    weights in a caffemodel, a solver value."""


class OutputError(ProtonetError):
    """An output path that cannot or must not be written: a folder, a path under a regular
    file, a read-only place, a name too long, one of the inputs, an existing database without
    --overwrite."""
