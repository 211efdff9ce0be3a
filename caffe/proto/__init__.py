"""caffe.proto: the Caffe schema's generated module, caffe_pb2 (protonet's)."""
