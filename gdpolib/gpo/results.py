"""Self-describing JSON results of the GPO study scripts (scripts/gpo_*.py): the command that
produced them, the commit, the machine, the date and the torch thread count beside the numbers,
so that a page rendered from the file can say what was measured, where and how."""
from __future__ import annotations

import datetime
import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from gdpolib.runs import environment_record


def provenance(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """{command, date (UTC, ISO), torch_threads, environment (runs.environment_record:
    versions, platform, commit, CPU count, CUDA devices)} of this process. Take it when the
    study starts: the commit it ran (the working tree may change while it runs)."""
    argv = list(sys.argv if argv is None else argv)
    script = argv[0] if argv else ""
    if script and os.path.exists(script):
        script = os.path.relpath(script)
    return {"command": shlex.join(["python", script, *argv[1:]]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch_threads": torch.get_num_threads(), "environment": environment_record()}


def _clean(value: Any) -> Any:
    """JSON-safe: NaN -> None, numpy scalars -> Python numbers, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(path: str | Path, study: str, description: str, data: dict[str, Any],
                  record: dict[str, Any]) -> Path:
    """Write {"study", "description", **record (provenance() taken at the start), "finished"
    (UTC), **data} to `path` atomically (a temporary file renamed into place: a killed run
    leaves no partial file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    finished = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    body = {"study": study, "description": description, **record, "finished": finished, **data}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(_clean(body), indent=1) + "\n")
    os.replace(tmp, path)
    return path
