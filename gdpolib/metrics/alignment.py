"""GPO's alignment scores (paper Eq. 1): AS = mean over (group, question) of 1 - Dist(prediction,
group distribution); Dist = JS distance (natural log) for GlobalOpinionQA, WD / WD_max over the
options' ordinal values for OpinionQA. A NaN is never scored as perfect (the official code
scores it 0; docs/deviations.md): invalid inputs raise, or with on_invalid="exclude" they are
left out and counted.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import wasserstein_distance

from gdpolib.metrics.distances import check_rows, js_distance


def alignment_js(pred, true) -> float:
    """1 - JS distance (natural log) of two distributions over the same options ([K] each):
    1 - metrics.distances.js_distance, so the same checks (a NaN, negative or all-zero input
    raises) and identical inputs give exactly 1 (scipy can return NaN there)."""
    return 1.0 - js_distance(pred, true)


def wd_max(ordinals) -> float:
    """Largest possible 1-D Wasserstein distance on these ordinal values: max - min."""
    o = np.asarray(ordinals, dtype=np.float64)
    return float(o.max() - o.min())


def alignment_wd(pred, true, ordinals) -> float | None:
    """1 - WD(pred, true) / WD_max with the options' ordinal values as the support ([K] each).

    Returns None when WD_max = 0 (all ordinals equal: a nominal question, skipped).
    """
    p, q = check_rows(pred, "prediction")[0], check_rows(true, "target")[0]
    p, q = p / p.sum(), q / q.sum()
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
