"""caffe.proto.caffe_pb2 is protonet.caffe_pb2 itself (same message classes)."""
import sys

from protonet import caffe_pb2

sys.modules[__name__] = caffe_pb2
