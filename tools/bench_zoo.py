"""The zoo part of tools/bench.py: Caffe nets built three ways from the same prototxt and the
same weights: protonet, PyTorch (the same architecture in torch.nn, weights copied,
channels_last) and OpenCV's dnn module (cv2.dnn.readNetFromCaffe on the prototxt and
caffemodel). Each function here runs inside one worker process of bench.py.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "caffe-models"
REAL_MODELS = ROOT.parent / "shared" / "conformance" / "real-models"

# name: (deploy prototxt, train prototxt, solver prototxt, input (C, H, W))
ZOO = {
    "cifar10_quick": (SHARED / "examples/cifar10/cifar10_quick.prototxt",
                      SHARED / "examples/cifar10/cifar10_quick_train_test.prototxt",
                      SHARED / "examples/cifar10/cifar10_quick_solver.prototxt", (3, 32, 32)),
    "cifar10_full": (SHARED / "examples/cifar10/cifar10_full.prototxt",
                     SHARED / "examples/cifar10/cifar10_full_train_test.prototxt",
                     SHARED / "examples/cifar10/cifar10_full_solver.prototxt", (3, 32, 32)),
    "caffenet": (SHARED / "models/bvlc_reference_caffenet/deploy.prototxt",
                 SHARED / "models/bvlc_reference_caffenet/train_val.prototxt",
                 SHARED / "models/bvlc_reference_caffenet/solver.prototxt", (3, 227, 227)),
    "googlenet": (SHARED / "models/bvlc_googlenet/deploy.prototxt", None, None, (3, 224, 224)),
    "vgg16": (ROOT / "models/vgg16_deploy.prototxt", None, None, (3, 224, 224)),
    "resnet50": (ROOT / "models/resnet50_deploy.prototxt", None, None, (3, 224, 224)),
    "lenet": (ROOT / "models/lenet.prototxt", None, None, (1, 28, 28)),
    "mobilenet_v1": (REAL_MODELS / "mobilenet_v1.prototxt", None, None, (3, 224, 224)),
    "mobilenet_ssd": (REAL_MODELS / "mobilenet_ssd.prototxt", None, None, (3, 300, 300)),
}


def vm_kib(field: str) -> int:
    return int(re.search(field + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def reset_peak_rss() -> None:
    """Start VmHWM again from the current resident size (Linux 4.0+), so the peak measured is
    the forward's, not the loading's."""
    Path("/proc/self/clear_refs").write_text("5")


def deploy_text(name: str, batch: int) -> str:
    """The deploy prototxt with its Input's batch set to `batch`."""
    from google.protobuf import text_format
    from protonet import prototxt
    param = prototxt.read_net(ZOO[name][0])
    for lp in param.layer:
        if lp.type == "Input":
            lp.input_param.shape[0].dim[0] = batch
    return text_format.MessageToString(param)


def prepare(name: str, batch: int, workdir: Path) -> dict:
    """Write workdir/{name}_b{batch}.prototxt and workdir/{name}.caffemodel (random weights,
    He-scaled so activations stay finite; BatchNorm variances positive)."""
    import numpy as np
    import protonet
    from protonet import prototxt
    workdir = Path(workdir)
    text = deploy_text(name, batch)
    proto = workdir / f"{name}_b{batch}.prototxt"
    proto.write_text(text)
    weights = workdir / f"{name}.caffemodel"
    if not weights.exists():
        net = protonet.Net(param=prototxt.parse_net_text(text), phase=protonet.TEST)
        rng = np.random.default_rng(0)
        for layer in net.layers:
            for i, blob in enumerate(layer.blobs):
                if layer.param.type == "BatchNorm":
                    blob.data[...] = 1.0 if i == 2 else (rng.random(blob.shape) + 0.5 if i == 1
                                                        else rng.standard_normal(blob.shape) * .1)
                else:
                    fan_in = max(1, blob.count // blob.shape[0]) if blob.num_axes > 1 else 1
                    blob.data[...] = rng.standard_normal(blob.shape) * (2.0 / fan_in) ** 0.5
        net.save(str(weights))
    return {"prototxt": str(proto), "weights": str(weights)}


def protonet_and_opencv(name: str, batch: int, workdir: Path):
    """The zoo net `name` at `batch` built twice from the same files, with the same random
    input set: (protonet TEST net, OpenCV dnn net). For the A/B tools beside bench.py."""
    import cv2
    import numpy as np
    import protonet
    files = prepare(name, batch, workdir)
    net = protonet.Net(files["prototxt"], protonet.TEST, weights=files["weights"])
    data = net.blobs[net.inputs[0]]
    data.data[...] = np.random.default_rng(1).random(data.shape, dtype=np.float32)
    cv_net = cv2.dnn.readNetFromCaffe(files["prototxt"], files["weights"])
    cv_net.setInput(data.data.copy())
    return net, cv_net


def _timed(forward, seconds: float, at_least: int = 3) -> list[float]:
    """Milliseconds of each forward: one warm-up, then until `seconds` have passed (at least
    `at_least` forwards)."""
    forward()
    times, start = [], time.perf_counter()
    while len(times) < at_least or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        forward()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def forward_protonet(proto: str, weights: str, seconds: float) -> dict:
    import numpy as np
    import protonet
    base = vm_kib("VmRSS")
    net = protonet.Net(proto, protonet.TEST, weights=weights)
    data = net.blobs[net.inputs[0]]
    data.data[...] = np.random.default_rng(1).random(data.shape, dtype=np.float32)
    weight_bytes = sum(b.data.nbytes for layer in net.layers for b in layer.blobs)
    pair = max(sum(b.data.nbytes for b in {id(x): x for x in bottoms + tops}.values())
               for bottoms, tops in zip(net._bottoms, net._tops))
    reset_peak_rss()
    times = _timed(net.forward, seconds)
    return {"ms": times, "peak_rss_mb": vm_kib("VmHWM") / 1024,
            "net_rss_mb": (vm_kib("VmHWM") - base) / 1024, "weights_mb": weight_bytes / 2**20,
            "largest_pair_mb": pair / 2**20}


def memory_protonet(proto: str, weights: str) -> dict:
    """The resident memory of a fresh batch-1 deploy process over its whole life, phase by
    phase (numpy imported first, then protonet; numba's runtime; Net(prototxt, TEST,
    weights=); three forwards): VmRSS after each phase, VmHWM (the peak so far) after loading and at the end,
    the load's seconds, and issue 14's budget, 1.5 x (weights + the largest layer's bottoms
    and tops)."""
    import numpy as np
    rss = {"numpy": vm_kib("VmRSS") / 1024}
    import protonet
    rss["import"] = vm_kib("VmRSS") / 1024
    # numba's runtime, which its first kernel brings in even from the on-disk cache (its
    # typing and lowering modules, LLVM's code and the runtime it compiles); every net's
    # forward would load this one (Winograd's weights' fingerprint) anyway.
    from protonet.kernels.digest import fingerprint
    fingerprint(np.zeros(1, np.uint32))
    rss["numba_runtime"] = vm_kib("VmRSS") / 1024
    start = time.perf_counter()
    net = protonet.Net(proto, protonet.TEST, weights=weights)
    load_s = time.perf_counter() - start
    rss["loaded"], load_peak = vm_kib("VmRSS") / 1024, vm_kib("VmHWM") / 1024
    data = net.blobs[net.inputs[0]]
    data.data[...] = np.random.default_rng(1).random(data.shape, dtype=np.float32)
    for _ in range(3):
        net.forward()
    rss["forwards"] = vm_kib("VmRSS") / 1024
    weight_bytes = sum(b.data.nbytes for layer in net.layers for b in layer.blobs)
    pair = max(sum(b.data.nbytes for b in {id(x): x for x in bottoms + tops}.values())
               for bottoms, tops in zip(net._bottoms, net._tops))
    return {"rss_mb": rss, "load_peak_mb": load_peak, "peak_mb": vm_kib("VmHWM") / 1024,
            "load_s": load_s, "weights_mb": weight_bytes / 2**20,
            "largest_pair_mb": pair / 2**20, "budget_mb": 1.5 * (weight_bytes + pair) / 2**20}


def forward_opencv(proto: str, weights: str, threads: int, seconds: float) -> dict:
    import cv2
    import numpy as np
    cv2.setNumThreads(threads)
    base = vm_kib("VmRSS")
    net = cv2.dnn.readNetFromCaffe(proto, weights)
    shape = _input_shape(proto)
    net.setInput(np.random.default_rng(1).random(shape, dtype=np.float32))
    net.forward()
    reset_peak_rss()
    times = _timed(net.forward, seconds)
    return {"ms": times, "peak_rss_mb": vm_kib("VmHWM") / 1024,
            "net_rss_mb": (vm_kib("VmHWM") - base) / 1024}


def fusion_ab(proto: str, weights: str, threads: int, seconds: float, rounds: int) -> dict:
    """protonet's forward with its fused output pass (protonet/fusion.py) off and on, and
    OpenCV dnn's forward, alternating forward by forward in one process (so a busy machine
    slows all three alike) for at least `rounds` rounds and `seconds` seconds: each one's
    ms, the per-round ratios, and the largest difference between the two protonet forwards'
    blobs, relative to each blob's largest magnitude."""
    import numpy as np
    import protonet
    net = protonet.Net(proto, protonet.TEST, weights=weights)
    x = np.random.default_rng(1).random(net.blobs[net.inputs[0]].shape, dtype=np.float32)
    net.blobs[net.inputs[0]].data[...] = x
    blobs = {}
    for fuse in (False, True):
        net.fuse = fuse
        net.forward()
        blobs[fuse] = {k: b.data.copy() for k, b in net.blobs.items() if b.count}
    diff = max(float(np.abs(blobs[True][k] - v).max() / max(np.abs(v).max(), 1e-30))
               for k, v in blobs[False].items())
    del blobs
    runs = {"unfused": lambda: setattr(net, "fuse", False) or net.forward(),
            "fused": lambda: setattr(net, "fuse", True) or net.forward()}
    try:
        import cv2
        cv2.setNumThreads(threads)
        cv_net = cv2.dnn.readNetFromCaffe(proto, weights)
        cv_net.setInput(x)
        runs["opencv"] = cv_net.forward
    except ImportError:
        pass
    ms = {name: [] for name in runs}
    for forward in runs.values():   # warm-up
        forward()
    start = time.perf_counter()
    while len(ms["fused"]) < rounds or time.perf_counter() - start < seconds:
        for name, forward in runs.items():
            t = time.perf_counter()
            forward()
            ms[name].append((time.perf_counter() - t) * 1e3)
    groups = net._fusion.groups  # noqa: SLF001 - what the plan fused, for the table
    return {"ms": ms, "max_rel_diff": diff, "folded": sum(g.folds for g in groups),
            "relu_fused": sum(g.negative_slope is not None for g in groups)}


def _input_shape(proto: str) -> tuple:
    from protonet import prototxt
    for lp in prototxt.read_net(proto).layer:
        if lp.type == "Input":
            return tuple(lp.input_param.shape[0].dim)
    raise ValueError(f"{proto} has no Input layer")


def forward_torch(proto: str, weights: str, seconds: float) -> dict:
    import gc

    import numpy as np
    import torch
    import protonet
    base = vm_kib("VmRSS")
    net = protonet.Net(proto, protonet.TEST, weights=weights)
    model = TorchFromCaffe(net).eval().to(memory_format=torch.channels_last)
    x = torch.from_numpy(np.random.default_rng(1).random(_input_shape(proto), dtype=np.float32))
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        got = model({net.inputs[0]: x})
    expected = net.forward(**{net.inputs[0]: x.numpy()})
    max_diff = max(float(np.abs(got[k].float().numpy() - v).max()) for k, v in expected.items())
    name = net.inputs[0]
    del net, expected
    gc.collect()
    reset_peak_rss()

    def forward():
        with torch.inference_mode():
            model({name: x})
    times = _timed(forward, seconds)
    return {"ms": times, "peak_rss_mb": vm_kib("VmHWM") / 1024,
            "net_rss_mb": (vm_kib("VmHWM") - base) / 1024, "max_diff_vs_protonet": max_diff}


# ------------------------------------------------------------------ training
def train_param(name: str, batch: int):
    """(solver parameter, net parameter) of the zoo net's train prototxt with its Data layers
    replaced by one Input of `batch` random-able images and labels, and its solver's rates."""
    from protonet import caffe_pb2, prototxt
    _, train, solver_file, chw = ZOO[name]
    param = prototxt.read_net(train)
    inputs = caffe_pb2.LayerParameter(name="data", type="Input", top=["data", "label"])
    inputs.input_param.shape.add().dim.extend([batch, *chw])
    inputs.input_param.shape.add().dim.extend([batch])
    layers = [lp for lp in param.layer if lp.type not in ("Data", "Accuracy")]
    del param.layer[:]
    param.layer.add().CopyFrom(inputs)
    for lp in layers:
        param.layer.add().CopyFrom(lp)
    given = prototxt.read_solver(solver_file)
    solver = caffe_pb2.SolverParameter(
        base_lr=given.base_lr, momentum=given.momentum, weight_decay=given.weight_decay,
        lr_policy="fixed", max_iter=10 ** 6, display=0, random_seed=1701)
    solver.net_param.CopyFrom(param)
    return solver


def train_protonet(name: str, batch: int, seconds: float) -> dict:
    import numpy as np
    import protonet
    solver = protonet.get_solver(train_param(name, batch))
    net = solver.net
    g = np.random.default_rng(0)
    net.blobs["data"].data[...] = g.random(net.blobs["data"].shape, dtype=np.float32)
    net.blobs["label"].data[...] = g.integers(0, 10, batch)
    return {"ms": _timed(lambda: solver.step(1), seconds)}


def train_torch(name: str, batch: int, seconds: float) -> dict:
    import numpy as np
    import torch
    import protonet
    param = train_param(name, batch)
    solver = protonet.get_solver(param)
    model = TorchFromCaffe(solver.net, train=True).train().to(memory_format=torch.channels_last)
    del solver
    g = np.random.default_rng(0)
    shape = tuple(param.net_param.layer[0].input_param.shape[0].dim)
    x = torch.from_numpy(g.random(shape, dtype=np.float32)).contiguous(
        memory_format=torch.channels_last)
    y = torch.from_numpy(g.integers(0, 10, batch))
    opt = torch.optim.SGD(model.parameters(), lr=param.base_lr, momentum=param.momentum,
                          weight_decay=param.weight_decay)

    def step():
        opt.zero_grad(set_to_none=False)
        model({"data": x, "label": y})["__loss__"].backward()
        opt.step()
    return {"ms": _timed(step, seconds)}


# ------------------------------------------------------------------ Caffe layers in torch.nn
class TorchFromCaffe:
    """Built lazily as a torch.nn.Module subclass (torch is imported only by its workers)."""

    def __new__(cls, net, train: bool = False):
        return _torch_module_class()(net, train)


def _torch_module_class():
    import torch
    import torch.nn.functional as F
    from torch import nn

    def param_tensor(blob):
        return nn.Parameter(torch.from_numpy(blob.data.copy()))

    class Model(nn.Module):
        """Runs a protonet net's layers as torch ops, blob by blob, with its weights."""

        def __init__(self, net, train):
            super().__init__()
            self.steps = []
            self.mods = nn.ModuleDict()
            for layer, bottoms, tops in zip(net.layers, net._bottoms, net._tops):
                lp = layer.param
                fn = self._op(lp, layer, bottoms, tops, train)
                if fn is not None:
                    self.steps.append((fn, [b.name for b in bottoms], [t.name for t in tops],
                                       lp.type == "SoftmaxWithLoss"))
            self.outputs = [t.name for t in net._tops[-1]]

        def _op(self, lp, layer, bottoms, tops, train):
            t = lp.type
            key = re.sub(r"\W", "_", lp.name)
            if t in ("Input", "Split", "Accuracy", "Silence"):
                return None if t != "Split" else (lambda x: [x] * 8)
            if t == "Convolution":
                c = layer
                conv = nn.Conv2d(c.channels, c.num_output, (c.kh, c.kw), (c.sh, c.sw),
                                 (c.ph, c.pw), (c.dh, c.dw), c.group, c.bias_term)
                conv.weight = param_tensor(layer.blobs[0])
                if c.bias_term:
                    conv.bias = param_tensor(layer.blobs[1])
                self.mods[key] = conv
                return conv
            if t == "InnerProduct":
                w = layer.blobs[0]
                fc = nn.Linear(w.shape[1], w.shape[0], len(layer.blobs) > 1)
                fc.weight = param_tensor(w)
                if len(layer.blobs) > 1:
                    fc.bias = param_tensor(layer.blobs[1])
                self.mods[key] = fc
                return lambda x: fc(x.flatten(1))
            if t == "ReLU":
                return torch.relu
            if t == "Sigmoid":
                return torch.sigmoid
            if t == "Dropout":
                p = lp.dropout_param.dropout_ratio
                return (lambda x: F.dropout(x, p, training=True)) if train else (lambda x: x)
            if t == "Softmax":
                return lambda x, axis=lp.softmax_param.axis: torch.softmax(x, dim=axis)
            if t == "Pooling":
                p = lp.pooling_param
                if p.global_pooling:
                    return (lambda x: torch.amax(x, (2, 3), keepdim=True)) if p.pool == 0 else \
                        (lambda x: torch.mean(x, (2, 3), keepdim=True))
                k = p.kernel_size or p.kernel_h
                s = p.stride or p.stride_h or 1
                pad = p.pad or p.pad_h
                if p.pool == 0:
                    return nn.MaxPool2d(k, s, pad, ceil_mode=True)
                return nn.AvgPool2d(k, s, pad, ceil_mode=True)
            if t == "LRN":
                p = lp.lrn_param
                if p.norm_region == 0:
                    return nn.LocalResponseNorm(p.local_size, p.alpha, p.beta, p.k)
                size = p.local_size

                def within(x):  # Caffe's WITHIN_CHANNEL: a size x size window in the plane
                    sq = F.avg_pool2d(x * x, size, 1, (size - 1) // 2, count_include_pad=True)
                    return x / (1 + p.alpha * sq) ** p.beta
                return within
            if t == "Concat":
                return lambda *xs, axis=lp.concat_param.axis: torch.cat(xs, dim=axis)
            # SSD's heads (MobileNet-SSD): tensor reshuffles as torch ops; the prior boxes
            # depend on shapes only, so they are a constant; torch.nn has no SSD decoding and
            # NMS, so both sides run protonet's DetectionOutput on the same predictions.
            if t == "Permute":
                return lambda x, order=tuple(lp.permute_param.order): x.permute(order)
            if t == "Flatten":
                return lambda x, axis=lp.flatten_param.axis: x.flatten(axis)
            if t == "Reshape":
                return lambda x, shape=tuple(tops[0].shape[1:]): x.reshape(x.shape[0], *shape)
            if t == "PriorBox":
                layer.forward(bottoms, tops)
                boxes = torch.from_numpy(tops[0].data.copy())
                return lambda *xs: boxes
            if t == "DetectionOutput":
                from protonet.blob import Blob
                ins = [Blob(b.shape) for b in bottoms]
                out = [Blob(tops[0].shape)]

                def detect(*xs):
                    for blob, x in zip(ins, xs):
                        blob.reshape(*x.shape)
                        blob.data[...] = x.numpy()
                    layer.reshape(ins, out)
                    layer.forward(ins, out)
                    return torch.from_numpy(out[0].data.copy())
                return detect
            if t == "Eltwise":
                return lambda *xs: sum(xs[1:], xs[0])
            if t == "BatchNorm":
                mean, var, factor = (b.data for b in layer.blobs)
                f = 0.0 if factor[0] == 0 else 1.0 / factor[0]
                rm, rv = torch.from_numpy(mean * f), torch.from_numpy(var * f)
                eps = lp.batch_norm_param.eps
                return lambda x: F.batch_norm(x, rm, rv, None, None, False, 0.0, eps)
            if t == "Scale":
                gamma = param_tensor(layer.blobs[0])
                beta = param_tensor(layer.blobs[1]) if len(layer.blobs) > 1 else None
                self.register_parameter(key + "_gamma", gamma)
                if beta is not None:
                    self.register_parameter(key + "_beta", beta)
                if beta is None:
                    return lambda x: x * gamma.view(1, -1, 1, 1)
                return lambda x: torch.addcmul(beta.view(1, -1, 1, 1), x, gamma.view(1, -1, 1, 1))
            if t == "SoftmaxWithLoss":
                return lambda x, y: F.cross_entropy(x, y.long())
            raise NotImplementedError(f"bench: no torch op for Caffe layer type {t}")

        def forward(self, blobs):
            blobs = dict(blobs)
            loss = 0.0
            for fn, bottoms, tops, is_loss in self.steps:
                out = fn(*(blobs[b] for b in bottoms))
                for name in tops:
                    blobs[name] = out[0] if isinstance(out, list) else out
                if is_loss:
                    loss = loss + out
            return {name: blobs[name] for name in self.outputs} | {"__loss__": loss}

    return Model


def overhead_protonet(proto: str, weights: str, seconds: float) -> dict:
    """Where batch-1 time goes in protonet: the whole forward; the executor alone (every
    layer's forward replaced by a no-op, so the loop over layers, blob lookups and calls);
    and each layer's own time (forward_from_to(i, i))."""
    import statistics

    import numpy as np
    import protonet
    net = protonet.Net(proto, protonet.TEST, weights=weights)
    data = net.blobs[net.inputs[0]]
    data.data[...] = np.random.default_rng(1).random(data.shape, dtype=np.float32)
    whole = statistics.median(_timed(net.forward, seconds))
    per_layer = []
    for i, layer in enumerate(net.layers):
        per_layer.append((layer.param.type, statistics.median(
            _timed(lambda i=i: net.forward_from_to(i, i), seconds / len(net.layers), 5))))
    for layer in net.layers:
        layer.forward = lambda bottom, top: None
    executor = statistics.median(_timed(net.forward, seconds / 4, 20))
    by_type = {}
    for kind, ms in per_layer:
        by_type.setdefault(kind, []).append(ms)
    return {"forward_ms": whole, "executor_ms": executor, "layers": len(net.layers),
            "sum_of_layers_ms": sum(ms for _, ms in per_layer),
            "median_layer_ms_by_type": {k: statistics.median(v) for k, v in by_type.items()}}
