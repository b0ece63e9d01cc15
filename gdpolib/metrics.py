"""Evaluation metrics: pure functions on numpy arrays (shapes in each docstring).

JSD is scipy's Jensen-Shannon DISTANCE (sqrt of the divergence, natural log, max sqrt(ln 2)),
with both inputs renormalised, as the authors' evaluation does. Two conventions:
`jsd` renormalises over the question's belief set, `jsd_digits` over all K belief digits (the
authors'). Other distances: total variation, the normalised Wasserstein distance over ordinal
beliefs, the entropy of a distribution; a bootstrap interval over questions.

No input is scored silently: a NaN, a negative entry, an all-zero row or an empty sample raises
ValueError naming the row; the callers (gdpolib.scoring) count and exclude what may legitimately
be unscorable (a read-out with no mass on the belief set).
"""
from __future__ import annotations

from math import comb

import numpy as np
from scipy.special import rel_entr
from scipy.stats import multinomial, wasserstein_distance

INVALID = -1   # belief id of an output that does not parse (never class 0: docs/deviations.md)


# ---- input checks: a NaN, a negative or an empty row is never scored ----
def _as_2d(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[None, :] if x.ndim == 1 else x


def check_values(x, what: str = "input") -> np.ndarray:
    """x as a float64 [N, K] array of finite, non-negative entries; otherwise ValueError naming
    the first bad row."""
    x = _as_2d(x)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"{what}: row {int(np.flatnonzero(bad)[0])} is not finite (NaN or inf)")
    bad = (x < 0).any(axis=1)
    if bad.any():
        raise ValueError(f"{what}: row {int(np.flatnonzero(bad)[0])} has a negative entry")
    return x


def check_rows(x, what: str = "input") -> np.ndarray:
    """check_values, and every row has a positive sum (an all-zero row is no distribution)."""
    x = check_values(x, what)
    bad = x.sum(axis=1) <= 0
    if bad.any():
        raise ValueError(f"{what}: row {int(np.flatnonzero(bad)[0])} is all zeros (no mass)")
    return x


# ---- distances between distributions ----
def js_distance(p, q) -> np.ndarray | float:
    """Jensen-Shannon distance (natural log) between rows of p and q.

    p, q: [K] or [N, K] non-negative (need not sum to 1; each row is renormalised).
    Returns a float for 1-D inputs, else [N]. Equals scipy.spatial.distance.jensenshannon,
    except that a row with a NaN, a negative entry or no mass raises ValueError (scipy returns
    NaN) and identical rows give exactly 0 (the divergence is clamped at 0 before the square
    root; rounding can make it a tiny negative, where scipy returns NaN).
    """
    p2, q2 = check_rows(p, "js_distance p"), check_rows(q, "js_distance q")
    if p2.shape != q2.shape:
        raise ValueError(f"js_distance: shapes differ, {p2.shape} vs {q2.shape}")
    p2 = p2 / p2.sum(axis=1, keepdims=True)
    q2 = q2 / q2.sum(axis=1, keepdims=True)
    m = (p2 + q2) / 2
    div = 0.5 * (rel_entr(p2, m).sum(axis=1) + rel_entr(q2, m).sum(axis=1))
    d = np.sqrt(np.maximum(div, 0.0))
    return float(d[0]) if np.ndim(p) == 1 else d


def renormalise(probs, mask) -> np.ndarray:
    """Restrict rows to the belief set and make them sum to 1.

    probs: [N, K] (e.g. full-vocabulary softmax read at the belief tokens); mask: [N, K] 0/1.
    A row with a NaN or a negative entry, an empty belief set, or no mass on its set raises
    ValueError naming the row (callers that can meet a zero-mass row count it first with
    `has_mass` and leave it out).
    """
    probs, mask = check_values(probs, "renormalise probs"), _as_2d(mask) > 0
    empty = ~mask.any(axis=1)
    if empty.any():
        raise ValueError(f"renormalise: row {int(np.flatnonzero(empty)[0])} has an empty belief set")
    masked = np.where(mask, probs, 0.0)
    total = masked.sum(axis=1, keepdims=True)
    if (total <= 0).any():
        raise ValueError(f"renormalise: row {int(np.flatnonzero(total[:, 0] <= 0)[0])} has no "
                         f"mass on its belief set")
    return masked / total


def has_mass(probs, mask) -> np.ndarray:
    """[N] bool: the row puts positive mass on its belief set (renormalise can score it)."""
    probs, mask = _as_2d(probs), _as_2d(mask) > 0
    return np.where(mask, probs, 0.0).sum(axis=1) > 0


def jsd_per_prompt(probs, p_star, mask=None) -> np.ndarray:
    """JS distance per prompt of the belief distribution renormalised over the question's
    belief set vs p* (our headline `jsd`; out-of-set mass is invisible to it).

    probs, p_star: [N, K]; mask: [N, K] (default: all K beliefs). Returns [N].
    """
    probs, p_star = _as_2d(probs), _as_2d(p_star)
    mask = np.ones_like(probs) if mask is None else _as_2d(mask)
    return js_distance(renormalise(probs, mask), renormalise(p_star, mask))


def jsd_digits_per_prompt(probs, p_star) -> np.ndarray:
    """JS distance per prompt of the distribution renormalised over ALL K belief digits vs p*
    (the authors' convention, `jsd_digits`: mass on digits outside the question's set counts).
    probs, p_star: [N, K]. Returns [N]. E.g. [0, 0, .30, .35, .30, .05] vs p* .5/.5 on {2, 4}:
    0.405 here, 0 under jsd_per_prompt."""
    return jsd_per_prompt(probs, p_star, None)


def tvd_per_prompt(probs, p_star, mask) -> np.ndarray:
    """Total variation distance 0.5 * sum |p - q| per prompt, both renormalised over the
    question's belief set. probs, p_star, mask: [N, K]. Returns [N] in [0, 1]."""
    return 0.5 * np.abs(renormalise(probs, mask) - renormalise(p_star, mask)).sum(axis=1)


def wasserstein_per_prompt(probs, p_star, mask, ordinals) -> np.ndarray:
    """Normalised 1-D Wasserstein distance WD / (max - min) per prompt over the question's
    ORDINAL beliefs (those in the set with a finite ordinal value), both distributions
    renormalised over them: the distance among answers that take a position on the scale.

    probs, p_star, mask: [N, K]; ordinals: [N, K] float, NaN where a belief has no place on the
    scale (stance6's class 0 "no stance"; every belief of a nominal question).
    Returns [N] in [0, 1], NaN where it is undefined: fewer than two ordinal beliefs in the set,
    or no predicted or target mass on them (callers count and exclude those rows).
    """
    probs, p_star = check_values(probs, "wasserstein probs"), check_values(p_star, "wasserstein p*")
    mask, ordinals = _as_2d(mask) > 0, _as_2d(ordinals)
    on = mask & np.isfinite(ordinals)
    out = np.full(len(probs), np.nan)
    for i in range(len(probs)):
        o = ordinals[i, on[i]]
        p, q = probs[i, on[i]], p_star[i, on[i]]
        if len(o) < 2 or o.max() == o.min() or p.sum() <= 0 or q.sum() <= 0:
            continue
        out[i] = wasserstein_distance(o, o, p / p.sum(), q / q.sum()) / (o.max() - o.min())
    return out


def entropy_per_prompt(probs, mask) -> np.ndarray:
    """Shannon entropy (nats) of each row renormalised over its belief set. [N, K] -> [N].
    Next to the target's entropy it shows a model that is right on average but too sure (or
    too flat) per question."""
    p = renormalise(probs, mask)
    return -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=1)


def mean_jsd(P, Q, mask=None) -> float:
    """Mean over rows of the JS distance between P and Q ([N, K] each), renormalised over mask."""
    return float(np.mean(jsd_per_prompt(P, Q, mask)))


def bootstrap_ci(values, groups, n_boot: int = 2000, seed: int = 0, level: float = 0.95
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-prompt `values` [N], resampling
    QUESTIONS (`groups` [N], e.g. qids) with replacement: a resample keeps all prompts of each
    drawn question, so the statistic is the same prompt mean as the point estimate, and
    prompts of one question are not counted as independent. Seeded; NaN values raise."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0 or len(values) != len(groups):
        raise ValueError(f"bootstrap_ci: need [N] values and N groups, got {values.shape} and "
                         f"{len(groups)}")
    if not np.isfinite(values).all():
        raise ValueError("bootstrap_ci: a value is NaN or inf (exclude invalid rows first)")
    _, inv = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    sums, counts = np.bincount(inv, weights=values), np.bincount(inv).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, len(sums), size=(n_boot, len(sums)))
    stats = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def jsd_by_question(per_prompt, qids) -> dict[str, float]:
    """Mean JSD per question id. per_prompt: [N] (finite: leave invalid rows out first);
    qids: [N] strings."""
    if not np.isfinite(np.asarray(per_prompt, dtype=np.float64)).all():
        raise ValueError("jsd_by_question: a per-prompt JSD is NaN (leave invalid rows out)")
    out: dict[str, list[float]] = {}
    for d, q in zip(np.asarray(per_prompt), qids):
        out.setdefault(str(q), []).append(float(d))
    return {q: float(np.mean(v)) for q, v in out.items()}


# ---- sampled beliefs: JSD from samples, noise floor, majority bias ----
def belief_counts(beliefs, mask) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of sampled beliefs per prompt.

    beliefs: [N, n] ints, INVALID (-1) for outputs that did not parse; mask: [N, K] 0/1.
    A digit outside the prompt's belief set (mask 0, or >= K) counts as invalid too.
    Returns (counts [N, K], invalid [N]). No sample for a prompt (n = 0) raises ValueError:
    an empty histogram has no distribution to score.
    """
    beliefs, mask = np.asarray(beliefs, dtype=np.int64), _as_2d(mask) > 0
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


# ---- per-sample consistency: CBC and RS ----
def _norm_text(s: str | None) -> str:
    return " ".join((s or "").split())


def class_belief_consistent(belief: int, description: str | None, labels, scheme: str,
                            option_map: dict[str, int] | None = None) -> bool:
    """CBC for one generated sample: do the class digit and the `<description>` agree?

    belief: parsed digit (INVALID = -1); description: text inside `<...>` (None if missing);
    labels: [K] the prompt's belief labels ("" when unused).
    - options: the description must equal the question's option for that belief id.
    - stance6: the description must be an option that the option map sends to that class
      (the authors' definition; a label joining several options with " / ", as the data
      builder writes a class with more than one option, needs every part to map there); without
      a map, it must equal the question's label.
    An invalid belief or a missing description is inconsistent.
    """
    if belief is None or belief < 0 or belief >= len(labels) or not description:
        return False
    desc = _norm_text(description)
    same_label = bool(labels[belief]) and desc == _norm_text(labels[belief])
    if scheme == "stance6" and option_map is not None:
        parts = [p.strip() for p in desc.split(" / ")]
        return same_label or all(option_map.get(p) == belief for p in parts)
    return same_label


def cbc(beliefs, descriptions, labels, scheme: str, option_map=None) -> float:
    """Mean CBC over all samples. beliefs, descriptions: [N, n]; labels: [N, K] strings."""
    flags = [class_belief_consistent(b, d, labels[i], scheme, option_map)
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


# ---- GPO alignment scores ----
# Paper Eq. 1: AS = mean over (group, question) of 1 - Dist(prediction, group distribution);
# Dist = JS distance (scipy, natural log) for GlobalOpinionQA, WD / WD_max over the options'
# ordinal values for OpinionQA. A NaN is never scored as perfect (the official code scores it 0;
# docs/deviations.md): invalid inputs raise, or with on_invalid="exclude" they are left out and
# counted.
def _check_dist(p, what: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"{what} is not a distribution (finite, >= 0, positive sum): {p}")
    return p / p.sum()


def alignment_js(pred, true) -> float:
    """1 - JS distance (natural log) of two distributions over the same options ([K] each).

    Equals 1 - scipy.spatial.distance.jensenshannon(pred, true); the divergence is clamped at 0
    before the square root, so identical inputs give exactly 1 (scipy can return NaN there).
    """
    p, q = _check_dist(pred, "prediction"), _check_dist(true, "target")
    if p.shape != q.shape:
        raise ValueError(f"alignment_js: shapes differ, {p.shape} vs {q.shape}")
    m = (p + q) / 2
    div = 0.5 * (rel_entr(p, m).sum() + rel_entr(q, m).sum())
    return float(1.0 - np.sqrt(max(div, 0.0)))


def wd_max(ordinals) -> float:
    """Largest possible 1-D Wasserstein distance on these ordinal values: max - min."""
    o = np.asarray(ordinals, dtype=np.float64)
    return float(o.max() - o.min())


def alignment_wd(pred, true, ordinals) -> float | None:
    """1 - WD(pred, true) / WD_max with the options' ordinal values as the support ([K] each).

    Returns None when WD_max = 0 (all ordinals equal: a nominal question, skipped).
    """
    p, q = _check_dist(pred, "prediction"), _check_dist(true, "target")
    o = np.asarray(ordinals, dtype=np.float64)
    if not (p.shape == q.shape == o.shape):
        raise ValueError(f"alignment_wd: shapes differ, {p.shape}, {q.shape}, ordinals {o.shape}")
    top = wd_max(o)
    if top == 0:
        return None
    return float(1.0 - wasserstein_distance(o, o, p, q) / top)


def alignment_pairs(pred: dict, true: dict, ordinals: dict | None = None,
                    on_invalid: str = "raise") -> tuple[list[tuple[str, str, float]], int, int]:
    """The alignment score of every predicted (group, question) pair.

    pred, true: {group: {qid: [K_q]}}; every (group, qid) of `pred` must be in `true`.
    ordinals: {qid: [K_q]} -> the WD score (OpinionQA); None -> the JS score (GlobalOpinionQA).
    on_invalid: "raise" (default) on a NaN/invalid prediction, or "exclude" it and count it.
    Returns ([(group, qid, score)], skipped_wd_max0, invalid): WD pairs whose options all share
    one ordinal value have no score and are counted, never scored.
    """
    if on_invalid not in ("raise", "exclude"):
        raise ValueError(f"on_invalid must be 'raise' or 'exclude', got {on_invalid!r}")
    rows: list[tuple[str, str, float]] = []
    skipped = invalid = 0
    for group, preds in pred.items():
        for qid, p in preds.items():
            if group not in true or qid not in true[group]:
                raise KeyError(f"no true distribution for group {group!r}, question {qid!r}")
            try:
                s = (alignment_js(p, true[group][qid]) if ordinals is None
                     else alignment_wd(p, true[group][qid], ordinals[qid]))
            except ValueError as err:
                if on_invalid == "raise":
                    raise ValueError(f"group {group!r}, question {qid!r}: {err}") from None
                invalid += 1
                continue
            if s is None:
                skipped += 1
            else:
                rows.append((group, qid, float(s)))
    return rows, skipped, invalid


def alignment_scores(pred: dict, true: dict, ordinals: dict | None = None,
                     on_invalid: str = "raise") -> dict:
    """Alignment score of predictions against group distributions (alignment_pairs, averaged).

    Returns {"score": micro mean over (group, question) pairs, "group_mean": mean of the
    per-group means, "per_group": {group: mean}, "n": pairs scored, "skipped_wd_max0": n,
    "invalid": n}.
    """
    rows, skipped, invalid = alignment_pairs(pred, true, ordinals, on_invalid)
    by_group: dict[str, list[float]] = {}
    for group, _, s in rows:
        by_group.setdefault(group, []).append(s)
    per_group = {g: float(np.mean(v)) for g, v in by_group.items()}
    scores = [s for _, _, s in rows]
    return {"score": float(np.mean(scores)) if scores else float("nan"),
            "group_mean": float(np.mean(list(per_group.values()))) if per_group else float("nan"),
            "per_group": per_group, "n": len(scores), "skipped_wd_max0": skipped,
            "invalid": invalid}
