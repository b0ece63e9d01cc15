"""Publish a trained model to the Hugging Face hub: model files, a model card and the built data.

    python -m gdpolib.publish outputs/sa-tiny --method gdpo --dry-run     # write the folder only
    python -m gdpolib.publish outputs/sa-tiny --method gdpo --repo-id you/gdpo-sa-tiny

`prepare_upload(run_dir, method, repo_id)` writes `<run>/publish/<method>/` from the run folder:
  - the model and tokenizer files of `checkpoints/<method>/` (hard links where possible),
  - `training/`: that stage's summary, Trainer log history and tracking curve,
  - `README.md`: the model card (YAML metadata; the method, base model and group; the main
    parameters and the full resolved config; the test metrics of every method in metrics.json;
    data provenance; how to read the belief distribution; citations),
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
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping

import datasets as ds
import yaml
from huggingface_hub import HfApi

from gdpolib import folders, integrity, sources
from gdpolib.scrub import scrub, scrub_text


REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Stages with a model to publish (checkpoints/<method>): the trained methods and ICF's SFT.
METHODS = ("sft", "dpo", "gdpo", "cdpo", "mft", "icf")
# Stage bookkeeping that goes to training/ (or nowhere) rather than next to the weights.
TRAINING_FILES = ("summary.json", "log_history.json", "tracking.jsonl")
SKIP_FILES = ("stage.json",)
DATA_FILES = ("questions.jsonl", "counts.json", "splits.json", "meta.json")
METRIC_ORDER = ("jsd", "jsd_sampled", "jsd_digits", "belief_mass", "tvd", "cbc", "bpc", "rs",
                "invalid_rate", "margin_majority", "margin_minority")
PARAM_KEYS = ("model", "country", "belief_scheme", "split_by", "max_questions", "seed",
              "batch_size", "grad_accum", "sft_steps", "sft_lr", "dpo_steps", "dpo_lr",
              "gdpo_steps", "gdpo_lr", "beta", "lambda_cal", "lambda_nll", "lambda_pref",
              "calibration_form", "lora", "lora_r", "dtype", "select_by")
METHOD_NAMES = {"sft": "supervised fine-tuning on beliefs drawn from the group's distribution",
                "dpo": "DPO on conflicting pairs (the baseline that skews to the majority)",
                "gdpo": "GDPO: calibration to the group's belief distribution + belief-conditioned DPO",
                "cdpo": "GDPO ablation without the calibration and belief terms (cdpo)",
                "mft": "GDPO ablation without the preference term (mft)"}
BASE_MODELS = {"gpt2-large": "openai-community/gpt2-large", "gpt2": "openai-community/gpt2",
               "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
CITATIONS = """\
@inproceedings{yao2025gdpo,
  title     = {No Preference Left Behind: Group Distributional Preference Optimization},
  author    = {Yao, Binwei and Cai, Zefan and Chuang, Yun-Shiuan and Yang, Shanglin and
               Jiang, Ming and Yang, Diyi and Hu, Junjie},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2025},
  eprint    = {2412.20299},
  archivePrefix = {arXiv}
}

@inproceedings{zhao2024gpo,
  title     = {Group Preference Optimization: Few-Shot Alignment of Large Language Models},
  author    = {Zhao, Siyan and Dang, John and Grover, Aditya},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2024},
  eprint    = {2310.11523},
  archivePrefix = {arXiv}
}

@article{durmus2023globalopinionqa,
  title   = {Towards Measuring the Representation of Subjective Global Opinions in Language Models},
  author  = {Durmus, Esin and others},
  journal = {arXiv preprint arXiv:2306.16388},
  year    = {2023}
}"""


class PublishError(RuntimeError):
    """A run folder that cannot be published (missing stage, bad repo id, hub refused); says why."""


# ============================================================== reading the run
def _read_json(path: Path, default: Any = None) -> Any:
    try:
        return integrity.read_json(path) if path.exists() else default
    except integrity.RecordError as err:
        raise PublishError(str(err)) from None


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml; PublishError when `run_dir` is not a run folder or it is damaged."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise PublishError(f"{run_dir} is not a run folder (no config.yaml)")
    try:
        cfg = integrity.read_yaml(path)
    except integrity.RecordError as err:
        raise PublishError(str(err)) from None
    if not isinstance(cfg, dict):
        raise PublishError(f"{path} is not a run's record (not a mapping)")
    return cfg


def check_stage(stage: Path, method: str) -> None:
    """PublishError naming the file when the stage's files are not those it wrote."""
    info = stage / integrity.STAGE_RECORD
    how = (f"rebuild it: python -m gdpolib.train -f <the run's params> --method {method}"
           if stage.parent.name == "checkpoints" else "rebuild it: run notebook 01 again")
    record = _read_json(info, None)
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise PublishError(f"{info} lists no file hashes to check the stage against; {how}")
    if (problem := integrity.damage(stage, record["files"])):
        raise PublishError(f"{stage / problem}; {how}")


def _public(value: Any) -> Any:
    """Absolute local paths shortened to their file name (they say nothing off this machine)."""
    if isinstance(value, str) and os.path.isabs(value):
        return f"<local>/{Path(value).name}"
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


def check_repo_id(repo_id: str) -> str:
    if not isinstance(repo_id, str) or not REPO_ID.match(repo_id):
        raise PublishError(f"push_to_hub: {repo_id!r} is not a hub repository id 'user/name'")
    return repo_id


# ============================================================== the model card
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.4g}"
    if v is None:
        return "–"
    return str(v)


def metrics_table(metrics: Mapping[str, Any], method: str) -> str:
    """Test metrics of every method in metrics.json (methods x metrics, skew margins included);
    the published method in bold."""
    rows = {m: {**vals, **metrics.get("skew", {}).get(m, {})}
            for m, vals in metrics.get("methods", {}).items()}
    if not rows:
        return "No test metrics were recorded for this run."
    cols = [c for c in METRIC_ORDER if any(c in r for r in rows.values())]
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for m, r in rows.items():
        name = f"**{m}** (this model)" if m == method else m
        lines.append(f"| {name} | " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def provenance(cfg: Mapping[str, Any], data_dir: Path) -> tuple[str, list[str], str]:
    """(Markdown paragraph, hub dataset ids for the card metadata, licence id) of the run's data."""
    key = _read_json(data_dir / "stage.json", {}).get("key", {})
    meta = _read_json(data_dir / "meta.json", {})
    counts = _read_json(data_dir / "counts.json", {})
    if cfg.get("hub_dataset"):
        src = (f"the GDPO authors' dataset [`{cfg['hub_dataset']}`](https://huggingface.co/datasets/"
               f"{cfg['hub_dataset']}) (hub), normalised to this project's record schema")
        datasets, licence = [cfg["hub_dataset"]], "other"
    elif cfg.get("movies_path"):
        src = (f"SNAP web-Movies reviews (`{_public(cfg['movies_path'])}`, sha256 prefix "
               f"{key.get('movies_sha', '?')}); beliefs are star ratings")
        datasets, licence = [], "other"
    elif cfg.get("survey", "goqa") != "goqa":
        path = cfg.get("survey_path") or cfg.get("opinionqa_path")
        src = (f"{'OpinionQA (Santurkar et al. 2023)' if cfg['survey'] == 'opinionqa' else 'a survey file'}"
               f" `{Path(str(path)).name}`. Group(s): **{' + '.join(meta.get('groups', []))}**; "
               f"belief scheme `{meta.get('scheme')}`")
        datasets, licence = [], "other"
    else:
        goqa = cfg.get("goqa_path")
        where = (f"from the hub at revision `{cfg.get('goqa_revision')}`"
                 if sources.classify("goqa_path", goqa).kind == "hub" else
                 f"from a local file in the hub's schema, `{Path(str(goqa)).name}` (sha256 prefix "
                 f"{key.get('goqa_sha', '?')}); a local copy may hold only part of the dataset")
        src = (f"GlobalOpinionQA ([`Anthropic/llm_global_opinions`](https://huggingface.co/datasets/"
               f"Anthropic/llm_global_opinions), Durmus et al. 2023) {where}. Group: "
               f"**{meta.get('country', cfg.get('country'))}**; belief scheme `{meta.get('scheme')}` "
               f"(`options`: each question's own options are its beliefs; `stance6`: the GDPO "
               f"authors' six stance classes)")
        datasets, licence = ["Anthropic/llm_global_opinions"], "cc-by-nc-sa-4.0"
    gen = cfg.get("responses", "template")
    text = [f"- Source: {src}.",
            f"- Responses: `{gen}` generator" + (" (templated, offline)" if gen == "template" else
                                                 f" (`{_public(cfg.get('response_model') or cfg.get('api_model'))}`)")
            + f", {cfg.get('n_styles')} prompt styles.",
            f"- Split by `{cfg.get('split_by')}` with fractions {cfg.get('split_fractions')} "
            f"(seed {cfg.get('seed')}); {counts.get('questions', '?')} questions.",
            "- Rows per split: " + "; ".join(
                f"{kind} " + "/".join(str(v) for v in splits.values())
                for kind, splits in counts.items() if isinstance(splits, dict)) + " (train/eval/test).",
            "- The datasets built from it are in this repository under `data/` "
            "(`data/<sft|dpo|gdpo|prompts>/<split>.parquet`, per-question targets in "
            "`data/questions.jsonl`)" + (", and keep the source's licence (CC BY-NC-SA 4.0: "
                                         "non-commercial, share-alike)." if licence != "other" else ".")]
    return "\n".join(text), datasets, licence


def model_card(run_dir: Path, method: str, repo_id: str) -> str:
    """The README.md of the upload folder, from the run folder's records (credentials masked)."""
    return scrub_text(_model_card(run_dir, method, repo_id))


def _model_card(run_dir: Path, method: str, repo_id: str) -> str:
    cfg = scrub(read_run_config(run_dir))
    metrics = _read_json(run_dir / "metrics.json", {})
    env = _read_json(run_dir / "environment.json", {})
    summary = _read_json(run_dir / "checkpoints" / method / "summary.json", {})
    base = cfg.get("model", "?")
    base_id = BASE_MODELS.get(base, base if REPO_ID.match(str(base)) else None)
    prov, datasets, licence = provenance(cfg, run_dir / "data")
    tags = list(dict.fromkeys(["gdpo", "pluralistic-alignment", "preference-optimization", "trl", method]))
    front = {"license": licence, "library_name": "transformers", "pipeline_tag": "text-generation",
             "tags": tags,
             **({"base_model": base_id} if base_id else {}), **({"datasets": datasets} if datasets else {})}
    params = "\n".join(f"| `{k}` | {_public(cfg.get(k))} |" for k in PARAM_KEYS if k in cfg)
    meta = _read_json(run_dir / "data" / "meta.json", {})
    group = " + ".join(meta.get("groups", [])) or meta.get("country") or cfg.get("country")
    base_text = (f"a small {cfg.get('tiny_arch', 'gpt2')} model built from a config (random start) "
                 "with a BPE tokenizer trained on the run's own text" if base == "tiny"
                 else f"`{base}`")
    full_cfg = yaml.safe_dump({k: _public(v) for k, v in cfg.items()}, sort_keys=False)
    example = _example_prompt(run_dir / "data")
    train_line = (f"{summary.get('steps')} steps in {summary.get('train_seconds')} s, final training "
                  f"loss {_fmt(summary.get('train_loss'))}" if summary else "no training summary found")
    devices = ", ".join(env.get("devices") or []) or "CPU"
    pkgs = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items()
                     if k in ("torch", "transformers", "trl", "accelerate", "peft") and v)
    data = metrics.get("data", {})
    return f"""---
{yaml.safe_dump(front, sort_keys=False).strip()}
---

# {repo_id.split('/')[-1]}

{base_text[0].upper() + base_text[1:]}, trained with **{method}** ({METHOD_NAMES.get(method, method)})
to answer survey questions the way the group **{group}** does: the model first writes a belief token (the
digit of an answer option) whose probability should follow the group's distribution of answers
p*(b|x), then a response that voices that belief. Trained with the `gdpolib` toolkit (GDPO and
its baselines on TRL).

## How to read the belief distribution

Completions have the form `<digit><<option label>>response`. The distribution over beliefs is the
next-token distribution after the prompt, over the digit tokens, renormalised over the
question's options:

```python
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("{repo_id}")
model = AutoModelForCausalLM.from_pretrained("{repo_id}")
prompt = {json.dumps(example)}
digits = [tok.convert_tokens_to_ids(str(k)) for k in range(10)]
with torch.no_grad():
    logits = model(**tok(prompt, return_tensors="pt")).logits[0, -1]
probs = torch.softmax(logits, -1)[digits]          # renormalise over the question's options
```

## Test metrics

Measured on the held-out test split of this run ({data.get('test', '?')} test pairs,
{data.get('questions', '?')} questions). JSD = Jensen-Shannon distance (natural log) between the
model's renormalised belief distribution and the group's p*, mean over test prompts (lower is
better); margins = mean DPO reward margin on test pairs whose chosen belief is the majority /
a minority one.

{metrics_table(metrics, method)}

## Training

{train_line}; on {devices} with {pkgs or 'see environment.json'}. Main parameters:

| parameter | value |
|---|---|
{params}

<details><summary>Every parameter of the run (config.yaml)</summary>

```yaml
{full_cfg.strip()}
```
</details>

`training/` holds the stage summary, the Trainer's log history and the tracked eval JSD and
margins over steps.

## Data provenance

{prov}

## Citation

```bibtex
{CITATIONS}
```
"""


def _example_prompt(data_dir: Path) -> str:
    """The first test prompt of the run, as the card's usage example."""
    try:
        return ds.load_from_disk(str(data_dir / "prompts"))["test"][0]["prompt"]
    except (FileNotFoundError, KeyError, IndexError):
        return "<Q>Do you agree?\n0. Yes\n1. No\n<A>"


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
    except folders.FolderError as err:
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
