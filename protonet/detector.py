"""Detector: a TEST-phase Net that classifies windows of images, each cropped (optionally
with a border of surrounding context, as R-CNN) and warped to the net's input, as pycaffe's
caffe.Detector.
"""
from __future__ import annotations

import numpy as np

from .classifier import configure_transformer
from .errors import ProtonetError
from .net import TEST, Net
from .preprocessing import load_image, resize_image

__all__ = ["Detector"]


class Detector(Net):
    """`Detector(deploy_prototxt, caffemodel, mean=None, input_scale=None, raw_scale=None,
    channel_swap=None, context_pad=None)`. With `context_pad` p, each window is grown so
    that a p-pixel border of the net's input is context around the window; the parts beyond
    the image are filled with the mean (in image space)."""

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None, context_pad=None) -> None:
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = configure_transformer(self, mean, input_scale, raw_scale,
                                                 channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows) -> list[dict]:
        """For each (image file, windows) pair and each window (ymin, xmin, ymax, xmax):
        {'window', 'prediction' (the net's first output), 'filename'}, in input order."""
        images_windows = [(name, list(windows)) for name, windows in images_windows]
        crops = []
        for filename, windows in images_windows:
            image = load_image(filename)
            crops.extend(self.crop(image, window) for window in windows)
        name = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(name, crop) for crop in crops])
        predictions = self.forward_all(**{name: caffe_in})[self.outputs[0]]
        detections, i = [], 0
        for filename, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[i],
                                   "filename": filename})
                i += 1
        return detections

    def detect_selective_search(self, image_fnames):
        raise ProtonetError("detect_selective_search needs the MATLAB selective search "
                            "package; compute windows yourself and call detect_windows")

    def crop(self, im, window) -> np.ndarray:
        """The window (ymin, xmin, ymax, xmax) of an (H, W, K) image, with context padding
        when configured (then already at the net's input size)."""
        window = np.asarray(window)
        if not self.context_pad:
            return im[int(window[0]):int(window[2]), int(window[1]):int(window[3])]
        crop_size = self.blobs[self.inputs[0]].data.shape[3]   # square inputs, as R-CNN
        scale = crop_size / (crop_size - 2.0 * self.context_pad)
        half_h = (window[2] - window[0] + 1) / 2.0
        half_w = (window[3] - window[1] + 1) / 2.0
        centre = np.array([window[0] + half_h, window[1] + half_w] * 2)
        box = np.round(centre + scale * np.array([-half_h, -half_w, half_h, half_w]))
        scale_h = crop_size / (box[2] - box[0] + 1)
        scale_w = crop_size / (box[3] - box[1] + 1)
        pad_y = int(round(max(0, -box[0]) * scale_h))   # rows of the input beyond the image
        pad_x = int(round(max(0, -box[1]) * scale_w))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0, [im_h, im_w, im_h, im_w]).astype(int)
        crop_h = min(int(round((box[2] - box[0] + 1) * scale_h)), crop_size - pad_y)
        crop_w = min(int(round((box[3] - box[1] + 1) * scale_w)), crop_size - pad_x)
        if crop_h <= 0 or crop_w <= 0:
            raise ProtonetError(f"window {window.tolist()} lies outside the {im_h} x {im_w} "
                                "image")
        context = resize_image(im[box[0]:box[2], box[1]:box[3]], (crop_h, crop_w))
        out = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        out[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context
        return out

    def configure_crop(self, context_pad) -> None:
        """Set crop_dims (the net input as H, W, K) and, with context padding, crop_mean: the
        mean in image space (before channel swap and raw scale) that fills the border."""
        name = self.inputs[0]
        transpose = self.transformer.transpose[name]
        inverse = np.argsort(transpose)
        self.crop_dims = np.array(self.blobs[name].data.shape[1:])[inverse]
        self.context_pad = context_pad
        if not context_pad:
            return
        mean = self.transformer.mean.get(name)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        crop_mean = np.array(np.broadcast_to(mean, self.blobs[name].data.shape[1:]),
                             dtype=np.float32).transpose(inverse)
        swap = self.transformer.channel_swap.get(name)
        if swap is not None:
            crop_mean = crop_mean[:, :, np.argsort(swap)]
        raw_scale = self.transformer.raw_scale.get(name)
        if raw_scale is not None:
            crop_mean /= raw_scale
        self.crop_mean = crop_mean
