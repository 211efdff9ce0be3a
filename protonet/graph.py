"""Pure NetParameter -> NetParameter transforms, before any layer exists.

- `filter_net`: keep the layers whose include/exclude rules the NetState meets (Caffe's
  Net::FilterNet and StateMeetsRule).
- `order_layers`: put every layer after the producers of its bottoms (definition order when
  already valid), rejecting undefined bottoms, cycles and tops produced twice.
- `insert_splits`: where one top feeds several bottoms (or feeds a bottom and is a loss), add a
  Split layer so that every backward can overwrite its bottom diff (Caffe's InsertSplits, with
  its blob and layer names, so nets and caffemodels line up with Caffe's).
"""
from __future__ import annotations

import difflib
import heapq

from . import caffe_pb2
from .errors import NetDefinitionError, clip


def state_meets_rule(state, rule) -> bool:
    """Caffe's StateMeetsRule: phase, min/max level, stages all present, not_stages absent."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    return not any(s in stages for s in rule.not_stage)


def filter_net(net_param, state):
    """A copy of `net_param` holding only the layers included in `state`."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    del out.layer[:]
    for layer in net_param.layer:
        if len(layer.include) and len(layer.exclude):
            raise NetDefinitionError(f"layer '{layer.name}': specify either include rules or "
                                     "exclude rules, not both")
        included = not len(layer.include)
        if any(state_meets_rule(state, r) for r in layer.exclude):
            included = False
        if any(state_meets_rule(state, r) for r in layer.include):
            included = True
        if included:
            out.layer.add().CopyFrom(layer)
    return out


def order_layers(net_param, inputs=()):
    """A copy with layers in an executable order (stable: definition order when valid).

    A layer is runnable once every bottom name has been produced (a blob name always means
    its latest producer, so in-place layers chain). Errors name the layer and the blob.
    """
    layers = list(net_param.layer)
    _check_tops(layers)
    produced_anywhere = {t for layer in layers for t in layer.top} | set(inputs)
    for layer in layers:
        for i, b in enumerate(layer.bottom):
            if b not in produced_anywhere:
                near = difflib.get_close_matches(b, sorted(produced_anywhere), n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                raise NetDefinitionError(f"layer '{layer.name}' ({layer.type}): unknown bottom "
                                         f"blob '{b}' (bottom {i}){hint}")
    placed = _runnable_order(layers, inputs)
    if len(placed) < len(layers):
        waiting = [layers[i].name for i in sorted(set(range(len(layers))) - set(placed))]
        shown = ", ".join(f"'{clip(name)}'" for name in waiting[:10])
        more = f" and {len(waiting) - 10} more" if len(waiting) > 10 else ""
        raise NetDefinitionError(f"the net has a cycle: layers {shown}{more} each wait for a "
                                 "bottom produced by another of them")
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    del out.layer[:]
    for idx in placed:
        out.layer.add().CopyFrom(layers[idx])
    return out


def _runnable_order(layers, inputs) -> list[int]:
    """Indices of `layers` in execution order: each step takes the lowest-indexed layer whose
    bottom names have all been produced (so a valid definition order is kept). A heap of
    runnable layers and a count of missing names per layer keep it O(n log n) for any input
    order; layers left out wait on a cycle."""
    available = set(inputs)
    missing: list[int] = []
    waiting_on: dict[str, list[int]] = {}
    runnable: list[int] = []
    for i, layer in enumerate(layers):
        names = set(layer.bottom) - available
        missing.append(len(names))
        for name in names:
            waiting_on.setdefault(name, []).append(i)
        if not names:
            runnable.append(i)
    heapq.heapify(runnable)
    placed = []
    while runnable:
        i = heapq.heappop(runnable)
        placed.append(i)
        for name in layers[i].top:
            if name in available:
                continue
            available.add(name)
            for j in waiting_on.pop(name, ()):
                missing[j] -= 1
                if not missing[j]:
                    heapq.heappush(runnable, j)
    return placed


def _check_tops(layers) -> None:
    """A top name may be produced once, except in place (top j named as bottom j)."""
    producer: dict[str, str] = {}
    for layer in layers:
        for j, top in enumerate(layer.top):
            in_place = j < len(layer.bottom) and layer.bottom[j] == top
            if top in producer and not in_place:
                raise NetDefinitionError(
                    f"layer '{layer.name}' ({layer.type}): top blob '{top}' is already produced "
                    f"by layer '{producer[top]}' (only in-place layers, with top {j} equal to "
                    f"bottom {j}, may reuse a name)")
            if in_place and top not in producer:
                producer[top] = layer.name
            producer.setdefault(top, layer.name)


def split_layer_name(layer_name: str, blob_name: str, top_index: int) -> str:
    return f"{blob_name}_{layer_name}_{top_index}_split"


def split_blob_name(layer_name: str, blob_name: str, top_index: int, split_index: int) -> str:
    return f"{blob_name}_{layer_name}_{top_index}_split_{split_index}"


def insert_splits(net_param, inputs=()):
    """A copy where every top read more than once goes through a Split layer. A layer in
    place on such a top is refused: it would read a split top and write a second blob of the
    same name (Caffe: "produced by multiple sources")."""
    layers = list(net_param.layer)
    last_top: dict[str, tuple[int, int]] = {name: (-1, k) for k, name in enumerate(inputs)}
    source: dict[tuple[int, int], tuple[int, int]] = {}
    uses: dict[tuple[int, int], int] = {}
    loss_weight: dict[tuple[int, int], float] = {}
    for i, layer in enumerate(layers):
        for j, b in enumerate(layer.bottom):
            top_idx = last_top[b]
            source[(i, j)] = top_idx
            uses[top_idx] = uses.get(top_idx, 0) + 1
        for j, t in enumerate(layer.top):
            last_top[t] = (i, j)
        # A top used as a loss counts as one more reader (Caffe parity).
        for j in range(min(len(layer.loss_weight), len(layer.top))):
            top_idx = last_top[layer.top[j]]
            loss_weight[top_idx] = layer.loss_weight[j]
            if layer.loss_weight[j]:
                uses[top_idx] = uses.get(top_idx, 0) + 1

    names = {-1: "input"} | {i: layer.name for i, layer in enumerate(layers)}
    next_split: dict[tuple[int, int], int] = {}
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    del out.layer[:]

    def add_splits(i: int, tops) -> None:
        for j, blob in enumerate(tops):
            n = uses.get((i, j), 0)
            if n <= 1:
                continue
            weight = loss_weight.get((i, j), 0.0)
            split = out.layer.add()
            split.name = split_layer_name(names[i], blob, j)
            split.type = "Split"
            split.bottom.append(blob)
            split.top.extend(split_blob_name(names[i], blob, j, k) for k in range(n))
            if weight:
                split.loss_weight.extend([weight] + [0.0] * (n - 1))
                if i >= 0:
                    out.layer[owner_index[i]].ClearField("loss_weight")
                next_split[(i, j)] = 1

    owner_index: dict[int, int] = {}
    add_splits(-1, list(inputs))
    for i, layer in enumerate(layers):
        new = out.layer.add()
        new.CopyFrom(layer)
        owner_index[i] = len(out.layer) - 1
        for j, b in enumerate(new.bottom):
            top_idx = source[(i, j)]
            if uses.get(top_idx, 0) > 1:
                if j < len(new.top) and new.top[j] == b:
                    readers = [f"layer '{clip(layers[r].name)}'"
                               for (r, _), src in source.items() if src == top_idx and r != i]
                    raise NetDefinitionError(
                        f"layer '{clip(layer.name)}' ({layer.type}) works in place on blob "
                        f"'{clip(b)}', which {(readers or ['its loss weight'])[0]} also reads: "
                        f"give its top its own name (Caffe stops here too: top blob "
                        f"'{clip(b)}' produced by multiple sources)")
                k = next_split.get(top_idx, 0)
                next_split[top_idx] = k + 1
                new.bottom[j] = split_blob_name(names[top_idx[0]], b, top_idx[1], k)
        add_splits(i, list(layer.top))
    return out
