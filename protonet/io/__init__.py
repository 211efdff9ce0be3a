"""Bytes on disk: Caffe's binary formats (caffemodel, solverstate, binaryproto), LMDB, IDX.
Every write goes through `atomic.atomic_write`."""
