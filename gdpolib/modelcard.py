"""The model card (README.md) of a published model, written from its run folder's records: YAML
metadata (licence, base model, datasets, tags), the method, base model and group, how to read the
belief distribution, the test metrics of every method in metrics.json and the findings checked on
them (gdpolib.report.claims), the main parameters and the full resolved config, data provenance
and citations. Absolute local paths are shortened to file names and credentials masked
(gdpolib.scrub): nothing of this machine leaves it.
A damaged record raises integrity.RecordError naming the file.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import datasets as ds
import yaml

from gdpolib import integrity, sources
from gdpolib import methods as registry
from gdpolib.metrics import registry as metric_registry
from gdpolib.report import claims
from gdpolib.scrub import scrub, scrub_text

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
METRIC_ORDER = metric_registry.keys(table="card", intervals=False)   # the metric registry's
PARAM_KEYS = ("model", "country", "belief_scheme", "split_by", "max_questions", "seed",
              "batch_size", "grad_accum", "sft_steps", "sft_lr", "dpo_steps", "dpo_lr",
              "gdpo_steps", "gdpo_lr", "beta", "lambda_cal", "lambda_nll", "lambda_pref",
              "calibration_form", "lora", "lora_r", "dtype", "select_by")
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


# ============================================================== reading the run
def read_json(path: Path, default: Any = None) -> Any:
    """A JSON record of the run, or `default` when it is not there."""
    return integrity.read_json(path) if path.exists() else default


def run_record(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml as a dict; RecordError when `run_dir` is not a run folder or the
    record is damaged."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise integrity.RecordError(f"{run_dir} is not a run folder (no config.yaml)")
    cfg = integrity.read_yaml(path)
    if not isinstance(cfg, dict):
        raise integrity.RecordError(f"{path} is not a run's record (not a mapping)")
    return cfg


def _public(value: Any) -> Any:
    """Absolute local paths shortened to their file name (they say nothing off this machine)."""
    if isinstance(value, str) and os.path.isabs(value):
        return f"<local>/{Path(value).name}"
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


# ============================================================== the card
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
    key = read_json(data_dir / "stage.json", {}).get("key", {})
    meta = read_json(data_dir / "meta.json", {})
    counts = read_json(data_dir / "counts.json", {})
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
    cfg = scrub(run_record(run_dir))
    metrics = read_json(run_dir / "metrics.json", {})
    env = read_json(run_dir / "environment.json", {})
    summary = read_json(run_dir / "checkpoints" / method / "summary.json", {})
    base = cfg.get("model", "?")
    base_id = BASE_MODELS.get(base, base if REPO_ID.match(str(base)) else None)
    prov, datasets, licence = provenance(cfg, run_dir / "data")
    tags = list(dict.fromkeys(["gdpo", "pluralistic-alignment", "preference-optimization", "trl", method]))
    front = {"license": licence, "library_name": "transformers", "pipeline_tag": "text-generation",
             "tags": tags,
             **({"base_model": base_id} if base_id else {}), **({"datasets": datasets} if datasets else {})}
    params = "\n".join(f"| `{k}` | {_public(cfg.get(k))} |" for k in PARAM_KEYS if k in cfg)
    meta = read_json(run_dir / "data" / "meta.json", {})
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

{base_text[0].upper() + base_text[1:]}, trained with **{method}** ({registry.get(method).description})
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

## Findings

The paper's claims checked on these test numbers (`gdpolib.report.claims`: yes / NO; a claim
whose numbers the run lacks is left out):

{chr(10).join(claims.card_lines(metrics)) or "No claim could be checked on this run's numbers."}

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
