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

import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import DataError

log = logging.getLogger("protonet")

# The child imports only lmdb, so it starts in a fraction of a second. It keeps its progress
# (records read, the last key) in a file the parent shares, so a crash loses none of it.
_CHILD = r"""
import mmap, os, sys, lmdb
path, fd = sys.argv[1], int(sys.argv[2])
progress = mmap.mmap(fd, 4096)
env = lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=os.path.isdir(path))
expected = env.stat()["entries"]
seen = 0
try:
    with env.begin(buffers=True) as txn:
        for key, value in txn.cursor():
            if not len(key):
                raise lmdb.CorruptedError("a record without a key")
            key = bytes(key[:4000])
            progress[8:12] = len(key).to_bytes(4, "little")
            progress[12:12 + len(key)] = key
            seen += 1
            progress[0:8] = seen.to_bytes(8, "little")
            len(value)
except lmdb.Error as e:
    sys.stderr.write(f"{type(e).__name__}: {e}")
    sys.exit(3)
if seen != expected:
    sys.stderr.write(f"the header counts {expected} records, {seen} were found")
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
    with tempfile.TemporaryFile() as progress:
        progress.truncate(4096)
        try:
            result = subprocess.run([sys.executable, "-c", _CHILD, str(path),
                                     str(progress.fileno())], capture_output=True,
                                    pass_fds=(progress.fileno(),))
        except OSError as e:  # no interpreter to start (embedded Python): read unchecked
            log.warning("%s: not scanned for damage (%s)", where, e)
            return
        progress.seek(0)
        state = progress.read(4096)
    if result.returncode:
        seen = int.from_bytes(state[:8], "little")
        last = state[12:12 + int.from_bytes(state[8:12], "little")].decode(errors="replace")
        after = f"after record {last} ({seen} records read)" if seen else \
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
