"""Batches: Caffe's data transformations, background prefetch, dataset conversion."""
