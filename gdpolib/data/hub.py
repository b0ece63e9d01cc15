"""The GDPO authors' datasets on the Hugging Face hub, normalised to our record schema.

- `Binwei01/mmoqa_{usa,pk,sa}[_large]`: opinion QA, beliefs = the 6 stance classes (K_MAX 6).
  Columns used: prompt, optional context, question, style, accept_choice_id,
  accept_choice, accept_response, reject_choice_id, reject_choice, reject_response,
  probabilities (len 6), optional majority.
- `Binwei01/movie_review[_large]`: beliefs = rating classes; columns prompt, accept_choice_id,
  accept_response, reject_choice_id, reject_response, probabilities. There is no choice text,
  so the label is "rating {id}" (our completions always carry a `<label>`).
Splits train/eval/test. One record per row (no grouping by prompt: docs/deviations.md); the
eval-prompts table groups rows by prompt and checks that their `probabilities` agree.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

import datasets
import numpy as np

from gdpolib.beliefs import format_completion
from gdpolib.data.records import write_stage

log = logging.getLogger("gdpolib.data.hub")
SPLITS = ("train", "eval", "test")
MMOQA = tuple(f"Binwei01/mmoqa_{c}{s}" for c in ("usa", "pk", "sa") for s in ("", "_large"))
MOVIES = ("Binwei01/movie_review", "Binwei01/movie_review_large")
KNOWN = MMOQA + MOVIES


class HubDataError(RuntimeError):
    """A hub dataset that cannot be loaded or a row that does not fit the schema."""


def kind_of(name: str) -> str:
    """"mmoqa" or "movie" (by the dataset id; an unknown id fails with the known ones)."""
    base = name.split("/")[-1]
    if base.startswith("mmoqa_"):
        return "mmoqa"
    if base.startswith("movie_review"):     # the authors' code tested 'movie_reviews' (B7)
        return "movie"
    raise HubDataError(f"unknown GDPO hub dataset {name!r}; known: {', '.join(KNOWN)}")


def load_hub_rows(name: str, revision: str | None = None) -> dict[str, list[dict]]:
    """{split: rows} from the hub; offline -> HubDataError saying what to do instead."""
    kind_of(name)
    try:
        return {s: [dict(r) for r in datasets.load_dataset(name, split=s, revision=revision)]
                for s in SPLITS}
    except Exception as err:  # offline: ConnectionError / LocalEntryNotFoundError / HTTP errors
        raise HubDataError(
            f"could not load {name} from the Hugging Face hub ({type(err).__name__}: "
            f"{str(err)[:200]}). Offline? Unset hub_dataset to build the data from "
            f"GlobalOpinionQA (goqa_path) or movie reviews (movies_path) instead.") from None


def _qid(row: Mapping[str, Any]) -> str:
    key = row.get("question") or row.get("prompt") or ""
    return "hub-" + hashlib.sha1(key.encode()).hexdigest()[:12]


def k_max_of(rows: Iterable[Mapping[str, Any]], kind: str) -> int:
    """K_MAX: 6 for mmoqa; for movies the largest of len(probabilities) and ids + 1."""
    if kind == "mmoqa":
        return 6
    k = 0
    for r in rows:
        k = max(k, len(r["probabilities"]), int(r["accept_choice_id"]) + 1,
                int(r["reject_choice_id"]) + 1)
    if not 1 <= k <= 10:
        raise HubDataError(f"movie dataset needs {k} belief classes; single digits allow 10")
    return k


def normalise_row(row: Mapping[str, Any], split: str, kind: str, k_max: int, index: int = 0,
                  ) -> dict[str, Any]:
    """One hub row -> the common fields of a record plus chosen/rejected texts (both forms)."""
    try:
        b_c, b_r = int(row["accept_choice_id"]), int(row["reject_choice_id"])
        probs = [float(x) for x in row["probabilities"]]
        prompt_text = row["prompt"]
        y_c, y_r = row["accept_response"], row["reject_response"]
    except (KeyError, TypeError, ValueError) as err:
        raise HubDataError(f"{split} row {index}: missing or bad field ({err!r})") from None
    if len(probs) > k_max or not (0 <= b_c < k_max and 0 <= b_r < k_max):
        raise HubDataError(f"{split} row {index}: ids {b_c}/{b_r} or {len(probs)} probabilities "
                           f"do not fit K={k_max}")
    p = np.zeros(k_max)
    p[:len(probs)] = probs
    if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise HubDataError(f"{split} row {index}: bad probabilities {probs}")
    p = p / p.sum()
    # B = classes with mass, plus the two classes the row uses.
    mask = (p > 0).astype(int)
    mask[b_c] = mask[b_r] = 1
    if kind == "mmoqa":
        lab_c, lab_r = str(row.get("accept_choice") or b_c), str(row.get("reject_choice") or b_r)
    else:
        lab_c, lab_r = f"rating {b_c}", f"rating {b_r}"
    context = row.get("context") or ""
    majority = row.get("majority")
    majority = bool(majority) if majority is not None else b_c == int(np.argmax(p))
    return {"prompt": f"{context}<Q>{prompt_text}<A>", "qid": _qid(row),
            "style": str(row.get("style") or ""), "split": split, "p_star": p.tolist(),
            "p_star_true": p.tolist(), "belief_mask": mask.tolist(), "b_c": b_c, "b_r": b_r,
            "majority": majority, "question": row.get("question") or prompt_text,
            "chosen": format_completion(b_c, lab_c, y_c),
            "rejected_dpo": format_completion(b_r, lab_r, y_r),
            "rejected_gdpo": format_completion(b_c, lab_c, y_r),
            "label_c": lab_c, "label_r": lab_r, "y_c": y_c, "y_r": y_r}


def hub_records(rows_by_split: Mapping[str, list[Mapping]], kind: str,
                ) -> tuple[dict[str, list[dict]], dict[str, Any], int]:
    """({kind: records}, report, k_max) for rows shaped like the card schema.

    SFT: one record per row (completion = chosen). DPO: rows with b_c != b_r (others are
    counted in the report). GDPO: every row. Prompts: rows grouped by (split, prompt); rows of
    one prompt whose probabilities disagree are reported.
    """
    k_max = k_max_of((r for rows in rows_by_split.values() for r in rows), kind)
    out: dict[str, list[dict]] = {"sft": [], "dpo": [], "gdpo": [], "prompts": []}
    report = {"rows": 0, "dpo_same_belief_skipped": 0, "prompt_p_star_disagreements": 0}
    for split, rows in rows_by_split.items():
        groups: dict[str, dict] = {}
        for i, row in enumerate(rows):
            n = normalise_row(row, split, kind, k_max, i)
            report["rows"] += 1
            com = {k: n[k] for k in ("qid", "style", "split", "p_star", "p_star_true",
                                     "belief_mask")}
            out["sft"].append({"prompt": n["prompt"], "completion": n["chosen"], "b": n["b_c"],
                               "majority": n["majority"], **com})
            pair = {"prompt": n["prompt"], "chosen": n["chosen"], "b_c": n["b_c"],
                    "b_r": n["b_r"], "majority": n["majority"], **com}
            if n["b_c"] != n["b_r"]:
                out["dpo"].append({**pair, "rejected": n["rejected_dpo"]})
            else:
                report["dpo_same_belief_skipped"] += 1
            out["gdpo"].append({**pair, "rejected": n["rejected_gdpo"]})
            g = groups.setdefault(n["prompt"], {
                "prompt": n["prompt"], "qid": n["qid"], "style": n["style"], "split": split,
                "question": n["question"], "p_star": n["p_star"], "p_star_target": n["p_star"],
                "belief_mask": list(n["belief_mask"]), "labels": [""] * k_max,
                "references": [""] * k_max, "majority": int(np.argmax(n["p_star"]))})
            if not np.allclose(g["p_star"], n["p_star"], atol=1e-6):
                report["prompt_p_star_disagreements"] += 1
            for b, lab, y in ((n["b_c"], n["label_c"], n["y_c"]), (n["b_r"], n["label_r"], n["y_r"])):
                g["belief_mask"][b] = 1
                g["labels"][b] = g["labels"][b] or lab
                g["references"][b] = g["references"][b] or y
        out["prompts"] += list(groups.values())
    if report["prompt_p_star_disagreements"]:
        log.warning("%d hub rows disagree with their prompt's first probabilities",
                    report["prompt_p_star_disagreements"])
    return out, report, k_max


def build_hub(cfg, out: Path) -> dict:
    """The data stage for cfg.hub_dataset."""
    kind = kind_of(cfg.hub_dataset)
    rows, report, k_max = hub_records(load_hub_rows(cfg.hub_dataset), kind)
    return write_stage(out, rows, [], "hub-" + kind, k_max,
                       {"hub": {"dataset": cfg.hub_dataset, **report}})
