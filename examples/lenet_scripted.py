"""Scripted training in pycaffe's style (Caffe's "LeNet tutorial" notebook, 01-learning-lenet):
step the solver, read blobs, parameters and their gradients between steps, record losses,
score the test net by hand.

    protonet data fashion-mnist data/fashion_mnist     # once
    python examples/lenet_scripted.py --iters 200
"""
import argparse

import numpy as np

import protonet

p = argparse.ArgumentParser()
p.add_argument("--solver", default="models/lenet_solver.prototxt")
p.add_argument("--iters", type=int, default=200)
p.add_argument("--test-every", type=int, default=50)
args = p.parse_args()

protonet.set_mode_cpu()
solver = protonet.get_solver(args.solver)
net, test_net = solver.net, solver.test_nets[0]

# Blob and parameter shapes, as the tutorial prints them.
for name, blob in net.blobs.items():
    print(f"{name:10s} {blob.data.shape}")
for name, params in net.params.items():
    print(f"{name:10s} weights {params[0].data.shape}  bias {params[1].data.shape}")

train_loss = np.zeros(args.iters)
test_acc = {}
for it in range(args.iters):
    solver.step(1)                                    # forward, backward, update
    train_loss[it] = net.blobs["loss"].data
    # As in Caffe, after a step the diffs hold the update just applied (lr x momentum-smoothed
    # gradient), not the raw gradient.
    conv1_update = np.abs(net.params["conv1"][0].diff).mean()
    if it % args.test_every == 0 or it == args.iters - 1:
        correct = 0
        for _ in range(100):                          # 100 batches of 100 test images
            test_net.forward()
            correct += (test_net.blobs["ip2"].data.argmax(1) == test_net.blobs["label"].data).sum()
        test_acc[it] = correct / 1e4
        print(f"iter {solver.iter:5d}  loss {train_loss[it]:.4f}  "
              f"|conv1 update| {conv1_update:.2e}  test accuracy {test_acc[it]:.4f}")
solver.close()
