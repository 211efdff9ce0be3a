"""The bad-input table's runner: one case is a damaged input, the call that reads it, and the
one clear error a user must get.

A case writes its files into a fresh folder, runs either a `protonet` command line (in process,
through `protonet.cli.main`) or a Python call, and checks:
- the error is the expected ProtonetError subclass (a command exits 1 with one line on stderr,
  no traceback) and its message holds every expected word;
- the call ended within the time bound (a hang is a failure, not a stuck suite);
- every input file is byte-identical afterwards and no file appeared but those the case allows.

Tables live in `test_*.py` beside this file, each a list of `Case` run by `check_case`.
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from protonet.errors import ProtonetError

TIME_BOUND_S = 60


@dataclass(frozen=True)
class Case:
    """One bad input.

    files: relative path -> text or bytes, written into the case's folder.
    call: a command line (`["train", "--solver", "{tmp}/s.prototxt"]`, `{tmp}` is the folder)
          or a function of the folder that should raise.
    error: the ProtonetError subclass the call must raise (for a command: ProtonetError, since
           the command line turns it into one line on stderr and exit status 1).
    words: each must appear in the message (case-insensitive).
    setup: optional function of the folder run after the files are written (make an LMDB,
           chmod a folder); what it creates counts as input and must survive unchanged.
    may_create: glob patterns (relative to the folder) of files the call may leave behind.
    """
    name: str
    call: Sequence[str] | Callable[[Path], object]
    error: type[ProtonetError]
    words: tuple[str, ...] = ()
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None
    may_create: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink() or not p.is_file():
                seen[rel] = (0, "dir" if p.is_dir() else "other")
                continue
            try:
                seen[rel] = (p.stat().st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
            except PermissionError:
                seen[rel] = (p.stat().st_mode, "unreadable")
    return seen


@contextlib.contextmanager
def _time_bound(seconds: int, name: str):
    def _hang(signum, frame):
        raise TimeoutError(f"case {name!r} did not finish within {seconds} s (a hang)")
    old = signal.signal(signal.SIGALRM, _hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_case(case: Case, tmp: Path) -> str:
    """Run `case` in folder `tmp`; return the error message the user saw."""
    for rel, content in case.files.items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    if case.setup is not None:
        case.setup(tmp)
    before = _snapshot(tmp)
    with _time_bound(TIME_BOUND_S, case.name):
        if callable(case.call):
            try:
                case.call(tmp)
            except case.error as e:
                message = str(e)
            else:
                raise AssertionError(f"{case.name}: no {case.error.__name__} was raised")
        else:
            from protonet.cli import main
            argv = [a.replace("{tmp}", str(tmp)) for a in case.call]
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    rc = main(argv)
                except SystemExit as e:  # argparse's own usage errors
                    rc = e.code
            message = err.getvalue()
            assert rc not in (0, None), f"{case.name}: `protonet {' '.join(argv)}` exited 0"
            assert "Traceback" not in message, f"{case.name}: traceback:\n{message}"
            lines = [ln for ln in message.splitlines() if "error" in ln.lower()]
            assert len(lines) == 1, f"{case.name}: expected one error line, got:\n{message}"
    after = _snapshot(tmp)
    for rel, state in before.items():
        assert after.get(rel) == state, f"{case.name}: input {rel} was changed or removed"
    new = [rel for rel in after if rel not in before
           and not any(fnmatch.fnmatch(rel, pat) for pat in case.may_create)]
    assert not new, f"{case.name}: left files behind: {new}"
    low = message.lower()
    missing = [w for w in case.words if w.lower() not in low]
    assert not missing, f"{case.name}: message lacks {missing}: {message}"
    assert len(message) < 2000, f"{case.name}: message of {len(message)} characters"
    return message


def check_case(case: Case, tmp: Path) -> None:
    run_case(case, tmp)


def ids(cases: Sequence[Case]) -> list[str]:
    return [c.name for c in cases]
