"""Trusting the files of a run folder: what a stage wrote is recorded (size and sha256 of every
file) and checked before the stage is reused or published, so that a cut, changed or missing file
is named instead of being read; records (JSON, JSON lines, YAML) are read with a one-line error
naming the file.

Checking costs one sha256 pass over the stage's files (about 0.8 s for a 538 MB checkpoint on 2
loaded cores); a process checks each file once and afterwards trusts it while its inode, size,
mtime and ctime stay those it hashed (`_TRUSTED`: a rename keeps them, any write changes them),
so a stage that several steps of one notebook reuse, or that it has just built, is hashed once
per process.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

from gdpolib.paramspec import load_yaml, yaml_problem

STAGE_RECORD = "stage.json"     # the stage's own record, which holds the manifest
# (device, inode, size, mtime_ns, ctime_ns) of the files this process hashed -> their sha256
_TRUSTED: dict[tuple[int, ...], str] = {}


class RecordError(ValueError):
    """A record file that cannot be read (cut short, not JSON/YAML); names the file."""


def _stat_key(path: Path) -> tuple[int, ...]:
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def sha256(path: Path) -> str:
    """The file's sha256 (hex), remembered for this process while the file is unchanged."""
    key = _stat_key(path)
    if key not in _TRUSTED:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _TRUSTED[key] = h.hexdigest()
    return _TRUSTED[key]


def manifest(folder: Path) -> dict[str, list]:
    """{relative path: [size, sha256]} of every file under `folder` but its STAGE_RECORD."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != STAGE_RECORD)
    return {p.relative_to(folder).as_posix(): [p.stat().st_size, sha256(p)] for p in files}


def damage(folder: Path, recorded: dict[str, list]) -> str | None:
    """The first file of `recorded` (a manifest) that is missing or differs in `folder`, said in
    words; None when every recorded file is as written. Files added since are not looked at
    (libraries may add caches beside a dataset)."""
    for rel, (size, digest) in recorded.items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        now = path.stat().st_size
        if now != size:
            return f"{rel} has {now:,} bytes, {size:,} when written (cut short or replaced)"
        if sha256(path) != digest:
            return f"{rel} differs from what was written (same size, other sha256)"
    return None


def stage_problem(folder: Path) -> str | None:
    """Why the stage in `folder` cannot be trusted (its record unreadable or without file
    hashes, or a file not as written, named by its path), or None."""
    info = folder / STAGE_RECORD
    try:
        record = read_json(info)
    except RecordError as err:
        return str(err)
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        return f"{info} lists no file hashes (built by an older gdpolib)"
    problem = damage(folder, record["files"])
    return f"{folder / problem}" if problem else None


# ----------------------------------------------------------------------------- records
def read_json(path: str | Path) -> Any:
    """A JSON record; RecordError naming the file and the place when it cannot be parsed."""
    path = Path(path)
    try:
        return json.loads(_text(path))
    except json.JSONDecodeError as err:
        raise RecordError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: "
                          f"{err.msg}; cut short?)") from None


def read_jsonl(path: str | Path) -> list[Any]:
    """A JSON-lines record (one JSON value per non-blank line); RecordError naming the line."""
    path = Path(path)
    out = []
    for n, line in enumerate(_text(path).splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise RecordError(f"{path} line {n} is not valid JSON ({err.msg}; cut short?)") \
                    from None
    return out


def read_yaml(path: str | Path) -> Any:
    """A YAML record, parsed safely (gdpolib.paramspec.load_yaml); RecordError naming the file."""
    path = Path(path)
    try:
        return load_yaml(_text(path))
    except yaml.YAMLError as err:
        raise RecordError(f"{path} is not valid YAML ({yaml_problem(err)}; cut short?)") from None


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RecordError(f"{path} is not UTF-8 text (byte {err.start}); damaged?") from None
    except OSError as err:
        raise RecordError(f"{path} cannot be read ({err.strerror})") from None


def write_atomic(path: Path, text: str) -> None:
    """Write `path` so that a reader (or a kill) never sees half of it."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
