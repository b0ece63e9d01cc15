"""Run directories, seeds, the environment record, metrics.json and cached stages.

A run lives in `outputs/<run_name>/`:
    config.yaml        the resolved parameters
    environment.json   package versions, torch/CUDA, device, git commit
    metrics.json       one object each notebook merges its part into (docs/metrics.md)
    data/ checkpoints/ figures/ notebooks/ logs/ stages/
A stage is a folder named by a path inside the run (`data`, `checkpoints/sft`, `stages/eval`, ...)
with `stage.json` holding the hash of its key and the size and sha256 of every file it wrote
(gdpolib.integrity). The same key reuses it once its files are checked (a cut or changed file is
named and the stage rebuilt); a different key rebuilds it into a temporary folder that replaces
the old one only when the build succeeded, so a failed build leaves nothing partial behind.

A run writes only inside its folder: the run name is one folder name, an existing folder is
reused only when it is a run folder, everything is checked before the first write (`preflight`),
and the run holds the folder's lock while it runs (gdpolib.folders), so that two runs never
write one folder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import yaml

from gdpolib import console, folders, integrity
from gdpolib.checks import check_data, check_device, check_model
from gdpolib.config import PROJECT_ROOT, RunConfig
from gdpolib.data.preflight import check_groups
from gdpolib.paramspec import name_problem
from gdpolib.scrub import scrub
from gdpolib.seeds import seed_everything, stable_hash

log = logging.getLogger("gdpolib")
SUBDIRS = ("data", "checkpoints", "figures", "notebooks", "logs", "stages")
# Parameters that never change what a run folder holds: reopening a run with other values of
# these is fine (its config.yaml is updated).
FREE_PARAMETERS = ("output_root", "run_name", "update_run", "report_to", "push_to_hub", "methods",
                   "ablations")
# Keys every run's config.yaml holds: a config.yaml without them is not a run's record.
RECORD_KEYS = ("run_name", "output_root", "seed", "model")
_SAID: set[tuple[str, str]] = set()     # (stage, damage) already said on the console


class RunError(RuntimeError):
    """A run folder that cannot be used: not a run folder, in use by another run, made with
    other parameters, damaged, or not writable."""


TRACKED_PACKAGES = ("torch", "transformers", "trl", "accelerate", "peft", "datasets", "tokenizers",
                    "sentence-transformers", "numpy", "scipy", "pandas", "seaborn", "papermill")


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


def _lead() -> bool:
    """Whether this process leads its run: the only one, or rank 0 of an accelerate launch (the
    other ranks work under its lock)."""
    return os.environ.get("RANK", "0") == "0"


def recorded_config(cfg: RunConfig) -> dict[str, Any]:
    """What config.yaml records of `cfg`: every parameter, credentials masked (gdpolib.scrub)."""
    return scrub(cfg.to_dict())


def recorded_changes(cfg: RunConfig) -> dict[str, tuple[Any, Any]]:
    """{parameter: (recorded, new)} for the parameters (beyond FREE_PARAMETERS, and present in
    both) in which `cfg` differs from the run folder's config.yaml; {} for a new folder.
    RunError when the folder's config.yaml is damaged or not a run's record."""
    recorded = cfg.run_dir / "config.yaml"
    if not recorded.exists():
        return {}
    try:
        old = integrity.read_yaml(recorded)
    except integrity.RecordError as err:
        raise RunError(f"{err}: restore it, or remove the run folder to start again "
                       f"(rm -r {cfg.run_dir})") from None
    if not isinstance(old, dict) or not set(RECORD_KEYS) <= set(old):
        raise RunError(f"{cfg.run_dir} exists and is not a run folder (its config.yaml is not a "
                       f"run's record): choose another run_name or output_root; nothing was written")
    return {k: (old[k], v) for k, v in recorded_config(cfg).items()
            if k in old and k not in FREE_PARAMETERS and old[k] != v}


def check_run_folder(cfg: RunConfig) -> dict[str, tuple[Any, Any]]:
    """RunError when cfg's run folder cannot be used (its name is not one folder name; it exists
    and is not a run folder; another process runs in it; its config.yaml is damaged; it was made
    with other parameters and `update_run` is off); returns the differences (recorded_changes)."""
    root = cfg.run_dir
    if (problem := name_problem(cfg.run_dir_name)):
        raise RunError(f"run name: {problem}; allowed: one folder name under output_root")
    if (problem := folders.foreign_problem(root, "config.yaml", "run")
            or (_lead() and folders.busy_problem(root, "run"))):
        raise RunError(problem)
    changed = recorded_changes(cfg)
    if changed and not cfg.update_run:
        shown = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in list(changed.items())[:6])
        raise RunError(f"run folder {cfg.run_dir} was made with other parameters ({shown}); use "
                       f"another run_name, or -p update_run true to reuse it with these")
    return changed


def preflight(cfg: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Everything checked before a run folder is touched, beyond the parameters themselves
    (gdpolib.config validates those): the run folder (check_run_folder), the device, the data
    inputs (remote ones downloaded into the cache, never into the run folder), the model on this
    machine, and the survey's group(s), size and text lengths. Returns check_run_folder's
    changed parameters; raises RunError, checks.ModelLoadError or ConfigError. Writes nothing
    into the run folder."""
    changed = check_run_folder(cfg)
    check_device(cfg)
    check_data(cfg)
    check_model(cfg)
    check_groups(cfg)
    return changed


@contextlib.contextmanager
def writing(root: Path) -> Iterator[None]:
    """Hold the run folder's lock while writing it (gdpolib.folders; under accelerate, rank 0
    holds it for every rank). A command (the pipeline, a CLI) keeps it for its life; a Jupyter
    kernel of its own (JupyterLab, papermill alone) only for the write, so that notebook 02 can
    open the run while notebook 01's kernel is still alive, and a command running in the folder
    still refuses it. FolderError names the holder."""
    if not _lead():
        yield
    elif "ipykernel" in sys.modules:
        with folders.holding(root, "run"):
            yield
    else:
        folders.hold(root, "run")
        yield


def claim(cfg: RunConfig) -> dict[str, tuple[Any, Any]]:
    """The first write of a run, after every check (preflight): create the run folder, take its
    lock (`writing`) and record config.yaml. Reused with new parameters (`update_run`), its
    metrics.json is cleared: the notebooks refill it, reusing every stage whose inputs are
    unchanged. Returns the changed parameters."""
    changed = preflight(cfg)
    root = cfg.run_dir
    try:
        with writing(root):
            _record(cfg, root, changed)
    except folders.FolderError as err:
        raise RunError(str(err)) from None
    except OSError as err:
        raise RunError(f"cannot write the run folder {root} ({err.strerror}); check "
                       f"output_root {cfg.output_root!r}") from None
    return changed


def _record(cfg: RunConfig, root: Path, changed: Mapping) -> None:
    """The run folder, its sub-folders, config.yaml and environment.json (leftovers of killed
    builds removed)."""
    root.mkdir(parents=True, exist_ok=True)
    if changed:
        log.warning("run %s: reused with new parameters (%s); metrics.json cleared",
                    root, ", ".join(changed))
        (root / "metrics.json").unlink(missing_ok=True)
    integrity.write_atomic(root / "config.yaml",
                           yaml.safe_dump(recorded_config(cfg), sort_keys=False))
    for sub in SUBDIRS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    if _lead():                 # under accelerate, one process cleans
        remove_leftovers(root)
    integrity.write_atomic(root / "environment.json", json.dumps(environment_record(), indent=2))


def remove_leftovers(root: Path) -> None:
    """Temporary stage folders (`.<stage>.building`, `.<stage>.old`) left by a killed build: only
    where stages live (the run folder, its sub-folders and theirs: a stage is at most three
    names deep), never through a link, never outside the run folder."""
    children = _subfolders(root)
    places = [root, *children, *(d for p in children for d in _subfolders(p))]
    for place in places:
        for p in sorted([*place.glob(".*.building"), *place.glob(".*.old")]):
            if p.is_dir() and not p.is_symlink():
                log.info("removing %s (left by a killed build)", p)
                shutil.rmtree(p, ignore_errors=True)


def _subfolders(folder: Path) -> list[Path]:
    """The folder's own sub-folders (no links, no hidden ones)."""
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


def deep_merge(base: dict, part: Mapping) -> dict:
    """Merge `part` into `base` recursively (dicts merge, everything else replaces)."""
    for key, value in part.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


@dataclasses.dataclass
class Run:
    """One run directory and the config that made it."""

    cfg: RunConfig
    root: Path

    @classmethod
    def open(cls, cfg: RunConfig) -> "Run":
        """Create (or reopen) the run directory, record config and environment, set seeds.

        Everything is checked first and the folder is taken (claim): a folder that is not a run
        folder, or that another process runs in, is refused; one whose config.yaml was made with
        other parameters (beyond FREE_PARAMETERS) is never silently rewritten: RunError names
        the differences, unless `update_run` asks to reuse it with the new ones. Leftovers of
        killed builds are removed. The run's lock: see `writing`.
        """
        root = cfg.run_dir
        claim(cfg)
        seed_everything(cfg.seed)
        console.setup_logging()
        log.info("run directory %s", root)
        return cls(cfg=cfg, root=root)

    def close(self) -> None:
        """Let another process run in this folder (release its lock) before this one ends."""
        folders.release(self.root)

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
        if not self.metrics_file.exists():
            return {}
        try:
            return integrity.read_json(self.metrics_file)
        except integrity.RecordError as err:
            raise RunError(f"{err}: delete it and run the notebooks again (their stages are "
                           f"reused, so it is refilled quickly)") from None

    def merge_metrics(self, part: Mapping) -> dict:
        """Deep-merge `part` into metrics.json and return the whole object."""
        with writing(self.root):
            merged = deep_merge(self.metrics(), part)
            integrity.write_atomic(self.metrics_file, json.dumps(merged, indent=2, sort_keys=True))
        return merged

    # ---- cached stages ----
    def stage_dir(self, name: str) -> Path:
        """A stage's folder: `name` is a path inside the run, e.g. "data" or "checkpoints/sft"."""
        return self.root / name

    def stage_hash(self, name: str) -> str:
        """The key hash of a finished stage (for downstream keys)."""
        info = self.stage_dir(name) / integrity.STAGE_RECORD
        if not info.exists():
            raise FileNotFoundError(f"stage {name!r} of run {self.root} has not been built yet")
        return integrity.read_json(info)["hash"]

    def stage_done(self, name: str, key: Mapping) -> bool:
        """Whether stage `name` holds a build for `key` whose files are all as written; a
        damaged one is said on the console (once per process) and counts as not done."""
        folder = self.stage_dir(name)
        info = folder / integrity.STAGE_RECORD
        if not info.exists():
            return False
        try:
            if integrity.read_json(info).get("hash") != stable_hash(key):
                return False
        except (integrity.RecordError, AttributeError):
            pass                    # unreadable: stage_problem names it
        problem = integrity.stage_problem(folder)
        return self._damaged(name, problem) if problem else True

    def _damaged(self, name: str, why: str) -> bool:
        if (name, why) not in _SAID:
            _SAID.add((name, why))
            log.warning("stage %s: %s; rebuilding it", name, why, extra={"console": True})
        return False

    def stage(self, name: str, key: Mapping, build: Callable[[Path], None],
              started: float | None = None) -> Path:
        """Reuse the folder `<run>/<name>/` when its key is unchanged, otherwise build it atomically.

        `build(tmp_dir)` writes the stage's files into `tmp_dir`; on success the folder replaces
        the old stage. `key` must hold everything the stage depends on (parameters and upstream
        stage hashes), so that a changed input rebuilds it. `started`: time.time() when the
        stage's work began, if before `build` (a training stage only moves its result in here);
        the seconds recorded in stage.json and shown on the console count from it.
        """
        with writing(self.root):
            return self._stage(name, key, build, started)

    def _stage(self, name: str, key: Mapping, build: Callable[[Path], None],
               started: float | None) -> Path:
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
        (tmp / integrity.STAGE_RECORD).write_text(json.dumps(
            {"name": name, "hash": digest, "key": scrub(key), "seconds": seconds,
             "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "files": integrity.manifest(tmp)}, indent=2, default=str))
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        log.info("stage %s: built in %.1f s", name, seconds, extra={"console": True})
        return final
