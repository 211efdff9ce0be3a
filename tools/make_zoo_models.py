"""Write models/vgg16_deploy.prototxt and models/resnet50_deploy.prototxt from the published
architectures, with the layer names of the Caffe model-zoo releases (so their caffemodels
load by name):

- VGG-16: configuration D of Simonyan & Zisserman, "Very Deep Convolutional Networks for
  Large-Scale Image Recognition" (2014), Table 1: 13 3x3 convolutions (pad 1) in five blocks
  of 64, 128, 256, 512, 512 channels, each block ending in 2x2 max pooling, then fc6 and fc7
  (4096, ReLU, dropout) and fc8 (1000), softmax.
- ResNet-50: He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition" (2015),
  Table 1: conv1 7x7/2 (64), 3x3/2 max pooling, bottleneck stages of 3, 4, 6, 3 blocks
  (1x1, 3x3, 1x1 with 64/256 ... 512/2048 channels; projection shortcut in each stage's
  first block, stride 2 in its first 1x1 as the released Caffe model has it), 7x7 average
  pooling, fc1000, softmax. Every convolution is followed by BatchNorm (stored statistics)
  and Scale (learned gamma and beta), as in the release.

    python tools/make_zoo_models.py            # rewrite both files
    python tools/make_zoo_models.py --check    # exit 1 if the files differ from this script
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from google.protobuf import text_format

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from protonet import caffe_pb2  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEADER = ("# Written by tools/make_zoo_models.py from the published architecture; "
          "do not edit by hand.\n")


class NetWriter:
    def __init__(self, name: str, input_shape) -> None:
        self.net = caffe_pb2.NetParameter(name=name)
        layer = self.layer("data", "Input", [], ["data"])
        layer.input_param.shape.add().dim.extend(input_shape)

    def layer(self, name, type_, bottom, top):
        lp = self.net.layer.add(name=name, type=type_)
        lp.bottom.extend(bottom)
        lp.top.extend(top)
        return lp

    def conv(self, name, bottom, num_output, kernel, stride=1, pad=0, bias=True, top=None):
        lp = self.layer(name, "Convolution", [bottom], [top or name])
        p = lp.convolution_param
        p.num_output = num_output
        p.kernel_size.append(kernel)
        if stride != 1:
            p.stride.append(stride)
        if pad:
            p.pad.append(pad)
        if not bias:
            p.bias_term = False
        p.weight_filler.type = "msra" if not bias else "xavier"
        return top or name

    def relu(self, name, blob):
        self.layer(name, "ReLU", [blob], [blob])

    def pool(self, name, bottom, method, kernel, stride):
        lp = self.layer(name, "Pooling", [bottom], [name])
        lp.pooling_param.pool = method
        lp.pooling_param.kernel_size = kernel
        lp.pooling_param.stride = stride
        return name

    def fc(self, name, bottom, num_output):
        lp = self.layer(name, "InnerProduct", [bottom], [name])
        lp.inner_product_param.num_output = num_output
        lp.inner_product_param.weight_filler.type = "xavier"
        return name

    def text(self) -> str:
        return HEADER + text_format.MessageToString(self.net)


def vgg16() -> str:
    w = NetWriter("VGG_ILSVRC_16_layers", [1, 3, 224, 224])
    blob = "data"
    for block, (channels, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3),
                                               (512, 3)], 1):
        for i in range(1, convs + 1):
            blob = w.conv(f"conv{block}_{i}", blob, channels, 3, pad=1)
            w.relu(f"relu{block}_{i}", blob)
        blob = w.pool(f"pool{block}", blob, caffe_pb2.PoolingParameter.MAX, 2, 2)
    for i in (6, 7):
        blob = w.fc(f"fc{i}", blob, 4096)
        w.relu(f"relu{i}", blob)
        drop = w.layer(f"drop{i}", "Dropout", [blob], [blob])
        drop.dropout_param.dropout_ratio = 0.5
    blob = w.fc("fc8", blob, 1000)
    w.layer("prob", "Softmax", [blob], ["prob"])
    return w.text()


def conv_bn(w: NetWriter, name, bottom, num_output, kernel, stride=1, pad=0, relu=True):
    """A bias-free convolution, BatchNorm and Scale in place, optionally ReLU (the release's
    res*/bn*/scale* naming)."""
    blob = w.conv(name, bottom, num_output, kernel, stride, pad, bias=False)
    suffix = name[len("res"):] if name.startswith("res") else "_" + name
    bn = w.layer(f"bn{suffix}", "BatchNorm", [blob], [blob])
    bn.batch_norm_param.use_global_stats = True
    scale = w.layer(f"scale{suffix}", "Scale", [blob], [blob])
    scale.scale_param.bias_term = True
    if relu:
        w.relu(f"{name}_relu", blob)
    return blob


def resnet50() -> str:
    w = NetWriter("ResNet-50", [1, 3, 224, 224])
    blob = conv_bn(w, "conv1", "data", 64, 7, stride=2, pad=3)
    blob = w.pool("pool1", blob, caffe_pb2.PoolingParameter.MAX, 3, 2)
    for stage, (width, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], 2):
        for b in range(blocks):
            tag = f"{stage}{chr(ord('a') + b)}"
            stride = 2 if b == 0 and stage > 2 else 1
            if b == 0:
                shortcut = conv_bn(w, f"res{tag}_branch1", blob, 4 * width, 1, stride,
                                   relu=False)
            else:
                shortcut = blob
            x = conv_bn(w, f"res{tag}_branch2a", blob, width, 1, stride)
            x = conv_bn(w, f"res{tag}_branch2b", x, width, 3, pad=1)
            x = conv_bn(w, f"res{tag}_branch2c", x, 4 * width, 1, relu=False)
            w.layer(f"res{tag}", "Eltwise", [shortcut, x], [f"res{tag}"])
            blob = f"res{tag}"
            w.relu(f"res{tag}_relu", blob)
    blob = w.pool("pool5", blob, caffe_pb2.PoolingParameter.AVE, 7, 1)
    blob = w.fc("fc1000", blob, 1000)
    w.layer("prob", "Softmax", [blob], ["prob"])
    return w.text()


MODELS = {"models/vgg16_deploy.prototxt": vgg16, "models/resnet50_deploy.prototxt": resnet50}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only compare with the files")
    args = p.parse_args(argv)
    stale = []
    for path, make in MODELS.items():
        text = make()
        target = ROOT / path
        if args.check:
            if not target.exists() or target.read_text() != text:
                stale.append(path)
        else:
            target.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("stale (run tools/make_zoo_models.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
