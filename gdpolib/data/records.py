"""SFT records, DPO (conflicting) and GDPO (shared-belief) pairs, eval prompts, and the
files of a data stage (written by `gdpolib.stages.data`, read back by `load_run_data`).

Record schema (ARCHITECTURE.md "Records"); every list column has length K_MAX:
  common   qid, style, split, group, p_star (the TRAINING target), p_star_true (the group's
           real p*; equal to p_star unless a p* override was given), belief_mask, majority
  sft      prompt, completion, b                       (one record per drawn example)
  dpo      prompt, chosen, rejected, b_c, b_r          (b_c ~ p*, b_r uniform on B \\ {b_c})
  gdpo     same draws as dpo; rejected = b_c prefix + the response written for b_r
  prompts  prompt, qid, style, split, question, p_star (TRUE p*, what metrics compare to),
           p_star_target, belief_mask, labels, references, majority (one row per prompt),
           ordinal (K_MAX ordinal values of the beliefs, NaN off the scale; [] = no order)
`majority` is b == argmax p_star (the training target) for records, argmax p* for prompts.

Prompt: `<Q>{styled question}`, the beliefs with their digits in the style's layout (plain: one
line per belief `"{k}. {label}"`; responses.format_prompt), then `<A>` (the digits in the prompt
let a split by question generalise); the completion starts with the digit. A model
conditioned on several groups reads the group first, `<G>{group}` on its own line
(group_prompt), and its records carry qid `{qid}@{group}` (group_qid): p* is per (group, question).
DPO and GDPO use the SAME (b_c, b_r, y_c, y_r) draws, so the two methods see paired data.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import datasets as ds
import numpy as np

from gdpolib.beliefs import BeliefError, clean_label, format_completion
from gdpolib.data.responses import format_prompt
from gdpolib.schemes import QuestionBeliefs, check_distribution
from gdpolib.seeds import stable_seed

log = logging.getLogger("gdpolib.data.records")
DATA_VERSION = "data-v3"       # bump when the record format changes (invalidates data stages)
SPLITS = ("train", "eval", "test")
KINDS = ("sft", "dpo", "gdpo", "prompts")


class DataError(ValueError):
    """A group whose data cannot make a meaningful run (too few questions, an empty split)."""


@dataclass
class PromptItem:
    """One prompt (a question in one style) with its candidate responses per belief."""

    qid: str
    style: str
    prompt: str
    qb: QuestionBeliefs                  # p_star = the TRUE group distribution
    target: np.ndarray                   # float64[K_MAX]: the training target (override or true)
    candidates: dict[int, list[str]]     # belief -> responses voicing it (>= 1 per b in B)
    split: str = ""
    ordinal: list[float] = field(default_factory=list)  # K_MAX values (NaN: off the scale) or []
    group: str = ""                      # whose p* this is (the survey's group name)


# ----------------------------------------------------------------------------- items
def group_prompt(group: str, prompt: str) -> str:
    """The prompt of a model conditioned on several groups: `<G>{group}` on its own line, then
    the prompt of a one-group run."""
    return f"<G>{clean_label(group)}\n{prompt}"


def group_qid(qid: str, group: str) -> str:
    """The question id of (question, group) in a conditioned run: `{qid}@{group}`."""
    return f"{qid}@{group}"


def goqa_items(qbs: Sequence[QuestionBeliefs], styled: Mapping[str, list],
               targets: Mapping[str, np.ndarray] | None = None,
               ordinals: Mapping[str, Sequence[float]] | None = None, group: str = "",
               ) -> list[PromptItem]:
    """PromptItems of one group's questions (of any survey) x their generated styles
    (responses per option -> belief). ordinals: {qid: K_MAX ordinal values, NaN off the scale}
    for questions whose beliefs are ordered (a scheme's ordinals(), e.g. stance6's); others get
    none."""
    items = []
    for qb in qbs:
        for sq in styled.get(qb.qid, []):
            cands: dict[int, list[str]] = {}
            for i, b in enumerate(qb.option_belief):
                cands.setdefault(b, []).append(sq.responses[i])
            target = qb.p_star if targets is None or qb.qid not in targets else targets[qb.qid]
            items.append(PromptItem(qb.qid, sq.style,
                                    format_prompt(sq.question, qb.labels, qb.mask, sq.style), qb, np.asarray(target, dtype=np.float64), cands,
                                    ordinal=list((ordinals or {}).get(qb.qid, [])), group=group))
    return items


def apply_override(qbs: Sequence[QuestionBeliefs], override: Mapping[str, Sequence[float]] | None,
                   ) -> dict[str, np.ndarray]:
    """Validated training targets {qid: float64[K_MAX]} for the overridden questions."""
    if not override:
        return {}
    by_qid = {q.qid: q for q in qbs}
    unknown = [q for q in override if q not in by_qid]
    if unknown:
        raise BeliefError(f"p* override names {len(unknown)} question(s) not in the data: "
                          f"{unknown[:5]}")
    return {qid: check_distribution(p, by_qid[qid].mask, f"p* override for {qid}")
            for qid, p in override.items()}


# ----------------------------------------------------------------------------- records
def _common(it: PromptItem) -> dict[str, Any]:
    return {"qid": it.qid, "style": it.style, "split": it.split, "group": it.group,
            "p_star": it.target.tolist(), "p_star_true": it.qb.p_star.tolist(),
            "belief_mask": it.qb.mask.astype(int).tolist()}


def build_records(items: Sequence[PromptItem], sft_per_prompt: int, pairs_per_prompt: int,
                  seed: int) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """SFT records, DPO/GDPO pairs and eval-prompt rows for every item (one record per example).

    Each item has its own RNG (seeded by seed, qid, style), so adding questions does not change
    the draws of the others. Returns ({kind: rows}, {"no_pairs": prompts with |B| < 2}).
    """
    out: dict[str, list[dict]] = {k: [] for k in KINDS}
    stats = {"no_pairs": 0}
    for it in items:
        rng = np.random.default_rng(stable_seed("records", seed, it.qid, it.style))
        labels, mask, p = it.qb.labels, it.qb.mask, it.target
        beliefs = [k for k in range(len(mask)) if mask[k]]
        majority = int(np.argmax(p))
        com = _common(it)

        def completion(k: int, response_of: int) -> str:
            cands = it.candidates[response_of]
            return format_completion(k, labels[k], cands[int(rng.integers(len(cands)))])

        for b in rng.choice(len(p), size=sft_per_prompt, p=p):
            b = int(b)
            out["sft"].append({"prompt": it.prompt, "completion": completion(b, b), "b": b,
                               "majority": b == majority, **com})
        if len(beliefs) < 2:
            stats["no_pairs"] += 1
        else:
            for b_c in rng.choice(len(p), size=pairs_per_prompt, p=p):
                b_c = int(b_c)
                others = [k for k in beliefs if k != b_c]
                b_r = int(others[int(rng.integers(len(others)))])
                cands_c, cands_r = it.candidates[b_c], it.candidates[b_r]
                y_c = cands_c[int(rng.integers(len(cands_c)))]
                y_r = cands_r[int(rng.integers(len(cands_r)))]
                chosen = format_completion(b_c, labels[b_c], y_c)
                pair = {"prompt": it.prompt, "chosen": chosen, "b_c": b_c, "b_r": b_r,
                        "majority": b_c == majority, **com}
                out["dpo"].append({**pair, "rejected": format_completion(b_r, labels[b_r], y_r)})
                out["gdpo"].append({**pair, "rejected": format_completion(b_c, labels[b_c], y_r)})
        out["prompts"].append({
            "prompt": it.prompt, "qid": it.qid, "style": it.style, "split": it.split,
            "group": it.group,
            "question": it.qb.question, "p_star": it.qb.p_star.tolist(),
            "p_star_target": it.target.tolist(), "belief_mask": mask.astype(int).tolist(),
            "labels": [labels[k] if mask[k] else "" for k in range(len(mask))],
            "references": [it.candidates[k][0] if mask[k] else "" for k in range(len(mask))],
            "majority": int(np.argmax(it.qb.p_star)), "ordinal": list(it.ordinal)})
    # Shuffle at record level (not per prompt: docs/deviations.md), seeded; DPO and GDPO get
    # the SAME permutation so that row i of both is the same draw.
    rng = np.random.default_rng(stable_seed("shuffle", seed))
    out["sft"] = [out["sft"][i] for i in rng.permutation(len(out["sft"]))]
    perm = rng.permutation(len(out["dpo"]))
    out["dpo"] = [out["dpo"][i] for i in perm]
    out["gdpo"] = [out["gdpo"][i] for i in perm]
    return out, stats


def condition_on_group(rows: Mapping[str, list[dict]], group: str) -> dict[str, list[dict]]:
    """One group's records for a model conditioned on several groups: the same rows (the same
    draws as that group's own run), with the group in the prompt and in the qid."""
    return {kind: [{**r, "prompt": group_prompt(group, r["prompt"]),
                    "qid": group_qid(r["qid"], group), "group": group} for r in part]
            for kind, part in rows.items()}


def merge_groups(parts: Sequence[Mapping[str, list[dict]]], seed: int) -> dict[str, list[dict]]:
    """The records of several (conditioned) groups as one set, shuffled at record level (DPO and
    GDPO with the same permutation, so that row i of both is still one draw)."""
    out = {kind: [r for part in parts for r in part.get(kind, [])] for kind in KINDS}
    rng = np.random.default_rng(stable_seed("shuffle-groups", seed))
    out["sft"] = [out["sft"][i] for i in rng.permutation(len(out["sft"]))]
    perm = rng.permutation(len(out["dpo"]))
    out["dpo"] = [out["dpo"][i] for i in perm]
    out["gdpo"] = [out["gdpo"][i] for i in perm]
    return out


# ----------------------------------------------------------------------------- datasets
def _features(kind: str):
    s, f, i, b = ds.Value("string"), ds.Value("float64"), ds.Value("int64"), ds.Value("bool")
    common = {"qid": s, "style": s, "split": s, "group": s, "p_star": ds.Sequence(f),
              "belief_mask": ds.Sequence(i)}
    spec = {
        "sft": {"prompt": s, "completion": s, "b": i, "majority": b, "p_star_true": ds.Sequence(f)},
        "dpo": {"prompt": s, "chosen": s, "rejected": s, "b_c": i, "b_r": i, "majority": b,
                "p_star_true": ds.Sequence(f)},
        "prompts": {"prompt": s, "question": s, "p_star_target": ds.Sequence(f),
                    "labels": ds.Sequence(s), "references": ds.Sequence(s), "majority": i,
                    "ordinal": ds.Sequence(f)},
    }
    spec["gdpo"] = spec["dpo"]
    return ds.Features({**spec[kind], **common})


def to_datasets(rows: Mapping[str, list[dict]]):
    """{kind: rows} -> {kind: DatasetDict(train, eval, test)} (empty splits keep the schema).
    A prompt row without `ordinal` (a hub dataset) gets [] (no order known)."""
    out = {}
    for kind in KINDS:
        feats = _features(kind)
        parts = {}
        for split in SPLITS:
            sel = [r for r in rows.get(kind, []) if r["split"] == split]
            # Rows without an ordinal scale or a group (hub datasets) get [] and "".
            missing = {"ordinal": [], "group": ""}
            parts[split] = ds.Dataset.from_dict(
                {c: [r.get(c, missing[c]) if c in missing else r[c] for r in sel] for c in feats},
                features=feats)
        out[kind] = ds.DatasetDict(parts)
    return out


def counts_of(rows: Mapping[str, list[dict]], n_questions: int) -> dict[str, Any]:
    """Questions used; records of each kind per split; distinct questions with a prompt per
    split (`prompt_questions`)."""
    c: dict[str, Any] = {"questions": n_questions}
    for kind in KINDS:
        c[kind] = {s: sum(r["split"] == s for r in rows.get(kind, [])) for s in SPLITS}
    c["prompt_questions"] = {s: len({r["qid"] for r in rows.get("prompts", []) if r["split"] == s})
                             for s in SPLITS}
    return c


def metrics_part(counts: Mapping[str, Any], split: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The `data` part of metrics.json: questions used, PREFERENCE PAIRS (DPO = GDPO) per split
    (SFT records and prompts per split are in the data stage's counts.json), and the evaluation
    protocol: its name (records.PROTOCOLS; "given" for a dataset with its own splits), the
    held-out styles, the test prompts and questions, and `test_overlap`: the mean share of a
    test prompt's word tokens in the longest span it shares with a training prompt
    (splits.overlap_report)."""
    part = {"questions": int(counts["questions"]), **{s: int(counts["dpo"][s]) for s in SPLITS},
            "protocol": (split or {}).get("protocol", "given"),
            "heldout_styles": list((split or {}).get("heldout_styles", [])),
            "test_prompts": int(counts["prompts"]["test"])}
    if "prompt_questions" in counts:
        part["test_questions"] = int(counts["prompt_questions"]["test"])
    overlap = (split or {}).get("overlap") or {}
    if "longest_shared_span_mean" in overlap:
        part["test_overlap"] = overlap["longest_shared_span_mean"]
    return {"data": part}


# ----------------------------------------------------------------------------- stage
@dataclass
class RunData:
    """The built data stage. sft/dpo/gdpo/prompts are DatasetDicts with train/eval/test."""

    path: Path
    sft: Any
    dpo: Any
    gdpo: Any
    prompts: Any
    scheme: str                      # options | stance6 | movies | hub
    k_max: int
    questions: list[QuestionBeliefs]  # TRUE p* (empty for hub datasets)
    counts: dict[str, Any]
    reports: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)   # the survey's names of the target group(s)
    lengths: dict = field(default_factory=dict, repr=False)   # longest() per tokenizer (cache)

    def texts(self) -> list[str]:
        """Training text (prompts + completions), e.g. to train the tiny model's BPE."""
        t = []
        for r in self.sft["train"]:
            t.append(r["prompt"] + r["completion"])
        for r in self.dpo["train"]:
            t.append(r["prompt"] + r["rejected"])
        return t

    def sequences(self) -> tuple[dict[str, str], dict[str, str]]:
        """Every text a model of this run reads, for sizing and checking its context:
        ({prompt + completion: qid} of every SFT record and both sides of every DPO/GDPO pair,
        all splits; {prompt: qid} of every eval prompt). Duplicates are kept once."""
        full: dict[str, str] = {}
        for split in SPLITS:
            for r in self.sft[split]:
                full.setdefault(r["prompt"] + r["completion"], r["qid"])
            for kind in (self.dpo, self.gdpo):
                for r in kind[split]:
                    full.setdefault(r["prompt"] + r["chosen"], r["qid"])
                    full.setdefault(r["prompt"] + r["rejected"], r["qid"])
        prompts = {r["prompt"]: r["qid"] for split in SPLITS for r in self.prompts[split]}
        return full, prompts

    def longest(self, tokenizer) -> dict[str, tuple[int, str]]:
        """The longest texts of the run in `tokenizer`'s tokens, with the question they belong to:
        {"sequence": (tokens of prompt + completion + EOS, qid), "prompt": (tokens, qid)}."""
        full, prompts = self.sequences()
        return {"sequence": _longest(tokenizer, full, extra=1), "prompt": _longest(tokenizer, prompts)}

    def table(self, kind: str = "gdpo", split: str = "train", n: int = 5):
        """A pandas table of the first n records (for notebooks)."""
        return getattr(self, kind)[split].select(range(min(n, len(getattr(self, kind)[split])))
                                                 ).to_pandas()


def _longest(tokenizer, texts: Mapping[str, str], extra: int = 0) -> tuple[int, str]:
    """(token count + extra, qid) of the longest of `texts` ({text: qid}); (0, "") when empty."""
    if not texts:
        return 0, ""
    items = list(texts.items())
    lengths = [len(ids) + extra for ids in tokenizer([t for t, _ in items])["input_ids"]]
    i = max(range(len(items)), key=lengths.__getitem__)
    return lengths[i], items[i][1]


def _qb_to_json(q: QuestionBeliefs) -> dict:
    return {"qid": q.qid, "question": q.question, "options": q.options, "source": q.source,
            "p_star": q.p_star.tolist(), "mask": q.mask.tolist(), "labels": q.labels,
            "option_belief": q.option_belief}


def _qb_from_json(d: dict) -> QuestionBeliefs:
    return QuestionBeliefs(qid=d["qid"], question=d["question"], options=d["options"],
                           p_star=np.asarray(d["p_star"], dtype=np.float64),
                           mask=np.asarray(d["mask"], dtype=np.int64), labels=d["labels"],
                           option_belief=d["option_belief"], source=d.get("source", ""))


def load_run_data(path: str | Path) -> RunData:
    """Open a built data stage folder."""
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    questions = [_qb_from_json(json.loads(line)) for line in
                 (path / "questions.jsonl").read_text(encoding="utf-8").splitlines() if line]
    kinds = {k: ds.load_from_disk(str(path / k)) for k in KINDS}
    return RunData(path=path, **kinds, scheme=meta["scheme"], k_max=meta["k_max"],
                   questions=questions, counts=json.loads((path / "counts.json").read_text()),
                   reports=json.loads((path / "reports.json").read_text()),
                   groups=list(meta.get("groups", [])))


def write_stage(out: Path, rows: Mapping[str, list[dict]], questions: Sequence[QuestionBeliefs],
                scheme: str, k_max: int, reports: Mapping[str, Any], extra: Mapping | None = None,
                ) -> dict[str, Any]:
    """Save datasets + questions + counts + reports into the (temporary) stage folder."""
    counts = counts_of(rows, len(questions) if questions else
                       len({r["qid"] for r in rows.get("prompts", [])}))
    bars = ds.is_progress_bar_enabled()
    ds.disable_progress_bars()          # 12 tiny saves: their bars would drown the log
    try:
        for kind, dd in to_datasets(rows).items():
            dd.save_to_disk(str(out / kind))
    finally:
        if bars:
            ds.enable_progress_bars()
    (out / "questions.jsonl").write_text(
        "".join(json.dumps(_qb_to_json(q), ensure_ascii=False) + "\n" for q in questions),
        encoding="utf-8")
    (out / "counts.json").write_text(json.dumps(counts, indent=2))
    (out / "reports.json").write_text(json.dumps(reports, indent=2, default=str))
    (out / "meta.json").write_text(json.dumps({"scheme": scheme, "k_max": k_max,
                                               "version": DATA_VERSION, **(extra or {})}, indent=2))
    return counts
