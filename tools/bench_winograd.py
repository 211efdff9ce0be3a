"""Winograd against im2col on the 3x3 convolutions of VGG-16, ResNet-50 and GoogLeNet: the
measurements behind ConvTuning's Winograd rule (protonet/kernels/conv_plan.py).

    python tools/bench_winograd.py time [--batch 1 16] [--threads 1 2] [--rounds 5]
    python tools/bench_winograd.py error
    python tools/bench_winograd.py nets [--nets vgg16 resnet50 googlenet] [--batch 1 16]
    python tools/bench_winograd.py rss [--nets vgg16] [--batch 1]
    python tools/bench_winograd.py train [--nets caffenet] [--batch 32]
    python tools/bench_winograd.py kept [--nets vgg16] [--batch 1 16] [--rounds 40]

`time`: each layer alone (a TEST net of Input + Convolution), its forward in one process,
alternating the paths round by round; medians in ms and im2col / Winograd. `error`: the
largest error of each path against a float64 convolution, relative to the largest output
(ReLU-like inputs, He-scaled weights), and the share of outputs outside the layer tests'
tolerance (|error| <= 1e-5 + 1e-5 |reference|). `nets`: whole zoo nets (tools/bench_zoo.py's
prototxt and random weights), forward in one process, alternating rounds of protonet with
every convolution on im2col, protonet as planned (Winograd where the rule takes it) and
OpenCV's dnn. `rss`: peak resident memory of a forward (bench_zoo.forward_protonet), each
path in its own process. `train`: a zoo net's training step (bench_zoo.train_param), alternating
rounds with every convolution's forward on im2col and as planned. `kept`: two copies of a zoo
net in one process, forwards alternating: every Winograd layer keeping its transformed
weights against the plan (the biggest transformed again at each forward into a shared
buffer, ConvTuning.winograd_kept_floats): wall and CPU ms, the median of the pairs' ratios,
and whether the outputs are the same bits.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np  # before protonet, as users import it

# (net, layer, input channels, output channels, input side); all 3x3, stride 1, pad 1.
SHAPES = [
    ("vgg16", "conv1_2", 64, 64, 224), ("vgg16", "conv2_1", 64, 128, 112),
    ("vgg16", "conv2_2", 128, 128, 112), ("vgg16", "conv3_1", 128, 256, 56),
    ("vgg16", "conv3_x", 256, 256, 56), ("vgg16", "conv4_1", 256, 512, 28),
    ("vgg16", "conv4_x", 512, 512, 28), ("vgg16", "conv5_x", 512, 512, 14),
    ("resnet50", "res2x_branch2b", 64, 64, 56), ("resnet50", "res3x_branch2b", 128, 128, 28),
    ("resnet50", "res4x_branch2b", 256, 256, 14), ("resnet50", "res5x_branch2b", 512, 512, 7),
    ("googlenet", "conv2/3x3", 64, 192, 56), ("googlenet", "3a/3x3", 96, 128, 28),
    ("googlenet", "3b/3x3", 128, 192, 28), ("googlenet", "4a/3x3", 96, 208, 14),
    ("googlenet", "4e/3x3", 160, 320, 14), ("googlenet", "5b/3x3", 192, 384, 7),
    # Few channels, where the rule's channel threshold comes from.
    ("vgg16", "conv1_1", 3, 64, 224), ("small", "c16", 16, 16, 56), ("small", "c32", 32, 32, 56),
]
PATHS = {"im2col": False, "winograd": True}


def layer_net(c: int, k: int, side: int, batch: int):
    import protonet
    from google.protobuf import text_format
    from protonet import caffe_pb2
    text = (f'layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: {batch} '
            f'dim: {c} dim: {side} dim: {side} }} }} }} '
            f'layer {{ name: "conv" type: "Convolution" bottom: "x" top: "y" '
            f'convolution_param {{ num_output: {k} kernel_size: 3 pad: 1 '
            f'weight_filler {{ type: "msra" }} bias_filler {{ type: "constant" value: 0.1 }} }} }}')
    net = protonet.Net(param=text_format.Parse(text, caffe_pb2.NetParameter()),
                       phase=protonet.TEST)
    x = net.blobs["x"].data
    x[...] = np.maximum(np.random.default_rng(0).standard_normal(x.shape), 0)
    return net


def set_path(net, winograd: bool) -> None:
    from protonet.kernels.conv_plan import TUNING
    layer = net.layer_dict["conv"]
    layer.tuning = dataclasses.replace(TUNING, winograd_min_channels=1 if winograd else 1 << 30,
                                       winograd_min_tiles=1)
    net.reshape()


def time_layers(batches, thread_counts, rounds: int, paths, only=None) -> None:
    from protonet.kernels import _jit
    print(f"{'net':9s} {'layer':15s} {'C':>4s} {'K':>4s} {'HW':>4s} {'N':>3s} {'thr':>3s} "
          + " ".join(f"{p + ' ms':>10s}" for p in paths)
          + " " + " ".join(f"{'im2col/' + p:>10s}" for p in paths[1:]))
    for threads in thread_counts:
        _jit.set_num_threads(threads)
        for batch in batches:
            for net_name, name, c, k, side in SHAPES:
                if only and name not in only:
                    continue
                net = layer_net(c, k, side, batch)
                times = {p: [] for p in paths}
                for _ in range(rounds):
                    for p in paths:
                        set_path(net, PATHS[p])
                        net.forward()   # warm: the weights transform, scratch
                        t = time.perf_counter()
                        net.forward()
                        times[p].append((time.perf_counter() - t) * 1e3)
                med = {p: statistics.median(v) for p, v in times.items()}
                print(f"{net_name:9s} {name:15s} {c:4d} {k:4d} {side:4d} {batch:3d} {threads:3d} "
                      + " ".join(f"{med[p]:10.2f}" for p in paths) + " "
                      + " ".join(f"{med['im2col'] / med[p]:10.2f}" for p in paths[1:]),
                      flush=True)


def reference(x, w, b):
    """float64 3x3 stride-1 pad-1 convolution: nine shifted GEMMs."""
    n, c, h, wd = x.shape
    xp = np.zeros((n, c, h + 2, wd + 2))
    xp[:, :, 1:-1, 1:-1] = x
    y = np.zeros((n, w.shape[0], h, wd)) + b[None, :, None, None]
    for i in range(3):
        for j in range(3):
            y += np.einsum("kc,nchw->nkhw", w[:, :, i, j], xp[:, :, i:i + h, j:j + wd],
                           optimize=True)
    return y


def errors(paths) -> None:
    print(f"{'net':9s} {'layer':15s} " + " ".join(f"{p + ' max rel':>12s} {p + ' >tol':>8s}"
                                                 for p in paths))
    for net_name, name, c, k, side in SHAPES:
        net = layer_net(c, k, side, 1)
        layer = net.layer_dict["conv"]
        w, b = layer.blobs[0].data, layer.blobs[1].data
        ref = reference(net.blobs["x"].data.astype(np.float64), w.astype(np.float64),
                        b.astype(np.float64))
        cells = []
        for p in paths:
            set_path(net, PATHS[p])
            net.forward()
            err = np.abs(net.blobs["y"].data - ref)
            outside = np.mean(err > 1e-5 + 1e-5 * np.abs(ref))
            cells.append(f"{err.max() / np.abs(ref).max():12.2e} {outside:8.2%}")
        print(f"{net_name:9s} {name:15s} " + " ".join(cells), flush=True)


def set_every_convolution(winograd: bool) -> None:
    """Convolutions built from now on take the planner's choice, or always im2col."""
    from protonet.kernels.conv_plan import TUNING
    from protonet.layers import conv
    conv._BaseConvolution.tuning = (TUNING if winograd else
                                    dataclasses.replace(TUNING, winograd_min_channels=1 << 30))


def whole_nets(nets, batches, rounds: int, workdir: Path) -> None:
    import cv2
    import bench_zoo
    from protonet.kernels import threads
    print(f"{'net':10s} {'N':>3s} {'thr':>3s} {'im2col ms':>10s} {'winograd ms':>11s} "
          f"{'opencv ms':>10s} {'im2col/wg':>9s} {'vs opencv: before':>17s} {'after':>6s}")
    for name in nets:
        for batch in batches:
            net, cv_net = bench_zoo.protonet_and_opencv(name, batch, workdir)
            n_threads = threads.compute_threads()
            cv2.setNumThreads(n_threads)
            convs = [layer for layer in net.layers if layer.type == "Convolution"]

            def protonet_forward(winograd):
                from protonet.kernels.conv_plan import TUNING
                tuning = (TUNING if winograd else
                          dataclasses.replace(TUNING, winograd_min_channels=1 << 30))
                for layer in convs:
                    layer.tuning = tuning
                net.reshape()
                return net.forward

            runs = {"im2col": lambda: protonet_forward(False)(),
                    "winograd": lambda: protonet_forward(True)(), "opencv": cv_net.forward}
            times = {k: [] for k in runs}
            for run in runs.values():
                run()   # warm-up: compiles, transformed weights, scratch
            for _ in range(rounds):
                for key, run in runs.items():
                    t = time.perf_counter()
                    run()
                    times[key].append((time.perf_counter() - t) * 1e3)
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"{name:10s} {batch:3d} {n_threads:3d} {med['im2col']:10.1f} "
                  f"{med['winograd']:11.1f} {med['opencv']:10.1f} "
                  f"{med['im2col'] / med['winograd']:9.2f} "
                  f"{med['opencv'] / med['im2col']:17.2f} {med['opencv'] / med['winograd']:6.2f}",
                  flush=True)


def kept_weights(nets, batches, rounds: int, workdir: Path) -> None:
    import protonet
    import bench_zoo
    from protonet.kernels.conv_plan import TUNING
    tunings = {"kept": dataclasses.replace(TUNING, winograd_kept_floats=1 << 62),
               "planned": TUNING}
    print(f"{'net':10s} {'N':>3s} {'kept ms':>8s} {'planned ms':>10s} {'wall ratio':>10s} "
          f"{'cpu ratio':>9s}  same bits")
    for name in nets:
        for batch in batches:
            files = bench_zoo.prepare(name, batch, workdir)
            nets_by = {}
            for key, tuning in tunings.items():
                net = protonet.Net(files["prototxt"], protonet.TEST, weights=files["weights"])
                for layer in net.layers:
                    if layer.type == "Convolution":
                        layer.tuning = tuning
                data = net.blobs[net.inputs[0]]
                data.data[...] = np.random.default_rng(1).random(data.shape, dtype=np.float32)
                net.forward()   # warm-up: compiles, transformed weights, scratch
                nets_by[key] = net
            same = all(np.array_equal(nets_by["kept"].blobs[o].data,
                                      nets_by["planned"].blobs[o].data)
                       for o in nets_by["kept"].outputs)
            wall, cpu = {k: [] for k in tunings}, {k: [] for k in tunings}
            for r in range(rounds):
                for key in (tunings if r % 2 == 0 else reversed(list(tunings))):
                    w, c = time.perf_counter(), time.process_time()
                    nets_by[key].forward()
                    wall[key].append((time.perf_counter() - w) * 1e3)
                    cpu[key].append((time.process_time() - c) * 1e3)
            ratio = {k: statistics.median(b / a for a, b in zip(v["kept"], v["planned"]))
                     for k, v in (("wall", wall), ("cpu", cpu))}
            print(f"{name:10s} {batch:3d} {statistics.median(wall['kept']):8.1f} "
                  f"{statistics.median(wall['planned']):10.1f} {ratio['wall']:10.3f} "
                  f"{ratio['cpu']:9.3f}  {same}", flush=True)
            del nets_by


def training(nets, batches, rounds: int) -> None:
    import protonet
    import bench_zoo
    from protonet.kernels.conv_plan import TUNING
    print(f"{'net':10s} {'N':>3s} {'im2col ms':>10s} {'winograd ms':>11s} {'im2col/wg':>9s}")
    for name in nets:
        for batch in batches:
            solver = protonet.get_solver(bench_zoo.train_param(name, batch))
            net = solver.net
            g = np.random.default_rng(0)
            net.blobs["data"].data[...] = g.random(net.blobs["data"].shape, dtype=np.float32)
            net.blobs["label"].data[...] = g.integers(0, 10, batch)
            convs = [layer for layer in net.layers if layer.type == "Convolution"]
            tunings = {"im2col": dataclasses.replace(TUNING, winograd_min_channels=1 << 30),
                       "winograd": TUNING}
            times = {k: [] for k in tunings}
            for r in range(rounds + 1):
                for key, tuning in tunings.items():
                    for layer in convs:
                        layer.tuning = tuning
                    net.reshape()
                    t = time.perf_counter()
                    solver.step(1)
                    if r:   # the first round warms up
                        times[key].append((time.perf_counter() - t) * 1e3)
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"{name:10s} {batch:3d} {med['im2col']:10.1f} {med['winograd']:11.1f} "
                  f"{med['im2col'] / med['winograd']:9.2f}", flush=True)


def peak_rss(nets, batches, workdir: Path) -> None:
    print(f"{'net':10s} {'N':>3s} {'path':9s} {'peak RSS MB':>11s} {'weights MB':>10s} "
          f"{'largest pair MB':>15s} {'peak / (weights + pair)':>23s}")
    for name in nets:
        for batch in batches:
            for path in ("im2col", "winograd"):
                out = subprocess.run([sys.executable, __file__, "rss-worker", path, name,
                                      str(batch), str(workdir)], capture_output=True, text=True,
                                     check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{name:10s} {batch:3d} {path:9s} {r['peak_rss_mb']:11.0f} "
                      f"{r['weights_mb']:10.0f} {r['largest_pair_mb']:15.0f} "
                      f"{r['peak_rss_mb'] / (r['weights_mb'] + r['largest_pair_mb']):23.2f}",
                      flush=True)


def rss_worker(path: str, name: str, batch: int, workdir: str) -> None:
    import bench_zoo
    set_every_convolution(path == "winograd")
    files = bench_zoo.prepare(name, batch, Path(workdir))
    r = bench_zoo.forward_protonet(files["prototxt"], files["weights"], 2.0)
    print(json.dumps({k: r[k] for k in ("peak_rss_mb", "weights_mb", "largest_pair_mb")}))


def main() -> None:
    if sys.argv[1:2] == ["rss-worker"]:
        rss_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["time", "error", "nets", "rss", "train", "kept"])
    parser.add_argument("--nets", nargs="+", default=["vgg16", "resnet50", "googlenet"])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_winograd"))
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="+", help="layers (second column) to run")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    args = parser.parse_args()
    paths = ["im2col"] + [p for p in args.paths if p != "im2col"]
    sys.path.insert(0, str(Path(__file__).resolve().parent))   # bench_zoo
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.what == "time":
        time_layers(args.batch, args.threads, args.rounds, paths, args.only)
    elif args.what == "error":
        errors(paths)
    elif args.what == "nets":
        whole_nets(args.nets, args.batch, args.rounds, args.workdir)
    elif args.what == "train":
        training(args.nets, args.batch, args.rounds)
    elif args.what == "kept":
        kept_weights(args.nets, args.batch, args.rounds, args.workdir)
    else:
        peak_rss(args.nets, args.batch, args.workdir)


if __name__ == "__main__":
    main()
