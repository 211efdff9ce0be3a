"""A net as a Graphviz DOT graph, after Caffe's draw_net.py: layers are boxes (name, type,
the main settings), blobs are octagons with their shapes, loss layers and the edges into
them are red and carry their loss weights, so deep-supervision branches stand out.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from . import caffe_pb2, graph
from .errors import OutputError, ProtonetError
from .registry import layer_class

log = logging.getLogger("protonet")

# Fill colours by role, as draw_net.py uses them for conv / pool / other layers and blobs.
COLOURS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
           "InnerProduct": "#CC33FF"}
LAYER, BLOB, LOSS = "#6495ED", "#E0E0E0", "#FF3030"


def _quote(text: str) -> str:
    """A DOT string literal; newlines become DOT's centred line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def _settings(lp) -> str:
    """The few settings worth reading on a drawing (kernel, stride, outputs...)."""
    if lp.type in ("Convolution", "Deconvolution"):
        p = lp.convolution_param
        k = list(p.kernel_size) or [p.kernel_h]
        s = list(p.stride) or [1]
        return f"k{k[0]} s{s[0]} out {p.num_output}" + (f" g{p.group}" if p.group > 1 else "")
    if lp.type == "Pooling":
        p = lp.pooling_param
        name = caffe_pb2.PoolingParameter.PoolMethod.Name(p.pool)
        return "global " + name if p.global_pooling else f"{name} k{p.kernel_size} s{p.stride}"
    if lp.type == "InnerProduct":
        return f"out {lp.inner_product_param.num_output}"
    return ""


def _loss_weights(lp, known: dict) -> list[float]:
    """Each top's loss weight: the built net's when known, else the prototxt's, else the
    layer type's default (1 for a loss layer's first top, as Caffe)."""
    try:
        default = layer_class(lp.type, lp.name).default_loss_weight
    except ProtonetError:   # a type protonet does not run can still be drawn
        default = 0.0
    given = list(lp.loss_weight) or ([default] if default else [])
    return [known.get((lp.name, t), given[j] if j < len(given) else 0.0)
            for j, t in enumerate(lp.top)]


def net_to_dot(net_param, phase=None, shapes: dict | None = None, rankdir: str = "LR",
               loss_weights: dict | None = None) -> str:
    """DOT text for `net_param` (a NetParameter, upgraded), the layers of `phase` (None: all).
    `shapes` maps blob names to shapes; `loss_weights` maps (layer, top) to weights."""
    if phase is not None:
        state = caffe_pb2.NetState(phase=phase)
        net_param = graph.filter_net(net_param, state)
    shapes, loss_weights = shapes or {}, dict(loss_weights or {})
    lines = [f"digraph {_quote(net_param.name or 'net')} {{", f"  rankdir={rankdir};",
             '  node [fontname="Helvetica" fontsize=10];']
    blobs: set[str] = set()
    for i, lp in enumerate(net_param.layer):
        weights = _loss_weights(lp, loss_weights)
        is_loss = any(weights)
        node = f"layer{i}"
        label = "\n".join(x for x in (lp.name, f"({lp.type})", _settings(lp)) if x)
        colour = LOSS if is_loss else COLOURS.get(lp.type, LAYER)
        lines.append(f"  {node} [shape=box style=\"filled,rounded\" fillcolor={_quote(colour)} "
                     f"label={_quote(label)}];")
        for b in lp.bottom:
            blobs.add(b)
            attrs = f" [color={_quote(LOSS)}]" if is_loss else ""
            lines.append(f"  {_quote('blob ' + b)} -> {node}{attrs};")
        for t, weight in zip(lp.top, weights):
            blobs.add(t)
            attrs = (f" [color={_quote(LOSS)} fontcolor={_quote(LOSS)} "
                     f"label={_quote(f'loss x {weight:g}')}]") if weight else ""
            lines.append(f"  {node} -> {_quote('blob ' + t)}{attrs};")
    for b in sorted(blobs):
        shape = shapes.get(b)
        label = b + (f"\n{' x '.join(str(d) for d in shape) or 'scalar'}"
                     if shape is not None else "")
        lines.append(f"  {_quote('blob ' + b)} [shape=octagon style=filled "
                     f"fillcolor={_quote(BLOB)} label={_quote(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_text: str, out_path) -> Path:
    """Write `out_path` (.dot as text; .svg/.png/.pdf through Graphviz's `dot`) and return
    the path written. Without Graphviz, writes the DOT text beside it, logs how to render
    it, and returns the .dot path."""
    out = Path(out_path)
    fmt = out.suffix.lstrip(".").lower()
    from .io.atomic import atomic_write
    if fmt == "dot":
        atomic_write(out, dot_text.encode())
        return out
    if fmt not in ("svg", "png", "pdf"):
        raise ProtonetError(f"{out}: choose .svg, .png, .pdf or .dot")
    if shutil.which("dot") is None:
        dot_file = out.with_suffix(".dot")
        if dot_file.exists():  # the user named another file: never replace this one
            raise OutputError(f"Graphviz's `dot` is not installed, so {out} cannot be drawn, "
                              f"and the graph's text would replace {dot_file}, which already "
                              "exists: install Graphviz or give a new .dot path")
        atomic_write(dot_file, dot_text.encode())
        log.warning("Graphviz's `dot` is not installed, so %s was not drawn; the graph is in "
                    "%s: install Graphviz (e.g. apt-get install graphviz) and run "
                    "`dot -T%s %s -o %s`", out, dot_file, fmt, dot_file, out)
        return dot_file
    atomic_write(out, run_graphviz(dot_text, fmt))
    return out


def run_graphviz(dot_text: str, fmt: str) -> bytes:
    """The drawing in Graphviz output format `fmt` (png, svg, pdf, ...), from `dot`."""
    dot = shutil.which("dot")
    if dot is None:
        raise ProtonetError(f"drawing a net as {fmt} needs Graphviz's `dot` (e.g. apt-get "
                            "install graphviz); ext='dot' gives the DOT text without it")
    result = subprocess.run([dot, f"-T{fmt}"], input=dot_text.encode(), capture_output=True)
    if result.returncode:
        raise ProtonetError(f"dot failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


# -- pycaffe's caffe.draw entry points ---------------------------------------------------------
def _net_dot(net_param, rankdir, phase) -> str:
    from .prototxt import upgrade_net
    return net_to_dot(upgrade_net(net_param, net_param.name or "<net>"), phase=phase,
                      rankdir=rankdir)


def draw_net(caffe_net, rankdir: str = "LR", ext: str = "png", phase=None,
             display_lrm: bool = False) -> bytes:
    """The drawing of a NetParameter as `ext` bytes (ext='dot': the DOT text itself).
    `phase` (TRAIN/TEST) keeps only that phase's layers. display_lrm is accepted for
    pycaffe's signature; protonet's labels do not show learning-rate multipliers."""
    dot_text = _net_dot(caffe_net, rankdir, phase)
    return dot_text.encode() if ext == "dot" else run_graphviz(dot_text, ext)


def draw_net_to_file(caffe_net, filename, rankdir: str = "LR", phase=None,
                     display_lrm: bool = False) -> None:
    """Draw a NetParameter into `filename`, in the format its extension names."""
    from .io.atomic import atomic_write
    ext = str(filename).rsplit(".", 1)[-1]
    atomic_write(Path(filename), draw_net(caffe_net, rankdir, ext, phase))


def get_pydot_graph(caffe_net, rankdir: str = "LR", label_edges: bool = True, phase=None,
                    display_lrm: bool = False):
    """The drawing as a pydot.Dot (needs the pydot package)."""
    try:
        import pydot
    except ImportError:
        raise ProtonetError("get_pydot_graph needs pydot (pip install pydot); draw_net(..., "
                            "ext='dot') gives the DOT text without it") from None
    return pydot.graph_from_dot_data(_net_dot(caffe_net, rankdir, phase))[0]


# pycaffe's label helpers (caffe.draw), for scripts that build their own drawings.
_LEARNABLE_TYPES = ("Convolution", "Deconvolution", "InnerProduct")


def get_pooling_types_dict() -> dict[int, str]:
    """{PoolingParameter enum value: name}, e.g. {0: 'MAX', 1: 'AVE', 2: 'STOCHASTIC'}."""
    return {v.number: v.name for v in caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR.values}


def get_edge_label(layer) -> str:
    """The label of a layer's outgoing edges: the batch of a Data layer, the outputs of a
    convolution or inner product, else an empty DOT string ('""')."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer) -> tuple[float, float]:
    """(weights, bias) learning-rate multipliers of a Convolution, Deconvolution or
    InnerProduct layer (1.0 where the layer gives none)."""
    if layer.type not in _LEARNABLE_TYPES:
        raise ValueError(f"{layer.type} layers do not have a learning rate multiplier")
    if len(layer.param) > 2:
        raise ValueError(f"layer '{layer.name}': {len(layer.param)} param specs, expected at "
                         "most 2 (weights, bias)")
    mults = [p.lr_mult for p in layer.param]   # lr_mult defaults to 1 in the schema
    return tuple(mults + [1.0] * (2 - len(mults)))


def get_layer_label(layer, rankdir: str, display_lrm: bool = False) -> str:
    """A layer's node label as pycaffe writes it (a quoted DOT string): name, (type, with
    the pooling method), kernel/stride/pad for convolutions and pooling, and the lr
    multipliers with display_lrm. Parts are stacked on lines for LR drawings, spaced for
    TB/BT ones."""
    separator = " " if rankdir in ("TB", "BT") else r"\n"
    if layer.type == "Pooling":
        kind = f"({layer.type} {get_pooling_types_dict()[layer.pooling_param.pool]})"
    else:
        kind = f"({layer.type})"
    parts = [layer.name, kind]
    if layer.type == "Pooling":
        p = layer.pooling_param
        kernel, stride, pad = p.kernel_size, p.stride, p.pad
    elif layer.type in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        kernel = p.kernel_size[0] if len(p.kernel_size) else 1
        stride = p.stride[0] if len(p.stride) else 1
        pad = p.pad[0] if len(p.pad) else 0
    if layer.type in ("Pooling", "Convolution", "Deconvolution"):
        parts.append(separator.join([f"kernel size: {kernel}", f"stride: {stride}",
                                     f"pad: {pad}"]))
    if display_lrm and layer.type in _LEARNABLE_TYPES:
        weights_mult, bias_mult = get_layer_lr_mult(layer)
        if weights_mult or bias_mult:
            parts.append(f"lr mult: {weights_mult:.1f}, {bias_mult:.1f}")
    return '"' + separator.join(parts) + '"'


def choose_color_by_layertype(layertype: str) -> str:
    """pycaffe's node colour for a layer type (the same colours as net_to_dot's)."""
    return COLOURS.get(layertype, LAYER)
