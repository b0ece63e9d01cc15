"""gdpolib.gpo.predict: alignment scores (metrics.alignment_*, what predict.score reads),
prediction invariances, evaluation plans, the baselines by hand, the LM zero-shot distribution,
GPO's p* in GDPO's belief space."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from gdpolib import embeddings
from gdpolib.schemes import QuestionBeliefs
from gdpolib.embeddings import QuestionItem
from gdpolib.gpo.groups import GroupOpinions, train_mean
from gdpolib.gpo.predict import (RIDGE_ALPHAS, Job, eval_plans, few_shot_p_star, knn_baseline,
                                 lm_option_distributions, predict, ridge_alpha, ridge_baseline,
                                 score, to_beliefs, train_mean_baseline, uniform_baseline)
from gdpolib.metrics.alignment import alignment_js, alignment_scores, alignment_wd
from gdpolib.metrics.distances import jsd_per_prompt


# ---------------------------------------------------------------------------- alignment scores
def test_js_alignment_equals_a_hand_computation():
    p, q = [0.2, 0.3, 0.5], [0.6, 0.1, 0.3]
    m = [0.4, 0.2, 0.4]
    kl_p = 0.2 * math.log(0.2 / 0.4) + 0.3 * math.log(0.3 / 0.2) + 0.5 * math.log(0.5 / 0.4)
    kl_q = 0.6 * math.log(0.6 / 0.4) + 0.1 * math.log(0.1 / 0.2) + 0.3 * math.log(0.3 / 0.4)
    assert m == [(a + b) / 2 for a, b in zip(p, q)]
    hand = 1 - math.sqrt((kl_p + kl_q) / 2)
    assert math.isclose(alignment_js(p, q), hand, rel_tol=1e-12)
    assert math.isclose(alignment_js(p, q), 1 - jensenshannon(p, q), rel_tol=1e-12)
    assert alignment_js(p, p) == 1.0            # never NaN for identical inputs
    assert math.isclose(alignment_js([2, 3, 5], q), alignment_js(p, q))  # renormalised


def test_wd_alignment_equals_a_hand_computation():
    p, q = [0.2, 0.3, 0.5], [0.6, 0.1, 0.3]
    # CDFs at 1, 2: 0.2 / 0.6 and 0.5 / 0.7 -> WD = 0.4 + 0.2 = 0.6; WD_max = 3 - 1 = 2
    assert math.isclose(alignment_wd(p, q, [1, 2, 3]), 1 - 0.6 / 2)
    # non-monotone ordinals ("neither" in the middle): support sorted 1, 1.5, 2 -> p = .2 .5 .3,
    # q = .6 .3 .1; CDF gaps .4 and .2 over steps of .5 -> WD = 0.3; WD_max = 1
    assert math.isclose(alignment_wd(p, q, [1, 2, 1.5]), 1 - 0.3)
    assert math.isclose(alignment_wd(p, q, [1, 2, 1.5]),
                        1 - wasserstein_distance([1, 2, 1.5], [1, 2, 1.5], p, q))
    assert alignment_wd(p, q, [1, 1, 1]) is None        # WD_max = 0: skipped


def test_alignment_scores_micro_and_per_group_and_nan_never_perfect():
    true = {"a": {"q1": np.array([0.5, 0.5]), "q2": np.array([1.0, 0.0])},
            "b": {"q1": np.array([0.2, 0.8])}}
    pred = {"a": {"q1": np.array([0.5, 0.5]), "q2": np.array([0.5, 0.5])},
            "b": {"q1": np.array([0.8, 0.2])}}
    s = alignment_scores(pred, true)
    vals = [1.0, 1 - jensenshannon([0.5, 0.5], [1, 0]), 1 - jensenshannon([0.8, 0.2], [0.2, 0.8])]
    assert math.isclose(s["score"], np.mean(vals))
    assert math.isclose(s["per_group"]["a"], np.mean(vals[:2]))
    assert math.isclose(s["group_mean"], np.mean([np.mean(vals[:2]), vals[2]]))
    assert s["n"] == 3
    bad = {"a": {"q1": np.array([np.nan, 0.5])}, "b": {"q1": np.array([0.8, 0.2])}}
    with pytest.raises(ValueError, match="q1"):
        alignment_scores(bad, true)
    s = alignment_scores(bad, true, on_invalid="exclude")
    assert s["invalid"] == 1 and s["n"] == 1 and math.isclose(s["score"], vals[2])
    wd = alignment_scores(pred, true, ordinals={"q1": np.array([1, 1]), "q2": np.array([1, 2])})
    assert wd["skipped_wd_max0"] == 2 and wd["n"] == 1 and math.isclose(wd["score"], 0.5)


# ---------------------------------------------------------------------------- prediction
def test_prediction_is_invariant_to_the_order_of_context_items(gpo_synthetic_run):
    data, emb, split, res = gpo_synthetic_run
    g = split["test"][0]
    qids = data.qids(g)
    ctx, tar = qids[:12], qids[12:20]
    a = predict(res.model, emb, data, [Job(g, ctx, tar)])[g]
    b = predict(res.model, emb, data, [Job(g, ctx[::-1], tar)])[g]
    c = predict(res.model, emb, data, [Job(g, ctx[5:] + ctx[:5], tar[::-1])])[g]
    for q in tar:
        np.testing.assert_allclose(a[q], b[q], atol=1e-5)
        np.testing.assert_allclose(a[q], c[q], atol=1e-5)
    # one target alone = all targets together (targets are independent given the context)
    d = predict(res.model, emb, data, [Job(g, ctx, tar[:1])])[g]
    np.testing.assert_allclose(a[tar[0]], d[tar[0]], atol=1e-5)
    # targets in pieces of 3 (two groups, one batch) = all at once
    jobs = [Job(g, ctx, tar), Job(split["test"][1], ctx, tar)]
    whole, pieces = predict(res.model, emb, data, jobs), predict(res.model, emb, data, jobs,
                                                                   max_targets=3)
    assert {g: set(p) for g, p in pieces.items()} == {g: set(p) for g, p in whole.items()}
    for grp, by_q in whole.items():
        for q in tar:
            np.testing.assert_allclose(pieces[grp][q], by_q[q], atol=1e-5)


def test_eval_plans_keep_the_same_targets_for_every_k(gpo_synthetic):
    data, _ = gpo_synthetic(n_groups=4, n_q=40)
    plans = eval_plans(data, data.groups, [1, 2, 5, 10, 20, 50], seed=0)
    for p in plans.values():
        assert p.n_ctx_max == 30                   # 40 questions - 10 targets
        tars = {tuple(p.job(k).tar) for k in (1, 5, 20, 50)}
        assert len(tars) == 1
        assert p.context(5) == p.context(20)[:5]   # nested contexts
        assert not set(p.context(50)) & set(p.targets)
    again = eval_plans(data, data.groups[::-1], [50], seed=0)
    assert all(again[g].perm == plans[g].perm for g in plans)   # independent of group order


# ---------------------------------------------------------------------------- baselines
def test_baselines_by_hand():
    items = {q: QuestionItem(q, q, ["a", "b"]) for q in ("c1", "c2", "t")}
    dists = {"new": {"c1": np.array([0.9, 0.1]), "c2": np.array([0.8, 0.2]), "t": np.array([0.7, 0.3])},
             "near": {"c1": np.array([0.85, 0.15]), "c2": np.array([0.8, 0.2]), "t": np.array([0.6, 0.4])},
             "far": {"c1": np.array([0.1, 0.9]), "t": np.array([0.2, 0.8])},
             "none": {"c2": np.array([0.5, 0.5])}}
    data = GroupOpinions("toy", items, dists, {g: g for g in dists})
    job = [Job("new", ["c1", "c2"], ["t"])]
    np.testing.assert_allclose(uniform_baseline(data, job)["new"]["t"], [0.5, 0.5])
    np.testing.assert_allclose(train_mean_baseline(data, ["near", "far", "none"], job)["new"]["t"],
                               [0.4, 0.6])
    np.testing.assert_allclose(knn_baseline(data, ["near", "far", "none"], job)["new"]["t"],
                               [0.6, 0.4])
    # "none" is closest on c2 but never answered t: the next nearest that did lends its answer
    np.testing.assert_allclose(knn_baseline(data, ["far", "none"], job)["new"]["t"], [0.2, 0.8])
    np.testing.assert_allclose(train_mean(data, ["none"], "t"), [0.5, 0.5])   # fallback


def test_ridge_by_hand():
    items = {q: QuestionItem(q, q, ["a", "b"]) for q in ("c1", "c2", "t")}
    a = {"c1": np.array([0.9, 0.1]), "c2": np.array([0.2, 0.8]), "t": np.array([0.7, 0.3])}
    b = {"c1": np.array([0.5, 0.5]), "c2": np.array([0.6, 0.4]), "t": np.array([0.3, 0.7])}
    new = {q: 0.75 * a[q] + 0.25 * b[q] for q in a}          # a mix of the two training groups
    data = GroupOpinions("toy", items, {"a": a, "b": b, "new": new}, {g: g for g in "ab"} | {"new": "new"})
    job = [Job("new", ["c1", "c2"], ["t"])]
    # m = (a + b) / 2; new - m = 0.25 (a - b) = 0.5 d_a, so beta -> (0.5, 0) as alpha -> 0
    # (d_b = -d_a: the minimum-norm mix, beta = (0.25, -0.25), predicts the same)
    np.testing.assert_allclose(ridge_baseline(data, ["a", "b"], job, alpha=1e-9)["new"]["t"],
                               new["t"], atol=1e-6)
    # by hand for alpha = 1: rows of d_a over (c1, c2) options = +-0.2, +-0.2 -> |d_a|^2 = 0.16,
    # the 2 x 2 dual form gives beta_a - beta_b = 0.5 * 0.32 / (0.32 + 1)
    d_t = np.array([0.2, -0.2])                               # d_a on t
    expect = (a["t"] + b["t"]) / 2 + d_t * 0.5 * 0.32 / (0.32 + 1)
    np.testing.assert_allclose(ridge_baseline(data, ["a", "b"], job, alpha=1.0)["new"]["t"],
                               expect, atol=1e-9)
    # a huge penalty shrinks to the meta-train mean; alpha is chosen on validation jobs
    np.testing.assert_allclose(ridge_baseline(data, ["a", "b"], job, alpha=1e9)["new"]["t"],
                               [0.5, 0.5], atol=1e-6)
    assert ridge_alpha(data, ["a", "b"], job) == min(RIDGE_ALPHAS)
    assert ridge_alpha(data, ["a", "b"], []) == max(RIDGE_ALPHAS)
    # floored and renormalised: never a negative share
    far = {"new": {"c1": np.array([1.0, 0.0]), "c2": np.array([0.0, 1.0])}}
    p = ridge_baseline(data, ["a", "b"], job, alpha=1e-9, ctx_dists=far)["new"]["t"]
    assert np.all(p > 0) and math.isclose(p.sum(), 1.0)


def test_ridge_reads_the_context_on_the_synthetic_task(gpo_synthetic):
    data, _ = gpo_synthetic(n_groups=16, n_q=60)
    train, test = data.groups[:12], data.groups[12:]
    jobs = [p.job(10) for p in eval_plans(data, test, [10], seed=0).values()]
    s_ridge = score(data, ridge_baseline(data, train, jobs, alpha=0.01))["score"]
    s_mean = score(data, train_mean_baseline(data, train, jobs))["score"]
    # each group is one of two types: ridge reads it off 10 answers, the mean cannot
    assert s_ridge > 0.99 and s_ridge - s_mean > 0.25


def test_lm_zero_shot_distribution_is_renormalised_over_options(tiny_lm):
    model, tok = tiny_lm()
    items = [QuestionItem("q1", "Is the sky blue?", ["Yes", "No", "Maybe"]),
             QuestionItem("q2", "Is it?", ["Yes", "No"])]
    d = lm_option_distributions(model, tok, items, batch_size=2)
    assert d["q1"].shape == (3,) and d["q2"].shape == (2,)
    for p in d.values():
        assert np.all(p > 0) and math.isclose(p.sum(), 1.0)


def test_prompts_longer_than_the_model_context_are_truncated_on_the_left(tiny_lm):
    model, tok = tiny_lm(n_positions=24)
    tok.padding_side, tok.truncation_side = "right", "right"     # the caller's settings
    items = [QuestionItem("q1", "Is the sky blue? " * 20, ["Yes", "No", "Maybe"])]
    d = lm_option_distributions(model, tok, items)
    assert d["q1"].shape == (3,) and math.isclose(d["q1"].sum(), 1.0)
    assert (tok.padding_side, tok.truncation_side) == ("right", "right")   # restored
    texts = [embeddings.option_prompt(items[0].question, items[0].options, k) for k in range(3)]
    vecs = embeddings.mean_pooled_states(model, tok, texts)
    assert vecs.shape == (3, 16) and np.isfinite(vecs).all()


# ---------------------------------------------------------------------------- few-shot p*
def test_to_beliefs_sums_options_into_beliefs():
    qb = QuestionBeliefs("q", "q", ["a", "b", "c"], np.array([0.5, 0.5, 0, 0, 0, 0]),
                         np.array([1, 1, 0, 0, 0, 0]), ["x", "y", "", "", "", ""], [0, 1, 1])
    np.testing.assert_allclose(to_beliefs(np.array([0.2, 0.3, 0.5]), qb), [0.2, 0.8, 0, 0, 0, 0])


def test_few_shot_p_star_keeps_the_answered_questions_and_predicts_the_rest(gpo_synthetic_run):
    data, emb, split, res = gpo_synthetic_run
    plan = eval_plans(data, split["test"], [5], seed=0)[split["test"][0]]
    g, ctx = plan.group, plan.context(5)
    # GDPO's view of 3 answered and 9 other questions: option o is belief 1 - o ("no" first)
    qids = ctx[:3] + plan.targets[:9]
    questions = [QuestionBeliefs(q, q, ["yes", "no"], np.r_[data.dists[g][q][::-1], [0] * 4],
                                 np.array([1, 1, 0, 0, 0, 0]), ["no", "yes", "", "", "", ""],
                                 [1, 0]) for q in qids]
    pred = predict(res.model, emb, data, [Job(g, ctx, qids[3:-1])])[g]     # one left out
    fs = few_shot_p_star(pred, g, 5, ctx, questions, "gpo")
    assert fs.country == g and fs.k == 5 and fs.context == ctx and fs.method == "gpo"
    for qb in questions:
        if qb.qid in fs.context or qb.qid == qids[-1]:   # answered or not predicted: true p*
            np.testing.assert_array_equal(fs.override[qb.qid], qb.p_star)
            assert qb.qid not in fs.jsd
        else:
            np.testing.assert_allclose(fs.override[qb.qid], np.r_[pred[qb.qid][::-1], [0] * 4],
                                       atol=1e-6)
            expect = jsd_per_prompt(fs.override[qb.qid][None], qb.p_star[None], qb.mask[None])[0]
            assert math.isclose(fs.jsd[qb.qid], expect)
    assert set(fs.jsd) == set(qids[3:-1])
