"""Dataset conversion to LMDBs of Datum records, like Caffe's convert_mnist_data,
convert_imageset and compute_image_mean."""
from __future__ import annotations

import hashlib
import gzip
import logging
import random
import sys
import urllib.request
from pathlib import Path

import numpy as np

from ..errors import DataError, NonFiniteError, OutputError
from ..io.atomic import check_output
from ..io.binaryproto import write_binaryproto
from ..io.datum import datum_from_array, datum_to_array, encoded_datum, parse_datum
from ..io.images import decode_image, encode_png, open_image, read_image_list, to_chw
from ..io.idx import read_idx
from ..io.lmdb_store import check_lmdb_output, iter_records, write_lmdb

log = logging.getLogger("protonet")

IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class Dataset:
    """Where an IDX dataset comes from and how its download is checked."""

    def __init__(self, name, prefix, urls, digests, debian_dir=None, hash_name="sha256",
                 decompressed=True):
        self.name, self.prefix, self.urls, self.digests = name, prefix, urls, digests
        self.debian_dir, self.hash_name, self.decompressed = debian_dir, hash_name, decompressed


DATASETS = {
    # SHA-256 of each file's decompressed IDX bytes (gzip packaging differs between mirrors).
    "fashion-mnist": Dataset(
        "fashion-mnist", "fashion_mnist",
        ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        {"train-images-idx3-ubyte":
         "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
         "train-labels-idx1-ubyte":
         "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
         "t10k-images-idx3-ubyte":
         "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
         "t10k-labels-idx1-ubyte":
         "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"},
        debian_dir="/usr/share/datasets/fashion-mnist"),
    # MNIST's published checksums are MD5s of the .gz files.
    "mnist": Dataset(
        "mnist", "mnist",
        ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
        {"train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c"},
        hash_name="md5", decompressed=False),
}


def progress(iterable, total: int, desc: str):
    """tqdm on a terminal, the plain iterable elsewhere."""
    if not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit="rec")


def find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") +
                 ".gz"):
        if (directory / name).exists():
            return directory / name
    return None


def locate_sources(dataset: Dataset, source_dir, out_dir: Path, url=None) -> Path:
    """The folder holding the four IDX files: --from, Debian's package, or a checked download."""
    stems = [s for pair in IDX_FILES.values() for s in pair]
    if source_dir is not None:
        source_dir = Path(source_dir)
        try:
            missing = [s for s in stems if find_idx(source_dir, s) is None]
        except OSError as e:  # a name longer than NAME_MAX, a loop of links
            raise DataError(f"{source_dir}: cannot read ({e.strerror or e})") from None
        if missing:
            raise DataError(f"{source_dir}: missing {', '.join(missing)} (.gz or raw)")
        return source_dir
    if dataset.debian_dir and all(find_idx(Path(dataset.debian_dir), s) for s in stems):
        log.info("Using %s files from Debian's package in %s", dataset.name, dataset.debian_dir)
        return Path(dataset.debian_dir)
    raw = out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        target = raw / f"{stem}.gz"
        if target.exists() and _digest_ok(dataset, stem, target):
            continue
        _download(dataset, stem, target, url)
    return raw


def _digest_ok(dataset: Dataset, stem: str, path: Path) -> bool:
    data = path.read_bytes()
    if dataset.decompressed:
        data = gzip.decompress(data)
    return hashlib.new(dataset.hash_name, data).hexdigest() == dataset.digests[stem]


def _download(dataset: Dataset, stem: str, target: Path, url=None) -> None:
    bases = [url] if url else dataset.urls
    errors = []
    for base in bases:
        address = f"{base.rstrip('/')}/{stem}.gz"
        try:
            log.info("Downloading %s", address)
            with urllib.request.urlopen(address, timeout=30) as response:
                data = response.read()
        except Exception as e:  # offline, refused, 404: try the next mirror
            errors.append(f"{address}: {e}")
            continue
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        if not _digest_ok(dataset, stem, tmp):
            tmp.unlink()
            raise DataError(f"{address}: downloaded file fails its {dataset.hash_name} check")
        tmp.replace(target)
        return
    hint = " or install Debian's dataset-fashion-mnist package" if dataset.debian_dir else ""
    raise DataError(f"cannot download {dataset.name} ({errors[-1]}); give the IDX files with "
                    f"--from DIR{hint}")


def convert_idx(images_path: Path, labels_path: Path, out_lmdb: Path,
                overwrite: bool = False) -> int:
    """One IDX image/label pair -> an LMDB like convert_mnist_data's (keys %08d)."""
    check_lmdb_output(out_lmdb, overwrite)
    images = read_idx(images_path, expect_ndim=3)
    labels = read_idx(labels_path, expect_ndim=1)
    if len(images) != len(labels):
        raise DataError(f"{images_path}: {len(images)} images but {labels_path} has "
                        f"{len(labels)} labels")
    records = ((b"%08d" % i, datum_from_array(images[i][None], int(labels[i])))
               for i in range(len(images)))
    n = write_lmdb(out_lmdb, progress(records, len(images), out_lmdb.name), overwrite=overwrite)
    log.info("Wrote %d records to %s", n, out_lmdb)
    return n


def convert_dataset(name: str, out_dir, source_dir=None, url=None,
                    overwrite: bool = False) -> dict[str, Path]:
    dataset = DATASETS[name]
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"output folder {out_dir} is a file")
    targets = {split: out_dir / f"{dataset.prefix}_{split}_lmdb" for split in IDX_FILES}
    for target in targets.values():
        check_lmdb_output(target, overwrite)
    folder = locate_sources(dataset, source_dir, out_dir, url)
    for split, (images, labels) in IDX_FILES.items():
        convert_idx(find_idx(folder, images), find_idx(folder, labels), targets[split],
                    overwrite)
    return targets


def convert_imageset(list_file, root, out_lmdb, resize_height=0, resize_width=0, gray=False,
                     shuffle=False, encoded=False, seed=1701,
                     overwrite: bool = False) -> tuple[int, list[str]]:
    """An image list ('relative/path label' per line) -> an LMDB, like convert_imageset.
    Returns (records written, paths skipped because they could not be read). An existing
    LMDB at `out_lmdb` is replaced only with `overwrite`, any other folder never."""
    check_lmdb_output(out_lmdb, overwrite)
    lines = read_image_list(list_file)
    if shuffle:
        random.Random(seed).shuffle(lines)
    skipped: list[str] = []

    def records():
        for i, (path, label) in enumerate(lines):
            full = Path(root) / path
            try:
                img = open_image(full, resize_height, resize_width, color=not gray)
                if encoded:
                    data = encode_png(img)
                    value = encoded_datum(data, label, *decode_image(data).shape)
                else:
                    value = datum_from_array(to_chw(img, not gray), label)
            except (OSError, ValueError) as e:
                log.warning("Could not read %s (%s); skipped", full, e)
                skipped.append(str(full))
                continue
            yield (f"{i:08d}_{path}".encode(), value)

    n = write_lmdb(out_lmdb, progress(records(), len(lines), Path(out_lmdb).name),
                   overwrite=overwrite)
    log.info("Wrote %d records to %s; %d images skipped", n, out_lmdb, len(skipped))
    return n, skipped


def compute_mean(lmdb_path, out_path) -> np.ndarray:
    """The mean image of an LMDB, written as a (1, C, H, W) binaryproto (compute_image_mean)."""
    check_output(out_path, "mean file", inputs=[lmdb_path])
    total = None
    count = 0
    where = f"LMDB '{lmdb_path}'"
    for key, value in iter_records(lmdb_path):
        image = datum_to_array(parse_datum(value, key, where), key, where=where)
        if not np.isfinite(image).all():
            raise NonFiniteError(f"{where}: record {key.decode(errors='replace')} holds NaN "
                                 "or Inf values")
        if total is None:
            total = np.zeros(image.shape, np.float64)
        elif image.shape != total.shape:
            raise DataError(f"{lmdb_path}: record {key.decode(errors='replace')} has shape "
                            f"{image.shape}, the first had {total.shape}")
        total += image
        count += 1
    if not count:
        raise DataError(f"{lmdb_path}: the database is empty")
    mean = (total / count).astype(np.float32)[None]
    write_binaryproto(out_path, mean)
    log.info("Mean of %d images written to %s", count, out_path)
    return mean
