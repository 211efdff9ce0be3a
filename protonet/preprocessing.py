"""Images and arrays in and out of a net the way pycaffe's caffe.io does it.

Images are (H, W, K) float32 arrays, colour in RGB order with values in [0, 1] as
`load_image` gives them; a `Transformer` turns one into the (K, H, W) input a net takes
(resize, transpose, channel swap, raw scale, mean, input scale) and `deprocess` undoes it.
BlobProto and Datum messages convert to and from numpy with pycaffe's contracts: a BlobProto
without a shape holds a scalar (more than one value raises ValueError); `array_to_datum` keeps
uint8 arrays as bytes and others as floats, and leaves the label unset unless given.
"""
from __future__ import annotations

import numpy as np

from . import caffe_pb2
from .errors import DataError, ProtonetError
from .io.binaryproto import blobproto_from_array

__all__ = ["Transformer", "load_image", "resize_image", "oversample", "blobproto_to_array",
           "array_to_blobproto", "arraylist_to_blobprotovector_str",
           "blobprotovector_str_to_arraylist", "array_to_datum", "datum_to_array"]


class ArrayShapeError(DataError, ValueError):
    """An array or message whose shape does not fit (a ValueError, as pycaffe raises)."""


class TransformerInputError(ProtonetError, KeyError):
    """A Transformer asked about a blob that is not one of its inputs."""


# -- BlobProto / Datum <-> numpy ---------------------------------------------------------------
def _legacy_shape(blob) -> bool:
    return any(blob.HasField(f) for f in ("num", "channels", "height", "width"))


def blobproto_to_array(blob, return_diff: bool = False) -> np.ndarray:
    """The BlobProto's data (or diff) as a float64 array of its shape: `shape.dim` or the
    legacy num/channels/height/width. With neither the blob is a scalar."""
    values = (blob.diff or blob.double_diff) if return_diff else (blob.data or blob.double_data)
    values = np.array(values, dtype=np.float64)
    if _legacy_shape(blob):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    if values.size != int(np.prod(shape, dtype=np.int64)):
        what = "shape" if blob.HasField("shape") or _legacy_shape(blob) else "no shape (a scalar)"
        raise ArrayShapeError(f"BlobProto has {values.size} {'diff' if return_diff else 'data'} "
                              f"values but {what} {shape}")
    return values.reshape(shape)


def array_to_blobproto(arr, diff=None):
    """A BlobProto with `shape` and float data (and diff when given) from an array."""
    return blobproto_from_array(arr, diff=diff)


def arraylist_to_blobprotovector_str(arraylist) -> bytes:
    """Serialized BlobProtoVector of the arrays (the format of Net.forward's string inputs)."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(np.asarray(a)) for a in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(serialized: bytes) -> list[np.ndarray]:
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(serialized)
    return [blobproto_to_array(blob) for blob in vec.blobs]


def array_to_datum(arr, label=None):
    """A Datum from a (C, H, W) array: uint8 values as bytes in `data`, anything else as
    `float_data`; `label` set only when given."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ArrayShapeError(f"a Datum holds a (channels, height, width) array, got shape "
                              f"{arr.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float64).ravel())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum) -> np.ndarray:
    """A Datum's values as (C, H, W): uint8 from `data`, float64 from `float_data` (the label
    is datum.label). Encoded (PNG/JPEG) data is decoded, BGR as Caffe stores it."""
    from .io.datum import datum_to_array as decode
    values = decode(datum, "datum")
    return values if values.dtype == np.uint8 else values.astype(np.float64)


# -- images ------------------------------------------------------------------------------------
def load_image(filename, color: bool = True) -> np.ndarray:
    """An image file as (H, W, 3) float32 RGB in [0, 1], or (H, W, 1) grey when `color` is
    False. Alpha is dropped, grey images are repeated to three channels for colour."""
    from PIL import Image
    try:
        with Image.open(filename) as img:
            if not color:
                pixels = np.asarray(img.convert("L"))[:, :, None]
            elif img.mode in ("L", "1", "I", "I;16", "F", "LA"):
                grey = np.asarray(img.convert("L"))
                pixels = np.repeat(grey[:, :, None], 3, axis=2)
            else:
                pixels = np.asarray(img.convert("RGB"))
    except OSError as e:
        raise DataError(f"{filename}: cannot read the image ({e})") from None
    return pixels.astype(np.float32) / np.float32(255)


def _linear_weights(n_in: int, n_out: int):
    """Source indices and weights for resampling n_in samples to n_out, pixel centres
    aligned (sample i of the output sits at (i + 0.5) * n_in / n_out - 0.5 of the input)."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo)[:, None]


def resize_image(im, new_dims, interp_order: int = 1) -> np.ndarray:
    """Resize an (H, W, K) array to (new_dims[0], new_dims[1], K) float32, bilinear
    (interp_order=1, pixel centres aligned, edges clamped) or nearest (interp_order=0). A
    constant image stays exactly constant."""
    im = np.asarray(im)
    if im.ndim != 3:
        raise ArrayShapeError(f"resize_image takes an (H, W, K) array, got shape {im.shape}")
    out_h, out_w = int(new_dims[0]), int(new_dims[1])
    if out_h <= 0 or out_w <= 0:
        raise ArrayShapeError(f"cannot resize to {out_h} x {out_w}")
    if im.size and im.min() == im.max():
        return np.full((out_h, out_w, im.shape[2]), im.flat[0], dtype=np.float32)
    values = im.astype(np.float64)
    if interp_order == 0:
        rows = np.minimum((np.arange(out_h) + 0.5) * im.shape[0] / out_h, im.shape[0] - 1)
        cols = np.minimum((np.arange(out_w) + 0.5) * im.shape[1] / out_w, im.shape[1] - 1)
        return values[rows.astype(np.int64)][:, cols.astype(np.int64)].astype(np.float32)
    if interp_order != 1:
        raise ProtonetError(f"resize_image supports interp_order 0 (nearest) and 1 (linear), "
                            f"not {interp_order}")
    lo, hi, w = _linear_weights(im.shape[0], out_h)
    values = values[lo] * (1 - w[:, :, None]) + values[hi] * w[:, :, None]
    lo, hi, w = _linear_weights(im.shape[1], out_w)
    values = values[:, lo] * (1 - w) + values[:, hi] * w
    return values.astype(np.float32)


def oversample(images, crop_dims) -> np.ndarray:
    """Ten crops per (H, W, K) image: the four corners and the centre, then the same five
    mirrored left to right; returns (10 N, crop_h, crop_w, K) float32."""
    crop_h, crop_w = int(crop_dims[0]), int(crop_dims[1])
    im_h, im_w, channels = np.asarray(images[0]).shape
    if crop_h > im_h or crop_w > im_w:
        raise ArrayShapeError(f"crop {crop_h} x {crop_w} is larger than the image "
                              f"{im_h} x {im_w}")
    corners = [(0, 0), (0, im_w - crop_w), (im_h - crop_h, 0), (im_h - crop_h, im_w - crop_w),
               ((im_h - crop_h) // 2, (im_w - crop_w) // 2)]
    crops = np.empty((10 * len(images), crop_h, crop_w, channels), dtype=np.float32)
    for i, image in enumerate(images):
        for j, (y, x) in enumerate(corners):
            window = image[y:y + crop_h, x:x + crop_w, :]
            crops[10 * i + j] = window
            crops[10 * i + 5 + j] = window[:, ::-1, :]
    return crops


# -- Transformer -------------------------------------------------------------------------------
class Transformer:
    """Prepares images for a net's inputs. `inputs` maps each input blob name to its shape
    (N, K, H, W); settings are per input:

        t = Transformer({"data": net.blobs["data"].data.shape})
        t.set_transpose("data", (2, 0, 1))     # H x W x K -> K x H x W
        t.set_channel_swap("data", (2, 1, 0))  # RGB -> BGR
        t.set_raw_scale("data", 255)           # [0, 1] -> [0, 255]
        t.set_mean("data", mean_bgr)           # per channel (K,) or per pixel (K, H, W)
        net.blobs["data"].data[...] = t.preprocess("data", image)

    preprocess applies, in order: float32, resize to the input's H x W, transpose, channel
    swap, raw scale, mean subtraction, input scale; deprocess undoes them in reverse.
    """

    def __init__(self, inputs: dict) -> None:
        self.inputs = {name: tuple(shape) for name, shape in inputs.items()}
        self.transpose: dict = {}
        self.channel_swap: dict = {}
        self.raw_scale: dict = {}
        self.mean: dict = {}
        self.input_scale: dict = {}

    def _check_input(self, name: str) -> tuple:
        if name not in self.inputs:
            raise TransformerInputError(f"{name!r} is not one of the net inputs: "
                                        f"{list(self.inputs)}")
        return self.inputs[name]

    def preprocess(self, in_: str, data) -> np.ndarray:
        """An (H', W', K) image -> the (K, H, W) float32 array for input `in_`."""
        shape = self._check_input(in_)
        caffe_in = np.asarray(data).astype(np.float32, copy=False)
        if caffe_in.shape[:2] != shape[2:]:
            caffe_in = resize_image(caffe_in, shape[2:])
        if in_ in self.transpose:
            caffe_in = caffe_in.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            caffe_in = caffe_in[list(self.channel_swap[in_]), :, :]
        caffe_in = np.array(caffe_in, dtype=np.float32)   # own copy: the steps below write
        if in_ in self.raw_scale:
            caffe_in *= self.raw_scale[in_]
        if in_ in self.mean:
            caffe_in -= self.mean[in_]
        if in_ in self.input_scale:
            caffe_in *= self.input_scale[in_]
        return caffe_in

    def deprocess(self, in_: str, data) -> np.ndarray:
        """Undo preprocess: a (K, H, W) array (or (1, K, H, W)) -> an (H, W, K) image."""
        self._check_input(in_)
        image = np.array(data, dtype=np.float32).squeeze()
        if in_ in self.input_scale:
            image /= self.input_scale[in_]
        if in_ in self.mean:
            image += self.mean[in_]
        if in_ in self.raw_scale:
            image /= self.raw_scale[in_]
        if in_ in self.channel_swap:
            image = image[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            image = image.transpose(np.argsort(self.transpose[in_]))
        return image

    def set_transpose(self, in_: str, order) -> None:
        """Axis order taking the given images to the input's (K, H, W): (2, 0, 1) for
        H x W x K images."""
        shape = self._check_input(in_)
        if len(order) != len(shape) - 1:
            raise ArrayShapeError(f"transpose order {tuple(order)} for input {in_!r} needs "
                                  f"{len(shape) - 1} axes, as the input's {shape[1:]}")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_: str, order) -> None:
        """Channel order after transposing: (2, 1, 0) turns RGB into BGR."""
        shape = self._check_input(in_)
        if len(order) != shape[1]:
            raise ArrayShapeError(f"channel swap {tuple(order)} for input {in_!r} needs "
                                  f"{shape[1]} channels")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_: str, scale) -> None:
        """Multiply images by `scale` before the mean (255 for nets trained on 0-255 pixels)."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean) -> None:
        """The mean to subtract: (K,) per channel, or (K, H, W) / (H, W) per pixel (resized
        to the input's H x W when it differs; one channel serves all)."""
        shape = self._check_input(in_)
        mean = np.asarray(mean, dtype=np.float32)
        if mean.ndim == 1:
            if mean.shape[0] != shape[1]:
                raise ArrayShapeError(f"mean has {mean.shape[0]} channels, input {in_!r} has "
                                      f"{shape[1]}")
            mean = mean[:, None, None]
        else:
            if mean.ndim == 2:
                mean = mean[None]
            if mean.ndim != 3:
                raise ArrayShapeError(f"mean shape {mean.shape}: give (K,), (H, W) or "
                                      "(K, H, W)")
            if mean.shape[0] not in (1, shape[1]):
                raise ArrayShapeError(f"mean shape {mean.shape} does not fit input {in_!r} "
                                      f"of shape {shape[1:]}")
            if mean.shape[1:] != shape[2:]:
                mean = resize_image(mean.transpose(1, 2, 0), shape[2:]).transpose(2, 0, 1)
        self.mean[in_] = mean

    def set_input_scale(self, in_: str, scale) -> None:
        """Multiply the input by `scale` after mean subtraction."""
        self._check_input(in_)
        self.input_scale[in_] = scale
