"""InnerProduct forward: the lane kernel (protonet/kernels/dense.py) against one BLAS GEMM over
the batch (the path it replaced, which did not keep a sample's bits batch-independent), and
numpy's matrix-vector product as the floor at batch 1.

    python tools/bench_inner_product.py layers [--threads 2 1] [--rounds 7]
    python tools/bench_inner_product.py nets [--nets caffenet vgg16] [--batch 1] [--rounds 5]

`layers`: each layer alone (a TEST net of Input + InnerProduct), forward in one process,
alternating the paths round by round; medians in ms and blas / lanes. `nets`: whole zoo nets
(tools/bench_zoo.py's prototxt and random weights), forward alternating every InnerProduct on
BLAS, as planned, and OpenCV's dnn on the same files.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # before protonet, as users import it

# (net, layer, K, N, batches)
SHAPES = [("vgg16", "fc6", 25088, 4096, (1, 16)), ("caffenet", "fc6", 9216, 4096, (1, 16)),
          ("caffenet", "fc7", 4096, 4096, (1, 16)), ("caffenet", "fc8", 4096, 1000, (1, 16)),
          ("lenet", "ip1", 800, 500, (1, 64, 1000)), ("lenet", "ip2", 500, 10, (1, 64, 1000))]


def layer_net(k: int, n: int, batch: int):
    import protonet
    from google.protobuf import text_format
    from protonet import caffe_pb2
    text = (f'layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: {batch} '
            f'dim: {k} }} }} }} layer {{ name: "fc" type: "InnerProduct" bottom: "x" top: "y" '
            f'inner_product_param {{ num_output: {n} weight_filler {{ type: "gaussian" '
            f'std: 0.01 }} bias_filler {{ type: "constant" value: 0.1 }} }} }}')
    net = protonet.Net(param=text_format.Parse(text, caffe_pb2.NetParameter()),
                       phase=protonet.TEST)
    net.blobs["x"].data[...] = np.random.default_rng(0).standard_normal((batch, k))
    return net


def set_path(layers, lanes: bool, net) -> None:
    """Every InnerProduct's forward as protonet runs it (the lane kernel), or as one BLAS GEMM
    over the batch."""
    from protonet.kernels import threads
    from protonet.kernels.epilogue import rows_epilogue
    for layer in layers:
        if lanes:
            layer.__dict__.pop("forward", None)
            continue

        def blas_forward(bottom, top, layer=layer):
            x = bottom[0].data.reshape(layer.m, layer.k)
            w = layer.blobs[0].data
            y = top[0].data.reshape(layer.m, layer.num_output)
            threads.matmul(x, w if layer.transpose else w.T, y)
            if layer.epilogue is not None:
                rows_epilogue(y, *layer.epilogue)
            elif layer.bias_term:
                y += layer.blobs[1].data
        layer.forward = blas_forward
    net.reshape()


def gemv_floor(x0, w, out, threads: int) -> None:
    """The floor at batch 1: numpy's x0 @ w.T (a matrix-vector product in OpenBLAS), its
    columns split between protonet's threads, each on one BLAS thread (numpy's own BLAS
    threads keep spinning after the call and would slow whatever is timed next)."""
    from protonet.kernels.threads import matmul
    matmul(x0, w.T, out, threads)


def time_layers(thread_counts, rounds: int) -> None:
    from protonet.kernels import _jit
    print(f"{'net':9s} {'layer':6s} {'K':>6s} {'N':>5s} {'M':>5s} {'thr':>3s} {'blas ms':>9s} "
          f"{'lanes ms':>9s} {'gemv ms':>9s} {'blas/lanes':>10s} {'gemv/lanes':>10s}")
    for threads in thread_counts:
        _jit.set_num_threads(threads)
        for net_name, name, k, n, batches in SHAPES:
            for batch in batches:
                net = layer_net(k, n, batch)
                layer = net.layer_dict["fc"]
                x0, w = net.blobs["x"].data[:1], layer.blobs[0].data
                out = np.empty((1, n), np.float32)
                # (path, setup outside the timing, timed call)
                runs = {"blas": (lambda: set_path([layer], False, net), net.forward),
                        "lanes": (lambda: set_path([layer], True, net), net.forward),
                        "gemv": (lambda: None, lambda: gemv_floor(x0, w, out, threads))}
                times = {p: [] for p in runs}
                for setup, run in runs.values():
                    setup()
                    run()
                for _ in range(rounds):
                    for p, (setup, run) in runs.items():
                        setup()
                        t = time.perf_counter()
                        run()
                        times[p].append((time.perf_counter() - t) * 1e3)
                med = {p: statistics.median(v) for p, v in times.items()}
                gemv = (f"{med['gemv']:9.2f}", f"{med['gemv'] / med['lanes']:10.2f}") \
                    if batch == 1 else (f"{'':9s}", f"{'':10s}")
                print(f"{net_name:9s} {name:6s} {k:6d} {n:5d} {batch:5d} {threads:3d} "
                      f"{med['blas']:9.2f} {med['lanes']:9.2f} {gemv[0]} "
                      f"{med['blas'] / med['lanes']:10.2f} {gemv[1]}", flush=True)


def whole_nets(nets, batches, thread_counts, rounds: int, workdir: Path) -> None:
    import cv2
    import bench_zoo
    from protonet.kernels import _jit
    print(f"{'net':10s} {'N':>3s} {'thr':>3s} {'blas ms':>9s} {'lanes ms':>9s} "
          f"{'opencv ms':>9s} {'blas/lanes':>10s} {'vs opencv: blas':>15s} {'lanes':>6s}")
    for name in nets:
        for batch in batches:
            net, cv_net = bench_zoo.protonet_and_opencv(name, batch, workdir)
            fcs = [layer for layer in net.layers if layer.type == "InnerProduct"]
            for threads in thread_counts:
                _jit.set_num_threads(threads)
                cv2.setNumThreads(threads)
                runs = {"blas": (lambda: set_path(fcs, False, net), net.forward),
                        "lanes": (lambda: set_path(fcs, True, net), net.forward),
                        "opencv": (lambda: None, cv_net.forward)}
                times = {k: [] for k in runs}
                for setup, run in runs.values():
                    setup()
                    run()
                for _ in range(rounds):
                    for key, (setup, run) in runs.items():
                        setup()
                        t = time.perf_counter()
                        run()
                        times[key].append((time.perf_counter() - t) * 1e3)
                med = {k: statistics.median(v) for k, v in times.items()}
                print(f"{name:10s} {batch:3d} {threads:3d} {med['blas']:9.1f} "
                      f"{med['lanes']:9.1f} {med['opencv']:9.1f} "
                      f"{med['blas'] / med['lanes']:10.2f} {med['opencv'] / med['blas']:15.2f} "
                      f"{med['opencv'] / med['lanes']:6.2f}", flush=True)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["layers", "nets"])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--nets", nargs="+", default=["caffenet", "vgg16"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "zoo")
    args = parser.parse_args()
    if args.what == "layers":
        time_layers(args.threads, args.rounds)
    else:
        args.workdir.mkdir(parents=True, exist_ok=True)
        whole_nets(args.nets, args.batch, args.threads, args.rounds, args.workdir)


if __name__ == "__main__":
    main()
