"""`protonet data`: build LMDBs of Datum records (Caffe's convert_* and compute_image_mean)."""
from __future__ import annotations

from ..data.convert import compute_mean, convert_dataset, convert_imageset
from ._common import add_common, setup_logging

NAME = "data"
ORDER = 40
HELP = "convert datasets to LMDBs: mnist, fashion-mnist, images, mean"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="what", metavar="WHAT")
    sub.required = True
    for name in ("mnist", "fashion-mnist"):
        d = sub.add_parser(name, help=f"{name} IDX files -> OUT_DIR/<name>_train_lmdb and _test_lmdb")
        d.add_argument("out_dir")
        d.add_argument("--from", dest="source", metavar="DIR",
                       help="folder with the four IDX files (.gz or raw)")
        d.add_argument("--url", help="download base URL instead of the official ones")
        add_overwrite(d)
        add_common(d)
    i = sub.add_parser("images", help="an image list ('path label' lines) -> an LMDB")
    i.add_argument("list_file")
    i.add_argument("root")
    i.add_argument("out_lmdb")
    i.add_argument("--resize-height", type=int, default=0)
    i.add_argument("--resize-width", type=int, default=0)
    i.add_argument("--gray", action="store_true")
    i.add_argument("--shuffle", action="store_true")
    i.add_argument("--encoded", action="store_true", help="store PNG bytes (decoded when read)")
    add_overwrite(i)
    add_common(i)
    m = sub.add_parser("mean", help="the mean image of an LMDB -> a .binaryproto")
    m.add_argument("lmdb")
    m.add_argument("out")
    add_common(m)


def add_overwrite(parser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing LMDB at the output path (other folders are "
                             "never replaced)")


def run(args) -> int:
    setup_logging(args)
    if args.what in ("mnist", "fashion-mnist"):
        convert_dataset(args.what, args.out_dir, args.source, args.url, args.overwrite)
    elif args.what == "images":
        convert_imageset(args.list_file, args.root, args.out_lmdb, args.resize_height,
                         args.resize_width, args.gray, args.shuffle, args.encoded,
                         overwrite=args.overwrite)
    else:
        compute_mean(args.lmdb, args.out)
    return 0
