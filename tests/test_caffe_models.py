"""Conformance: every prototxt of Caffe's examples and model zoo (../shared/caffe-models).

Each net parses, builds in TRAIN and TEST with its data layers swapped for DummyData
(protonet.surgery.swap_data_layers), infers the blob shapes Caffe infers, and runs forward and
backward; each solver parses. Batches are cut to 2 to keep the walk cheap.
"""
from pathlib import Path

import numpy as np
import pytest

import protonet
from protonet import prototxt
from protonet.surgery import swap_data_layers

FIXTURES = str(Path(__file__).parent / "fixtures")   # pyloss.py for the pycaffe example
MNIST, CIFAR, IMAGENET = {"data": (1, 28, 28)}, {"data": (3, 32, 32)}, {"data": (3, 227, 227)}

# Net prototxt -> (per-sample shapes of the data tops, TEST stages from its solver).
NETS = {
    "examples/cifar10/cifar10_full.prototxt": ({}, ()),
    "examples/cifar10/cifar10_full_sigmoid_train_test.prototxt": (CIFAR, ()),
    "examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt": (CIFAR, ()),
    "examples/cifar10/cifar10_full_train_test.prototxt": (CIFAR, ()),
    "examples/cifar10/cifar10_quick.prototxt": ({}, ()),
    "examples/cifar10/cifar10_quick_train_test.prototxt": (CIFAR, ()),
    "examples/feature_extraction/imagenet_val.prototxt": (IMAGENET, ()),
    "examples/finetune_pascal_detection/pascal_finetune_trainval_test.prototxt": (IMAGENET, ()),
    "examples/hdf5_classification/nonlinear_auto_test.prototxt": ({"data": (4,)}, ()),
    "examples/hdf5_classification/nonlinear_auto_train.prototxt": ({"data": (4,)}, ()),
    "examples/hdf5_classification/nonlinear_train_val.prototxt": ({"data": (4,)}, ()),
    "examples/hdf5_classification/train_val.prototxt": ({"data": (4,)}, ()),
    "examples/mnist/lenet.prototxt": ({}, ()),
    "examples/mnist/lenet_train_test.prototxt": (MNIST, ()),
    "examples/mnist/mnist_autoencoder.prototxt": (MNIST, ("test-on-test",)),
    "examples/net_surgery/bvlc_caffenet_full_conv.prototxt": ({}, ()),
    "examples/net_surgery/conv.prototxt": ({}, ()),
    "examples/pycaffe/linreg.prototxt": ({}, ()),
    "examples/siamese/mnist_siamese.prototxt": ({}, ()),
    "examples/siamese/mnist_siamese_train_test.prototxt": ({"pair_data": (2, 28, 28)}, ()),
    "models/bvlc_alexnet/deploy.prototxt": ({}, ()),
    "models/bvlc_alexnet/train_val.prototxt": (IMAGENET, ()),
    "models/bvlc_googlenet/deploy.prototxt": ({}, ()),
    "models/bvlc_googlenet/train_val.prototxt": ({"data": (3, 224, 224)}, ()),
    "models/bvlc_reference_caffenet/deploy.prototxt": ({}, ()),
    "models/bvlc_reference_caffenet/train_val.prototxt": (IMAGENET, ()),
    "models/bvlc_reference_rcnn_ilsvrc13/deploy.prototxt": ({}, ()),
    "models/finetune_flickr_style/deploy.prototxt": ({}, ()),
    "models/finetune_flickr_style/train_val.prototxt": (IMAGENET, ()),
}

# Shapes Caffe infers (per sample; batch 2 in front), from Caffe's own logs and papers.
ALEXNET = {"conv1": (96, 55, 55), "pool1": (96, 27, 27), "conv2": (256, 27, 27),
           "pool2": (256, 13, 13), "conv5": (256, 13, 13), "pool5": (256, 6, 6),
           "fc6": (4096,), "fc8": (1000,)}
GOOGLENET = {"conv1/7x7_s2": (64, 112, 112), "pool1/3x3_s2": (64, 56, 56),
             "pool2/3x3_s2": (192, 28, 28), "inception_3a/output": (256, 28, 28),
             "inception_3b/output": (480, 28, 28), "pool3/3x3_s2": (480, 14, 14),
             "inception_4e/output": (832, 14, 14), "pool4/3x3_s2": (832, 7, 7),
             "inception_5b/output": (1024, 7, 7), "pool5/7x7_s1": (1024, 1, 1),
             "loss3/classifier": (1000,)}
CIFAR_QUICK = {"conv1": (32, 32, 32), "pool1": (32, 16, 16), "pool2": (32, 8, 8),
               "pool3": (64, 4, 4), "ip1": (64,), "ip2": (10,)}
EXPECTED_SHAPES = {
    "models/bvlc_alexnet/deploy.prototxt": ALEXNET,
    "models/bvlc_alexnet/train_val.prototxt": ALEXNET,
    "models/bvlc_reference_caffenet/deploy.prototxt": {"pool5": (256, 6, 6), "fc8": (1000,)},
    "models/bvlc_reference_rcnn_ilsvrc13/deploy.prototxt": {"fc-rcnn": (200,)},
    "models/bvlc_googlenet/deploy.prototxt": GOOGLENET,
    "models/bvlc_googlenet/train_val.prototxt": {**GOOGLENET, "loss1/fc": (1024,),
                                                 "loss2/fc": (1024,)},
    "examples/net_surgery/bvlc_caffenet_full_conv.prototxt": {"fc6-conv": (4096, 8, 8),
                                                              "fc8-conv": (1000, 8, 8)},
    "examples/net_surgery/conv.prototxt": {"conv": (3, 96, 96)},
    "examples/cifar10/cifar10_quick.prototxt": CIFAR_QUICK,
    "examples/cifar10/cifar10_quick_train_test.prototxt": CIFAR_QUICK,
    "examples/cifar10/cifar10_full_train_test.prototxt": {"pool1": (32, 16, 16),
                                                          "pool3": (64, 4, 4), "ip1": (10,)},
    "examples/mnist/lenet_train_test.prototxt": {"conv1": (20, 24, 24), "pool1": (20, 12, 12),
                                                 "conv2": (50, 8, 8), "pool2": (50, 4, 4)},
}


def test_the_table_covers_every_net_and_solver_in_the_folder(caffe_models):
    found = {str(p.relative_to(caffe_models)) for p in caffe_models.rglob("*.prototxt")}
    nets = {p for p in found if "solver" not in Path(p).name}
    assert nets == set(NETS), "add new nets to NETS (and their data shapes)"


@pytest.mark.parametrize("path", sorted(NETS))
def test_caffe_net_builds_infers_shapes_and_runs_both_phases(path, caffe_models, monkeypatch):
    monkeypatch.syspath_prepend(FIXTURES)
    shapes, test_stages = NETS[path]
    swapped = swap_data_layers(prototxt.read_net(caffe_models / path), shapes, batch_size=2)
    for phase in (protonet.TRAIN, protonet.TEST):
        protonet.set_random_seed(1701)
        net = protonet.Net(param=swapped, phase=phase, source=path,
                           stages=test_stages if phase == protonet.TEST else ())
        for name, shape in EXPECTED_SHAPES.get(path, {}).items():
            if name in net.blobs:
                assert net.blobs[name].shape == (2, *shape), (path, name)
        outputs = net.forward()
        assert all(np.isfinite(v).all() for v in outputs.values()), (path, phase)
        net.backward()
        net.close()


@pytest.mark.parametrize("phase", [protonet.TRAIN, protonet.TEST])
def test_solver_with_an_embedded_net_builds_its_nets(caffe_models, phase):
    solver = prototxt.read_solver(caffe_models / "examples/mnist/lenet_consolidated_solver.prototxt")
    swapped = swap_data_layers(solver.net_param, MNIST, batch_size=2)
    stages = tuple(solver.test_state[0].stage) if phase == protonet.TEST else ()
    net = protonet.Net(param=swapped, phase=phase, stages=stages)
    assert net.forward()["loss"].shape == ()


def test_every_caffe_solver_parses(caffe_models):
    solvers = sorted(p for p in caffe_models.rglob("*solver*.prototxt"))
    assert len(solvers) >= 20
    for path in solvers:
        solver = prototxt.read_solver(path)
        assert solver.base_lr > 0 and solver.type, path


def test_swap_needs_the_shape_of_a_data_top_it_cannot_infer(caffe_models):
    net = prototxt.read_net(caffe_models / "models/bvlc_alexnet/train_val.prototxt")
    with pytest.raises(protonet.errors.NetDefinitionError,
                       match=r"layer 'data' \(Data\): give the shape of its top 'data'"):
        swap_data_layers(net, {})
