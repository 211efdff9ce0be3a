"""Reading Caffe's net and solver definitions, text or binary, and upgrading old dialects.

Every net comes out in the current form (NetParameter.layer with string types), as Caffe's
upgrade_proto does in memory:
- V0 (2014: `layers { layer { type: "conv" ... } }`) -> V1 (`layers { type: CONVOLUTION }`);
- V1 data-layer transformation fields (scale, mean_file, crop_size, mirror) -> transform_param;
- V1 -> V2: enum type -> type string, blobs_lr -> param.lr_mult, weight_decay ->
  param.decay_mult, param names -> param.name, per-layer *_param messages kept;
- top-level `input:` + `input_shape`/`input_dim` -> an Input layer;
- solvers: the `solver_type` enum -> the `type` string.
Syntax errors are reported as `file:line:column: message`.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from . import caffe_pb2
from .errors import PrototxtError, clip
from .registry import V1_TO_V2

log = logging.getLogger("protonet")


# -- reading ---------------------------------------------------------------------------------
def _read_bytes(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise PrototxtError(f"{path}: no such file") from None
    except OSError as e:
        raise PrototxtError(f"{path}: cannot read ({e.strerror})") from None


# Set by allowing_unknown_fields(): where dropped unknown fields are listed.
_dropped_fields: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "dropped_fields", default=None)


@contextlib.contextmanager
def allowing_unknown_fields():
    """Within the block, fields stock Caffe does not know (files from Caffe forks) are
    dropped instead of rejected; yields the list of `file:line:col: Message.field` dropped.

    Stock behaviour (outside the block) is Caffe's: the first unknown field is an error.
    """
    dropped: list[str] = []
    token = _dropped_fields.set(dropped)
    try:
        yield dropped
    finally:
        _dropped_fields.reset(token)


@contextlib.contextmanager
def rejecting_unknown_fields():
    """Within the block, unknown fields are errors even inside allowing_unknown_fields()."""
    token = _dropped_fields.set(None)
    try:
        yield
    finally:
        _dropped_fields.reset(token)


# What --allow-unknown may drop. A field unknown to a message that only describes the net, a
# layer or the solver (a fork's whole `*_param` block or flag on a layer, a fork's solver
# option) is a feature protonet does not have: dropped, with a warning; a fork layer type that
# needs it is still refused by the registry. A field unknown inside a layer's parameter
# message (PoolingParameter.ceil_mode before protonet knew it) changes how a layer protonet
# runs computes: dropping it would run that layer with the field's default and give a
# different answer without saying so, so it stays an error.
_DESCRIPTION_MESSAGES = {"NetParameter", "LayerParameter", "V1LayerParameter",
                         "V0LayerParameter", "SolverParameter"}


# What each message type is to a user, for "failed to parse as ..." messages.
_KINDS = {"NetParameter": "a net", "SolverParameter": "a solver",
          "NetState": "a net state", "BlobProto": "a blob"}

# Longest piece of the user's line an error message repeats.
SNIPPET_CHARS = 80


class _DroppingParser(text_format._Parser):  # noqa: SLF001 - the one hook protobuf offers
    """protobuf's own text parser with unknown fields skipped (allow_unknown_field) and each
    skipped field's position and name recorded; one pass, so it always ends."""

    def __init__(self, allow_unknown: bool) -> None:
        super().__init__(allow_unknown_field=allow_unknown)
        self.skipped: list[tuple[int, int, str]] = []
        self.tokenizer = None
        self._skipping = 0

    def _MergeField(self, tokenizer, message):  # noqa: N802 - protobuf's name
        self.tokenizer = tokenizer
        return super()._MergeField(tokenizer, message)

    def _SkipFieldContents(self, tokenizer, *args):  # noqa: N802 - protobuf's name
        if not self._skipping:   # fields inside a skipped block go with it
            # The field's name is the token just consumed.
            name = args[0] if args else "?"
            owner = args[1] if len(args) > 1 else ""
            self.skipped.append((tokenizer._previous_line + 1,  # noqa: SLF001
                                 tokenizer._previous_column + 1, f"{owner}.{name}"))
        self._skipping += 1
        try:
            return super()._SkipFieldContents(tokenizer, *args)
        finally:
            self._skipping -= 1


def parse_text(text: str, message, filename: str = "<string>"):
    """Parse prototxt `text` into `message`; a syntax error names file:line:column and what
    the file was read as. Within allowing_unknown_fields(), unknown fields are dropped."""
    dropped = _dropped_fields.get()
    parser = _DroppingParser(allow_unknown=dropped is not None)
    message.Clear()
    try:
        parser.ParseLines(text.split("\n"), message)
    except text_format.ParseError as e:
        message.Clear()
        raise _syntax_error(e, text, message, filename, parser.tokenizer) from None
    except RecursionError:
        message.Clear()
        raise PrototxtError(f"{filename}: blocks nested too deeply to read as "
                            f"{_kind(message)}") from None
    for line, col, field in parser.skipped:
        owner = field.removeprefix("caffe.").split(".")[0]
        if owner not in _DESCRIPTION_MESSAGES:
            message.Clear()
            err = PrototxtError(
                f"{filename}:{line}:{col}: unknown field {clip(field.removeprefix('caffe.'))}; "
                "--allow-unknown drops fields of nets, layers and solvers, not of a layer's "
                "parameters: without it the layer would compute something else")
            err.line, err.column = line, col
            raise err
    for line, col, field in parser.skipped:
        where = f"{filename}:{line}:{col}"
        field = clip(field.removeprefix("caffe."))
        log.warning("%s: dropped unknown field %s (--allow-unknown)", where, field)
        dropped.append(f"{where}: {field}")
    return message


def _kind(message) -> str:
    name = message.DESCRIPTOR.name
    return f"{_KINDS[name]} ({name})" if name in _KINDS else name


def _syntax_error(e, text: str, message, filename: str, tokenizer) -> PrototxtError:
    """protobuf's ParseError as one bounded line: `file:line:col: what (reading it as a net
    (NetParameter)); near '<snippet>'`."""
    line, col = e.GetLine(), e.GetColumn()
    if line is None and tokenizer is not None:   # some protobuf errors carry no position
        line, col = tokenizer._line + 1, tokenizer._column + 1  # noqa: SLF001
    msg = str(e)
    if line is not None and msg.startswith(f"{line}:"):   # protobuf's "line:col : " prefix
        msg = msg.split(" : ", 1)[-1]
    snippet = ""
    if line is not None:
        lines = text.split("\n")
        source_line = lines[line - 1] if 0 < line <= len(lines) else ""
        # protobuf starts the message with its tokenizer's current line in quotes.
        current = getattr(tokenizer, "_current_line", source_line)
        for echoed in (f"'{source_line}': ", f"'{current}': "):
            if msg.startswith(echoed):
                msg = msg[len(echoed):]
                break
        start = max(0, (col or 1) - 1 - SNIPPET_CHARS // 2)
        snippet = source_line[start:start + SNIPPET_CHARS].strip()
        if snippet:
            snippet = f"; near '{'...' if start else ''}{snippet}" + (
                "...'" if start + SNIPPET_CHARS < len(source_line) else "'")
    where = f"{filename}:{line}:{col}" if line is not None else filename
    err = PrototxtError(f"{where}: {clip(msg, 2 * SNIPPET_CHARS)} (reading it as "
                        f"{_kind(message)}){snippet}")
    err.line, err.column = line, col
    return err


def parse_net_text(text: str, filename: str = "<string>"):
    """A NetParameter from prototxt text, upgraded to the current form."""
    return upgrade_net(parse_text(text, caffe_pb2.NetParameter(), filename), filename)


def read_net(path):
    """A NetParameter from a text .prototxt (or a binary .caffemodel), upgraded."""
    raw = _read_bytes(path)
    if _looks_binary(raw):
        return read_net_binary(path, raw)
    return parse_net_text(raw.decode("utf-8", errors="replace"), str(path))


def read_net_binary(path, raw: bytes | None = None):
    """A binary NetParameter (.caffemodel), upgraded (V1 `layers` files too)."""
    raw = _read_bytes(path) if raw is None else raw
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(raw)
    except DecodeError as e:
        raise PrototxtError(f"{path}: neither prototxt text (UTF-8) nor a binary NetParameter "
                            f"(caffemodel): {e}") from None
    return upgrade_net(net, str(path))


def read_solver(path):
    """A SolverParameter from a text solver prototxt, upgraded (`solver_type` -> `type`)."""
    raw = _read_bytes(path)
    solver = parse_text(raw.decode("utf-8", errors="replace"), caffe_pb2.SolverParameter(),
                        str(path))
    return upgrade_solver(solver, str(path))


def _looks_binary(raw: bytes) -> bool:
    head = raw[:4096]
    if not head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return b"\x00" in head


# -- upgrading -------------------------------------------------------------------------------
def needs_upgrade(net) -> bool:
    return bool(len(net.layers) or len(net.input) or len(net.input_dim) or len(net.input_shape))


def upgrade_net(net, filename: str = "<net>"):
    """The net in the current form (a new message when anything changed)."""
    if len(net.layer) and len(net.layers):
        raise PrototxtError(f"{filename}: uses both 'layer' and the old 'layers' field; "
                            "use one of them (protonet upgrade converts old files)")
    if not needs_upgrade(net):
        return net
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    if len(out.layers):
        if any(v1.HasField("layer") for v1 in out.layers):
            upgrade_v0_net(out, filename)
        upgrade_v1_data_transformation(out)
        v2 = [v1_to_v2_layer(v1, filename) for v1 in out.layers]
        del out.layers[:]
        for layer in v2:
            out.layer.add().CopyFrom(layer)
    if len(out.input) or len(out.input_dim) or len(out.input_shape):
        upgrade_net_input(out, filename)
    return out


def upgrade_net_input(net, filename: str) -> None:
    """Top-level `input` fields -> an Input layer placed first (Caffe's UpgradeNetInput).

    Caffemodels saved by 2014-2015 Caffe from deploy nets list the input names without any
    shape: as in Caffe, those names are simply dropped (the weights need no Input layer)."""
    names = list(net.input)
    if not len(net.input_shape) and not len(net.input_dim):
        net.ClearField("input")
        return
    if len(net.input_shape):
        if len(net.input_shape) not in (1, len(names)):
            raise PrototxtError(f"{filename}: {len(names)} inputs but {len(net.input_shape)} "
                                "input_shape entries")
        shapes = [list(s.dim) for s in net.input_shape]
    else:
        dims = list(net.input_dim)
        if len(dims) != 4 * len(names):
            raise PrototxtError(f"{filename}: input_dim must give 4 values per input "
                                f"({len(names)} inputs, {len(dims)} values)")
        shapes = [dims[4 * i:4 * i + 4] for i in range(len(names))]
    layer = caffe_pb2.LayerParameter(name="input", type="Input")
    layer.top.extend(names)
    for shape in shapes:
        layer.input_param.shape.add().dim.extend(shape)
    existing = list(net.layer)
    del net.layer[:]
    net.layer.add().CopyFrom(layer)
    for other in existing:
        net.layer.add().CopyFrom(other)
    net.ClearField("input")
    net.ClearField("input_dim")
    net.ClearField("input_shape")


# V1LayerParameter fields with no same-named LayerParameter field of the same kind.
_V1_SPECIAL = {"layer", "type", "param", "blob_share_mode", "blobs_lr", "weight_decay"}


def v1_to_v2_layer(v1, filename: str = "<net>"):
    """One V1LayerParameter as a LayerParameter."""
    out = caffe_pb2.LayerParameter()
    v2_fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    for field, value in v1.ListFields():
        if field.name in _V1_SPECIAL:
            continue
        target = v2_fields.get(field.name)
        if target is None or target.type != field.type or (
                field.message_type is not None
                and target.message_type.full_name != field.message_type.full_name):
            raise PrototxtError(f"{filename}: layer '{v1.name}': V1 field '{field.name}' has no "
                                "counterpart in the current format")
        if field.is_repeated:
            getattr(out, field.name).extend(value)
        elif field.message_type is not None:
            getattr(out, field.name).CopyFrom(value)
        else:
            setattr(out, field.name, value)
    enum_name = caffe_pb2.V1LayerParameter.LayerType.Name(v1.type)
    out.type = V1_TO_V2[enum_name]
    n = max(len(v1.param), len(v1.blob_share_mode), len(v1.blobs_lr), len(v1.weight_decay))
    for i in range(n):
        spec = out.param.add()
        if i < len(v1.param):
            spec.name = v1.param[i]
        if i < len(v1.blob_share_mode):
            spec.share_mode = v1.blob_share_mode[i]
        if i < len(v1.blobs_lr):
            spec.lr_mult = v1.blobs_lr[i]
        if i < len(v1.weight_decay):
            spec.decay_mult = v1.weight_decay[i]
    return out


# Data layers whose own params carried transformation fields before transform_param existed.
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def upgrade_v1_data_transformation(net) -> None:
    """V1 data layers' scale/mean_file/crop_size/mirror -> transform_param (Caffe parity)."""
    holders = {"DATA": "data_param", "IMAGE_DATA": "image_data_param",
               "WINDOW_DATA": "window_data_param"}
    for v1 in net.layers:
        holder = holders.get(caffe_pb2.V1LayerParameter.LayerType.Name(v1.type))
        if holder is None or not v1.HasField(holder):
            continue
        p = getattr(v1, holder)
        for name in _TRANSFORM_FIELDS:
            if name in p.DESCRIPTOR.fields_by_name and p.HasField(name):
                setattr(v1.transform_param, name, getattr(p, name))
                p.ClearField(name)


def upgrade_solver(solver, filename: str = "<solver>"):
    """The legacy `solver_type` enum -> the `type` string (Caffe's UpgradeSolverType)."""
    if solver.HasField("solver_type"):
        if solver.HasField("type"):
            raise PrototxtError(f"{filename}: both solver_type and type are set; keep 'type'")
        names = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad",
                 "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam"}
        solver.type = names[caffe_pb2.SolverParameter.SolverType.Name(solver.solver_type)]
        solver.ClearField("solver_type")
    return solver


# V0 type strings -> V1 enum names (Caffe's UpgradeV0LayerType).
V0_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION",
    "data": "DATA", "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING",
    "relu": "RELU", "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT", "tanh": "TANH", "window_data": "WINDOW_DATA",
}

# V0 field -> {V1 type: "message.field"} ("*" = any type). Fields V0 and V1 share by name
# (name, blobs, blobs_lr, weight_decay, hdf5_output_param) are copied as they are.
V0_FIELDS = {
    "num_output": {"CONVOLUTION": "convolution_param.num_output",
                   "INNER_PRODUCT": "inner_product_param.num_output"},
    "biasterm": {"CONVOLUTION": "convolution_param.bias_term",
                 "INNER_PRODUCT": "inner_product_param.bias_term"},
    "weight_filler": {"CONVOLUTION": "convolution_param.weight_filler",
                      "INNER_PRODUCT": "inner_product_param.weight_filler"},
    "bias_filler": {"CONVOLUTION": "convolution_param.bias_filler",
                    "INNER_PRODUCT": "inner_product_param.bias_filler"},
    "pad": {"CONVOLUTION": "convolution_param.pad", "POOLING": "pooling_param.pad"},
    "kernelsize": {"CONVOLUTION": "convolution_param.kernel_size",
                   "POOLING": "pooling_param.kernel_size"},
    "group": {"CONVOLUTION": "convolution_param.group"},
    "stride": {"CONVOLUTION": "convolution_param.stride", "POOLING": "pooling_param.stride"},
    "pool": {"POOLING": "pooling_param.pool"},
    "dropout_ratio": {"DROPOUT": "dropout_param.dropout_ratio"},
    "local_size": {"LRN": "lrn_param.local_size"},
    "alpha": {"LRN": "lrn_param.alpha"},
    "beta": {"LRN": "lrn_param.beta"},
    "k": {"LRN": "lrn_param.k"},
    "source": {"DATA": "data_param.source", "HDF5_DATA": "hdf5_data_param.source",
               "IMAGE_DATA": "image_data_param.source",
               "WINDOW_DATA": "window_data_param.source",
               "INFOGAIN_LOSS": "infogain_loss_param.source"},
    "scale": {"*": "transform_param.scale"},
    "meanfile": {"*": "transform_param.mean_file"},
    "batchsize": {"DATA": "data_param.batch_size", "HDF5_DATA": "hdf5_data_param.batch_size",
                  "IMAGE_DATA": "image_data_param.batch_size",
                  "WINDOW_DATA": "window_data_param.batch_size"},
    "cropsize": {"*": "transform_param.crop_size"},
    "mirror": {"*": "transform_param.mirror"},
    "rand_skip": {"DATA": "data_param.rand_skip", "IMAGE_DATA": "image_data_param.rand_skip"},
    "shuffle_images": {"IMAGE_DATA": "image_data_param.shuffle"},
    "new_height": {"IMAGE_DATA": "image_data_param.new_height"},
    "new_width": {"IMAGE_DATA": "image_data_param.new_width"},
    "concat_dim": {"CONCAT": "concat_param.concat_dim"},
    "det_fg_threshold": {"WINDOW_DATA": "window_data_param.fg_threshold"},
    "det_bg_threshold": {"WINDOW_DATA": "window_data_param.bg_threshold"},
    "det_fg_fraction": {"WINDOW_DATA": "window_data_param.fg_fraction"},
    "det_context_pad": {"WINDOW_DATA": "window_data_param.context_pad"},
    "det_crop_mode": {"WINDOW_DATA": "window_data_param.crop_mode"},
}
_V0_SHARED = ("name", "blobs", "blobs_lr", "weight_decay", "hdf5_output_param")


def upgrade_v0_net(net, filename: str) -> None:
    """V0 layers (`layers { layer { type: "conv" } bottom: ... }`) -> V1 layers, in place.

    V0 "padding" layers are folded into the convolution or pooling layer they feed, as
    Caffe's UpgradeV0PaddingLayers does.
    """
    v1_layers = [_fold_padding(net.layers, i, filename) for i in range(len(net.layers))]
    del net.layers[:]
    for v1 in v1_layers:
        if v1 is not None:
            net.layers.add().CopyFrom(v1)


def _fold_padding(layers, i: int, filename: str):
    old = layers[i]
    v0 = old.layer
    if v0.type == "padding":
        return None
    out = caffe_pb2.V1LayerParameter()
    out.bottom.extend(old.bottom)
    out.top.extend(old.top)
    enum_name = V0_TYPES.get(v0.type)
    if enum_name is None:
        raise PrototxtError(f"{filename}: V0 layer '{v0.name}' has unknown type \"{v0.type}\" "
                            f"(known: {', '.join(sorted(V0_TYPES))})")
    out.type = caffe_pb2.V1LayerParameter.LayerType.Value(enum_name)
    for field, value in v0.ListFields():
        if field.name in ("type",):
            continue
        if field.name in _V0_SHARED:
            _assign(out, field.name, value)
            continue
        targets = V0_FIELDS.get(field.name, {})
        target = targets.get(enum_name) or targets.get("*")
        if target is None:
            raise PrototxtError(f"{filename}: V0 layer '{v0.name}' ({v0.type}): field "
                                f"'{field.name}' does not apply to this layer type")
        message, name = target.split(".")
        _assign(getattr(out, message), name, value)
    # A V0 padding layer feeding this one becomes this layer's pad.
    for j, b in enumerate(out.bottom):
        for prev in layers[:i]:
            if prev.layer.type == "padding" and b in prev.top:
                if enum_name not in ("CONVOLUTION", "POOLING"):
                    raise PrototxtError(f"{filename}: V0 padding layer '{prev.layer.name}' feeds "
                                        f"'{v0.name}', which is not a convolution or pooling")
                if len(prev.bottom) != 1 or len(prev.top) != 1 or len(out.bottom) != 1:
                    raise PrototxtError(
                        f"{filename}: V0 padding layer '{prev.layer.name}' needs one bottom and "
                        f"one top (has {len(prev.bottom)} and {len(prev.top)}), and the layer "
                        f"it feeds, '{v0.name}', one bottom (has {len(out.bottom)})")
                holder = (out.convolution_param if enum_name == "CONVOLUTION"
                          else out.pooling_param)
                if enum_name == "CONVOLUTION":
                    del holder.pad[:]
                    holder.pad.append(prev.layer.pad)
                else:
                    holder.pad = prev.layer.pad
                out.bottom[j] = prev.bottom[0]
    return out


def _assign(message, name: str, value) -> None:
    """Set field `name` of `message` to `value`; a single value goes into a repeated field
    as its one element (V0's scalar `pad` -> V1's repeated `pad`)."""
    field = message.DESCRIPTOR.fields_by_name[name]
    target = getattr(message, name)
    if field.is_repeated:
        single = isinstance(value, (str, bytes, int, float)) or hasattr(value, "ListFields")
        values = [value] if single else list(value)
        if field.message_type is not None:
            for v in values:
                target.add().CopyFrom(v)
        else:
            target.extend(values)
    elif field.message_type is not None:
        target.CopyFrom(value)
    else:
        setattr(message, name, value)
