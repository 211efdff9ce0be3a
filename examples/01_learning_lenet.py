"""Caffe's tutorial 01-learning-lenet ("Solving in Python with LeNet") as a script, step for
step, on protonet through `import caffe`, with Fashion-MNIST (Debian's dataset-fashion-mnist
package) in place of the MNIST download. Figures are saved as PNGs in --out.

    python examples/01_learning_lenet.py                     # the notebook's 200 + 250 iterations
    python examples/01_learning_lenet.py --niter 20 --custom-niter 20 --test-iters 5   # quick
"""
import argparse
import os
import tempfile

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import caffe  # noqa: E402
import tutorial_common as local  # noqa: E402
from caffe import layers as L, params as P  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default=None, help="folder for the files made (default: a temp dir)")
parser.add_argument("--data", default=None,
                    help="folder for the Fashion-MNIST LMDBs (default: inside --out)")
parser.add_argument("--niter", type=int, default=200, help="LeNet training iterations")
parser.add_argument("--test-interval", type=int, default=25)
parser.add_argument("--test-iters", type=int, default=100, help="test batches per test")
parser.add_argument("--custom-niter", type=int, default=250, help="custom net iterations")
args = parser.parse_args()
out = args.out or tempfile.mkdtemp(prefix="01_learning_lenet_")
os.makedirs(out, exist_ok=True)
train_lmdb, test_lmdb = local.fashion_mnist_lmdbs(args.data or out)

# 2. Creating the net ------------------------------------------------------------------------------


def lenet(lmdb, batch_size):
    # our version of LeNet: a series of linear and simple nonlinear transformations
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=lmdb,
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type="xavier"))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


train_path = os.path.join(out, "lenet_auto_train.prototxt")
test_path = os.path.join(out, "lenet_auto_test.prototxt")
with open(train_path, "w") as f:
    f.write(str(lenet(train_lmdb, 64)))
with open(test_path, "w") as f:
    f.write(str(lenet(test_lmdb, 100)))
print(open(train_path).read())

# The notebook's lenet_auto_solver.prototxt (Caffe ships it beside the example).
solver_path = os.path.join(out, "lenet_auto_solver.prototxt")
with open(solver_path, "w") as f:
    f.write(f'train_net: "{train_path}"\ntest_net: "{test_path}"\ntest_iter: 100\n'
            'test_interval: 500\nbase_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\n'
            'lr_policy: "inv"\ngamma: 0.0001\npower: 0.75\ndisplay: 100\nmax_iter: 10000\n'
            f'snapshot: 5000\nsnapshot_prefix: "{os.path.join(out, "lenet")}"\n')
print(open(solver_path).read())

# 3. Loading and checking the solver -----------------------------------------------------------------
caffe.set_device(0)
caffe.set_mode_gpu()
solver = None  # ignore this workaround for lmdb data (can't instantiate two solvers on the same data)
solver = caffe.SGDSolver(solver_path)

print([(k, v.data.shape) for k, v in solver.net.blobs.items()])
print([(k, v[0].data.shape) for k, v in solver.net.params.items()])

solver.net.forward()  # train net
solver.test_nets[0].forward()  # test net (there can be more than one)

fig = plt.figure()
plt.imshow(solver.net.blobs["data"].data[:8, 0].transpose(1, 0, 2).reshape(28, 8 * 28),
           cmap="gray")
plt.axis("off")
local.save_figure(fig, out, "train_images")
print("train labels:", solver.net.blobs["label"].data[:8])
fig = plt.figure()
plt.imshow(solver.test_nets[0].blobs["data"].data[:8, 0].transpose(1, 0, 2).reshape(28, 8 * 28),
           cmap="gray")
plt.axis("off")
local.save_figure(fig, out, "test_images")
print("test labels:", solver.test_nets[0].blobs["label"].data[:8])

# 4. Stepping the solver -------------------------------------------------------------------------------
solver.step(1)
fig = plt.figure()
plt.imshow(solver.net.params["conv1"][0].diff[:, 0].reshape(4, 5, 5, 5)
           .transpose(0, 2, 1, 3).reshape(4 * 5, 5 * 5), cmap="gray")
plt.axis("off")
local.save_figure(fig, out, "conv1_gradients")

# 5. Writing a custom training loop ----------------------------------------------------------------------


def test_accuracy(solver, test_iters):
    """Score a full pass of test batches by hand, as the notebook's loops do."""
    correct = 0
    for test_it in range(test_iters):
        solver.test_nets[0].forward()
        correct += sum(solver.test_nets[0].blobs["score"].data.argmax(1)
                       == solver.test_nets[0].blobs["label"].data)
    return correct / (100 * test_iters)


def plot_training(train_loss, test_acc, test_interval, title, name):
    fig, ax1 = plt.subplots()
    ax2 = ax1.twinx()
    ax1.plot(np.arange(len(train_loss)), train_loss)
    ax2.plot(test_interval * np.arange(len(test_acc)), test_acc, "r")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("train loss")
    ax2.set_ylabel("test accuracy")
    ax2.set_title("{}: {:.2f}".format(title, test_acc[-1]))
    local.save_figure(fig, out, name)
    print("{}: {:.2f}".format(title, test_acc[-1]))


niter = args.niter
test_interval = args.test_interval
test_iters = args.test_iters
train_loss = np.zeros(niter)
test_acc = np.zeros(int(np.ceil(niter / test_interval)))
output = np.zeros((niter, 8, 10))

for it in range(niter):
    solver.step(1)  # SGD by Caffe
    train_loss[it] = solver.net.blobs["loss"].data
    # store the output on the first test batch
    # (start the forward pass at conv1 to avoid loading new data)
    solver.test_nets[0].forward(start="conv1")
    output[it] = solver.test_nets[0].blobs["score"].data[:8]
    if it % test_interval == 0:
        print("Iteration", it, "testing...")
        test_acc[it // test_interval] = test_accuracy(solver, test_iters)

plot_training(train_loss, test_acc, test_interval, "LeNet test accuracy", "lenet_training")

for i in range(8):
    fig = plt.figure(figsize=(10, 2))
    plt.imshow(np.exp(output[:50, i].T) / np.exp(output[:50, i].T).sum(0), interpolation="nearest",
               cmap="gray")
    plt.xlabel("iteration")
    plt.ylabel("label")
    local.save_figure(fig, out, f"test_output_{i}")

# 6. Experiment with architecture and optimization -----------------------------------------------------
train_net_path = os.path.join(out, "custom_auto_train.prototxt")
test_net_path = os.path.join(out, "custom_auto_test.prototxt")
solver_config_path = os.path.join(out, "custom_auto_solver.prototxt")


def custom_net(lmdb, batch_size):
    # define your own net!
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=lmdb,
                             transform_param=dict(scale=1. / 255), ntop=2)
    # this single layer defines a simple linear classifier
    # (in particular this defines a multiway logistic regression)
    n.score = L.InnerProduct(n.data, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


with open(train_net_path, "w") as f:
    f.write(str(custom_net(train_lmdb, 64)))
with open(test_net_path, "w") as f:
    f.write(str(custom_net(test_lmdb, 100)))

from caffe.proto import caffe_pb2  # noqa: E402
s = caffe_pb2.SolverParameter()
s.random_seed = 0xCAFFE
s.train_net = train_net_path
s.test_net.append(test_net_path)
s.test_interval = 500   # Test after every 500 training iterations.
s.test_iter.append(100)  # Test on 100 batches each time we test.
s.max_iter = 10000
s.type = "SGD"
s.base_lr = 0.01
s.momentum = 0.9
s.weight_decay = 5e-4
s.lr_policy = "inv"
s.gamma = 0.0001
s.power = 0.75
s.display = 1000
s.snapshot = 5000
s.snapshot_prefix = os.path.join(out, "custom_net")
s.solver_mode = caffe_pb2.SolverParameter.GPU
with open(solver_config_path, "w") as f:
    f.write(str(s))

solver = None  # ignore this workaround for lmdb data (can't instantiate two solvers on the same data)
solver = caffe.get_solver(solver_config_path)

niter = args.custom_niter
test_interval = max(niter // 10, 1)
train_loss = np.zeros(niter)
test_acc = np.zeros(int(np.ceil(niter / test_interval)))
for it in range(niter):
    solver.step(1)
    train_loss[it] = solver.net.blobs["loss"].data
    if it % test_interval == 0:
        print("Iteration", it, "testing...")
        test_acc[it // test_interval] = test_accuracy(solver, test_iters)

plot_training(train_loss, test_acc, test_interval, "Custom net test accuracy",
              "custom_training")
print("done; files in", out)
