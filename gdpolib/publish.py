"""Publish a trained model to the Hugging Face hub: model files, a model card and the built data.

    python -m gdpolib.publish outputs/sa-tiny --method gdpo --dry-run     # write the folder only
    python -m gdpolib.publish outputs/sa-tiny --method gdpo --repo-id you/gdpo-sa-tiny

`prepare_upload(run_dir, method, repo_id)` writes `<run>/publish/<method>/` from the run folder:
  - the model and tokenizer files of `checkpoints/<method>/` (hard links where possible),
  - `training/`: that stage's summary, Trainer log history and tracking curve,
  - `README.md`: the model card (gdpolib.modelcard),
  - `data/`: the built datasets (`data/<sft|dpo|gdpo|prompts>/<split>.parquet`) and the per-question
    targets (`questions.jsonl`), counts and splits.
`push(folder, repo_id)` creates the repository if needed and uploads the folder with
huggingface_hub. The run parameter `push_to_hub: <repo id>` (off by default) names the
repository; absolute local paths never leave the machine (they are shortened to file names), nor
do credentials (gdpolib.scrub). What is packaged is checked first against what its stages wrote
(gdpolib.integrity), and the run folder's lock is held while the folder is written.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import datasets as ds
from huggingface_hub import HfApi

from gdpolib import folders, integrity
from gdpolib import methods as registry
from gdpolib.modelcard import REPO_ID, model_card, run_record

# Stages with a model to publish (checkpoints/<method>): the registry's trained methods.
METHODS = tuple(registry.names(lambda m: m.trained))
# Stage bookkeeping that goes to training/ (or nowhere) rather than next to the weights.
TRAINING_FILES = ("summary.json", "log_history.json", "tracking.jsonl")
SKIP_FILES = ("stage.json",)
DATA_FILES = ("questions.jsonl", "counts.json", "splits.json", "meta.json")


class PublishError(RuntimeError):
    """A run folder that cannot be published (missing stage, bad repo id, hub refused); says why."""


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml; PublishError when `run_dir` is not a run folder or it is damaged."""
    try:
        return run_record(run_dir)
    except integrity.RecordError as err:
        raise PublishError(str(err)) from None


def check_stage(stage: Path, method: str) -> None:
    """PublishError naming the file when the stage's files are not those it wrote."""
    if (problem := integrity.stage_problem(stage)):
        how = (f"python -m gdpolib.train -f <the run's params> --method {method}"
               if stage.parent.name == "checkpoints" else "run notebook 01 again")
        raise PublishError(f"{problem}; rebuild it: {how}")


def check_repo_id(repo_id: str) -> str:
    if not isinstance(repo_id, str) or not REPO_ID.match(repo_id):
        raise PublishError(f"push_to_hub: {repo_id!r} is not a hub repository id 'user/name'")
    return repo_id


# ============================================================== the model card
# ============================================================== the upload folder
def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (no second copy of multi-GB weights), or a copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def export_datasets(data_dir: Path, out: Path) -> list[str]:
    """The run's built datasets as parquet files (data/<kind>/<split>.parquet) plus the
    per-question files; returns the relative paths written."""
    written = []
    bars = ds.is_progress_bar_enabled()
    ds.disable_progress_bars()          # one bar per split would drown the log
    try:
        _export(data_dir, out, written)
    finally:
        if bars:
            ds.enable_progress_bars()
    return written


def _export(data_dir: Path, out: Path, written: list[str]) -> None:
    for kind_dir in sorted(p for p in data_dir.iterdir() if (p / "dataset_dict.json").exists()):
        for split, table in ds.load_from_disk(str(kind_dir)).items():
            target = out / kind_dir.name / f"{split}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            table.to_parquet(str(target))
            written.append(f"{kind_dir.name}/{split}.parquet")
    for name in DATA_FILES:
        if (data_dir / name).exists():
            shutil.copy2(data_dir / name, out / name)
            written.append(name)


def prepare_upload(run_dir: str | Path, method: str, repo_id: str) -> Path:
    """Write `<run_dir>/publish/<method>/` (model files, README.md model card, training/ and
    data/) and return it. Raises PublishError when the run has no such trained stage."""
    run_dir = Path(run_dir)
    check_repo_id(repo_id)
    if method not in METHODS:
        raise PublishError(f"method {method!r} is not one of {', '.join(METHODS)}")
    read_run_config(run_dir)
    ckpt = run_dir / "checkpoints" / method
    if not (ckpt / "config.json").exists():
        raise PublishError(f"{ckpt} holds no trained model: train it first "
                           f"(python -m gdpolib.train ... --method {method})")
    try:
        with folders.holding(run_dir, "run"):
            return _write_upload(run_dir, ckpt, method, repo_id)
    except (folders.FolderError, integrity.RecordError) as err:
        raise PublishError(str(err)) from None


def _write_upload(run_dir: Path, ckpt: Path, method: str, repo_id: str) -> Path:
    """prepare_upload's writing, under the run folder's lock: the stages checked, then the
    folder built beside its place and moved in."""
    check_stage(ckpt, method)
    if (run_dir / "data" / "meta.json").exists():
        check_stage(run_dir / "data", method)
    out = run_dir / "publish" / method
    tmp = out.with_name(f".{method}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "training").mkdir(parents=True)
    for item in sorted(ckpt.iterdir()):
        if item.name in SKIP_FILES:
            continue
        if item.name in TRAINING_FILES:
            shutil.copy2(item, tmp / "training" / item.name)
        elif item.is_dir():
            shutil.copytree(item, tmp / item.name, copy_function=_link_or_copy)
        else:
            _link_or_copy(item, tmp / item.name)
    if (run_dir / "data" / "meta.json").exists():
        export_datasets(run_dir / "data", tmp / "data")
    (tmp / "README.md").write_text(model_card(run_dir, method, repo_id), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def push(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None,
         commit_message: str | None = None) -> str:
    """Create `repo_id` (a model repository) if needed and upload `folder`; returns the commit URL.
    The token is huggingface_hub's usual one (`hf auth login` or HF_TOKEN) unless given."""
    check_repo_id(repo_id)
    folder = Path(folder)
    if not (folder / "README.md").exists():
        raise PublishError(f"{folder} has no README.md: build it with prepare_upload first")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message=commit_message or f"Upload {folder.name} model, card and data")
    except Exception as err:  # the hub client raises many types (HTTP, offline, auth)
        raise PublishError(f"upload of {folder} to {repo_id} failed: {type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''} (offline? logged in: "
                           f"`hf auth login` or HF_TOKEN?)") from err
    return str(getattr(info, "commit_url", info))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gdpolib.publish", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", help="a run folder, e.g. outputs/sa-tiny")
    ap.add_argument("--method", default="gdpo", choices=METHODS)
    ap.add_argument("--repo-id", help="default: the run's push_to_hub parameter")
    ap.add_argument("--private", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="write the folder, upload nothing")
    args = ap.parse_args(argv)
    run_dir = Path(args.run_dir)
    try:
        repo_id = args.repo_id
        if repo_id is None:
            repo_id = read_run_config(run_dir).get("push_to_hub")
        if not repo_id:
            raise PublishError("no repository: pass --repo-id or set push_to_hub in the params")
        folder = prepare_upload(run_dir, args.method, repo_id)
        print(push(folder, repo_id, private=args.private) if not args.dry_run else folder)
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
