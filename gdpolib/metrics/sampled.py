"""Scores of sampled outputs: the sampled JSD with its noise floor (a perfectly calibrated
model's expected sampled JSD at the same n), the majority bias, class-belief consistency (CBC)
and reference similarity (RS). Pure functions on numpy arrays (shapes in each docstring); an
output that does not parse is INVALID, its own bucket, never class 0 (docs/deviations.md).
"""
from __future__ import annotations

from math import comb
from typing import Callable

import numpy as np
from scipy.stats import multinomial

from gdpolib.metrics.distances import as_2d, check_rows, js_distance, renormalise

INVALID = -1   # belief id of an output that does not parse (never class 0: docs/deviations.md)


def belief_counts(beliefs, mask) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of sampled beliefs per prompt.

    beliefs: [N, n] ints, INVALID (-1) for outputs that did not parse; mask: [N, K] 0/1.
    A digit outside the prompt's belief set (mask 0, or >= K) counts as invalid too.
    Returns (counts [N, K], invalid [N]). No sample for a prompt (n = 0) raises ValueError:
    an empty histogram has no distribution to score.
    """
    beliefs, mask = np.asarray(beliefs, dtype=np.int64), as_2d(mask) > 0
    n_prompts, k = mask.shape
    if beliefs.ndim != 2 or len(beliefs) != n_prompts or beliefs.shape[1] == 0:
        raise ValueError(f"belief_counts: need [N={n_prompts}, n >= 1] sampled beliefs, got "
                         f"shape {beliefs.shape} (zero samples per prompt cannot be scored)")
    counts = np.zeros((n_prompts, k))
    invalid = np.zeros(n_prompts)
    for i, row in enumerate(beliefs):
        for b in row:
            if 0 <= b < k and mask[i, b]:
                counts[i, b] += 1
            else:
                invalid[i] += 1
    return counts, invalid


def sampled_jsd_per_prompt(beliefs, p_star, mask) -> np.ndarray:
    """JS distance per prompt between the empirical belief histogram of n samples and p*.

    beliefs: [N, n] (INVALID = -1); p_star, mask: [N, K]. Invalid samples go to an extra
    "invalid" category where the target has 0 mass, so they cost JSD instead of being dropped
    (or, as in the authors' code, counted as class 0; docs/deviations.md). Returns [N].
    """
    counts, invalid = belief_counts(beliefs, mask)
    target = renormalise(p_star, mask)
    emp = np.concatenate([counts, invalid[:, None]], axis=1)
    tgt = np.concatenate([target, np.zeros((len(target), 1))], axis=1)
    return js_distance(emp, tgt)


def _compositions(n: int, k: int):
    """All k-tuples of non-negative ints summing to n (stars and bars), as an array [M, k]."""
    if k == 1:
        return np.array([[n]])
    rows = [np.concatenate([np.full((len(rest), 1), first), rest], axis=1)
            for first in range(n, -1, -1) for rest in [_compositions(n - first, k - 1)]]
    return np.concatenate(rows)


def noise_floor_one(p, n: int, exact_limit: int = 200_000, mc_draws: int = 20_000,
                    seed: int = 0) -> float:
    """Expected JS distance between the histogram of n draws from p and p itself.

    p: [K] probabilities. This is the sampled JSD a perfectly calibrated model gets with n
    samples per prompt. Exact (sum over all histograms, multinomial weights) when the number of
    histograms over p's support is <= exact_limit, otherwise Monte Carlo with `seed`.
    n < 1 or a p that is not a distribution raises ValueError.
    """
    if n < 1:
        raise ValueError(f"noise_floor_one: n = {n} samples; need at least 1")
    p = check_rows(p, "noise_floor_one p")[0]
    p = p / p.sum()
    support = p[p > 0]
    k = len(support)
    if k <= 1:
        return 0.0
    if comb(n + k - 1, k - 1) <= exact_limit:
        hist = _compositions(n, k)
        weights = multinomial.pmf(hist, n, support)
    else:
        hist = np.random.default_rng(seed).multinomial(n, support, size=mc_draws)
        weights = np.full(len(hist), 1.0 / len(hist))
    d = js_distance(hist.astype(np.float64), np.broadcast_to(support, hist.shape))
    return float(np.sum(weights * d))


def noise_floor(p_star, mask, n: int, seed: int = 0) -> np.ndarray:
    """Per-prompt noise floor [N] for p_star, mask [N, K] and n samples per prompt.

    Prompts share questions, so each distinct target is computed once.
    """
    target = renormalise(p_star, mask)
    cache: dict[bytes, float] = {}
    out = np.empty(len(target))
    for i, row in enumerate(target):
        key = np.round(row, 12).tobytes()
        if key not in cache:
            cache[key] = noise_floor_one(row, n, seed=seed)
        out[i] = cache[key]
    return out


def majority_bias(beliefs, p_star, mask) -> float:
    """Mean over prompts of (sampled share of the majority belief) / p*(majority belief).

    beliefs: [N, n]; p_star, mask: [N, K]. 1 = calibrated on the majority belief; > 1 = the
    model over-produces it (DPO's skew). The share is among the VALID samples (the invalid rate
    is reported on its own, so it does not pull this ratio down); prompts without a valid
    sample are left out (NaN when none has one).
    """
    counts, _ = belief_counts(beliefs, mask)
    target = renormalise(p_star, mask)
    maj = target.argmax(axis=1)
    rows = np.arange(len(target))
    n_valid = counts.sum(axis=1)
    keep = n_valid > 0
    if not keep.any():
        return float("nan")
    share = counts[rows, maj][keep] / n_valid[keep]
    return float(np.mean(share / target[rows, maj][keep]))


def cbc(beliefs, descriptions, labels, consistent: Callable[..., bool]) -> float:
    """Mean class-belief consistency (CBC) over all samples: does each sampled digit agree with
    the `<description>` written after it? `consistent(belief, description, labels)` is the belief
    scheme's check (gdpolib.schemes: BeliefScheme.consistent). beliefs, descriptions: [N, n];
    labels: [N, K] strings. NaN when there is no sample."""
    flags = [consistent(b, d, labels[i])
             for i, (bs, ds) in enumerate(zip(beliefs, descriptions)) for b, d in zip(bs, ds)]
    return float(np.mean(flags)) if flags else float("nan")


def reference_similarity(responses, beliefs, references, embed) -> np.ndarray:
    """RS per sample: cosine similarity between the response and the reference response of the
    PREDICTED belief for that prompt (no fixed lookup table; docs/deviations.md).

    responses, beliefs: [N, n]; references: [N, K] strings ("" when none);
    embed(list[str]) -> [M, D] array. A sample whose belief is invalid, or whose belief has no
    reference, or whose response is empty, scores 0 (counted by the caller via the invalid
    rate). Returns [N, n].
    """
    pairs, where = [], []
    scores = np.zeros((len(beliefs), len(beliefs[0]) if len(beliefs) else 0))
    for i, (rs, bs) in enumerate(zip(responses, beliefs)):
        for j, (r, b) in enumerate(zip(rs, bs)):
            if 0 <= b < len(references[i]) and references[i][b] and r and r.strip():
                pairs.append((r, references[i][b]))
                where.append((i, j))
    if pairs:
        texts = sorted({t for pair in pairs for t in pair})
        index = {t: k for k, t in enumerate(texts)}
        vecs = np.asarray(embed(texts), dtype=np.float64)
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        for (i, j), (r, ref) in zip(where, pairs):
            scores[i, j] = float(vecs[index[r]] @ vecs[index[ref]])
    return scores
