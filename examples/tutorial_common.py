"""Local stand-ins for what Caffe's tutorial notebooks download, shared by the tutorial
scripts in this folder: CaffeNet's deploy and fully convolutional definitions (written with
NetSpec, random fillers in place of the trained ImageNet weights), ImageNet-style label and
mean files, generated photos, and Fashion-MNIST LMDBs from Debian's dataset-fashion-mnist.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import caffe
from caffe import layers as L
from caffe import params as P

MEAN_BGR = (104.0, 117.0, 123.0)   # ImageNet's mean pixel, as the notebooks compute it


def pool5_size(image_size: int) -> int:
    """Side of CaffeNet's pool5 for square inputs (Caffe's pooling rounds up)."""
    size = (image_size - 11) // 4 + 1                # conv1
    for _ in range(3):                               # pool1, pool2 (convs keep size), pool5
        size = math.ceil((size - 3) / 2) + 1
    if size < 1:
        raise SystemExit(f"CaffeNet needs inputs of at least 67 pixels, not {image_size}")
    return size


def caffenet_features(n, fc_width: int, fully_convolutional: bool, classifier_size: int):
    """CaffeNet's layers from n.data to fc8, named as models/bvlc_reference_caffenet; with
    `fully_convolutional`, fc6-8 are the equivalent convolutions (fc6-conv...) of the
    classifier taking `classifier_size` inputs."""
    fill = dict(weight_filler=dict(type="gaussian", std=0.01),
                bias_filler=dict(type="constant", value=0.1))

    def conv_relu(name, bottom, ks, nout, stride=1, pad=0, group=1):
        n[name] = L.Convolution(bottom, kernel_size=ks, stride=stride, num_output=nout, pad=pad,
                                group=group, **fill)
        n["relu" + name[-1]] = L.ReLU(n[name], in_place=True)
        return n[name]

    top = conv_relu("conv1", n.data, 11, 96, stride=4)
    n.pool1 = L.Pooling(top, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.norm1 = L.LRN(n.pool1, local_size=5, alpha=1e-4, beta=0.75)
    top = conv_relu("conv2", n.norm1, 5, 256, pad=2, group=2)
    n.pool2 = L.Pooling(top, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.norm2 = L.LRN(n.pool2, local_size=5, alpha=1e-4, beta=0.75)
    top = conv_relu("conv3", n.norm2, 3, 384, pad=1)
    top = conv_relu("conv4", top, 3, 384, pad=1, group=2)
    top = conv_relu("conv5", top, 3, 256, pad=1, group=2)
    n.pool5 = L.Pooling(top, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    top = n.pool5
    widths = {"fc6": fc_width, "fc7": fc_width, "fc8": 1000}
    for i, (name, width) in enumerate(widths.items()):
        if fully_convolutional:
            name += "-conv"
            n[name] = L.Convolution(top, num_output=width, kernel_size=pool5_size(
                                        classifier_size) if i == 0 else 1, **fill)
        else:
            n[name] = L.InnerProduct(top, num_output=width, **fill)
        top = n[name]
        if name.startswith(("fc6", "fc7")):
            n["relu" + name[2]] = L.ReLU(top, in_place=True)
            n["drop" + name[2]] = L.Dropout(top, in_place=True, dropout_ratio=0.5)
    return top


def write_caffenet(path, batch: int = 10, image_size: int = 227, fc_width: int = 4096,
                   fully_convolutional: bool = False, classifier_size: int = 227) -> str:
    """A CaffeNet deploy prototxt (Input -> ... -> prob) at `path`; returns the path. The
    fully convolutional version casts the classifier of `classifier_size` inputs."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 3, image_size, image_size]))
    top = caffenet_features(n, fc_width, fully_convolutional, classifier_size)
    n.prob = L.Softmax(top)
    net = n.to_proto()
    net.name = "CaffeNetConv" if fully_convolutional else "CaffeNet"
    Path(path).write_text(str(net))
    return str(path)


def random_caffenet_weights(model_def, weights_path, seed: int = 1701) -> str:
    """Weights for `model_def` drawn from its fillers (stand-in for the ImageNet download)."""
    if not Path(weights_path).exists():
        caffe.set_random_seed(seed)
        caffe.Net(str(model_def), caffe.TEST).save(str(weights_path))
    return str(weights_path)


def imagenet_files(folder) -> tuple[str, str]:
    """synset_words.txt (1000 labels) and ilsvrc_2012_mean.npy (3 x 256 x 256, BGR) as the
    notebooks read them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels = folder / "synset_words.txt"
    labels.write_text("".join(f"n{i:08d} class {i}\n" for i in range(1000)))
    mean = folder / "ilsvrc_2012_mean.npy"
    np.save(mean, np.broadcast_to(np.array(MEAN_BGR, np.float32)[:, None, None],
                                  (3, 256, 256)))
    return str(labels), str(mean)


def generated_photo(path, height: int = 360, width: int = 480, seed: int = 0,
                    grey: bool = False) -> str:
    """A picture to classify: sky, sun, hills and stripes, saved as JPEG."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    sky = (1 - y) * np.array([90, 150, 235]) + y * np.array([230, 220, 200])
    pixels = np.broadcast_to(sky, (height, width, 3)).astype(np.uint8)
    img = Image.fromarray(pixels)
    draw = ImageDraw.Draw(img)
    cx, cy, r = width * rng.uniform(0.2, 0.8), height * 0.3, height * 0.12
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(250, 210, 60))
    for i in range(3):
        base = height * (0.6 + 0.1 * i)
        points = [(x, base - 40 * math.sin(x / width * math.pi * (i + 1) + i))
                  for x in range(0, width + 1, 8)] + [(width, height), (0, height)]
        draw.polygon(points, fill=(40 + 30 * i, 120 - 20 * i, 50))
    for x in range(0, width, 24):
        draw.line([(x, height - 30), (x + 12, height)], fill=(110, 80, 40), width=4)
    if grey:
        img = img.convert("L")
    img.save(path, quality=95)
    return str(path)


def fashion_mnist_lmdbs(out_dir) -> tuple[str, str]:
    """Fashion-MNIST train and test LMDBs (from Debian's dataset-fashion-mnist package, or
    a download), made once in `out_dir`."""
    from protonet.data.convert import convert_dataset
    out_dir = Path(out_dir)
    train, test = out_dir / "fashion_mnist_train_lmdb", out_dir / "fashion_mnist_test_lmdb"
    if not (train.exists() and test.exists()):
        convert_dataset("fashion-mnist", out_dir)
    return str(train), str(test)


FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot"]


def save_figure(fig, folder, name: str) -> None:
    """Figures go to files (the notebooks show them inline)."""
    import matplotlib.pyplot as plt
    fig.savefig(Path(folder) / f"{name}.png", dpi=60)
    plt.close(fig)


def vis_square(data, ax):
    """00-classification's vis_square: (n, h, w[, 3]) arrays tiled in a square grid."""
    data = (data - data.min()) / max(float(data.max() - data.min()), 1e-12)
    n = int(np.ceil(np.sqrt(data.shape[0])))
    padding = ((0, n ** 2 - data.shape[0]), (0, 1), (0, 1)) + ((0, 0),) * (data.ndim - 3)
    data = np.pad(data, padding, mode="constant", constant_values=1)
    data = data.reshape((n, n) + data.shape[1:]).transpose(
        (0, 2, 1, 3) + tuple(range(4, data.ndim + 1)))
    data = data.reshape((n * data.shape[1], n * data.shape[3]) + data.shape[4:])
    ax.imshow(data)
    ax.axis("off")
