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

import time
from typing import Any, Sequence

import numpy as np
import pandas as pd

from gdpolib import beliefs, generation
from gdpolib.evalset import EvalSet
from gdpolib.metrics import distances, sampled
from gdpolib.schemes import BeliefScheme
from gdpolib.sections.evaluation import EvaluationSection


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
    valid = distances.has_mass(probs, es.mask)
    out = {k: np.full(len(probs), np.nan) for k in PER_PROMPT}
    out["mass"] = (probs * es.mask).sum(axis=1)
    out["entropy_target"] = distances.entropy_per_prompt(es.p_star, es.mask)
    if valid.any():
        p, q, m = probs[valid], es.p_star[valid], es.mask[valid]
        out["jsd"][valid] = distances.jsd_per_prompt(p, q, m)
        out["jsd_digits"][valid] = distances.jsd_digits_per_prompt(p, q)
        out["tvd"][valid] = distances.tvd_per_prompt(p, q, m)
        out["entropy"][valid] = distances.entropy_per_prompt(p, m)
        if es.ordinals is not None:
            out["wasserstein"][valid] = distances.wasserstein_per_prompt(p, q, m, es.ordinals[valid])
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
        out[f"{key}_ci"] = list(distances.bootstrap_ci(vals[keep], qids[valid][keep], n_boot, seed))
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
    """Parse [N][n] texts with the belief parser (invalid -> sampled.INVALID, never 0).

    Returns {"belief": [N][n] ints, "label": [N][n] str|None, "response": [N][n] str,
    "valid": [N][n] bool, "reason": [N][n] str}. A digit outside the question's belief set is
    invalid; a valid digit without `<label>` keeps its belief (CBC then fails on it).
    """
    out: dict[str, list] = {k: [] for k in ("belief", "label", "response", "valid", "reason")}
    for i, row in enumerate(samples):
        parsed = [beliefs.parse_completion(t, k_max, es.mask[i], require_label=False) for t in row]
        out["belief"].append([p.belief if p.valid else sampled.INVALID for p in parsed])
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


def score_samples(model, tokenizer, es: EvalSet, ev: EvaluationSection, *, seed: int,
                  scheme: BeliefScheme, embed, judge) -> dict[str, Any]:
    """Sample `ev.n_samples` completions per prompt (the evaluation section's sampling) and
    score them; CBC is the belief scheme's consistency check.

    Returns {"summary": the sampled numbers, "per_prompt": DataFrame [N rows], "samples": one
    dict per sample (text, parsed belief/label/response, cbc, rs, bpc verdict)}.
    """
    start = time.time()
    texts = generation.sample_completions(
        model, tokenizer, es.prompts, ev.n_samples, temperature=ev.temperature, top_k=ev.top_k,
        top_p=ev.top_p, response_top_p=ev.response_top_p, max_new_tokens=ev.max_new_tokens,
        batch_size=max(1, ev.eval_batch_size // max(ev.n_samples, 1)), seed=seed,
        progress=True)
    parsed = parse_samples(texts, es, scheme.k_max)
    b = np.asarray(parsed["belief"], dtype=np.int64)
    jsd_s = sampled.sampled_jsd_per_prompt(b, es.p_star, es.mask)
    floor = sampled.noise_floor(es.p_star, es.mask, ev.n_samples, seed=seed)
    _, invalid = sampled.belief_counts(b, es.mask)
    cbc_flags = [[scheme.consistent(bb, d, es.labels[i])
                  for bb, d in zip(b[i], parsed["label"][i])] for i in range(len(es))]
    rs = sampled.reference_similarity(parsed["response"], b, es.references, embed)
    bpc_res, judged = judge_samples(judge, parsed, es, ev.judge_samples)
    bpc = {ij: v for ij, v in zip(judged, bpc_res.verdicts)}

    summary = {
        "jsd_sampled": float(jsd_s.mean()), "noise_floor": float(floor.mean()),
        "cbc": float(np.mean(cbc_flags)), "bpc": bpc_res.bpc, "rs": float(rs.mean()),
        "invalid_rate": float(invalid.sum() / b.size),
        "majority_bias": sampled.majority_bias(b, es.p_star, es.mask),
        "n_prompts": len(es), "n_samples": ev.n_samples,
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
