"""Bytes on disk: Caffe's binary formats (caffemodel, solverstate, binaryproto), LMDB, IDX.
Every write goes through `atomic` (outputs checked before the work, written atomically)."""
