"""The folders a command writes (run folders, sweep folders): an existing folder is used only
when it is one of ours, and while a command writes one it holds the folder's OS file lock, so that
a second command on the same folder fails at once, naming the first (pid, start, command).

The lock (`<folder>/.gdpo.lock`, flock through the `filelock` package) is held until the process
exits or `release` is called; the OS drops it when the process dies, even by kill -9, so a
killed run never blocks the next one. A process that already holds a folder's lock takes it again
for free (several runs of one notebook); a process whose parent holds it for it (the pipeline's
notebook kernels) is told so by the environment variable HELD_ENV. The lock file holds the
holder's record (JSON), which a refused command quotes.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from gdpolib.scrub import scrub_text

LOCK = ".gdpo.lock"
HELD_ENV = "GDPO_HELD_LOCKS"        # lock files a parent process holds for this one (os.pathsep)
_HELD: dict[str, FileLock] = {}     # lock file -> the lock this process holds


class FolderError(RuntimeError):
    """A folder a command must not write: not one of ours, or in use by another command."""


def foreign_problem(folder: Path, marker: str, what: str) -> str | None:
    """Why `folder` is not ours to write (it exists and is not empty, and holds neither `marker`,
    the record a `what` folder always has, nor our lock file), or None."""
    if not folder.exists():
        return None
    if not folder.is_dir():
        return f"{folder} is a file, not a {what} folder"
    entries = sorted(folder.iterdir())
    if not entries or (folder / marker).exists() or (folder / LOCK).exists():
        return None
    names = [p.name + ("/" if p.is_dir() else "") for p in entries]
    return (f"{folder} exists and is not a {what} folder (no {marker}; it holds "
            f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}): choose another name "
            f"or parent folder; nothing was written")


def _lock_path(folder: Path) -> Path:
    return Path(os.path.abspath(folder)) / LOCK


def _held(path: Path) -> bool:
    inherited = os.environ.get(HELD_ENV, "").split(os.pathsep)
    return str(path) in _HELD or str(path) in inherited


def holder(folder: Path) -> dict:
    """The record of the folder's last lock holder ({} when there is none or it is unreadable)."""
    try:
        record = json.loads((folder / LOCK).read_text(encoding="utf-8") or "{}")
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def _busy(folder: Path, what: str) -> FolderError:
    record = {}
    for _ in range(10):             # the holder writes its record just after it took the lock
        if (record := holder(folder)):
            break
        time.sleep(0.05)
    pid = record.get("pid", "?")
    command = str(record.get("command", "?"))
    if record.get("kernel"):
        command = "a Jupyter kernel, writing the run now"
    return FolderError(f"{what} folder {folder} is in use by pid {pid} on "
                       f"{record.get('host', '?')} since {record.get('started', '?')} "
                       f"({command}); wait for it to finish or stop it, then run again")


def busy_problem(folder: Path, what: str) -> str | None:
    """Why `folder` cannot be taken now (another process holds its lock), or None; writes
    nothing (a folder without a lock file is free)."""
    path = _lock_path(folder)
    if not path.is_file() or _held(path):
        return None
    probe = FileLock(str(path), blocking=False, thread_local=False)
    try:
        probe.acquire()
    except Timeout:
        return str(_busy(folder, what))
    probe.release()
    return None


def _record_holder(fd: int) -> None:
    """Write this process's record into the lock file (called by filelock once it is locked)."""
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": _command(),
              "kernel": "ipykernel" in sys.modules}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)


def _command() -> str:
    """This process's command line, short: `python -m gdpolib.train ...` for our entry points."""
    first = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    head = (f"python -m gdpolib.{first.stem}" if first.parent.name == "gdpolib" and
            first.suffix == ".py" else first.name)
    return scrub_text(" ".join([head, *sys.argv[1:]]))[:300]


def hold(folder: Path, what: str) -> None:
    """Create `folder` if needed and take its lock for the life of this process (or until
    `release`); FolderError naming the holder when another process has it."""
    path = _lock_path(folder)
    if _held(path):
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), blocking=False, thread_local=False, on_acquired=_record_holder)
    try:
        lock.acquire()
    except Timeout:
        raise _busy(folder, what) from None
    _HELD[str(path)] = lock


@contextlib.contextmanager
def holding(folder: Path, what: str) -> Iterator[None]:
    """`hold` for the length of a `with` block (left held if this process held it before)."""
    before = _held(_lock_path(folder))
    hold(folder, what)
    try:
        yield
    finally:
        if not before:
            release(folder)


def release(folder: Path) -> None:
    """Let go of the folder's lock, if this process holds it."""
    lock = _HELD.pop(str(_lock_path(folder)), None)
    if lock is not None:
        lock.release(force=True)


def lend_to_children(folder: Path) -> None:
    """Tell the processes this one starts from now on (the pipeline's kernels) that it holds
    the folder's lock for them (HELD_ENV)."""
    path = str(_lock_path(folder))
    held = [p for p in os.environ.get(HELD_ENV, "").split(os.pathsep) if p]
    os.environ[HELD_ENV] = os.pathsep.join(dict.fromkeys([*held, path]))
