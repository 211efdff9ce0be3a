"""Net: a Caffe network built from a NetParameter, run forward and backward.

Construction follows Caffe's Net::Init: filter layers by NetState, order them, insert Split
layers, create each layer through the registry, wire blobs by name (in place when a top
repeats its bottom), set layers up, attach loss weights, collect learnable parameters (shared
by ParamSpec name) and work out which layers need a backward. Forward and backward are plain
loops over the layers. The public surface is pycaffe's.
"""
from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np

from . import caffe_pb2, fusion, graph, memory, prototxt
from .blob import Blob
from .errors import NetDefinitionError, ProtonetError, ShapeError, clip
from .io import caffemodel, hdf5_weights
from .kernels import blas
from .kernels._jit import configure_threads
from .kernels.threads import one_blas_thread
from .registry import layer_class
from .reshape_memo import ReshapeMemo
from .runtime import NCCL

log = logging.getLogger("protonet")

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST


class Net:
    """A network. `Net(prototxt, phase)`, `Net(prototxt, phase, weights=path)` or pycaffe's
    older `Net(prototxt, weights, phase)`; or `Net(param=net_parameter, phase=...)`.

    Attributes (pycaffe's): `blobs` and `params` (ordered dicts), `layers`, `layer_dict`,
    `inputs`, `outputs`, `name`, `phase`, `top_names`, `bottom_names`, `blob_loss_weights`,
    and the index views `_layer_names`, `_blob_names`, `_blobs`, `_inputs`, `_outputs`.
    Weights given at construction, or through `copy_from`, fill the layers the file names;
    layers the file lacks keep their fillers (fine-tuning), a shape mismatch is an error.
    """

    def __init__(self, network_file=None, phase=TRAIN, weights=None, stages=(), *, param=None,
                 level: int = 0, source: str | None = None) -> None:
        if isinstance(phase, (str, Path)):  # pycaffe's Net(file, weights, phase)
            log.warning("Net(prototxt, weights, phase) is pycaffe's deprecated form; use "
                        "Net(prototxt, phase, weights=weights)")
            phase, weights = (weights if weights is not None else TRAIN), phase
        elif isinstance(weights, int) and not isinstance(weights, bool):
            # pycaffe's positional Net(file, phase, level, stages)
            level, weights = weights, None
        if phase not in (TRAIN, TEST):
            raise ProtonetError(f"phase must be protonet.TRAIN or protonet.TEST, got {phase!r}")
        if param is None:
            if network_file is None:
                raise ProtonetError("Net needs a prototxt path or param=NetParameter")
            param = prototxt.read_net(network_file)
            source = source or str(network_file)
        else:
            param = prototxt.upgrade_net(param, source or "<net>")
        self.source = source or "<net>"
        self.phase = phase
        self.name = param.name
        state = caffe_pb2.NetState()
        state.CopyFrom(param.state)
        state.phase = phase
        if level:
            state.level = level
        state.stage.extend(s for s in (stages or ()) if s not in state.stage)
        # Layers the weights file has blobs for skip their fillers (their random draws too):
        # the copy below overwrites them or fails, and then no net is returned.
        weights_follow = caffemodel.layers_with_blobs(weights) if weights is not None and \
            not str(weights).endswith(".h5") else set()
        try:
            self._build(param, state, weights_follow)
        except ProtonetError as e:   # name the file the net came from, once
            if self.source == "<net>" or self.source in str(e):
                raise
            raise type(e)(f"{self.source}: {e}") from None
        if weights is not None:
            self.copy_from(weights)

    # -- construction ------------------------------------------------------------------------
    def _build(self, param, state, weights_follow=frozenset()) -> None:
        configure_threads()
        blas.warn_if_pinned()
        filtered = graph.filter_net(param, state)
        if not len(filtered.layer):
            phase = caffe_pb2.Phase.Name(state.phase)
            raise NetDefinitionError(f"{self.source}: the net has no layers in phase {phase}"
                                     + (" (it has layers for other phases or stages)"
                                        if len(param.layer) else ""))
        ordered = graph.order_layers(filtered)
        net_param = graph.insert_splits(ordered)
        self.param = net_param
        self.force_backward = param.force_backward
        self.blobs: OrderedDict[str, Blob] = OrderedDict()
        self.layers = []
        self.layer_dict: OrderedDict = OrderedDict()
        self._bottoms: list[list[Blob]] = []
        # pycaffe's before/after forward/backward hooks: callables taking a layer index.
        self._hooks: dict[str, list] = {"before_forward": [], "after_forward": [],
                                        "before_backward": [], "after_backward": []}
        self._tops: list[list[Blob]] = []
        self._loss_tops: list[list[tuple[int, float]]] = []
        available: set[str] = set()
        inputs: list[str] = []
        names = Counter(lp.name for lp in net_param.layer)
        for lp in net_param.layer:
            if not lp.HasField("phase"):
                lp.phase = self.phase
            # Caffe accepts two layers of one name (its mnist_autoencoder has two 'loss'
            # layers); as there, the last one answers to the name.
            layer = layer_class(lp.type, lp.name)(lp, self.phase)
            # (Of two layers of one name only the last gets the file's weights.)
            layer.weights_follow = lp.name in weights_follow and names[lp.name] == 1
            if len(lp.propagate_down) not in (0, len(lp.bottom)):
                raise NetDefinitionError(
                    f"layer '{lp.name}' ({lp.type}): {len(lp.propagate_down)} propagate_down "
                    f"values for {len(lp.bottom)} bottoms; give none or one per bottom")
            bottom = [self.blobs[b] for b in lp.bottom]
            available.difference_update(lp.bottom)
            available.update(lp.top)
            top = []
            for j, t in enumerate(_top_names(lp)):
                if j < len(lp.bottom) and lp.bottom[j] == t:
                    if not layer.in_place:
                        raise NetDefinitionError(
                            f"layer '{clip(lp.name)}' ({lp.type}): cannot work in place (top "
                            f"'{clip(t)}' is its bottom); give the top its own name")
                    top.append(self.blobs[t])  # in place
                else:
                    blob = Blob((), name=t)
                    self.blobs[t] = blob
                    top.append(blob)
            if layer.is_net_input:
                inputs.extend(lp.top)
            try:
                layer.set_up(bottom, top)
            except ProtonetError as e:
                raise _in_layer(e, lp) from None
            self.layers.append(layer)
            self.layer_dict[lp.name] = layer
            self._bottoms.append(bottom)
            self._tops.append(top)
            self._loss_tops.append(self._loss_weights(layer, lp, top))
        self.inputs = inputs
        # Caffe's net outputs: blobs still unconsumed after the last layer (an in-place top
        # counts again), in name order as Caffe keeps them in a std::set; the automatic tops
        # of loss layers never enter that set.
        self.outputs = sorted(available)
        engines = [lp.name for lp in net_param.layer for f, v in lp.ListFields()
                   if f.name.endswith("_param") and f.message_type is not None
                   and "engine" in v.DESCRIPTOR.fields_by_name and v.HasField("engine")]
        if engines:
            log.info("%s: 'engine' (layers %s) selects GPU libraries in Caffe; protonet runs "
                     "its own CPU kernels", self.source, ", ".join(engines))
        self._collect_params(net_param)
        self._init_backward()
        self._base_loss_weights = [list(lt) for lt in self._loss_tops]
        self.params: OrderedDict[str, list[Blob]] = OrderedDict(
            (layer.name, layer.blobs) for layer in self.layers if layer.blobs)
        # Layers whose work their producer's output pass does (protonet/fusion.py).
        self.fuse = fusion.enabled_by_default()
        self._fusion = fusion.plan_fusion(self)
        self._reshapes = ReshapeMemo(self.layers, self._bottoms)
        self._check_memory()

    def _check_memory(self) -> None:
        """Every array is within the limit by itself (protonet.memory); all of them together
        must be too. Big arrays are mapped but not yet touched here, so a net too big for the
        machine stops now, naming its biggest layers, rather than swapping or being killed.
        A TEST net's gradients are not counted: its diffs stay untouched (unmapped zero pages)
        unless a script runs backward on it."""
        seen: set[int] = set()
        per_layer = []
        counted = ("_data_buf", "_diff_buf") if self.phase == TRAIN else ("_data_buf",)
        for layer, top in zip(self.layers, self._tops):
            arrays = [getattr(b, name) for b in list(top) + list(layer.blobs)
                      for name in counted]  # the owned buffers
            # The layer's own work arrays (views into them, like conv's col_matrix, are not).
            arrays += [v for v in vars(layer).values()
                       if isinstance(v, np.ndarray) and v.base is None]
            nbytes = 0
            for a in arrays:
                if id(a) not in seen:
                    seen.add(id(a))
                    nbytes += a.nbytes
            per_layer.append((nbytes, layer))
        total = sum(n for n, _ in per_layer)
        if total > memory.limit():
            biggest = sorted(per_layer, key=lambda t: -t[0])[:3]
            names = ", ".join(f"'{clip(layer.name)}' ({layer.type}) {memory.size_text(n)}"
                              for n, layer in biggest)
            memory.check_bytes(total, f"{self.source}: the net's blobs and work arrays "
                                      f"(biggest layers: {names})")

    def _loss_weights(self, layer, lp, top) -> list[tuple[int, float]]:
        weights = list(lp.loss_weight)
        if not weights and layer.default_loss_weight:
            weights = [layer.default_loss_weight]
        if len(weights) > len(top):
            raise NetDefinitionError(f"layer '{lp.name}' ({lp.type}): {len(weights)} loss_weight "
                                     f"values for {len(top)} tops")
        return [(j, float(w)) for j, w in enumerate(weights) if w != 0]

    def _collect_params(self, net_param) -> None:
        """Caffe's AppendParam: owners, sharing by ParamSpec name, lr and decay multipliers."""
        self.learnable_params: list[Blob] = []
        self.params_lr: list[float] = []
        self.params_weight_decay: list[float] = []
        self.learnable_param_names: list[str] = []
        owners: dict[str, tuple[Blob, int, str]] = {}
        # (layer index, blob index) of blobs that use another layer's parameter (not saved
        # by save_hdf5, as in Caffe's ToHDF5).
        self._shared_param_slots: set[tuple[int, int]] = set()
        for layer_index, (layer, lp) in enumerate(zip(self.layers, net_param.layer)):
            if len(lp.param) > len(layer.blobs):
                raise NetDefinitionError(f"layer '{lp.name}' ({lp.type}): {len(lp.param)} param "
                                         f"specs for {len(layer.blobs)} learnable blobs")
            propagate = []
            for j, blob in enumerate(layer.blobs):
                spec = lp.param[j] if j < len(lp.param) else caffe_pb2.ParamSpec()
                propagate.append(spec.lr_mult != 0)
                if not spec.name or spec.name not in owners:
                    if spec.name:
                        owners[spec.name] = (blob, len(self.learnable_params), lp.name)
                    self.learnable_params.append(blob)
                    self.params_lr.append(spec.lr_mult)
                    self.params_weight_decay.append(spec.decay_mult)
                    self.learnable_param_names.append(f"{lp.name}[{j}]")
                    continue
                owner, k, owner_layer = owners[spec.name]
                permissive = spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE
                if (owner.count != blob.count) if permissive else (owner.shape != blob.shape):
                    raise ShapeError(f"layer '{lp.name}': cannot share param '{spec.name}' owned "
                                     f"by layer '{owner_layer}': shape {blob.shape} vs owner's "
                                     f"{owner.shape}")
                if spec.HasField("lr_mult") and spec.lr_mult != self.params_lr[k]:
                    raise NetDefinitionError(f"layer '{lp.name}': shared param '{spec.name}' has "
                                             f"lr_mult {spec.lr_mult}, owner has "
                                             f"{self.params_lr[k]}")
                blob.share_data(owner)
                blob.share_diff(owner)
                self._shared_param_slots.add((layer_index, j))
            layer.param_propagate_down = propagate

    def _init_backward(self) -> None:
        """Which layers and bottoms take part in backward (Caffe's Net::Init, same rules)."""
        n = len(self.layers)
        blob_needs = {name: False for name in self.blobs}
        self._layer_need_backward = [False] * n
        self._bottom_need_backward: list[list[bool]] = []
        for i, lp in enumerate(self.param.layer):
            need = False
            bottom_need = []
            for j, b in enumerate(lp.bottom):
                need |= blob_needs[b]
                nb = blob_needs[b]
                if len(lp.propagate_down):
                    nb = lp.propagate_down[j]
                bottom_need.append(nb)
            need |= any(self.layers[i].param_propagate_down)
            self._layer_need_backward[i] = need
            self._bottom_need_backward.append(bottom_need)
            if need:
                for t in lp.top:
                    blob_needs[t] = True
        under_loss: set[str] = set()
        skip: set[str] = set()
        for i in reversed(range(n)):
            lp = self.param.layer[i]
            loss_tops = {j for j, _ in self._loss_tops[i]}
            contributes = any(j in loss_tops or t in under_loss
                              for j, t in enumerate(_top_names(lp)))
            skip_down = all(t in skip for t in lp.top)
            if self._layer_need_backward[i] and skip_down:
                self._layer_need_backward[i] = False
                self._bottom_need_backward[i] = [False] * len(lp.bottom)
            if not contributes:
                self._layer_need_backward[i] = False
            for j, b in enumerate(lp.bottom):
                if contributes:
                    under_loss.add(b)
                else:
                    self._bottom_need_backward[i][j] = False
                if not self._bottom_need_backward[i][j]:
                    skip.add(b)
        if self.force_backward:
            for i, layer in enumerate(self.layers):
                self._layer_need_backward[i] = True
                self._bottom_need_backward[i] = [
                    nb or layer.allow_force_backward(j)
                    for j, nb in enumerate(self._bottom_need_backward[i])]
                layer.param_propagate_down = [True] * len(layer.blobs)
        for layer, need in zip(self.layers, self._layer_need_backward):
            layer.backward_runs = need

    # -- running -----------------------------------------------------------------------------
    def _index(self, layer_name, default: int) -> int:
        if layer_name is None:
            return default
        names = self._layer_names
        if layer_name not in names:
            raise ProtonetError(f"no layer named '{layer_name}' in the net")
        return names.index(layer_name)  # the first of that name, as pycaffe

    @one_blas_thread()  # BLAS never spins up threads of its own (see kernels/threads.py)
    def forward_from_to(self, start: int, end: int) -> float:
        """Run layers start..end (indices, inclusive); return the weighted loss they produce."""
        loss = 0.0
        before, after = self._hooks["before_forward"], self._hooks["after_forward"]
        skipped, fused = (self._fusion.for_range(start, end)
                          if self.fuse and not (before or after) else ((), {}))
        self._reshapes.start()
        for i in range(start, end + 1):
            if i in skipped:   # its work is done in its producer's output pass
                continue
            for hook in before:
                hook(i)
            layer, bottom, top = self.layers[i], self._bottoms[i], self._tops[i]
            try:
                self._reshapes.reshape(i, layer, bottom, top)
            except ProtonetError as e:
                raise _in_layer(e, layer.param) from None
            if i in fused:
                layer.epilogue = fused[i]
                try:
                    layer.forward(bottom, top)
                finally:
                    layer.epilogue = None
            else:
                layer.forward(bottom, top)
            for j, w in self._loss_tops[i]:
                loss += w * float(top[j].data.sum(dtype=np.float64))
            for hook in after:
                hook(i)
        return loss

    @one_blas_thread()
    def backward_from_to(self, start: int, end: int) -> None:
        """Backward through layers end..start (indices, inclusive), as far as needed."""
        before, after = self._hooks["before_backward"], self._hooks["after_backward"]
        for i in range(end, start - 1, -1):
            for hook in before:
                hook(i)
            for j, w in self._loss_tops[i]:
                self._tops[i][j].diff[...] = w
            if self._layer_need_backward[i]:
                self.layers[i].backward(self._tops[i], self._bottom_need_backward[i],
                                        self._bottoms[i])
            for hook in after:
                hook(i)

    # pycaffe's names for the index-based runs.
    _forward = forward_from_to

    def _backward(self, start: int, end: int) -> None:
        """pycaffe's _backward(start, end): from layer index `start` down to `end`."""
        self.backward_from_to(end, start)

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """pycaffe's Net.forward: set inputs from kwargs, run layers start..end (names,
        inclusive), return {blob: data} for the net's outputs (or, with `end`, that layer's
        tops) and the extra `blobs`."""
        for name, value in kwargs.items():
            if name not in self.inputs:
                raise ProtonetError(f"'{name}' is not an input of the net (inputs: "
                                    f"{', '.join(self.inputs) or 'none'})")
            self.blobs[name].set_data(value)
        start_i = self._index(start, 0)
        end_i = self._index(end, len(self.layers) - 1)
        self.loss = self.forward_from_to(start_i, end_i)
        outputs = set(self.outputs if end is None else self.param.layer[end_i].top)
        outputs.update(blobs or ())
        return {name: self.blobs[name].data for name in self.blobs if name in outputs}

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """pycaffe's Net.backward: set output diffs from kwargs, run layers start..end (names;
        backward goes from `start` down to `end`, inclusive), return {blob: diff} for the
        net's inputs (or, with `end`, that layer's bottoms) and the extra `diffs`."""
        for name, value in kwargs.items():
            if name not in self.outputs:
                raise ProtonetError(f"'{name}' is not an output of the net (outputs: "
                                    f"{', '.join(self.outputs) or 'none'})")
            blob = self.blobs[name]
            value = np.asarray(value)
            if value.shape[:1] != blob.shape[:1]:
                raise ShapeError(f"diff for '{name}' has {value.shape[:1]} samples, the blob "
                                 f"has {blob.shape[:1]}")
            blob.diff[...] = value
        last_i = self._index(end, 0)
        first_i = self._index(start, len(self.layers) - 1)
        self.backward_from_to(last_i, first_i)
        wanted = set(self.inputs if end is None else self.param.layer[last_i].bottom)
        wanted.update(diffs or ())
        return {name: self.blobs[name].diff for name in self.blobs if name in wanted}

    def forward_all(self, blobs=None, **kwargs):
        """pycaffe's forward_all: run the inputs in kwargs (any number of samples) through
        the net batch by batch; return {blob: array of all samples} for the outputs and
        `blobs`. A last partial batch is padded with zeros and the padding dropped."""
        if not kwargs:
            raise ProtonetError("forward_all needs the input arrays as keyword arguments "
                                f"(inputs: {', '.join(self.inputs) or 'none'})")
        wanted = set(self.outputs) | set(blobs or ())
        collected: dict[str, list] = {name: [] for name in wanted}
        for batch in self._batches(kwargs):
            outs = self.forward(blobs=blobs, **batch)
            for name, value in outs.items():
                collected[name].extend(value.copy())
        return _stack_unpadded(collected, _sample_count(kwargs))

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """pycaffe's forward_backward_all: kwargs hold inputs (for forward) and output diffs
        (for backward), any number of samples; returns ({blob: data}, {blob: diff}) over all
        samples for the outputs and `blobs`, the inputs and `diffs`."""
        if not kwargs:
            raise ProtonetError("forward_backward_all needs input arrays or output diffs as "
                                "keyword arguments")
        data = {name: [] for name in set(self.outputs) | set(blobs or ())}
        grads = {name: [] for name in set(self.inputs) | set(diffs or ())}
        forward_batches = list(self._batches({k: v for k, v in kwargs.items()
                                              if k in self.inputs}))
        backward_batches = list(self._batches({k: v for k, v in kwargs.items()
                                               if k in self.outputs}))
        for i in range(max(len(forward_batches), len(backward_batches))):
            fb = forward_batches[i] if i < len(forward_batches) else {}
            bb = backward_batches[i] if i < len(backward_batches) else {}
            for name, value in self.forward(blobs=blobs, **fb).items():
                data[name].extend(value.copy())
            for name, value in self.backward(diffs=diffs, **bb).items():
                grads[name].extend(value.copy())
        total = _sample_count(kwargs)
        return _stack_unpadded(data, total), _stack_unpadded(grads, total)

    def _batches(self, arrays):
        """Split {blob: array of N samples} into the net's batch size (the first blob's
        first axis, as pycaffe); the last batch is padded with zero samples."""
        if not arrays:
            return
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        num = _sample_count(arrays)
        batch_size = next(iter(self.blobs.values())).shape[0]
        for i in range(0, num - num % batch_size, batch_size):
            yield {k: v[i:i + batch_size] for k, v in arrays.items()}
        remainder = num % batch_size
        if remainder:
            yield {k: np.concatenate([v[num - remainder:],
                                      np.zeros((batch_size - remainder,) + v.shape[1:], v.dtype)])
                   for k, v in arrays.items()}

    _batch = _batches  # pycaffe's name

    # -- hooks (pycaffe's Net.before_forward etc.) -------------------------------------------
    def before_forward(self, hook) -> None:
        """Call hook(layer_index) before each layer's forward."""
        self._hooks["before_forward"].append(hook)

    def after_forward(self, hook) -> None:
        """Call hook(layer_index) after each layer's forward."""
        self._hooks["after_forward"].append(hook)

    def before_backward(self, hook) -> None:
        """Call hook(layer_index) before each layer's backward (also for layers that need
        none, as Caffe)."""
        self._hooks["before_backward"].append(hook)

    def after_backward(self, hook) -> None:
        """Call hook(layer_index) after each layer's backward. after_backward(nccl) does
        nothing, as in a Caffe built without NCCL."""
        if not isinstance(hook, NCCL):
            self._hooks["after_backward"].append(hook)

    # -- pycaffe's views by index and name ---------------------------------------------------
    @property
    def _layer_names(self) -> list[str]:
        return [lp.name for lp in self.param.layer]

    @property
    def _blob_names(self) -> list[str]:
        return list(self.blobs)

    @property
    def _blobs(self) -> list[Blob]:
        return list(self.blobs.values())

    def _blob_ids(self, names) -> list[int]:
        index = {name: i for i, name in enumerate(self.blobs)}
        return [index[name] for name in names]

    def _top_ids(self, layer_index: int) -> list[int]:
        return self._blob_ids(_top_names(self.param.layer[layer_index]))

    def _bottom_ids(self, layer_index: int) -> list[int]:
        return self._blob_ids(self.param.layer[layer_index].bottom)

    @property
    def _inputs(self) -> list[int]:
        return self._blob_ids(self.inputs)

    @property
    def _outputs(self) -> list[int]:
        return self._blob_ids(self.outputs)

    @property
    def top_names(self) -> OrderedDict:
        """{layer name: [top blob names]} in layer order."""
        return OrderedDict((lp.name, _top_names(lp)) for lp in self.param.layer)

    @property
    def bottom_names(self) -> OrderedDict:
        """{layer name: [bottom blob names]} in layer order."""
        return OrderedDict((lp.name, list(lp.bottom)) for lp in self.param.layer)

    @property
    def _blob_loss_weights(self) -> list[float]:
        weights = {self._tops[i][j].name: w for i, lt in enumerate(self._loss_tops)
                   for j, w in lt}
        return [weights.get(name, 0.0) for name in self.blobs]

    @property
    def blob_loss_weights(self) -> OrderedDict:
        """{blob name: its weight in the objective} for every blob (0 for non-loss blobs)."""
        return OrderedDict(zip(self.blobs, self._blob_loss_weights))

    def forward_backward(self) -> float:
        """One forward and one backward over the whole net; returns the loss."""
        loss = self.forward_from_to(0, len(self.layers) - 1)
        self.backward_from_to(0, len(self.layers) - 1)
        return loss

    def reshape(self) -> None:
        """Propagate shape changes (e.g. after net.blobs['data'].reshape(...))."""
        for i, (layer, bottom, top) in enumerate(zip(self.layers, self._bottoms, self._tops)):
            try:
                layer.reshape(bottom, top)
            except ProtonetError as e:
                raise _in_layer(e, layer.param) from None
            self._reshapes.remember(i, bottom, top)
        self._check_memory()

    def clear_param_diffs(self) -> None:
        for blob in self.learnable_params:
            blob.diff[...] = 0

    # -- loss weights ------------------------------------------------------------------------
    def loss_weights(self) -> dict[tuple[str, str], float]:
        """{(layer name, top name): weight} for every top that counts in the objective."""
        return {(self.layers[i].name, self._tops[i][j].name): w
                for i, lt in enumerate(self._loss_tops) for j, w in lt}

    def apply_loss_weight_schedule(self, iteration: int) -> None:
        """Set each scheduled loss top's weight for `iteration` (protonet's loss_weight_schedule
        extension): linear from loss_weight at start_iter to end_weight at end_iter, then flat."""
        for i, lp in enumerate(self.param.layer):
            if not lp.HasField("loss_weight_schedule"):
                continue
            s = lp.loss_weight_schedule
            new = []
            for j, w in self._base_loss_weights[i]:
                if iteration <= s.start_iter:
                    new.append((j, w))
                elif iteration >= s.end_iter:
                    new.append((j, s.end_weight))
                else:
                    t = (iteration - s.start_iter) / (s.end_iter - s.start_iter)
                    new.append((j, w + t * (s.end_weight - w)))
            self._loss_tops[i] = new

    # -- weights -----------------------------------------------------------------------------
    def copy_from(self, path, strict: bool = False) -> list[str]:
        """Load weights by layer name from a .caffemodel, or an HDF5 file written by
        save_hdf5 when the name ends in .h5 (Caffe's CopyTrainedLayersFrom).

        Layers in the file but not in the net are ignored, as in Caffe; a blob whose shape
        differs is an error. Learnable layers of the net that the file lacks keep their
        filled values (fine-tuning, net surgery) and their names are returned; with `strict`
        they are an error instead.
        """
        if str(path).endswith(".h5"):
            return hdf5_weights.load(self, path, strict)
        return caffemodel.load(self, path, strict)

    def save_hdf5(self, path, write_diff: bool = False) -> None:
        """Write the weights as Caffe's HDF5 weights file (Net::ToHDF5): /data/<layer>/<i>."""
        hdf5_weights.save(self, path, write_diff)

    def load_hdf5(self, path) -> list[str]:
        """Load weights written by save_hdf5 (or Caffe's .h5 snapshots) by layer name."""
        return hdf5_weights.load(self, path)

    def save(self, path) -> None:
        """Write the weights as a binary .caffemodel, atomically (Caffe's Net::ToProto)."""
        caffemodel.save(self, path)

    def share_with(self, other: "Net") -> None:
        """pycaffe's share_with: use `other`'s weights (same memory) for same-named layers."""
        self.share_trained_layers_with(other)

    def share_trained_layers_with(self, other: "Net") -> None:
        """Use `other`'s learnable blobs (data) for same-named layers (a solver's test nets)."""
        for layer in self.layers:
            source = other.layer_dict.get(layer.name)
            if source is None or not layer.blobs:
                continue
            if len(source.blobs) != len(layer.blobs):
                raise ShapeError(f"layer '{layer.name}': {len(layer.blobs)} blobs here, "
                                 f"{len(source.blobs)} in the net to share with")
            for j, (mine, theirs) in enumerate(zip(layer.blobs, source.blobs)):
                if mine.shape != theirs.shape:
                    raise ShapeError(f"layer '{layer.name}' blob {j}: shape {mine.shape} here, "
                                     f"{theirs.shape} in the net to share with")
                mine.share_data(theirs)

    def set_input_arrays(self, data, labels) -> None:
        """pycaffe's Net.set_input_arrays: feed the first MemoryData layer."""
        for layer in self.layers:
            if hasattr(layer, "set_input_arrays"):
                layer.set_input_arrays(data, labels)
                return
        raise ProtonetError("set_input_arrays needs a MemoryData layer; the net has none")

    _set_input_arrays = set_input_arrays  # pycaffe's name

    # -- diagnostics -------------------------------------------------------------------------
    def first_nonfinite(self) -> tuple[str, str] | None:
        """(layer, top) of the first layer whose output holds NaN or Inf, after a forward."""
        for layer, top in zip(self.layers, self._tops):
            for blob in top:
                if blob.count and not np.isfinite(blob.data).all():
                    return layer.name, blob.name
        return None

    def close(self) -> None:
        """Stop data prefetch threads and close databases."""
        for layer in self.layers:
            layer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        phase = "TRAIN" if self.phase == TRAIN else "TEST"
        return f"Net({self.name!r}, {phase}, {len(self.layers)} layers)"


def _in_layer(e: ProtonetError, lp) -> ProtonetError:
    """`e`, naming the layer `lp` when it does not already (errors from blobs and fillers
    know only their own names)."""
    if str(e).startswith("layer '"):
        return e
    return type(e)(f"layer '{clip(lp.name)}' ({lp.type}): {e}")


# Caffe's name for a top it adds to a loss layer written without one (Net::AppendTop).
AUTOMATIC_TOP = "(automatic)"


def _top_names(lp) -> list[str]:
    """The layer's tops, plus Caffe's AutoTopBlobs: a loss layer written without a top (the
    R-CNN fine-tuning example has one) still gets its loss top, named "(automatic)" and kept
    out of the graph, so several such layers never clash."""
    cls = layer_class(lp.type, lp.name)
    needed = 0
    if cls.auto_top_blobs:
        needed = cls.num_top if isinstance(cls.num_top, int) else cls.num_top[0]
    return list(lp.top) + [AUTOMATIC_TOP] * (needed - len(lp.top))


def _sample_count(arrays) -> int:
    return len(next(iter(arrays.values()))) if arrays else 0


def _stack_unpadded(collected: dict, total: int) -> dict:
    """{blob: list of per-sample arrays} as {blob: ndarray} of the first `total` samples
    (what is left after dropping the zero padding of the last batch)."""
    return {name: np.asarray(samples[:total]) for name, samples in collected.items()}
