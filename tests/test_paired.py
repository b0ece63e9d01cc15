"""Paired differences of two methods on the same questions, against scipy and by hand."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import bootstrap

from gdpolib.metrics.distances import bootstrap_ci
from gdpolib.metrics.paired import compare_by_question, paired_difference


def test_the_difference_is_the_mean_of_the_per_question_differences_with_scipys_interval():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.1, 0.3, 40)
    b = a + rng.normal(0.02, 0.01, 40)          # b is worse on nearly every question
    d = paired_difference(a, b, n_boot=500, seed=3)
    assert d["difference"] == pytest.approx(np.mean(a - b)) and d["n"] == 40
    ref = bootstrap((a, b), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True,
                    vectorized=True, n_resamples=500, method="percentile",
                    rng=np.random.default_rng(3)).confidence_interval
    assert d["ci"] == [pytest.approx(ref.low), pytest.approx(ref.high)]
    assert d["ci"][0] < d["difference"] < d["ci"][1] < 0


def test_pairing_narrows_the_interval_where_two_unpaired_intervals_overlap():
    # two methods whose per-question values vary a lot but differ by 0.01 on every question
    a = np.linspace(0.05, 0.45, 30)
    b = a + 0.01 + np.tile([0.001, -0.001], 15)
    d = paired_difference(a, b, n_boot=500)
    assert d["ci"][1] < 0                        # the difference is clearly below zero
    qids = [f"q{i}" for i in range(30)]
    lo_b = bootstrap_ci(b, qids, 500)[0]
    assert lo_b < bootstrap_ci(a, qids, 500)[1]  # while the two methods' own intervals overlap


def test_degenerate_nan_and_too_few_questions():
    d = paired_difference([0.2, 0.3], [0.1, 0.2])            # the same difference everywhere
    assert d == {"difference": pytest.approx(0.1), "ci": [pytest.approx(0.1)] * 2, "n": 2}
    with pytest.raises(ValueError, match="NaN"):
        paired_difference([0.2, np.nan], [0.1, 0.2])
    with pytest.raises(ValueError, match="at least 2"):
        paired_difference([0.2], [0.1])
    with pytest.raises(ValueError, match="same length"):
        paired_difference([0.2, 0.1], [0.1])


def test_compare_by_question_pairs_the_questions_both_have():
    d = compare_by_question({"q1": 0.3, "q2": 0.5, "q3": 0.2}, {"q2": 0.4, "q1": 0.1, "q9": 0.0})
    assert d["n"] == 2 and d["difference"] == pytest.approx(((0.3 - 0.1) + (0.5 - 0.4)) / 2)
