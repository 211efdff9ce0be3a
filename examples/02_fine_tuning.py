"""Caffe's tutorial 02-fine-tuning ("Fine-tuning a pretrained network for style recognition")
as a script, step for step, on protonet through `import caffe`. Only the downloads are
replaced: the Flickr style images are Fashion-MNIST pictures of five classes (from Debian's
dataset-fashion-mnist package) written as image files with a list, the "pretrained" CaffeNet
weights are random (drawn from its fillers), and the ImageNet labels and mean are stand-ins.
Figures are saved as PNGs in --out.

    python examples/02_fine_tuning.py                         # the notebook's sizes (slow on a CPU)
    python examples/02_fine_tuning.py --image-size 67 --fc-width 64 --batch-size 4 \\
        --niter 2 --test-iters 1 --images 40                   # quick
"""
import argparse
import os
import tempfile

import lmdb
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import caffe  # noqa: E402
import tutorial_common as local  # noqa: E402
from caffe import layers as L  # noqa: E402
from caffe import params as P  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default=None, help="folder for the files made (default: a temp dir)")
parser.add_argument("--data", default=None,
                    help="folder for the Fashion-MNIST LMDBs (default: inside --out)")
parser.add_argument("--images", type=int, default=2000, help="style images (NUM_STYLE_IMAGES)")
parser.add_argument("--image-size", type=int, default=227, help="crop size fed to CaffeNet")
parser.add_argument("--fc-width", type=int, default=4096, help="fc6 and fc7 outputs")
parser.add_argument("--batch-size", type=int, default=50)
parser.add_argument("--niter", type=int, default=200, help="training iterations per stage")
parser.add_argument("--test-iters", type=int, default=10, help="test batches per evaluation")
args = parser.parse_args()
out = args.out or tempfile.mkdtemp(prefix="02_fine_tuning_")
os.makedirs(out, exist_ok=True)
caffe_root = out   # the notebook's paths below are relative to caffe_root

caffe.set_device(0)
caffe.set_mode_gpu()


def deprocess_net_image(image):
    image = image.copy()              # don't modify destructively
    image = image[::-1]               # BGR -> RGB
    image = image.transpose(1, 2, 0)  # CHW -> HWC
    image += [123, 117, 104]          # (approximately) undo mean subtraction
    # clamp values in [0, 255]
    image[image < 0], image[image > 255] = 0, 255
    # round and cast from float32 to uint8
    image = np.round(image)
    image = np.require(image, dtype=np.uint8)
    return image


# 1. Setup and dataset download (replaced: local files) ---------------------------------------------
NUM_STYLE_IMAGES = args.images
NUM_STYLE_LABELS = 5
resize = round(args.image_size * 256 / 227)    # the notebook resizes to 256 and crops 227
style_dir = os.path.join(caffe_root, "data", "flickr_style")
os.makedirs(style_dir, exist_ok=True)
_, test_lmdb = local.fashion_mnist_lmdbs(args.data or out)
style_names = local.FASHION_LABELS[:NUM_STYLE_LABELS]
lines = []
env = lmdb.open(test_lmdb, readonly=True, lock=False)
with env.begin() as txn:
    for key, value in txn.cursor():
        datum = caffe.proto.caffe_pb2.Datum.FromString(value)
        if datum.label >= NUM_STYLE_LABELS:
            continue
        grey = caffe.io.datum_to_array(datum)[0]
        path = os.path.join(style_dir, f"{key.decode()}.png")
        Image.fromarray(np.stack([grey] * 3, axis=2)).save(path)
        lines.append(f"{path} {datum.label}\n")
        if len(lines) == NUM_STYLE_IMAGES:
            break
env.close()
split = max(len(lines) * 4 // 5, 1)
with open(os.path.join(style_dir, "train.txt"), "w") as f:
    f.writelines(lines[:split])
with open(os.path.join(style_dir, "test.txt"), "w") as f:
    f.writelines(lines[split:] or lines[:split])
with open(os.path.join(caffe_root, "style_names.txt"), "w") as f:
    f.write("\n".join(style_names) + "\n")
ilsvrc = os.path.join(caffe_root, "data", "ilsvrc12")
imagenet_label_file, _ = local.imagenet_files(ilsvrc)
mean_blob = caffe.io.array_to_blobproto(np.broadcast_to(
    np.array(local.MEAN_BGR, np.float32)[:, None, None], (1, 3, resize, resize)))
with open(os.path.join(ilsvrc, "imagenet_mean.binaryproto"), "wb") as f:
    f.write(mean_blob.SerializeToString())

# 2. Defining and running the nets ---------------------------------------------------------------------
weight_param = dict(lr_mult=1, decay_mult=1)
bias_param = dict(lr_mult=2, decay_mult=0)
learned_param = [weight_param, bias_param]
frozen_param = [dict(lr_mult=0)] * 2


def conv_relu(bottom, ks, nout, stride=1, pad=0, group=1, param=learned_param,
              weight_filler=dict(type="gaussian", std=0.01),
              bias_filler=dict(type="constant", value=0.1)):
    conv = L.Convolution(bottom, kernel_size=ks, stride=stride, num_output=nout, pad=pad,
                         group=group, param=param, weight_filler=weight_filler,
                         bias_filler=bias_filler)
    return conv, L.ReLU(conv, in_place=True)


def fc_relu(bottom, nout, param=learned_param,
            weight_filler=dict(type="gaussian", std=0.005),
            bias_filler=dict(type="constant", value=0.1)):
    fc = L.InnerProduct(bottom, num_output=nout, param=param, weight_filler=weight_filler,
                        bias_filler=bias_filler)
    return fc, L.ReLU(fc, in_place=True)


def max_pool(bottom, ks, stride=1):
    return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride)


def caffenet(data, label=None, train=True, num_classes=1000, classifier_name="fc8",
             learn_all=False):
    """Returns a NetSpec specifying CaffeNet, following the original proto text
       specification (./models/bvlc_reference_caffenet/train_val.prototxt)."""
    n = caffe.NetSpec()
    n.data = data
    param = learned_param if learn_all else frozen_param
    n.conv1, n.relu1 = conv_relu(n.data, 11, 96, stride=4, param=param)
    n.pool1 = max_pool(n.relu1, 3, stride=2)
    n.norm1 = L.LRN(n.pool1, local_size=5, alpha=1e-4, beta=0.75)
    n.conv2, n.relu2 = conv_relu(n.norm1, 5, 256, pad=2, group=2, param=param)
    n.pool2 = max_pool(n.relu2, 3, stride=2)
    n.norm2 = L.LRN(n.pool2, local_size=5, alpha=1e-4, beta=0.75)
    n.conv3, n.relu3 = conv_relu(n.norm2, 3, 384, pad=1, param=param)
    n.conv4, n.relu4 = conv_relu(n.relu3, 3, 384, pad=1, group=2, param=param)
    n.conv5, n.relu5 = conv_relu(n.relu4, 3, 256, pad=1, group=2, param=param)
    n.pool5 = max_pool(n.relu5, 3, stride=2)
    n.fc6, n.relu6 = fc_relu(n.pool5, args.fc_width, param=param)
    if train:
        n.drop6 = fc7input = L.Dropout(n.relu6, in_place=True)
    else:
        fc7input = n.relu6
    n.fc7, n.relu7 = fc_relu(fc7input, args.fc_width, param=param)
    if train:
        n.drop7 = fc8input = L.Dropout(n.relu7, in_place=True)
    else:
        fc8input = n.relu7
    # always learn fc8 (param=learned_param)
    fc8 = L.InnerProduct(fc8input, num_output=num_classes, param=learned_param)
    # give fc8 the name specified by argument `classifier_name`
    n.__setattr__(classifier_name, fc8)
    if not train:
        n.probs = L.Softmax(fc8)
    if label is not None:
        n.label = label
        n.loss = L.SoftmaxWithLoss(fc8, n.label)
        n.acc = L.Accuracy(fc8, n.label)
    # write the net to a temporary file and return its filename
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", dir=out, delete=False) as f:
        f.write(str(n.to_proto()))
        return f.name


imagenet_labels = list(np.loadtxt(imagenet_label_file, str, delimiter="\t"))
assert len(imagenet_labels) == 1000
print("Loaded ImageNet labels:\n", "\n".join(imagenet_labels[:10] + ["..."]))
# (the notebook's np.loadtxt(..., delimiter='\n') is refused by numpy 2: read the lines)
with open(os.path.join(caffe_root, "style_names.txt")) as f:
    style_labels = [line.rstrip("\n") for line in f]
if NUM_STYLE_LABELS > 0:
    style_labels = style_labels[:NUM_STYLE_LABELS]
print("\nLoaded style labels:\n", ", ".join(style_labels))

dummy_data = L.DummyData(shape=dict(dim=[1, 3, args.image_size, args.image_size]))
imagenet_net_filename = caffenet(data=dummy_data, train=False)
# The "pretrained" ImageNet weights: CaffeNet's fillers, saved once.
weights = local.random_caffenet_weights(imagenet_net_filename, os.path.join(
    caffe_root, "bvlc_reference_caffenet.caffemodel"))
imagenet_net = caffe.Net(imagenet_net_filename, weights, caffe.TEST)


def style_net(train=True, learn_all=False, subset=None):
    if subset is None:
        subset = "train" if train else "test"
    source = caffe_root + "/data/flickr_style/%s.txt" % subset
    transform_param = dict(mirror=train, crop_size=args.image_size,
                           mean_file=caffe_root + "/data/ilsvrc12/imagenet_mean.binaryproto")
    style_data, style_label = L.ImageData(transform_param=transform_param, source=source,
                                          batch_size=args.batch_size, new_height=resize,
                                          new_width=resize, ntop=2)
    return caffenet(data=style_data, label=style_label, train=train,
                    num_classes=NUM_STYLE_LABELS, classifier_name="fc8_flickr",
                    learn_all=learn_all)


untrained_style_net = caffe.Net(style_net(train=False, subset="train"), weights, caffe.TEST)
untrained_style_net.forward()
style_data_batch = untrained_style_net.blobs["data"].data.copy()
style_label_batch = np.array(untrained_style_net.blobs["label"].data, dtype=np.int32)


def disp_preds(net, image, labels, k=5, name="ImageNet"):
    net.blobs["data"].data[0, ...] = image
    probs = net.forward(start="conv1")["probs"][0]
    top_k = (-probs).argsort()[:k]
    print("top %d predicted %s labels =" % (k, name))
    print("\n".join("\t(%d) %5.2f%% %s" % (i + 1, 100 * probs[p], labels[p])
                    for i, p in enumerate(top_k)))


def disp_imagenet_preds(net, image):
    disp_preds(net, image, imagenet_labels, name="ImageNet")


def disp_style_preds(net, image):
    disp_preds(net, image, style_labels, name="style")


batch_index = min(8, args.batch_size - 1)
image = style_data_batch[batch_index]
fig = plt.figure()
plt.imshow(deprocess_net_image(image))
local.save_figure(fig, out, "style_image")
print("actual label =", style_labels[style_label_batch[batch_index]])
disp_imagenet_preds(imagenet_net, image)
disp_style_preds(untrained_style_net, image)

diff = untrained_style_net.blobs["fc7"].data[0] - imagenet_net.blobs["fc7"].data[0]
error = (diff ** 2).sum()
assert error < 1e-8
del untrained_style_net

# 3. Training the style classifier ------------------------------------------------------------------------
from caffe.proto import caffe_pb2  # noqa: E402


def solver(train_net_path, test_net_path=None, base_lr=0.001):
    s = caffe_pb2.SolverParameter()
    s.train_net = train_net_path
    if test_net_path is not None:
        s.test_net.append(test_net_path)
        s.test_interval = 1000  # Test after every 1000 training iterations.
        s.test_iter.append(100)  # Test on 100 batches each time we test.
    s.iter_size = 1
    s.max_iter = 100000     # # of times to update the net (training iterations)
    s.type = "SGD"
    s.base_lr = base_lr
    s.lr_policy = "step"
    s.gamma = 0.1
    s.stepsize = 20000
    s.momentum = 0.9
    s.weight_decay = 5e-4
    s.display = 1000
    s.snapshot = 10000
    s.snapshot_prefix = caffe_root + "/models/finetune_flickr_style/finetune_flickr_style"
    s.solver_mode = caffe_pb2.SolverParameter.GPU
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", dir=out, delete=False) as f:
        f.write(str(s))
        return f.name


def run_solvers(niter, solvers, disp_interval=10):
    """Run solvers for niter iterations,
       returning the loss and accuracy recorded each iteration.
       `solvers` is a list of (name, solver) tuples."""
    blobs = ("loss", "acc")
    loss, acc = ({name: np.zeros(niter) for name, _ in solvers} for _ in blobs)
    for it in range(niter):
        for name, s in solvers:
            s.step(1)  # run a single SGD step in Caffe
            loss[name][it], acc[name][it] = (s.net.blobs[b].data.copy() for b in blobs)
        if it % disp_interval == 0 or it + 1 == niter:
            loss_disp = "; ".join("%s: loss=%.3f, acc=%2d%%" %
                                  (n, loss[n][it], np.round(100 * acc[n][it]))
                                  for n, _ in solvers)
            print("%3d) %s" % (it, loss_disp))
    # Save the learned weights from both nets.
    weight_dir = tempfile.mkdtemp(dir=out)
    weights = {}
    for name, s in solvers:
        filename = "weights.%s.caffemodel" % name
        weights[name] = os.path.join(weight_dir, filename)
        s.net.save(weights[name])
    return loss, acc, weights


niter = args.niter
style_solver_filename = solver(style_net(train=True))
style_solver = caffe.get_solver(style_solver_filename)
style_solver.net.copy_from(weights)
scratch_style_solver_filename = solver(style_net(train=True))
scratch_style_solver = caffe.get_solver(scratch_style_solver_filename)

print("Running solvers for %d iterations..." % niter)
solvers = [("pretrained", style_solver), ("scratch", scratch_style_solver)]
loss, acc, weights = run_solvers(niter, solvers)
print("Done.")

train_loss, scratch_train_loss = loss["pretrained"], loss["scratch"]
train_acc, scratch_train_acc = acc["pretrained"], acc["scratch"]
style_weights, scratch_style_weights = weights["pretrained"], weights["scratch"]
del style_solver, scratch_style_solver, solvers

fig = plt.figure()
plt.plot(np.vstack([train_loss, scratch_train_loss]).T)
plt.xlabel("Iteration #")
plt.ylabel("Loss")
local.save_figure(fig, out, "loss")
fig = plt.figure()
plt.plot(np.vstack([train_acc, scratch_train_acc]).T)
plt.xlabel("Iteration #")
plt.ylabel("Accuracy")
local.save_figure(fig, out, "accuracy")


def eval_style_net(weights, test_iters=args.test_iters):
    test_net = caffe.Net(style_net(train=False), weights, caffe.TEST)
    accuracy = 0
    for it in range(test_iters):
        accuracy += test_net.forward()["acc"]
    accuracy /= test_iters
    return test_net, accuracy


test_net, accuracy = eval_style_net(style_weights)
print("Accuracy, trained from ImageNet initialization: %3.1f%%" % (100 * accuracy, ))
scratch_test_net, scratch_accuracy = eval_style_net(scratch_style_weights)
print("Accuracy, trained from   random initialization: %3.1f%%" % (100 * scratch_accuracy, ))

# 4. End-to-end finetuning for style -------------------------------------------------------------------------
end_to_end_net = style_net(train=True, learn_all=True)
base_lr = 0.001
style_solver_filename = solver(end_to_end_net, base_lr=base_lr)
style_solver = caffe.get_solver(style_solver_filename)
style_solver.net.copy_from(style_weights)
scratch_style_solver_filename = solver(end_to_end_net, base_lr=base_lr)
scratch_style_solver = caffe.get_solver(scratch_style_solver_filename)
scratch_style_solver.net.copy_from(scratch_style_weights)

print("Running solvers for %d iterations..." % niter)
solvers = [("pretrained, end-to-end", style_solver),
           ("scratch, end-to-end", scratch_style_solver)]
_, _, finetuned_weights = run_solvers(niter, solvers)
print("Done.")
style_weights_ft = finetuned_weights["pretrained, end-to-end"]
scratch_style_weights_ft = finetuned_weights["scratch, end-to-end"]
del style_solver, scratch_style_solver, solvers

test_net, accuracy = eval_style_net(style_weights_ft)
print("Accuracy, finetuned from ImageNet initialization: %3.1f%%" % (100 * accuracy, ))
scratch_test_net, scratch_accuracy = eval_style_net(scratch_style_weights_ft)
print("Accuracy, finetuned from   random initialization: %3.1f%%" % (100 * scratch_accuracy, ))

fig = plt.figure()
plt.imshow(deprocess_net_image(image))
local.save_figure(fig, out, "finetuned_image")
disp_style_preds(test_net, image)

batch_index = min(1, args.batch_size - 1)
image = test_net.blobs["data"].data[batch_index]
fig = plt.figure()
plt.imshow(deprocess_net_image(image))
local.save_figure(fig, out, "test_image")
print("actual label =", style_labels[int(test_net.blobs["label"].data[batch_index])])
disp_style_preds(test_net, image)
disp_style_preds(scratch_test_net, image)
disp_imagenet_preds(imagenet_net, image)
print("done; files in", out)
