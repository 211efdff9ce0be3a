"""Object detection with an SSD model (weiliu89/caffe's SSD, MobileNet-SSD, OpenCV's res10
face detector): run the net on an image and write the image with its boxes drawn.

    python examples/detect.py deploy.prototxt weights.caffemodel photo.jpg boxes.png \\
        --mean 104 117 123                          # res10 face detector, VGG-SSD
    python examples/detect.py MobileNetSSD_deploy.prototxt MobileNetSSD_deploy.caffemodel \\
        photo.jpg boxes.png --mean 127.5 127.5 127.5 --scale 0.007843 --labels voc.txt

The image is resized to the net's input size, turned into BGR planes (Caffe's channel
order), shifted by --mean and multiplied by --scale. The net's DetectionOutput top holds rows
[image, label, score, xmin, ymin, xmax, ymax] with corners in [0, 1] of the image; each row
scoring at least --threshold is drawn and printed.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image, ImageDraw

import protonet
from protonet.errors import ProtonetError
from protonet.io.images import to_chw

COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
          "#bfef45", "#469990", "#9a6324"]


def detection_blob(net) -> str:
    """The name of the blob a DetectionOutput layer writes."""
    for layer, lp in zip(net.layers, net.param.layer):
        if layer.type == "DetectionOutput":
            return lp.top[0]
    raise ProtonetError(f"{net.source}: the net has no DetectionOutput layer")


def detect(net, image: Image.Image, mean, scale: float) -> np.ndarray:
    """Rows (label, score, xmin, ymin, xmax, ymax) for `image`, corners in [0, 1]."""
    name = net.inputs[0]
    _, channels, height, width = net.blobs[name].shape
    planes = to_chw(image.resize((width, height), Image.BILINEAR), channels == 3)
    data = (planes.astype(np.float32) - np.asarray(mean, np.float32).reshape(-1, 1, 1)) * scale
    net.blobs[name].reshape(1, channels, height, width)
    net.forward(**{name: data[None]})
    rows = net.blobs[detection_blob(net)].data.reshape(-1, 7)
    return rows[rows[:, 1] >= 0, 1:]


def draw(image: Image.Image, rows, labels, threshold: float) -> list[str]:
    """Draw each detection scoring at least `threshold` (clipped to the image); return one
    text line per box drawn: name, score, corners in pixels."""
    canvas = ImageDraw.Draw(image)
    width, height = image.size
    lines = []
    for label, score, x0, y0, x1, y1 in rows:
        x0, x1 = np.clip([x0, x1], 0, 1) * width
        y0, y1 = np.clip([y0, y1], 0, 1) * height
        if score < threshold or x1 <= x0 or y1 <= y0:  # too weak, or nothing inside the image
            continue
        box = [x0, y0, x1, y1]
        name = labels[int(label)] if int(label) < len(labels) else f"class {int(label)}"
        color = COLORS[int(label) % len(COLORS)]
        canvas.rectangle(box, outline=color, width=max(1, round(min(width, height) / 200)))
        canvas.text((box[0] + 2, box[1] + 1), f"{name} {score:.2f}", fill=color)
        lines.append(f"{name}\t{score:.3f}\t" + "\t".join(f"{v:.0f}" for v in box))
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("prototxt")
    p.add_argument("caffemodel")
    p.add_argument("image")
    p.add_argument("output", help="where to write the image with its boxes (PNG, JPEG, ...)")
    p.add_argument("--mean", type=float, nargs=3, default=[104.0, 117.0, 123.0],
                   metavar=("B", "G", "R"), help="subtracted per channel (default 104 117 123)")
    p.add_argument("--scale", type=float, default=1.0, help="applied after the mean (1)")
    p.add_argument("--threshold", type=float, default=0.5, help="lowest score drawn (0.5)")
    p.add_argument("--labels", help="a text file with one class name per line, background "
                                    "first")
    args = p.parse_args(argv)
    try:
        labels = []
        if args.labels:
            with open(args.labels) as f:
                labels = [line.strip() for line in f]
        net = protonet.Net(args.prototxt, protonet.TEST, weights=args.caffemodel)
        with Image.open(args.image) as img:
            image = img.convert("RGB")
        rows = detect(net, image, args.mean, args.scale)
        lines = draw(image, rows, labels, args.threshold)
        image.save(args.output)
    except (ProtonetError, OSError) as e:
        print(f"detect.py: {e}", file=sys.stderr)
        return 1
    print(f"{len(lines)} detections at score >= {args.threshold} (of {len(rows)}); "
          f"wrote {args.output}")
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
