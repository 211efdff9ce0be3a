"""LMDB databases of Datum records, as Caffe's db_lmdb reads and writes them (a directory with
data.mdb and lock.mdb, records in key order)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import lmdb

from ..errors import DataError
from .atomic import atomic_path

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
    if not path.exists():
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
        self.cursor.first()
        self.position = 0

    def seek(self, position: int) -> None:
        self.cursor.first()
        for _ in range(position % self.count):
            self.cursor.next()
        self.position = position

    def next(self) -> tuple[bytes, bytes]:
        key, value = self.cursor.item()
        if not self.cursor.next():
            self.cursor.first()
        self.position += 1
        return key, value

    def close(self) -> None:
        self.cursor.close()
        self.txn.abort()


def write_lmdb(path, records: Iterable[tuple[bytes, bytes]], batch: int = 1000) -> int:
    """Write (key, value) records into a new database at `path`, atomically: they go to a
    temporary directory renamed to `path` only when all are written. Returns the count."""
    n = 0
    with atomic_path(path) as tmp:
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


def iter_records(path) -> Iterator[tuple[bytes, bytes]]:
    env = open_lmdb(path)
    try:
        with env.begin() as txn:
            yield from txn.cursor()
    finally:
        close_lmdb(env)
