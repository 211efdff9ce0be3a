"""Data-layer throughput on MNIST-size records, prefetch on and off, and the share of a LeNet
training iteration spent waiting for data.

    python tools/bench_data.py   (needs `protonet data fashion-mnist data/fashion_mnist`)
"""
from __future__ import annotations

import time
from pathlib import Path

import protonet
from protonet import caffe_pb2
from protonet.blob import Blob
from protonet.testing import layer_from_text

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "data/fashion_mnist/fashion_mnist_train_lmdb"


def data_layer(batch=64):
    layer = layer_from_text(f'name: "mnist" type: "Data" transform_param {{ scale: 0.00390625 }} '
                            f'data_param {{ source: "{SOURCE}" batch_size: {batch} backend: LMDB }}',
                            caffe_pb2.TRAIN)
    top = [Blob(), Blob()]
    layer.set_up([], top)
    return layer, top


def main():
    layer, top = data_layer()
    batches = 400
    for _ in range(10):
        layer.forward([], top)
    t = time.perf_counter()
    for _ in range(batches):
        layer.forward([], top)
    on = batches * 64 / (time.perf_counter() - t)
    # Prefetch off: decode and transform in the calling thread, batch by batch.
    buffer = layer.prefetcher.close()[0]
    t = time.perf_counter()
    for _ in range(batches):
        layer._produce(buffer)
        top[0].data[...] = buffer.data
        top[1].data[...] = buffer.label
    off = batches * 64 / (time.perf_counter() - t)
    layer.prefetcher = None
    print("Data layer, 28x28 uint8 Datum records, batch 64, scale transform:")
    print(f"  prefetch on  (consumer rate): {on:,.0f} images/s")
    print(f"  prefetch off (decode + transform in the main thread): {off:,.0f} images/s")

    solver = protonet.get_solver(str(ROOT / "models/lenet_solver.prototxt"))
    solver.param.test_interval = 0
    solver.step(20)
    data = solver.net.layer_dict["mnist"]
    data.wait_seconds = 0.0
    t = time.perf_counter()
    solver.step(300)
    total = time.perf_counter() - t
    print(f"LeNet training, 300 iterations: {300 * 64 / total:,.0f} images/s; waiting for data "
          f"{data.wait_seconds * 1e3 / 300:.3f} ms per iteration = "
          f"{data.wait_seconds / total:.2%} of the time")
    solver.close()


if __name__ == "__main__":
    main()
