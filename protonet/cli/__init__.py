"""The `protonet` command: Caffe's tool verbs (train, test, time, ...) as subcommands.

Each module in this package is one subcommand: it defines NAME, HELP, `add_arguments(parser)`
and `run(args) -> int`. A ProtonetError (a user's mistake) is printed as one line, exit 1.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings

from ..errors import ProtonetError
from ..prototxt import allowing_unknown_fields


def _commands():
    modules = [importlib.import_module(f"{__name__}.{m.name}")
               for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return sorted((m for m in modules if hasattr(m, "NAME")), key=lambda m: m.ORDER)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protonet", description="Run Caffe networks and solvers (Caffe's prototxt, "
        "caffemodel and LMDB formats) in Python.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _commands():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # numpy's RuntimeWarnings (overflow, invalid value) would reach the terminal as Python
    # tracebacks-in-miniature; protonet's own checks report NaN and Inf as one error line.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _run(args)


def _run(args) -> int:
    try:
        if getattr(args, "allow_unknown", False):
            with allowing_unknown_fields():
                return int(args.run(args) or 0)
        return int(args.run(args) or 0)
    except ProtonetError as e:
        print(f"protonet {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"protonet {args.command}: interrupted", file=sys.stderr)
        return 130
