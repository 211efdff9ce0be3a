"""Classifier: a TEST-phase Net that takes (H, W, K) images and returns class probabilities,
from the centre crop or averaged over ten crops (corners, centre and their mirrors), as
pycaffe's caffe.Classifier.
"""
from __future__ import annotations

import numpy as np

from .net import TEST, Net
from . import preprocessing
from .preprocessing import Transformer, resize_image

__all__ = ["Classifier", "configure_transformer"]


def configure_transformer(net: Net, mean=None, input_scale=None, raw_scale=None,
                          channel_swap=None) -> Transformer:
    """A Transformer for the net's first input, taking (H, W, K) images, with the given
    preprocessing settings."""
    name = net.inputs[0]
    transformer = Transformer({name: net.blobs[name].data.shape})
    transformer.set_transpose(name, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(name, mean)
    if input_scale is not None:
        transformer.set_input_scale(name, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(name, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(name, channel_swap)
    return transformer


class Classifier(Net):
    """`Classifier(deploy_prototxt, caffemodel, image_dims=None, mean=None, input_scale=None,
    raw_scale=None, channel_swap=None)`. Images are first resized to `image_dims` (default:
    the net's input size), then cropped to the net's input size."""

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None,
                 input_scale=None, raw_scale=None, channel_swap=None) -> None:
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = configure_transformer(self, mean, input_scale, raw_scale,
                                                 channel_swap)
        self.crop_dims = np.array(self.blobs[self.inputs[0]].data.shape[2:])
        self.image_dims = np.array(image_dims if image_dims is not None and len(image_dims)
                                   else self.crop_dims)

    def predict(self, inputs, oversample: bool = True) -> np.ndarray:
        """(N, classes) predictions (the net's first output) for a list of (H, W, K) images:
        the mean over the ten crops of each, or (oversample=False) the centre crop's."""
        height, width = (int(d) for d in self.image_dims)
        images = np.stack([resize_image(image, (height, width)) for image in inputs])
        if oversample:
            crops = preprocessing.oversample(images, self.crop_dims)
        else:
            top, left = ((np.array([height, width]) - self.crop_dims) // 2)
            crop_h, crop_w = self.crop_dims
            crops = images[:, top:top + crop_h, left:left + crop_w, :]
        name = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(name, crop) for crop in crops])
        predictions = self.forward_all(**{name: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape(len(predictions) // 10, 10, -1).mean(axis=1)
        return predictions
