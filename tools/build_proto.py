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
    """The serialized FileDescriptorProto of `proto_path`, as protoc compiles it now."""
    from google.protobuf import descriptor_pb2
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "caffe.desc"
        _protoc([f"-I{proto_path.parent}", f"--descriptor_set_out={out}", proto_path.name])
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    proto = files.file[0]
    # Descriptor sets carry json_name; generated modules do not: drop it to compare.
    pending = list(proto.message_type)
    while pending:
        message = pending.pop()
        for field in message.field:
            field.ClearField("json_name")
        pending.extend(message.nested_type)
    return proto.SerializeToString()


def build() -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        _protoc([f"-I{PROTO.parent}", f"--python_out={tmp}", PROTO.name])
        shutil.copyfile(Path(tmp) / "caffe_pb2.py", OUTPUT)
    return OUTPUT


if __name__ == "__main__":
    print(f"wrote {build()}", file=sys.stderr)
