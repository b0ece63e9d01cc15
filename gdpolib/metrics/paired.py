"""Two methods compared on the same test questions: the mean per-question difference of a metric
with a paired bootstrap interval, so that a difference is judged against the spread of the
differences, not against two overlapping per-method intervals.

Both methods are scored on the same questions, so their errors are correlated (a hard question is
hard for both); resampling the questions with both numbers of each kept together
(`scipy.stats.bootstrap(..., paired=True)`) gives the interval of the difference itself.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from scipy.stats import bootstrap


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a - b, axis=axis)


def paired_difference(a, b, n_boot: int = 2000, seed: int = 0, level: float = 0.95
                      ) -> dict[str, Any]:
    """Mean of a - b over paired units (e.g. test questions) with a percentile bootstrap
    interval resampling the units, each with both its values (scipy.stats.bootstrap,
    paired=True), seeded.

    a, b: [Q] the two methods' per-question values, in the same question order. Returns
    {"difference": mean(a - b), "ci": [low, high], "n": Q}. A NaN or inf value, shapes that
    differ, or fewer than 2 questions raise ValueError (nothing to resample).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired_difference: need two [Q] arrays of the same length, got "
                         f"{a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"paired_difference: {len(a)} paired question(s); need at least 2")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired_difference: a value is NaN or inf (leave invalid rows out first)")
    diff = float(np.mean(a - b))
    if np.all(a - b == diff):          # no spread: scipy's interval is undefined (degenerate)
        return {"difference": diff, "ci": [diff, diff], "n": len(a)}
    res = bootstrap((a, b), _mean_difference, paired=True, vectorized=True, n_resamples=n_boot,
                    confidence_level=level, method="percentile", rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return {"difference": diff, "ci": [float(ci.low), float(ci.high)], "n": len(a)}


def compare_by_question(values: Mapping[str, float], reference: Mapping[str, float],
                        n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """paired_difference of two methods' per-question values ({qid: value} each, e.g.
    metrics.jsd_by_question), over the questions both have (sorted by qid)."""
    common = sorted(set(values) & set(reference))
    return paired_difference([values[q] for q in common], [reference[q] for q in common],
                             n_boot, seed)
