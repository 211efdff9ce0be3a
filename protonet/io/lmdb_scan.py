"""A one-time integrity scan of an LMDB in a child process.

liblmdb aborts the whole process (SIGABRT, from its internal assertions) on some damaged pages,
so walking a database of unknown health in the training process risks losing the run without a
word. The child walks every record's page (keys in order; values are not copied) and reports
each key as it goes; if it dies or liblmdb reports an error, the parent raises a DataError
naming the database and the last good record. A process scans each database (path, size and
modification time) once.

PROTONET_LMDB_SCAN=0 skips the scan (trusted databases too large to walk at each start).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ..errors import DataError

# The child imports only lmdb, so it starts in a fraction of a second.
_CHILD = r"""
import os, sys, lmdb
path = sys.argv[1]
env = lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=os.path.isdir(path))
expected = env.stat()["entries"]
seen = 0
out = []
try:
    with env.begin(buffers=True) as txn:
        for key, value in txn.cursor():
            if not key:
                raise lmdb.CorruptedError("a record without a key")
            seen += 1
            out.append(bytes(key).hex())
            if len(out) == 64:
                os.write(1, ("\n".join(out) + "\n").encode())
                out = []
            len(value)
except lmdb.Error as e:
    os.write(1, ("\n".join(out) + "\n" if out else "").encode())
    os.write(2, f"{type(e).__name__}: {e}".encode())
    sys.exit(3)
os.write(1, ("\n".join(out) + "\n" if out else "").encode())
if seen != expected:
    os.write(2, f"the header counts {expected} records, {seen} were found".encode())
    sys.exit(3)
"""

_SCANNED: set[tuple] = set()


def _identity(path: Path) -> tuple:
    data = path / "data.mdb" if path.is_dir() else path
    st = data.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def scan_once(path, where: str) -> None:
    """Walk the database at `path` in a child process unless this process already did;
    raise DataError (`where`: how to name the database) if it is damaged."""
    if os.environ.get("PROTONET_LMDB_SCAN", "1") == "0":
        return
    path = Path(path)
    try:
        identity = _identity(path)
    except OSError as e:
        raise DataError(f"{where}: cannot read ({e.strerror or e})") from None
    if identity in _SCANNED:
        return
    result = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True)
    if result.returncode:
        lines = result.stdout.split()
        last = bytes.fromhex(lines[-1].decode()).decode(errors="replace") if lines else ""
        after = f"after record {last} ({len(lines)} records read)" if last else \
            "before its first record"
        if result.returncode < 0:
            try:
                name = signal.Signals(-result.returncode).name
            except ValueError:
                name = f"signal {-result.returncode}"
            reason = f"liblmdb aborted reading it ({name})"
        else:
            reason = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            reason = reason[0][:300]
        raise DataError(f"{where} is damaged {after}: {reason}")
    _SCANNED.add(identity)
