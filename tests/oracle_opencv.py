"""OpenCV's dnn module as an oracle for protonet's forward pass (OpenCV 4.x reads Caffe nets;
version 5 dropped the importer, hence `opencv-python-headless<5` in the test extra).

    opencv_forward(prototxt, caffemodel, inputs)      -> {layer name: output array}
    fill_random_weights(net, seed)                     every learnable blob, not degenerate
    relative_difference(ours, theirs)                  max |a - b| / max |b|
    match_detections(ours, theirs, rtol)               DetectionOutput rows as sets

OpenCV names outputs by layer, not by blob: `producing_layers(net)` maps each of protonet's
output blobs to the last layer that writes it, which is the name to ask OpenCV for.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np


def opencv_forward(prototxt, caffemodel, inputs: dict, outputs=None) -> dict:
    """Run OpenCV's dnn on `prototxt` + `caffemodel` with `inputs` (blob name -> array); return
    the outputs named in `outputs` (default: the net's unconnected outputs) as float32 arrays.
    An entry of `outputs` is a layer name, or a tuple of candidate names of which the first
    that OpenCV knows is used (OpenCV sometimes renames a layer after its top); results are
    keyed by the entry's first name. Exact arithmetic: OpenCV's CPU backend with Winograd
    convolution off, so differences are rounding, not approximation."""
    import cv2
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel) if caffemodel else None)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    if hasattr(net, "enableWinograd"):
        net.enableWinograd(False)
    for name, array in inputs.items():
        net.setInput(np.ascontiguousarray(array, dtype=np.float32), name)
    if outputs is None:
        outputs = list(net.getUnconnectedOutLayersNames())
    known = set(net.getLayerNames())
    keys, names = [], []
    for entry in outputs:
        candidates = (entry,) if isinstance(entry, str) else tuple(entry)
        found = [c for c in candidates if c in known]
        if not found:
            raise KeyError(f"OpenCV's net has no layer named {' or '.join(candidates)}")
        keys.append(candidates[0])
        names.append(found[0])
    results = net.forward(names)
    return {key: np.asarray(r, dtype=np.float32) for key, r in zip(keys, results)}


def producing_layers(net) -> dict:
    """protonet blob -> name of the last layer writing it, for every net output and every
    blob a Silence layer swallows (colorization's result): the names to ask OpenCV for."""
    writer = {}
    silenced = []
    for lp in net.param.layer:
        for top in lp.top:
            writer[top] = lp.name
        if lp.type == "Silence":
            silenced.extend(lp.bottom)
    return {blob: writer[blob] for blob in [*net.outputs, *silenced]}


def fill_random_weights(net, seed: int = 1701) -> None:
    """Fill every learnable blob with seeded values that keep activations of order one
    through deep nets: weights N(0, 1/fan_in), biases N(0, 0.1), per-channel scales in
    [0.5, 1.5]; BatchNorm's mean N(0, 0.1), variance in [0.5, 1.5], scale factor 1."""
    g = np.random.default_rng(seed)
    for layer in net.layers:
        for j, blob in enumerate(layer.blobs):
            data = blob.data
            if layer.type == "BatchNorm":
                data[...] = (g.normal(0, 0.1, data.shape), g.uniform(0.5, 1.5, data.shape),
                             np.ones(data.shape))[j]
            elif data.ndim >= 2:
                fan_in = max(data.size // data.shape[0], 1)
                data[...] = g.normal(0, 1 / np.sqrt(fan_in), data.shape)
            elif j == 0 and layer.type in ("Scale", "Normalize", "PReLU"):
                data[...] = g.uniform(0.5, 1.5, data.shape)
            else:
                data[...] = g.normal(0, 0.1, data.shape)


def relative_difference(ours, theirs) -> float:
    """max |ours - theirs| over max |theirs| (elementwise ratios blow up near zero)."""
    ours = np.asarray(ours, np.float64)
    theirs = np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        raise AssertionError(f"shapes differ: protonet {ours.shape}, OpenCV {theirs.shape}")
    scale = np.abs(theirs).max() if theirs.size else 0.0
    return float(np.abs(ours - theirs).max() / scale) if scale else float(np.abs(ours).max())


def _detection_rows(out) -> np.ndarray:
    """Real detections of a DetectionOutput top (1, 1, K, 7), sorted by image, label, score
    descending, then box."""
    rows = np.asarray(out, np.float64).reshape(-1, 7)
    # protonet marks "no detection" with label -1; OpenCV pads to keep_top_k with zero rows.
    rows = rows[(rows[:, 1] >= 0) & rows.any(axis=1)]
    # Equal scores are ordered by box (rounded, so that rounding noise does not reorder).
    box = np.round(rows[:, 3:], 4)
    return rows[np.lexsort((*box.T[::-1], -rows[:, 2], rows[:, 1], rows[:, 0]))]


def match_detections(ours, theirs, rtol: float = 1e-4) -> tuple[int, float]:
    """Compare two DetectionOutput tops as sets of boxes: the same (image, label) pairs with
    the same scores and boxes, in any row order. Returns (number of detections, largest
    relative difference); raises AssertionError naming the first mismatch."""
    a, b = _detection_rows(ours), _detection_rows(theirs)
    if len(a) != len(b):
        raise AssertionError(f"protonet found {len(a)} detections, OpenCV {len(b)}")
    if len(a) == 0:
        return 0, 0.0
    if not np.array_equal(a[:, :2], b[:, :2]):
        k = int(np.flatnonzero((a[:, :2] != b[:, :2]).any(axis=1))[0])
        raise AssertionError(f"detection {k}: protonet image/label {a[k, :2]}, OpenCV {b[k, :2]}")
    worst = relative_difference(a[:, 2:], b[:, 2:])
    if worst > rtol:
        raise AssertionError(f"scores/boxes differ by {worst:.3g} relative (> {rtol})")
    return len(a), worst


def rewrite_prototxt(source: Path, target: Path, *edits) -> Path:
    """A copy of `source` at `target` with each top-level block (a layer, an input line)
    passed through the `edits` (functions from block text to block text) in turn."""
    blocks = []
    for block in _layer_blocks(Path(source).read_text()):
        for edit in edits:
            block = edit(block)
        blocks.append(block)
    target.write_text("".join(blocks))
    return target


def replace_layers(replacements: dict):
    """An edit swapping the layers named in `replacements` for the given prototxt text:
    SegNet's DenseImageData for an Input layer, Faster R-CNN's Python proposal layer for the
    Proposal layer OpenCV runs in its place."""
    def edit(block: str) -> str:
        for name, text in replacements.items():
            if f'name: "{name}"' in block or f"name: '{name}'" in block:
                return text + "\n"
        return block
    return edit


def swap_axpy_inputs(block: str) -> str:
    """An edit for OpenCV only: OpenCV 4.x computes Axpy as a * bottom[2] + bottom[1], where
    SENet's layer is a * bottom[1] + bottom[2] (X, then Y); swapping the last two bottoms
    makes OpenCV compute the fork's value."""
    if not re.search(r'type:\s*"Axpy"', block):
        return block
    bottoms = re.findall(r'bottom:\s*"[^"]*"', block)
    if len(bottoms) != 3:
        return block
    first, x, y = (block.index(b) for b in bottoms)
    return block[:x] + bottoms[2] + block[x + len(bottoms[1]):y] + bottoms[1] + \
        block[y + len(bottoms[2]):]


def _layer_blocks(text: str) -> list[str]:
    """The top-level statements of a prototxt, each a string (layer blocks whole); braces in
    quoted strings and # comments do not count."""
    blocks, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "\"'":
            i = text.find(ch, i + 1)  # prototxt strings in these files hold no escaped quotes
            if i < 0:
                break
        elif ch == "#":
            end = text.find("\n", i)
            i = len(text) - 1 if end < 0 else end - 1
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                blocks.append(text[start:i + 1] + "\n")
                start = i + 1
        elif ch == "\n" and depth == 0:
            blocks.append(text[start:i + 1])
            start = i + 1
        i += 1
    blocks.append(text[start:])
    return blocks
