"""Score one model on a set of prompts: the belief read-out (both JSD conventions, TVD,
Wasserstein, entropies, belief mass, with bootstrap intervals over questions) and the sampled
outputs (sampled JSD with its noise floor, CBC, BPC, RS, invalid rate).

Every number of `metrics.json`'s `methods.<m>` comes from one function here: `readout` (per
prompt) and `readout_summary` (means and intervals) for the probability-based numbers,
`score_samples` for the sampled ones. Training (the tracking callback) and evaluation
(gdpolib.stages.evaluate) call the same functions on their prompts. A read-out row with no mass
on its belief set is counted (`n_invalid`) and left out of every mean, never scored; a NaN
probability raises.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import numpy as np
import pandas as pd

from gdpolib import beliefs, generation, metrics


@dataclasses.dataclass
class EvalSet:
    """Prompts with what the metrics need. Lists/arrays have N rows; per-belief vectors have
    K_MAX columns."""

    prompts: list[str]            # what the model sees (few-shot context + prompt)
    questions: list[str]          # the question text (what the chat judge is shown)
    qids: list[str]
    styles: list[str]
    p_star: np.ndarray            # [N, K] the group's TRUE p*
    mask: np.ndarray              # [N, K] 0/1
    labels: list[list[str]]       # [N][K]
    references: list[list[str]]   # [N][K] a reference response per belief ("" = none)
    ordinals: np.ndarray | None = None   # [N, K] ordinal value per belief, NaN off the scale

    @classmethod
    def from_table(cls, table, n: int | None = None, seed: int = 0) -> "EvalSet":
        """From an eval-prompt table (datasets.Dataset) of the data stage: all rows, or a fixed
        seeded subset of n rows (the tracking callback's eval subset)."""
        if n is not None and n < len(table):
            table = table.shuffle(seed=seed).select(range(n))
        prompts = list(table["prompt"])
        questions = list(table["question"]) if "question" in table.column_names else prompts
        mask = np.asarray(table["belief_mask"], dtype=np.int64)
        return cls(prompts=prompts, questions=questions, qids=[str(q) for q in table["qid"]],
                   styles=[str(s) for s in table["style"]],
                   p_star=np.asarray(table["p_star"], dtype=np.float64), mask=mask,
                   labels=[list(x) for x in table["labels"]],
                   references=[list(x) for x in table["references"]],
                   ordinals=_ordinals(table, mask.shape))

    def uniform(self) -> np.ndarray:
        """[N, K] the uniform distribution over each question's belief set (1/|B|): the
        `uniform` baseline's read-out."""
        return self.mask / self.mask.sum(axis=1, keepdims=True)

    def context_free(self, train: "EvalSet") -> np.ndarray:
        """[N, K] the `context_free` baseline's read-out: for each prompt, the mean p* of the
        training questions (`train`, each question once) whose belief set is the prompt's (under
        `options`: the same number of options). It ignores the question, as GPO's meta-train
        mean does: a model at this baseline has learnt only where answers tend to fall. A
        belief set no training question has gets the uniform distribution over it."""
        first = {q: i for i, q in reversed(list(enumerate(train.qids)))}
        rows = sorted(first.values())
        means: dict[bytes, np.ndarray] = {}
        for key in {train.mask[i].tobytes() for i in rows}:
            same = [i for i in rows if train.mask[i].tobytes() == key]
            means[key] = train.p_star[same].mean(axis=0)
        uniform = self.uniform()
        return np.stack([means.get(m.tobytes(), uniform[i]) for i, m in enumerate(self.mask)])

    def with_prompts(self, prompts: Sequence[str]) -> "EvalSet":
        return dataclasses.replace(self, prompts=list(prompts))

    def __len__(self) -> int:
        return len(self.prompts)


def _ordinals(table, shape: tuple[int, int]) -> np.ndarray | None:
    """[N, K] ordinal values from the table's `ordinal` column (a row's [] = no order: NaN);
    None when no row has one."""
    if "ordinal" not in table.column_names:
        return None
    rows = list(table["ordinal"])
    if not any(rows):
        return None
    out = np.full(shape, np.nan)
    for i, row in enumerate(rows):
        if row:
            out[i] = np.asarray(row, dtype=np.float64)
    return out


# ----------------------------------------------------------------------------- read-out
PER_PROMPT = ("jsd", "jsd_digits", "tvd", "wasserstein", "entropy", "entropy_target", "mass")
DISTANCES = ("jsd", "jsd_digits", "tvd", "wasserstein")   # each gets a bootstrap interval


def score_probs(probs, es: EvalSet) -> dict[str, np.ndarray]:
    """Every per-prompt read-out number of belief probabilities [N, K] against the EvalSet.

    probs: full-vocabulary softmax read at the K belief tokens (rows sum to <= 1), or any
    distribution over the K beliefs (the uniform baseline). A NaN or negative row raises
    ValueError naming its question. A row with no mass on its belief set is INVALID: `valid`
    [N] is False there and its numbers are NaN (left out of every mean by readout_summary).
    Returns probs, valid, jsd (renormalised over the belief set), jsd_digits (over all K
    digits: the authors' convention), tvd, wasserstein (normalised; NaN where the question has
    no ordinal scale), entropy (predicted, nats), entropy_target, mass (on the belief set), [N].
    """
    probs = np.asarray(probs, dtype=np.float64)
    bad = ~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"read-out of question {es.qids[i]} (prompt {i}) holds NaN, inf or a "
                         f"negative probability: the model's weights or logits are broken")
    valid = metrics.has_mass(probs, es.mask)
    out = {k: np.full(len(probs), np.nan) for k in PER_PROMPT}
    out["mass"] = (probs * es.mask).sum(axis=1)
    out["entropy_target"] = metrics.entropy_per_prompt(es.p_star, es.mask)
    if valid.any():
        p, q, m = probs[valid], es.p_star[valid], es.mask[valid]
        out["jsd"][valid] = metrics.jsd_per_prompt(p, q, m)
        out["jsd_digits"][valid] = metrics.jsd_digits_per_prompt(p, q)
        out["tvd"][valid] = metrics.tvd_per_prompt(p, q, m)
        out["entropy"][valid] = metrics.entropy_per_prompt(p, m)
        if es.ordinals is not None:
            out["wasserstein"][valid] = metrics.wasserstein_per_prompt(p, q, m, es.ordinals[valid])
    return {"probs": probs, "valid": valid, **out}


def readout_summary(read: dict[str, np.ndarray], es: EvalSet, seed: int = 0,
                    n_boot: int = 2000) -> dict[str, Any]:
    """Means over the VALID prompts of a read-out (score_probs / readout), with a 95%
    percentile bootstrap interval over test QUESTIONS (`<distance>_ci` = [low, high]) for each
    distance, seeded.

    Returns jsd, jsd_ci, jsd_digits, jsd_digits_ci, tvd, tvd_ci, belief_mass, entropy,
    entropy_target, n_prompts, n_questions, n_invalid (prompts left out: no mass on the belief
    set) and, when some question has an ordinal scale, wasserstein, wasserstein_ci and
    wasserstein_prompts (the prompts it is defined on). No valid prompt raises ValueError.
    """
    valid = np.asarray(read["valid"], dtype=bool)
    if not valid.any():
        raise ValueError(f"none of the {len(valid)} read-out rows has mass on its belief set: "
                         f"nothing to score")
    qids = np.asarray(es.qids)
    out: dict[str, Any] = {}
    for key in DISTANCES:
        vals = np.asarray(read[key])[valid]
        keep = np.isfinite(vals)          # Wasserstein: only questions with an ordinal scale
        if not keep.any():
            continue
        out[key] = float(vals[keep].mean())
        out[f"{key}_ci"] = list(metrics.bootstrap_ci(vals[keep], qids[valid][keep], n_boot, seed))
        if key == "wasserstein":
            out["wasserstein_prompts"] = int(keep.sum())
    out.update({"belief_mass": float(np.mean(read["mass"][valid])),
                "entropy": float(np.mean(read["entropy"][valid])),
                "entropy_target": float(np.mean(read["entropy_target"][valid])),
                "n_prompts": int(len(valid)), "n_questions": int(len(set(qids[valid]))),
                "n_invalid": int((~valid).sum())})
    return out


def readout(model, tokenizer, es: EvalSet, belief_ids: Sequence[int], batch_size: int = 32
            ) -> dict[str, np.ndarray]:
    """The belief distribution at the answer position of every prompt, scored against p*
    (score_probs: probs [N, K], full-vocabulary softmax read at the belief tokens; valid [N];
    jsd, jsd_digits, tvd, wasserstein, entropy, entropy_target, mass [N])."""
    limit = generation.max_context(model)
    if limit:
        lengths = [len(ids) for ids in tokenizer(es.prompts)["input_ids"]]
        too_long = [(n, q) for n, q in zip(lengths, es.qids) if n >= limit]
        if too_long:
            raise ValueError(
                f"{len(too_long)} eval prompt(s) do not fit the model's {limit} positions (longest "
                f"{max(too_long)[0]} tokens, question {max(too_long)[1]}): raise max_length (the tiny "
                f"model's context is max_length) or use a model with a longer context")
    probs = generation.belief_distributions(model, tokenizer, es.prompts, belief_ids, batch_size)
    return score_probs(probs, es)


# ----------------------------------------------------------------------------- samples
def parse_samples(samples: Sequence[Sequence[str]], es: EvalSet, k_max: int) -> dict[str, list]:
    """Parse [N][n] texts with the belief parser (invalid -> metrics.INVALID, never 0).

    Returns {"belief": [N][n] ints, "label": [N][n] str|None, "response": [N][n] str,
    "valid": [N][n] bool, "reason": [N][n] str}. A digit outside the question's belief set is
    invalid; a valid digit without `<label>` keeps its belief (CBC then fails on it).
    """
    out: dict[str, list] = {k: [] for k in ("belief", "label", "response", "valid", "reason")}
    for i, row in enumerate(samples):
        parsed = [beliefs.parse_completion(t, k_max, es.mask[i], require_label=False) for t in row]
        out["belief"].append([p.belief if p.valid else metrics.INVALID for p in parsed])
        out["label"].append([p.label for p in parsed])
        out["response"].append([p.response.strip() for p in parsed])
        out["valid"].append([p.valid for p in parsed])
        out["reason"].append([p.reason for p in parsed])
    return out


def judge_samples(judge, parsed: dict[str, list], es: EvalSet, per_prompt: int):
    """BPC verdicts for the first `per_prompt` samples of each prompt (0 = all).
    Returns (JudgeResult, [(i, j)] the samples judged, in order)."""
    where = [(i, j) for i, row in enumerate(parsed["belief"])
             for j in range(len(row) if per_prompt <= 0 else min(per_prompt, len(row)))]
    res = judge.judge([parsed["belief"][i][j] for i, j in where],
                      [parsed["response"][i][j] for i, j in where],
                      [es.references[i] for i, _ in where],
                      questions=[es.questions[i] for i, _ in where],
                      descriptions=[parsed["label"][i][j] for i, j in where])
    return res, where


def score_samples(model, tokenizer, es: EvalSet, cfg, *, k_max: int, scheme: str, embed, judge,
                  option_map: dict[str, int] | None = None) -> dict[str, Any]:
    """Sample `cfg.n_samples` completions per prompt and score them.

    Returns {"summary": the sampled numbers, "per_prompt": DataFrame [N rows], "samples": one
    dict per sample (text, parsed belief/label/response, cbc, rs, bpc verdict)}.
    """
    start = time.time()
    texts = generation.sample_completions(
        model, tokenizer, es.prompts, cfg.n_samples, temperature=cfg.temperature, top_k=cfg.top_k,
        top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
        batch_size=max(1, cfg.eval_batch_size // max(cfg.n_samples, 1)), seed=cfg.seed,
        progress=True)
    parsed = parse_samples(texts, es, k_max)
    b = np.asarray(parsed["belief"], dtype=np.int64)
    jsd_s = metrics.sampled_jsd_per_prompt(b, es.p_star, es.mask)
    floor = metrics.noise_floor(es.p_star, es.mask, cfg.n_samples, seed=cfg.seed)
    _, invalid = metrics.belief_counts(b, es.mask)
    cbc_flags = [[metrics.class_belief_consistent(bb, d, es.labels[i], scheme, option_map)
                  for bb, d in zip(b[i], parsed["label"][i])] for i in range(len(es))]
    rs = metrics.reference_similarity(parsed["response"], b, es.references, embed)
    bpc_res, judged = judge_samples(judge, parsed, es, cfg.judge_samples)
    bpc = {ij: v for ij, v in zip(judged, bpc_res.verdicts)}

    summary = {
        "jsd_sampled": float(jsd_s.mean()), "noise_floor": float(floor.mean()),
        "cbc": float(np.mean(cbc_flags)), "bpc": bpc_res.bpc, "rs": float(rs.mean()),
        "invalid_rate": float(invalid.sum() / b.size),
        "majority_bias": metrics.majority_bias(b, es.p_star, es.mask),
        "n_prompts": len(es), "n_samples": cfg.n_samples,
        "bpc_judged": bpc_res.judged, "bpc_api_errors": bpc_res.api_errors,
        "bpc_unparseable": bpc_res.unparseable, "judge": type(judge).__name__,
        "seconds": round(time.time() - start, 2)}
    per_prompt = pd.DataFrame({
        "qid": es.qids, "style": es.styles, "jsd_sampled": jsd_s, "noise_floor": floor,
        "invalid_rate": invalid / b.shape[1], "cbc": np.mean(cbc_flags, axis=1),
        "rs": rs.mean(axis=1), "majority": es.p_star.argmax(axis=1)})
    samples = []
    for i in range(len(es)):
        for j in range(b.shape[1]):
            samples.append({
                "i": i, "qid": es.qids[i], "style": es.styles[i], "sample": j,
                "text": texts[i][j], "belief": int(b[i, j]) if b[i, j] >= 0 else None,
                "label": parsed["label"][i][j], "response": parsed["response"][i][j],
                "valid": parsed["valid"][i][j], "reason": parsed["reason"][i][j],
                "cbc": bool(cbc_flags[i][j]), "rs": float(rs[i, j]), "bpc": bpc.get((i, j))})
    return {"summary": summary, "per_prompt": per_prompt, "samples": samples}
