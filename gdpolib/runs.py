"""Run directories, seeds, the environment record, metrics.json and cached stages.

A run lives in `outputs/<run_name>/`:
    config.yaml        the resolved parameters
    environment.json   package versions, torch/CUDA, device, git commit
    metrics.json       one object each notebook merges its part into (GUIDE.md section 6)
    data/ checkpoints/ figures/ notebooks/ logs/ stages/
A stage is a folder named by a path inside the run (`data`, `checkpoints/sft`, `stages/eval`, ...)
with `stage.json` holding the hash of its key. The same key reuses it; a different key rebuilds it into a temporary folder that replaces
the old one only when the build succeeded, so a failed build leaves nothing partial behind.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import yaml

from gdpolib import console
from gdpolib.checks import check_data, check_groups, check_model
from gdpolib.config import PROJECT_ROOT, RunConfig

log = logging.getLogger("gdpolib")
SUBDIRS = ("data", "checkpoints", "figures", "notebooks", "logs", "stages")
# Parameters that never change what a run folder holds: reopening a run with other values of
# these is fine (its config.yaml is updated).
FREE_PARAMETERS = ("output_root", "run_name", "update_run", "report_to", "push_to_hub", "methods",
                   "ablations")


class RunError(RuntimeError):
    """A run folder that cannot be used: made with other parameters, or not writable."""
TRACKED_PACKAGES = ("torch", "transformers", "trl", "accelerate", "peft", "datasets", "tokenizers",
                    "sentence-transformers", "numpy", "scipy", "pandas", "seaborn", "papermill")


def seed_everything(seed: int) -> None:
    """The one place seeds are set: python, numpy, torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    # Deferred on purpose (here and in environment_record): the pipeline checks run folders
    # before any notebook starts, and must not pay for importing torch to do so.
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


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_record() -> dict[str, Any]:
    """What a reader needs to reproduce a number: versions, device, commit."""
    versions = {}
    for pkg in TRACKED_PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    record: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                              "packages": versions, "git_commit": git_commit(),
                              "cpu_count": os.cpu_count()}
    import torch

    record["torch_cuda"] = torch.version.cuda
    record["cuda_available"] = torch.cuda.is_available()
    record["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return record


def recorded_changes(cfg: RunConfig) -> dict[str, tuple[Any, Any]]:
    """{parameter: (recorded, new)} for the parameters (beyond FREE_PARAMETERS, and present in
    both) in which `cfg` differs from the run folder's config.yaml; {} for a new folder."""
    recorded = cfg.run_dir / "config.yaml"
    if not recorded.exists():
        return {}
    old = yaml.safe_load(recorded.read_text()) or {}
    return {k: (old[k], v) for k, v in cfg.to_dict().items()
            if k in old and k not in FREE_PARAMETERS and old[k] != v}


def check_run_folder(cfg: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Raise RunError when cfg's run folder exists with other parameters and `update_run` is
    off; returns the differences (recorded_changes)."""
    changed = recorded_changes(cfg)
    if changed and not cfg.update_run:
        shown = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in list(changed.items())[:6])
        raise RunError(f"run folder {cfg.run_dir} was made with other parameters ({shown}); use "
                       f"another run_name, or -p update_run true to reuse it with these")
    return changed


def preflight(cfg: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Everything checked before a run folder is touched, beyond the parameters themselves
    (gdpolib.config validates those): the run folder's recorded parameters, the data inputs
    (remote ones downloaded), the model's availability on this machine and the survey's group(s). Returns check_run_folder's changed
    parameters; raises RunError, checks.ModelLoadError or ConfigError."""
    changed = check_run_folder(cfg)
    check_data(cfg)
    check_model(cfg)
    check_groups(cfg)
    return changed


class _LogFormat(logging.Formatter):
    """`HH:MM:SS name: message`; in a pipeline kernel, records logged with extra={"console":
    True} are console lines (gdpolib.console.MARK in front)."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "console", False) and console.piped():
            return console.MARK + record.getMessage()
        return super().format(record)


class _StderrHandler(logging.StreamHandler):
    """Writes to the CURRENT sys.stderr (a kernel replaces it after imports)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(_LogFormat("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):   # logging.StreamHandler sets it; the current sys.stderr wins
        pass


def setup_logging() -> None:
    """gdpolib's log records (INFO and up) go to stderr once, with a time stamp; other
    libraries' records keep their own settings. Idempotent (a notebook may open several runs).
    In a pipeline kernel stderr goes to the run's log file; console records are shown too."""
    logger = logging.getLogger("gdpolib")
    logger.setLevel(logging.INFO)
    logger.propagate = False      # one copy of each line, whatever the root logger does
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    quiet_libraries()


def quiet_libraries() -> None:
    """Bars that say nothing to a user: transformers' "Loading weights" / "Writing model
    shards" (for checkpoints of a few MB) and datasets' map bars. Download bars are kept."""
    # Deferred: a light import path (the pipeline's preflight) must not pay for these.
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hidden = ("Loading weights", "Writing model shards")

    def hook(factory, args, kwargs):
        if kwargs.get("desc") in hidden:
            kwargs = {**kwargs, "disable": True}
        return factory(*args, **kwargs)

    hf_logging.set_tqdm_hook(hook)


def remove_leftovers(root: Path) -> None:
    """Temporary stage folders (`.<stage>.building`, `.<stage>.old`) left by a killed build."""
    for p in [*root.rglob(".*.building"), *root.rglob(".*.old")]:
        if p.is_dir():
            log.info("removing %s (left by a killed build)", p)
            shutil.rmtree(p, ignore_errors=True)


def deep_merge(base: dict, part: Mapping) -> dict:
    """Merge `part` into `base` recursively (dicts merge, everything else replaces)."""
    for key, value in part.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclasses.dataclass
class Run:
    """One run directory and the config that made it."""

    cfg: RunConfig
    root: Path

    @classmethod
    def open(cls, cfg: RunConfig) -> "Run":
        """Create (or reopen) the run directory, record config and environment, set seeds.

        A folder whose config.yaml was made with other parameters (beyond FREE_PARAMETERS) is
        never silently rewritten: RunError names the differences, unless `update_run` asks to
        reuse it with the new ones (then its metrics.json is cleared: the notebooks refill it,
        reusing every stage whose inputs are unchanged). Leftovers of killed builds are removed.
        """
        root = cfg.run_dir
        changed = preflight(cfg)
        try:
            for sub in SUBDIRS:
                (root / sub).mkdir(parents=True, exist_ok=True)
            if changed:
                log.warning("run %s: reused with new parameters (%s); metrics.json cleared",
                            root, ", ".join(changed))
                (root / "metrics.json").unlink(missing_ok=True)
            _write_atomic(root / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        except OSError as err:
            raise RunError(f"cannot write the run folder {root} ({err.strerror}); check "
                           f"output_root {cfg.output_root!r}") from None
        if os.environ.get("RANK", "0") == "0":     # under accelerate, one process cleans
            remove_leftovers(root)
        _write_atomic(root / "environment.json", json.dumps(environment_record(), indent=2))
        seed_everything(cfg.seed)
        setup_logging()
        log.info("run directory %s", root)
        return cls(cfg=cfg, root=root)

    def path(self, *parts: str) -> Path:
        """A path inside the run directory (parent folders created)."""
        p = self.root.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    # ---- metrics.json ----
    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.json"

    def metrics(self) -> dict:
        return json.loads(self.metrics_file.read_text()) if self.metrics_file.exists() else {}

    def merge_metrics(self, part: Mapping) -> dict:
        """Deep-merge `part` into metrics.json and return the whole object."""
        merged = deep_merge(self.metrics(), part)
        _write_atomic(self.metrics_file, json.dumps(merged, indent=2, sort_keys=True))
        return merged

    # ---- cached stages ----
    def stage_dir(self, name: str) -> Path:
        """A stage's folder: `name` is a path inside the run, e.g. "data" or "checkpoints/sft"."""
        return self.root / name

    def stage_hash(self, name: str) -> str:
        """The key hash of a finished stage (for downstream keys)."""
        info = self.stage_dir(name) / "stage.json"
        if not info.exists():
            raise FileNotFoundError(f"stage {name!r} of run {self.root} has not been built yet")
        return json.loads(info.read_text())["hash"]

    def stage_done(self, name: str, key: Mapping) -> bool:
        info = self.stage_dir(name) / "stage.json"
        return info.exists() and json.loads(info.read_text())["hash"] == stable_hash(key)

    def stage(self, name: str, key: Mapping, build: Callable[[Path], None],
              started: float | None = None) -> Path:
        """Reuse the folder `<run>/<name>/` when its key is unchanged, otherwise build it atomically.

        `build(tmp_dir)` writes the stage's files into `tmp_dir`; on success the folder replaces
        the old stage. `key` must hold everything the stage depends on (parameters and upstream
        stage hashes), so that a changed input rebuilds it. `started`: time.time() when the
        stage's work began, if before `build` (a training stage only moves its result in here);
        the seconds recorded in stage.json and shown on the console count from it.
        """
        final = self.stage_dir(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        digest = stable_hash(key)
        if self.stage_done(name, key):
            log.info("stage %s: reused (%s)", name, digest)
            return final
        tmp = final.with_name(f".{final.name}.building")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log.info("stage %s: building (%s)", name, digest)
        start = time.time() if started is None else started
        try:
            build(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        seconds = round(time.time() - start, 2)
        (tmp / "stage.json").write_text(json.dumps(
            {"name": name, "hash": digest, "key": key, "seconds": seconds,
             "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2, default=str))
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        log.info("stage %s: built in %.1f s", name, seconds, extra={"console": True})
        return final
