"""Helpers shared by the subcommands: logging set-up, progress bars, prototxt sniffing."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from .. import caffe_pb2, logs
from ..errors import ProtonetError, PrototxtError
from ..io.atomic import check_output
from ..prototxt import parse_text, rejecting_unknown_fields

log = logging.getLogger("protonet")


def setup_logging(args) -> None:
    logfile = getattr(args, "log", None)
    if logfile:
        check_output(logfile, "log file", inputs=input_paths(args))
    logs.configure(logfile=logfile)
    if getattr(args, "gpu", None) is not None:
        log.info("protonet runs on the CPU; --gpu %s is ignored", args.gpu)


# Argument names that hold files a command reads: no output may land on one of them.
INPUT_ARGUMENTS = ("prototxt", "solver", "weights", "snapshot", "model", "net", "input",
                   "list_file", "root", "lmdb", "source")


def input_paths(args) -> list[str]:
    paths = []
    for name in INPUT_ARGUMENTS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value:
            paths.extend(value.split(",") if name == "weights" else [value])
    return paths


def check_outputs(args, *names: str) -> None:
    """Before any work: each output argument in `names` must be writable, not an input, and
    not another of the outputs."""
    done: list[str] = []
    for name in names:
        path = getattr(args, name)
        check_output(path, name.replace("_", " "), inputs=input_paths(args) + done)
        done.append(path)


def add_common(parser) -> None:
    parser.add_argument("--log", metavar="FILE", help="also write the log lines to FILE")
    parser.add_argument("--gpu", metavar="ID", help="accepted for Caffe compatibility; ignored")


def add_allow_unknown(parser) -> None:
    parser.add_argument("--allow-unknown", action="store_true",
                        help="drop prototxt fields stock Caffe does not know (files from "
                             "Caffe forks) and list each one, instead of stopping at the first")


def is_solver_file(path) -> bool:
    """True when `path` holds a SolverParameter rather than a NetParameter. A file that reads
    as neither raises the error of the reading that got further (a net with a typo on line
    40 is reported as a net, not as a solver failing at 1:1)."""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        raise ProtonetError(f"{path}: no such file") from None
    except OSError as e:
        raise ProtonetError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        net = parse_text(text, caffe_pb2.NetParameter(), str(path))
        return not (len(net.layer) or len(net.layers))
    except PrototxtError as as_net:
        try:
            # Judged without dropping anything: a net with one bad field is not a solver
            # whose every field was dropped.
            with rejecting_unknown_fields():
                parse_text(text, caffe_pb2.SolverParameter(), str(path))
            return True
        except PrototxtError as as_solver:
            def reach(e):
                return (getattr(e, "line", None) or 0, getattr(e, "column", None) or 0)
            raise (as_net if reach(as_net) >= reach(as_solver) else as_solver) from None


def progress(total: int, initial: int = 0, desc: str = ""):
    """A tqdm bar on a terminal; None otherwise (plain log lines only)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="it", dynamic_ncols=True,
                leave=True)
