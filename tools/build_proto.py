"""Generate protonet/caffe_pb2.py from proto/caffe.proto (the single source of truth).

    python tools/build_proto.py

Needs grpcio-tools (a test-only dependency: `pip install -e '.[test]'`). The generated module
is committed and never edited by hand; tests/test_schema.py fails when it is stale.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "proto" / "caffe.proto"
OUTPUT = ROOT / "protonet" / "caffe_pb2.py"


def _protoc(args: list[str]) -> None:
    from grpc_tools import protoc
    if protoc.main(["protoc", *args]) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")


def compiled_descriptor_bytes(proto_path: Path = PROTO) -> bytes:
    """The serialized FileDescriptorProto that a module generated now from `proto_path` would
    embed (taken from protoc's Python output, so formatting of defaults matches exactly)."""
    with tempfile.TemporaryDirectory() as tmp:
        _protoc([f"-I{proto_path.parent}", f"--python_out={tmp}", proto_path.name])
        return embedded_descriptor_bytes(Path(tmp) / "caffe_pb2.py")


def embedded_descriptor_bytes(module_path: Path = OUTPUT) -> bytes:
    """The serialized descriptor a generated module embeds (its AddSerializedFile literal)."""
    import ast
    import re
    text = Path(module_path).read_text()
    match = re.search(r"AddSerializedFile\((b'.*?')\)", text, re.S)
    if match is None:
        raise SystemExit("protoc's output has no serialized descriptor")
    return ast.literal_eval(match.group(1))


def build() -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        _protoc([f"-I{PROTO.parent}", f"--python_out={tmp}", PROTO.name])
        shutil.copyfile(Path(tmp) / "caffe_pb2.py", OUTPUT)
    return OUTPUT


if __name__ == "__main__":
    print(f"wrote {build()}", file=sys.stderr)
