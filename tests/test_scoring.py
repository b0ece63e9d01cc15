"""Scoring one model: sample parsing (invalid outputs never become class 0), the read-out
(invalid rows counted and left out, NaN raises), its summary with intervals, the uniform row."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from gdpolib import scoring
from gdpolib.evalset import EvalSet
from gdpolib.metrics.sampled import INVALID


def test_parse_samples_maps_invalid_to_the_invalid_id():
    mask = np.array([[1, 1, 0, 0, 0, 0, 0, 0, 0, 0]])
    es = EvalSet(["p"], ["question?"], ["q"], ["s"], np.array([[0.5, 0.5] + [0] * 8]), mask,
                         [["Yes", "No"] + [""] * 8], [["r0", "r1"] + [""] * 8])
    out = scoring.parse_samples([["1<No> nope", "Yes I do", "2<Maybe>x", "0 plain"]], es, 10)
    assert out["belief"] == [[1, INVALID, INVALID, 0]]
    assert out["label"][0][0] == "No" and out["label"][0][3] is None   # no label: CBC fails
    assert out["response"][0][0] == "nope"


def _evalset(n_q: int = 3, per_q: int = 2, ordinal: bool = True) -> EvalSet:
    """n_q stance6-like questions, per_q prompts each; p* on {2, 4} (and 0 for the last)."""
    import datasets

    rows = []
    for q in range(n_q):
        for s in range(per_q):
            mask = [1 if q == n_q - 1 else 0, 0, 1, 0, 1, 0]
            p = [0.2 if mask[0] else 0.0, 0, 0.4 if mask[0] else 0.5, 0, 0.4 if mask[0] else 0.5, 0]
            rows.append({"prompt": f"q{q} s{s}", "question": f"q{q}?", "qid": f"q{q}",
                         "style": f"s{s}", "p_star": p, "belief_mask": mask,
                         "labels": ["a" if m else "" for m in mask],
                         "references": ["" for _ in mask],
                         "ordinal": [np.nan, 1, 2, 3, 4, 5] if ordinal else []})
    return EvalSet.from_table(datasets.Dataset.from_list(rows))


def test_score_probs_counts_zero_mass_rows_and_raises_on_nan():
    es = _evalset()
    assert es.ordinals.shape == (6, 6) and np.isnan(es.ordinals[0, 0])
    probs = np.tile([0.0, 0.0, 0.3, 0.35, 0.3, 0.05], (6, 1))
    probs[1] = [0, 0.9, 0, 0.1, 0, 0]                     # no mass on its set {2, 4}
    read = scoring.score_probs(probs, es)
    assert read["valid"].tolist() == [True, False, True, True, True, True]
    assert np.isnan(read["jsd"][1]) and read["mass"][1] == 0
    np.testing.assert_allclose(read["jsd"][[0, 2, 3]], 0.0, atol=1e-12)
    assert read["jsd_digits"][0] == pytest.approx(0.4048, abs=1e-4)
    summary = scoring.readout_summary(read, es, seed=0, n_boot=500)
    assert summary["n_invalid"] == 1 and summary["n_prompts"] == 6 and summary["n_questions"] == 3
    valid = read["valid"]
    assert summary["jsd_digits"] == pytest.approx(read["jsd_digits"][valid].mean())
    assert summary["belief_mass"] == pytest.approx(0.6)      # the invalid row is left out
    lo, hi = summary["jsd_digits_ci"]
    assert lo <= summary["jsd_digits"] <= hi
    assert summary["wasserstein_prompts"] == 5 and "tvd_ci" in summary
    bad = probs.copy()
    bad[4, 2] = np.nan
    with pytest.raises(ValueError, match="question q2 .*NaN"):
        scoring.score_probs(bad, es)
    none = np.tile([0, 1.0, 0, 0, 0, 0], (6, 1))
    with pytest.raises(ValueError, match="nothing to score"):
        scoring.readout_summary(scoring.score_probs(none, es), es)


def test_uniform_baseline_and_a_nominal_evalset():
    es = _evalset(ordinal=False)
    assert es.ordinals is None
    uni = es.uniform()
    np.testing.assert_allclose(uni[0], [0, 0, 0.5, 0, 0.5, 0])
    summary = scoring.readout_summary(scoring.score_probs(uni, es), es)
    assert summary["belief_mass"] == pytest.approx(1.0) and "wasserstein" not in summary
    # p* = uniform on the first two questions; (0.2, 0.4, 0.4) vs 1/3 each on the third
    assert summary["jsd"] == pytest.approx(jensenshannon([0.2, 0.4, 0.4], [1 / 3] * 3) / 3)
    assert summary["jsd"] == pytest.approx(summary["jsd_digits"])
    assert summary["entropy"] == pytest.approx((2 * np.log(2) + np.log(3)) / 3)


def test_context_free_baseline_is_the_mean_target_of_training_questions_with_that_belief_set():
    def es(qids, p_star, mask):
        n = len(qids)
        return scoring.EvalSet(prompts=[""] * n, questions=[""] * n, qids=qids, styles=["s"] * n,
                               p_star=np.asarray(p_star, float), mask=np.asarray(mask),
                               labels=[[""] * 3] * n, references=[[""] * 3] * n)

    two, three = [1, 1, 0], [1, 1, 1]
    train = es(["a", "a", "b", "c"],           # question a has two prompts: counted once
               [[0.8, 0.2, 0], [0.8, 0.2, 0], [0.4, 0.6, 0], [0.2, 0.3, 0.5]],
               [two, two, two, three])
    test = es(["x", "y", "z"], [[0.5, 0.5, 0], [0.1, 0.1, 0.8], [0, 0.5, 0.5]],
              [two, three, [0, 1, 1]])
    cf = test.context_free(train)
    np.testing.assert_allclose(cf[0], [0.6, 0.4, 0])            # mean of a and b
    np.testing.assert_allclose(cf[1], [0.2, 0.3, 0.5])          # c alone
    np.testing.assert_allclose(cf[2], [0, 0.5, 0.5])            # no such set trained: uniform
    read = scoring.score_probs(cf, test)
    assert read["jsd"][0] == pytest.approx(jensenshannon([0.6, 0.4], [0.5, 0.5]))
