"""Writing outputs safely: check the place before the work, write atomically, clean up after.

- `check_output(path, what)` before any work: the path must be writable (not a folder, not
  under a regular file, not in a read-only place, every name within NAME_MAX, not one of the
  inputs), so a long run never ends in a traceback with its result lost.
- `atomic_write` / `atomic_path`: write beside the target under a temporary name of ours, fsync,
  rename. A crash or kill at any moment leaves either the old file or the complete new one
  under the final name, never a half-written file (snapshots, mean files, converted models).
- A kill -9 can still leave a temporary file; `remove_stale_temps` deletes those whose writer
  is gone (only names of our own pattern, `.NAME.pnPID.XXXXXXXX.tmp`, never the user's files).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..errors import OutputError

# Temporary names: a dot, (the start of) the target's name, our marker with the writer's pid,
# a random part, ".tmp". The pid tells a stale file (its writer is gone) from a live one.
_TEMP_NAME = re.compile(r"^\..*\.pn(\d+)\.[A-Za-z0-9_]{8}\.tmp$")
_NAME_KEPT = 100  # characters of the target's name kept in a temporary name (NAME_MAX)


def _temp_prefix(name: str) -> str:
    return f".{name[:_NAME_KEPT]}.pn{os.getpid()}."


def is_our_temp(name: str) -> bool:
    return _TEMP_NAME.match(name) is not None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(directory, name_prefix: str = "") -> list[Path]:
    """Delete temporary files and folders of ours in `directory` (for targets whose name starts
    with `name_prefix`) whose writing process no longer runs; return what was removed."""
    directory = Path(directory)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or not entry.name.startswith(f".{name_prefix[:_NAME_KEPT]}"):
            continue
        if _pid_alive(int(match.group(1))):
            continue
        path = Path(entry.path)
        _remove(path)
        removed.append(path)
    return removed


def _name_max(directory: Path) -> int:
    with contextlib.suppress(OSError, ValueError):
        return os.pathconf(directory, "PC_NAME_MAX")
    return 255


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_name_lengths(path, what: str = "output") -> None:
    """Every name in `path` within NAME_MAX (checked first: with a longer name even asking
    whether the path exists fails)."""
    path = Path(os.path.abspath(path))
    sizes = [len(os.fsencode(part)) for part in path.parts]
    # No Linux file system allows more than 255 bytes; some allow less.
    limit = 255 if max(sizes) > 255 else _name_max(_nearest_existing(path.parent))
    for part, size in zip(path.parts, sizes):
        if size > limit:
            raise OutputError(f"{what} {path.name[:20]}...: a name of {size} characters long; "
                              f"the file system allows {limit}")


def check_output(path, what: str = "output", inputs=()) -> Path:
    """Fail now, with an OutputError naming `path`, if a file cannot be written there later.

    Missing folders are fine (writers create them) when the nearest existing one is writable;
    that is tested by creating and removing a temporary file of ours there, which is what
    counts (root ignores permission bits; read-only mounts and /proc do not). `inputs`: paths
    the command reads; the output must not be one of them or inside an input LMDB.
    """
    path = Path(path)
    if not str(path):
        raise OutputError(f"{what}: empty path")
    check_name_lengths(path, what)
    for other in inputs:
        other = Path(other)
        with contextlib.suppress(OSError):
            target = path.resolve()
            source = other.resolve()
            inside_database = (source / "data.mdb").is_file() and source in target.parents
            if target == source or inside_database:
                raise OutputError(f"{what} {path} would overwrite {other}, which the command "
                                  "also uses (an input or another output); choose another path")
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file path")
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise OutputError(f"{what} {path}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=_temp_prefix(path.name),
                                     suffix=".tmp")
    except OSError as e:
        raise OutputError(f"{what} {path}: cannot write in {existing} "
                          f"({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)
    return path


def _failed(path: Path, e: OSError) -> OutputError:
    reason = e.strerror or str(e)
    existing = _nearest_existing(path.parent)
    if e.errno == errno.EISDIR:
        reason = "it is a folder"
    elif not existing.is_dir():
        reason = f"{existing} is a file, not a folder"
    return OutputError(f"cannot write {path} ({reason})")


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _failed(path, e) from None


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".tmp", replace_dir=None):
    """Yield a temporary path beside `path` (the caller creates a file or a folder there); on
    success rename it onto `path`, else delete it.

    An existing folder at `path` is replaced only when `replace_dir(path)` says it may be (an
    LMDB the user asked to overwrite); it is moved aside first and removed once the new one is
    in place. `suffix` is kept for callers; the temporary name always ends in .tmp.
    """
    path = Path(path)
    _make_parent(path)
    tmp = path.parent / f"{_temp_prefix(path.name)}{os.urandom(6).hex()[:8]}.tmp"
    try:
        yield tmp
        try:
            if path.is_dir():
                if replace_dir is None or not replace_dir(path):
                    raise OutputError(f"{path} is a folder; it is not replaced")
                old = path.parent / f"{_temp_prefix(path.name)}{os.urandom(6).hex()[:8]}.tmp"
                os.replace(path, old)
                os.replace(tmp, path)
                _remove(old)
            else:
                os.replace(tmp, path)
        except OSError as e:
            raise _failed(path, e) from None
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            _remove(tmp)


def atomic_write(path, data) -> None:
    """Write `data` (bytes, or an iterable of bytes-like pieces written in turn) to `path`
    atomically (temporary file, fsync, rename). An OSError becomes an OutputError naming the
    path.

    The file gets the mode a plain open() would give it, as Caffe's files have: an existing
    file's mode is kept, a new file gets 0666 less the umask (mkstemp alone would leave 0600).
    """
    path = Path(path)
    _make_parent(path)
    try:
        mode = _mode_for(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path.name),
                                   suffix=".tmp")
    except OSError as e:
        raise _failed(path, e) from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            for piece in (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data:
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _failed(path, e) from None
        raise


def _mode_for(path: Path) -> int:
    """The permission bits open(path, "wb") would leave on `path`."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask. Linux shows it in /proc; elsewhere it can only be read by setting
    it, which is briefly visible to other threads."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
