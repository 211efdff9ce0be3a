"""LMDB databases of Datum records, as Caffe's db_lmdb reads and writes them (a directory with
data.mdb and lock.mdb, records in key order).

LMDB keeps no checksums, and liblmdb answers some damaged pages by aborting the process
(SIGABRT): no exception, no message, a training run gone. So the first time a process opens a
database, a child process walks every record (`lmdb_scan`); damage it meets becomes a DataError
naming the database and the last good record, before any work starts. Reads in this process
still turn liblmdb's errors into DataErrors naming the database and the record.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import lmdb

from ..errors import DataError, OutputError
from .atomic import atomic_path, check_name_lengths, check_output, remove_stale_temps
from .lmdb_scan import scan_once

# Address space reserved for a database (not disk): LMDB grows the file as needed.
MAP_SIZE = 1 << 40


# py-lmdb allows one Environment per database per process, so readers of the same source
# (a train net and a test net on one database) share it: path -> [environment, users].
_OPEN: dict[str, list] = {}


def open_lmdb(path, where: str = "") -> lmdb.Environment:
    """Open a database read-only, memory-mapped, without the lock file (many readers).
    Pair every call with close_lmdb(env)."""
    path = Path(path)
    prefix = f"{where}: " if where else ""
    try:
        exists = path.exists()
    except OSError as e:  # a name longer than NAME_MAX, a loop of links
        raise DataError(f"{prefix}LMDB source '{path}': {e.strerror or e}") from None
    if not exists:
        raise DataError(f"{prefix}LMDB source '{path}' does not exist")
    key = str(path.resolve())
    if key in _OPEN:
        _OPEN[key][1] += 1
        return _OPEN[key][0]
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False,
                        subdir=path.is_dir(), max_readers=126)
    except lmdb.Error as e:
        raise DataError(f"{prefix}'{path}' is not an LMDB database ({e})") from None
    try:
        scan_once(path, f"{prefix}LMDB '{path}'")
    except DataError:
        env.close()
        raise
    _OPEN[key] = [env, 1]
    return env


def close_lmdb(env: lmdb.Environment) -> None:
    for key, entry in list(_OPEN.items()):
        if entry[0] is env:
            entry[1] -= 1
            if entry[1] == 0:
                del _OPEN[key]
                env.close()
            return


def record_count(env: lmdb.Environment) -> int:
    return env.stat()["entries"]


class LmdbCursor:
    """Reads records in key order forever, wrapping at the end; `position` counts records read
    since the start of the database (so seek(k) lands on record k mod count)."""

    def __init__(self, env: lmdb.Environment, where: str) -> None:
        self.env, self.where = env, where
        self.count = record_count(env)
        if self.count == 0:
            raise DataError(f"{where}: the database is empty")
        self.txn = env.begin(buffers=False)
        self.cursor = self.txn.cursor()
        self.last_key = b""
        self._move(self.cursor.first)
        self.position = 0

    def _move(self, step):
        return _guarded(step, self.where, self.last_key)

    def seek(self, position: int) -> None:
        self._move(self.cursor.first)
        for _ in range(position % self.count):
            self._move(self.cursor.next)
        self.position = position

    def next(self) -> tuple[bytes, bytes]:
        key, value = self._move(self.cursor.item)
        if not key:
            raise DataError(f"{self.where}: damaged or truncated: no record after "
                            f"{_record_name(self.last_key)}")
        self.last_key = key
        if not self._move(self.cursor.next):
            self._move(self.cursor.first)
        self.position += 1
        return key, value

    def close(self) -> None:
        self.cursor.close()
        self.txn.abort()


def _guarded(step, where: str, last_key: bytes):
    """Call a cursor's step; liblmdb's errors become a DataError naming where it stopped."""
    try:
        return step()
    except lmdb.Error as e:
        raise DataError(f"{where}: damaged after {_record_name(last_key)} ({e})") from None


def _record_name(key: bytes) -> str:
    return f"record {key.decode(errors='replace')}" if key else "the start"


def is_lmdb_folder(path) -> bool:
    """A folder holding an LMDB and nothing else (what Caffe's tools and protonet write)."""
    path = Path(path)
    try:
        names = {p.name for p in path.iterdir()}
    except OSError:
        return False
    return "data.mdb" in names and names <= {"data.mdb", "lock.mdb"}


def check_lmdb_output(path, overwrite: bool = False, what: str = "output database") -> Path:
    """Before a conversion: `path` must be new, or an LMDB the user asked to replace. Any other
    folder or file there is the user's and is never replaced. Stale temporary folders of an
    earlier killed conversion are removed."""
    path = Path(path)
    check_name_lengths(path, what)
    remove_stale_temps(path.parent, path.name)
    if path.is_dir():
        if not is_lmdb_folder(path):
            raise OutputError(f"{what} {path} is a folder that is not an LMDB; protonet writes "
                              "a new database there only if nothing is at that path")
        if not overwrite:
            raise OutputError(f"{what} {path} already exists; give --overwrite to replace it")
        return path
    if path.exists():
        raise OutputError(f"{what} {path} is a file; an LMDB is a folder, choose a new path")
    return check_output(path, what)


def write_lmdb(path, records: Iterable[tuple[bytes, bytes]], batch: int = 1000,
               overwrite: bool = False) -> int:
    """Write (key, value) records into a new database at `path`, atomically: they go to a
    temporary directory renamed to `path` only when all are written. Returns the count.
    An existing LMDB at `path` is replaced only with `overwrite`; anything else there is an
    OutputError (see check_lmdb_output)."""
    check_lmdb_output(path, overwrite)
    n = 0
    with atomic_path(path, replace_dir=lambda p: overwrite and is_lmdb_folder(p)) as tmp:
        env = lmdb.open(str(tmp), map_size=MAP_SIZE, subdir=True, lock=True)
        try:
            txn = env.begin(write=True)
            for key, value in records:
                txn.put(key, value)
                n += 1
                if n % batch == 0:
                    txn.commit()
                    txn = env.begin(write=True)
            txn.commit()
            env.sync(True)
        finally:
            env.close()
    return n


def iter_records(path, where: str = "") -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) in key order; damage is a DataError naming the database and the
    last good record."""
    env = open_lmdb(path, where)
    label = f"{where}: LMDB '{path}'" if where else f"LMDB '{path}'"
    try:
        with env.begin() as txn:
            cursor, key = txn.cursor(), b""
            more = _guarded(cursor.first, label, key)
            while more:
                key, value = _guarded(cursor.item, label, key)
                yield key, value
                more = _guarded(cursor.next, label, key)
    finally:
        close_lmdb(env)
