"""Caffe's DataTransformer: crop, mirror, subtract the mean, scale, in that order.

y[c, h, w] = (x[c, h_off + h, w_off + w] - mean[c, h_off + h, w_off + w]) * scale, with the
image mirrored left-right when drawn. Crop offsets are random in TRAIN and centred in TEST;
mirroring is random in TRAIN and off in TEST. Random draws depend only on (seed, position of
the batch's first record), so prefetching threads and resumed runs draw the same values.
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError, NetDefinitionError
from ..io.binaryproto import read_binaryproto


class DataTransformer:
    def __init__(self, param, phase: int, shape: tuple[int, int, int], where: str) -> None:
        self.scale = np.float32(param.scale)
        self.crop = int(param.crop_size)
        self.train = phase == 0
        self.mirror = bool(param.mirror) and self.train
        c, h, w = shape
        if param.force_color or param.force_gray:
            raise NetDefinitionError(f"{where}: transform_param force_color/force_gray are not "
                                     "supported; convert the images when building the LMDB")
        if param.mean_file and len(param.mean_value):
            raise NetDefinitionError(f"{where}: give mean_file or mean_value, not both")
        self.mean = None
        if param.mean_file:
            mean = read_binaryproto(param.mean_file)
            if mean.shape[-3:] != (c, h, w) or mean.size != c * h * w:
                raise DataError(f"{where}: mean file {param.mean_file} has shape {mean.shape}, "
                                f"the data has shape {(c, h, w)}")
            self.mean = mean.reshape(c, h, w).astype(np.float32)
        elif len(param.mean_value):
            values = list(param.mean_value)
            if len(values) not in (1, c):
                raise NetDefinitionError(f"{where}: {len(values)} mean_value entries for {c} "
                                         "channels; give one, or one per channel")
            self.mean = np.broadcast_to(np.asarray(values, np.float32).reshape(-1, 1, 1),
                                        (c, h, w)).copy()
        if self.crop and (self.crop > h or self.crop > w):
            raise DataError(f"{where}: crop_size {self.crop} is larger than the images ({h}x{w})")
        self.in_shape = (c, h, w)
        self.out_shape = (c, self.crop, self.crop) if self.crop else (c, h, w)
        self.random = self.train and (self.crop > 0 or self.mirror)

    def __call__(self, images: np.ndarray, seed: int, position: int, out: np.ndarray) -> None:
        """Transform a batch (B, C, H, W) of uint8 or float values into `out` (float32)."""
        n = images.shape[0]
        if not self.crop and not self.mirror:
            if self.mean is None:
                np.multiply(images, self.scale, out=out, casting="unsafe")
            else:
                np.subtract(images, self.mean, out=out, casting="unsafe")
                out *= self.scale
            return
        g = np.random.default_rng([seed, position]) if self.random else None
        c, h, w = self.in_shape
        size_h, size_w = self.out_shape[1:]
        if self.crop and self.train:
            offsets_h = g.integers(0, h - size_h + 1, n)
            offsets_w = g.integers(0, w - size_w + 1, n)
        else:
            offsets_h = np.full(n, (h - size_h) // 2)
            offsets_w = np.full(n, (w - size_w) // 2)
        flips = g.integers(0, 2, n).astype(bool) if self.mirror else np.zeros(n, bool)
        for i in range(n):
            hs, ws = offsets_h[i], offsets_w[i]
            window = (slice(None), slice(hs, hs + size_h), slice(ws, ws + size_w))
            patch = images[i][window].astype(np.float32)
            if self.mean is not None:
                patch -= self.mean[window]
            patch *= self.scale
            out[i] = patch[:, :, ::-1] if flips[i] else patch
