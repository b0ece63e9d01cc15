"""Seeds and content hashes that are the same in every process: `seed_everything` (the one place
seeds are set), `stable_seed` (an item's own seed from its identity), `stable_hash` (a stage key's
hash) and `file_hash` (an input file's content, for stage keys). Light: no gdpolib import, torch
only when seeding, so that the data package can use it without reaching the run machinery."""
from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np


def seed_everything(seed: int) -> None:
    """The one place seeds are set: python, numpy, torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    # Deferred on purpose: the pipeline checks run folders before any notebook starts, and must
    # not pay for importing torch to do so.
    import torch

    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def stable_seed(*parts: object) -> int:
    """A stable 64-bit seed from strings (Python's hash() is salted per process), so that each
    item's random draws depend only on its own identity (seed, qid, style, ...)."""
    blob = json.dumps([str(p) for p in parts]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little")


def stable_hash(obj: Any) -> str:
    """A short content hash of a JSON-able object (dict keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes (first 16 hex digits), for stage keys that depend on inputs."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
