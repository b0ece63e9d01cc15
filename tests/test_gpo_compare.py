"""gdpolib.gpo.compare: per-pair scores (the same numbers as predict.score) and the seed table
(mean and sd over seeds, bootstrap interval, paired gain, share of groups beaten), by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gdpolib.gpo.compare import pair_scores, seed_table_text, summarise
from gdpolib.gpo.predict import eval_plans, score, train_mean_baseline, uniform_baseline


def test_pair_scores_are_the_alignment_score_pair_by_pair(gpo_synthetic):
    data, _ = gpo_synthetic(n_groups=6, n_q=30)
    jobs = [p.job(5) for p in eval_plans(data, data.groups[:3], [5], seed=0).values()]
    for preds in (uniform_baseline(data, jobs), train_mean_baseline(data, data.groups[3:], jobs)):
        pairs = pair_scores(data, preds)
        s = score(data, preds)
        assert len(pairs) == s["n"] == sum(len(j.tar) for j in jobs)
        assert math.isclose(pairs.score.mean(), s["score"], rel_tol=1e-12)
        for g, v in pairs.groupby("group").score.mean().items():
            assert math.isclose(v, s["per_group"][g], rel_tol=1e-12)


def _pairs(rows):
    """rows: (seed, group, method, [scores of its questions])."""
    out = [{"seed": s, "k": 5, "method": m, "group": g, "qid": f"q{i}", "score": v}
           for s, g, m, vals in rows for i, v in enumerate(vals)]
    return pd.DataFrame(out)


def test_seed_table_by_hand():
    pairs = _pairs([
        (0, "a", "gpo", [0.9, 0.7]), (0, "b", "gpo", [0.6]),
        (0, "a", "train_mean", [0.8, 0.8]), (0, "b", "train_mean", [0.7]),
        (1, "c", "gpo", [0.5, 0.9]), (1, "d", "gpo", [0.8]),
        (1, "c", "train_mean", [0.6, 0.6]), (1, "d", "train_mean", [0.7]),
    ])
    t = summarise(pairs, n_boot=200, seed=0).set_index("method")
    gpo_seed = [(0.9 + 0.7 + 0.6) / 3, (0.5 + 0.9 + 0.8) / 3]     # micro means per seed
    mean_seed = [(0.8 + 0.8 + 0.7) / 3, (0.6 + 0.6 + 0.7) / 3]
    assert math.isclose(t.loc["gpo", "mean"], np.mean(gpo_seed))
    assert math.isclose(t.loc["gpo", "sd"], np.std(gpo_seed, ddof=1))
    assert math.isclose(t.loc["gpo", "gain"], np.mean(gpo_seed) - np.mean(mean_seed))
    # group means vs the mean's: a 0.8 = 0.8 (not above), b 0.6 < 0.7, c 0.7 > 0.6, d 0.8 > 0.7
    assert t.loc["gpo", "beats"] == 0.5 and t.loc["gpo", "groups"] == 4
    assert t.loc["train_mean", "gain"] == 0 and t.loc["train_mean", "beats"] == 0
    assert t.loc["gpo", "ci_lo"] <= t.loc["gpo", "mean"] <= t.loc["gpo", "ci_hi"]
    assert t.loc["gpo", "gain_lo"] <= t.loc["gpo", "gain"] <= t.loc["gpo", "gain_hi"]
    assert t.loc["gpo", "seeds"] == 2 and t.loc["gpo", "pairs"] == 6
    # per-group totals give the same table as the pairs
    totals = pairs.groupby(["seed", "k", "method", "group"]).score.agg(["sum", "count"]).reset_index()
    pd.testing.assert_frame_equal(summarise(totals, n_boot=200, seed=0), summarise(pairs, n_boot=200,
                                                                                   seed=0))
    text = seed_table_text(summarise(pairs, n_boot=200, seed=0), methods=["gpo", "train_mean"])
    assert list(text.index) == ["gpo", "train_mean"] and text.loc["gpo", "k=5"].startswith("0.733 ± ")


def test_a_method_that_always_equals_the_baseline_has_a_zero_interval():
    pairs = _pairs([(s, g, m, [0.1 * s + 0.5, 0.7]) for s in (0, 1, 2) for g in "abc"
                    for m in ("gpo", "train_mean")])
    t = summarise(pairs, n_boot=100).set_index("method")
    assert t.loc["gpo", "gain_lo"] == t.loc["gpo", "gain_hi"] == 0 and t.loc["gpo", "beats"] == 0


def test_seed_table_needs_the_baseline_and_the_same_groups():
    pairs = _pairs([(0, "a", "gpo", [0.5])])
    with pytest.raises(ValueError, match="baseline 'train_mean'"):
        summarise(pairs)
    pairs = _pairs([(0, "a", "gpo", [0.5]), (0, "b", "train_mean", [0.5])])
    with pytest.raises(ValueError, match="lacks groups"):
        summarise(pairs)


def test_study_results_are_self_describing_json(tmp_path):
    import json
    import math

    import torch

    from gdpolib.gpo.results import provenance, write_results

    record = provenance(["scripts/gpo_planted.py", "--out", "x y.json"])
    path = write_results(tmp_path / "r" / "x.json", "demo", "what it measured",
                         {"score": np.float64(0.5), "gap": math.nan, "pair": (1, 2)}, record)
    body = json.loads(path.read_text())
    assert body["command"] == "python scripts/gpo_planted.py --out 'x y.json'"
    assert body["study"] == "demo" and body["description"] == "what it measured"
    assert body["torch_threads"] == torch.get_num_threads()
    assert body["environment"]["git_commit"] == record["environment"]["git_commit"]
    assert body["date"] <= body["finished"]
    assert (body["score"], body["gap"], body["pair"]) == (0.5, None, [1, 2])   # NaN -> null
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]                # no temp file
