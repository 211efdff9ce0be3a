"""Image lists and image files as Caffe reads them (Pillow in place of OpenCV).

Arrays come out (C, H, W) uint8 with colour in BGR order, as cv::imread gives Caffe, so an
LMDB or an ImageData batch made here matches one made by Caffe's tools channel for channel.
"""
from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np

from ..errors import DataError, clip


def read_image_list(list_file) -> list[tuple[str, int]]:
    """'relative/path label' per line (the path may hold spaces; the label is last)."""
    entries = []
    try:
        text = Path(list_file).read_text()
    except OSError as e:
        raise DataError(f"cannot read image list {list_file}: {e.strerror or e}") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        path, _, label = line.strip().rpartition(" ")
        if not path or not label.lstrip("-").isdigit():
            raise DataError(f"{list_file}:{n}: expected 'path label', got {line!r}")
        entries.append((path, int(label)))
    if not entries:
        raise DataError(f"image list {list_file} has no entries")
    return entries


def to_chw(img, color: bool) -> np.ndarray:
    """A PIL image -> (C, H, W) uint8, BGR when colour, one channel when not."""
    if not color:
        return np.asarray(img.convert("L"), np.uint8)[None]
    rgb = np.asarray(img.convert("RGB"), np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))


def open_image(path, height: int = 0, width: int = 0, color: bool = True):
    """A decoded PIL image, converted to colour or grey and resized (bilinear) when both
    height and width are given, as Caffe's ReadImageToCVMat. Raises OSError/ValueError."""
    from PIL import Image
    with Image.open(path) as img:
        img = img.convert("RGB" if color else "L")
    if height and width:
        img = img.resize((width, height), Image.BILINEAR)
    return img


def load_image(path, height: int = 0, width: int = 0, color: bool = True) -> np.ndarray:
    """An image file -> (C, H, W) uint8 (see open_image)."""
    return to_chw(open_image(path, height, width, color), color)


def decode_image(data: bytes, where: str = "encoded image") -> np.ndarray:
    """PNG/JPEG bytes -> (C, H, W) uint8, grey images with one channel, others BGR; damaged
    bytes are a DataError naming `where` (the record)."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as img:
            return to_chw(img, img.mode not in ("L", "1", "I", "I;16"))
    except (OSError, ValueError, SyntaxError, EOFError, struct.error,
            Image.DecompressionBombError) as e:   # what Pillow raises on damaged bytes
        raise DataError(f"{where}: cannot decode the image bytes ({len(data)} bytes): "
                        f"{clip(str(e))}") from None


def encode_png(img) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()
