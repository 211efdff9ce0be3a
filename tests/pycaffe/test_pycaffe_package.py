"""`import caffe` is protonet under pycaffe's module layout: same objects, pycaffe's names."""
import importlib
import subprocess
import sys
from importlib.metadata import version

import pytest

import caffe
import protonet


@pytest.mark.parametrize("module", ["caffe.io", "caffe.net_spec", "caffe.coord_map",
                                    "caffe.draw", "caffe.classifier", "caffe.detector",
                                    "caffe.proto", "caffe.proto.caffe_pb2"])
def test_pycaffes_modules_import(module):
    importlib.import_module(module)


def test_caffe_pb2_is_protonets_module():
    from caffe.proto import caffe_pb2
    import caffe.proto.caffe_pb2 as by_path
    assert caffe_pb2 is by_path is protonet.caffe_pb2


def test_everything_protonet_exports_is_in_caffe_as_the_same_object():
    for name in protonet.__all__:
        assert getattr(caffe, name) is getattr(protonet, name), name


def test_pycaffes_top_level_names():
    assert caffe.Net is protonet.Net
    assert caffe.TRAIN == protonet.TRAIN and caffe.TEST == protonet.TEST
    assert caffe.NetSpec is caffe.net_spec.NetSpec
    assert caffe.layers is caffe.net_spec.layers and caffe.params is caffe.net_spec.params
    assert caffe.to_proto is caffe.net_spec.to_proto
    assert caffe.Classifier is caffe.classifier.Classifier
    assert caffe.Detector is caffe.detector.Detector
    assert issubclass(caffe.Classifier, caffe.Net) and issubclass(caffe.Detector, caffe.Net)
    assert caffe.io.Transformer is protonet.preprocessing.Transformer


def test_version_is_the_distributions():
    assert caffe.__version__ == version("protonet")


def test_star_imports_work():
    code = "from protonet import *; from caffe import *; print(Net.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "protonet.net"
