"""Distances between belief distributions: pure functions on numpy arrays (shapes in each
docstring).

JSD is scipy's Jensen-Shannon DISTANCE (sqrt of the divergence, natural log, max sqrt(ln 2)),
with both inputs renormalised, as the authors' evaluation does. Two conventions:
`jsd` renormalises over the question's belief set, `jsd_digits` over all K belief digits (the
authors'). Other distances: total variation, the normalised Wasserstein distance over ordinal
beliefs, the entropy of a distribution; a bootstrap interval over questions.

No input is scored silently: a NaN, a negative entry, an all-zero row or an empty sample raises
ValueError naming the row; the callers (gdpolib.scoring) count and exclude what may legitimately
be unscorable (a read-out with no mass on the belief set). Sampled outputs are scored in
gdpolib.metrics.sampled, GPO's alignment scores in gdpolib.metrics.alignment, and what each
number of metrics.json means in gdpolib.metrics.registry.
"""
from __future__ import annotations

import numpy as np
from scipy.special import rel_entr
from scipy.stats import wasserstein_distance


# ---- input checks: a NaN, a negative or an empty row is never scored ----
def as_2d(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[None, :] if x.ndim == 1 else x


def check_values(x, what: str = "input") -> np.ndarray:
    """x as a float64 [N, K] array of finite, non-negative entries; otherwise ValueError naming
    the first bad row."""
    x = as_2d(x)
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
    probs, mask = check_values(probs, "renormalise probs"), as_2d(mask) > 0
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
    probs, mask = as_2d(probs), as_2d(mask) > 0
    return np.where(mask, probs, 0.0).sum(axis=1) > 0


def jsd_per_prompt(probs, p_star, mask=None) -> np.ndarray:
    """JS distance per prompt of the belief distribution renormalised over the question's
    belief set vs p* (our headline `jsd`; out-of-set mass is invisible to it).

    probs, p_star: [N, K]; mask: [N, K] (default: all K beliefs). Returns [N].
    """
    probs, p_star = as_2d(probs), as_2d(p_star)
    mask = np.ones_like(probs) if mask is None else as_2d(mask)
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
    mask, ordinals = as_2d(mask) > 0, as_2d(ordinals)
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
