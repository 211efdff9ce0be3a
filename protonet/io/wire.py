"""protobuf's wire format, as far as files of big blobs need it (.caffemodel, .solverstate).

Nearly all the bytes of these files are the packed float `data` of their BlobProtos. Parsing
a whole file with protobuf holds every value as a protobuf float beside the arrays they are
copied into; serializing a whole message holds them twice more. Instead:
- reading walks the fields (`Wire`), hands the small ones to protobuf and only locates each
  blob's packed floats (`scan_blob` -> `FileBlob`), which are checked in blocks and read from
  the file straight into their destination array;
- writing (`with_blobs`) serializes the message without its blobs and inserts each blob's
  pieces (binaryproto.blobproto_pieces: a view of the array's floats) where protobuf puts
  that field, so the bytes are protobuf's own.
"""
from __future__ import annotations

import io
import os
import sys

import numpy as np

from .. import caffe_pb2
from ..errors import NonFiniteError, PrototxtError
from .binaryproto import array_from_blobproto, blobproto_pieces, blobproto_shape, length_key

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
# BlobProto: data = 5 (packed float); diff = 6 and double_diff = 9 are never needed to load
# values; anything else (shape, num/channels/height/width, double_data, unpacked data) is
# parsed by protobuf.
_DATA, _DIFF, _DOUBLE_DIFF = 5, 6, 9
READ_BLOCK = 1 << 22  # bytes of packed floats checked for NaN/Inf at a time


class Damaged(Exception):
    """The bytes break protobuf's wire format (truncated, a bad varint or wire type)."""


class Truncated(Damaged):
    """A field runs past the end of the file or of the message holding it."""

    def __init__(self, number: int, wire: int, payload: int):
        super().__init__("truncated")
        self.number, self.wire, self.payload = number, wire, payload


class Wire:
    """Walks length-delimited protobuf messages in a file without reading their payloads."""

    def __init__(self, file, where: str, size: int | None = None):
        self.file, self.where = file, where
        self.size = os.fstat(file.fileno()).st_size if size is None else size

    def varint(self) -> int:
        result = shift = 0
        while True:
            byte = self.file.read(1)
            if not byte:
                raise Damaged("truncated")
            result |= (byte[0] & 0x7F) << shift
            if byte[0] < 0x80:
                return result
            shift += 7
            if shift >= 70:
                raise Damaged("a malformed varint")

    def fields(self, end: int):
        """(field number, wire type, start of the field's tag, start of its payload, end) of
        each field up to `end`; the file is left at the field's end after each."""
        while (start := self.file.tell()) < end:
            key = self.varint()
            number, wire = key >> 3, key & 7
            if number == 0:
                raise Damaged("field number 0")
            if wire == LENGTH:
                length = self.varint()
                payload = self.file.tell()
                stop = payload + length
            elif wire == VARINT:
                payload = self.file.tell()
                self.varint()
                stop = self.file.tell()
            elif wire in (FIXED64, FIXED32):
                payload = self.file.tell()
                stop = payload + (8 if wire == FIXED64 else 4)
            else:  # groups (3, 4): no field of caffe.proto is one; 6 and 7 do not exist
                raise Damaged(f"wire type {wire} (field {number})")
            if stop > end:
                raise Truncated(number, wire, payload)
            yield number, wire, start, payload, stop
            self.file.seek(stop)

    def raw(self, start: int, stop: int) -> bytes:
        self.file.seek(start)
        data = self.file.read(stop - start)
        if len(data) != stop - start:
            raise Damaged("truncated")
        return data


class FileBlob:
    """One BlobProto of a file: `proto` holds its shape fields (and its values when they are
    not packed floats); `segments` locate its packed float `data` in the file as (offset,
    bytes), in order (protobuf joins repeated packed runs). `file` is open for reading."""

    def __init__(self, proto, segments=(), file=None):
        self.proto = proto
        self.segments = list(segments)
        self.file = file

    @property
    def count(self) -> int:
        if self.segments:
            return sum(n for _, n in self.segments) // 4
        return len(self.proto.data) or len(self.proto.double_data)

    @property
    def shape(self) -> tuple[int, ...]:
        return blobproto_shape(self.proto, self.count)

    @property
    def legacy(self) -> bool:
        return not self.proto.HasField("shape")

    def _blocks(self):
        """The packed values as float32 arrays of at most READ_BLOCK bytes, in order."""
        buffer = np.empty(READ_BLOCK // 4, np.float32)
        for offset, nbytes in self.segments:
            self.file.seek(offset)
            for start in range(0, nbytes, READ_BLOCK):
                part = buffer[:min(READ_BLOCK, nbytes - start) // 4]
                self._read_exactly(part)
                yield part

    def _check_count(self, what: str) -> None:
        expected = int(np.prod(self.shape, dtype=np.int64))
        if self.count != expected:
            raise PrototxtError(f"{what}: shape {self.shape} needs {expected} values, "
                                f"the file has {self.count}")

    def check(self, what: str) -> None:
        """The number of values fits the shape, and none is NaN or Inf."""
        if not self.segments:
            finite_values(array_from_blobproto(self.proto, what), what)
            return
        self._check_count(what)
        bad = sum(part.size - int(np.isfinite(part).sum()) for part in self._blocks())
        if bad:
            raise NonFiniteError(f"{what} holds {bad} NaN or Inf values (of {self.count})")

    def array(self, what: str) -> np.ndarray:
        """The values as a new float32 array of the blob's shape (array_from_blobproto)."""
        if not self.segments:
            return array_from_blobproto(self.proto, what)
        self._check_count(what)
        out = np.empty(self.shape, np.float32)
        self.read_into(out, what)
        return out

    def read_into(self, out, what: str) -> None:
        """Copy the values into the float32 array `out` (of the blob's count)."""
        if not self.segments:
            out[...] = array_from_blobproto(self.proto, what).reshape(out.shape)
            return
        contiguous = out.flags.c_contiguous
        flat = out.reshape(-1) if contiguous else np.empty(out.size, np.float32)
        at = 0
        for offset, nbytes in self.segments:
            self.file.seek(offset)
            self._read_exactly(flat[at:at + nbytes // 4])
            at += nbytes // 4
        if sys.byteorder != "little":  # the file's floats are little-endian
            flat.byteswap(inplace=True)
        if not contiguous:
            out[...] = flat.reshape(out.shape)

    def _read_exactly(self, array) -> None:
        view = memoryview(array).cast("B")
        if self.file.readinto(view) != len(view):
            raise PrototxtError(f"{self.file.name}: the file changed or was cut short while "
                                "being read")


def finite_values(values, what: str):
    finite = np.isfinite(values)
    if not finite.all():
        raise NonFiniteError(f"{what} holds {values.size - int(finite.sum())} NaN or Inf "
                             f"values (of {values.size})")
    return values


def scan_blob(wire: Wire, start: int, end: int) -> FileBlob:
    """The BlobProto between `start` and `end` of the file."""
    segments, rest = [], bytearray()
    unpacked_data = False
    for number, wire_type, field_start, payload, stop in wire.fields(end):
        if wire_type == LENGTH and number in (_DATA, _DIFF, _DOUBLE_DIFF):
            if (stop - payload) % (8 if number == _DOUBLE_DIFF else 4):
                raise Damaged(f"a packed field of {stop - payload} bytes, not whole values")
            if number == _DATA:
                segments.append((payload, stop - payload))
        else:
            unpacked_data |= number == _DATA
            rest += wire.raw(field_start, stop)
    if segments and unpacked_data:  # packed and unpacked runs, joined in order: parse it whole
        return FileBlob(caffe_pb2.BlobProto.FromString(wire.raw(start, end)))
    return FileBlob(caffe_pb2.BlobProto.FromString(bytes(rest)), segments, wire.file)


def with_blobs(message, field_number: int, arrays) -> tuple[list, int]:
    """(pieces, their total bytes): `message` serialized with a BlobProto of each of `arrays`
    in its repeated field `field_number` (which `message` must not hold), the bytes protobuf
    would give; protobuf writes fields by number, so the blobs go between the fields below
    `field_number` and those above."""
    fields = message.SerializeToString()
    cut = len(fields)
    wire = Wire(io.BytesIO(fields), "<message>", len(fields))
    for number, _, start, _, _ in wire.fields(len(fields)):
        if number > field_number:
            cut = start
            break
    pieces = [fields[:cut]]
    for array in arrays:
        blob = blobproto_pieces(array)
        pieces.append(length_key(field_number, sum(len(p) for p in blob)))
        pieces += blob
    pieces.append(fields[cut:])
    return pieces, sum(len(p) for p in pieces)

