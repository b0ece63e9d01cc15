"""GPO: mask and padding, per-question softmax, alignment scores, order invariance, meta-training
on a synthetic task with a known answer, group splits (twins), baselines, embeddings cache."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from gdpolib import embeddings, gpo
from gdpolib.embeddings import EmbeddingTable, QuestionItem
from gdpolib.metrics import alignment_js, alignment_scores, alignment_wd


# ---------------------------------------------------------------------------- helpers
def small_model(dim: int = 8, seed: int = 0, prior: bool = False) -> gpo.GPOModel:
    """The paper's model, or (prior=True) the group-prior variant (x's last column = prior)."""
    torch.manual_seed(seed)
    return gpo.GPOModel(dim, deviation_scale=20.0 if prior else None).eval()


def random_batch(dim: int = 8, seed: int = 0) -> gpo.EpisodeBatch:
    """Two episodes: row 0 full (5 context, 6 target tokens = questions of 2, 3, 1 options),
    row 1 padded (3 context, 4 target tokens = questions of 2, 2)."""
    g = torch.Generator().manual_seed(seed)
    B, Nc, Nt = 2, 5, 6
    c_pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    t_pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    seg = torch.tensor([[0, 0, 1, 1, 1, 2], [0, 0, 1, 1, 0, 0]])
    return gpo.EpisodeBatch(torch.randn(B, Nc, dim, generator=g), torch.rand(B, Nc, generator=g),
                            c_pad, torch.randn(B, Nt, dim, generator=g), torch.rand(B, Nt, generator=g),
                            t_pad, seg, n_questions=5)


def perturbed(b: gpo.EpisodeBatch, field: str, index: tuple) -> gpo.EpisodeBatch:
    out = gpo.EpisodeBatch(*(t.clone() for t in (b.xc, b.yc, b.c_pad, b.xt, b.yt, b.t_pad, b.t_seg)),
                           n_questions=b.n_questions)
    getattr(out, field)[index] += 5.0
    return out


# ---------------------------------------------------------------------------- mask and padding
def test_attention_mask_opens_context_columns_only():
    m = gpo.attention_mask(3, 2)
    assert m.shape == (5, 5)
    assert not m[:, :3].any()          # everyone may attend to the context
    assert m[:, 3:].all()              # nobody attends to a target (not even itself)


@pytest.mark.parametrize("prior", [False, True])
def test_targets_see_only_the_context_and_padding_is_ignored(prior):
    model, b = small_model(prior=prior), random_batch()
    with torch.no_grad():
        base = model.head_outputs(b)
        # a target's own x changes its own output only
        out = model.head_outputs(perturbed(b, "xt", (0, 2)))
        changed = (out - base).abs().amax(-1) > 1e-6
        assert changed[0, 2] and changed.sum() == 1
        # a padded context item (x or y) changes nothing
        for field, idx in (("xc", (1, 4)), ("yc", (1, 3))):
            assert torch.allclose(model.head_outputs(perturbed(b, field, idx)), base, atol=1e-6)
        # a padded target changes no real target
        out = model.head_outputs(perturbed(b, "xt", (1, 5)))
        assert torch.allclose(out[~b.t_pad], base[~b.t_pad], atol=1e-6)
        # a target's y is never read
        assert torch.allclose(model.head_outputs(perturbed(b, "yt", (0, 1))), base, atol=1e-6)
        # a real context item changes every target of its row, and no other row
        out = model.head_outputs(perturbed(b, "yc", (0, 1)))
        assert ((out[0] - base[0]).abs().amax(-1) > 1e-6).all()
        assert torch.allclose(out[1], base[1], atol=1e-6)


def test_a_batch_row_without_context_is_an_error():
    b = random_batch()
    b.c_pad[1] = True
    with pytest.raises(ValueError, match="context"):
        small_model().head_outputs(b)


# ---------------------------------------------------------------------------- softmax per question
def test_segment_softmax_sums_to_one_per_question():
    b = random_batch()
    logits = torch.randn(2, 6) * 3
    p = gpo.segment_softmax(logits, b.t_seg, b.t_pad)
    assert torch.all(p[b.t_pad] == 0)
    for row, n_q in ((0, 3), (1, 2)):
        for s in range(n_q):
            sel = (b.t_seg[row] == s) & ~b.t_pad[row]
            assert torch.isclose(p[row, sel].sum(), torch.tensor(1.0), atol=1e-6)
            assert torch.allclose(p[row, sel], torch.softmax(logits[row, sel], 0), atol=1e-6)


@pytest.mark.parametrize("prior", [False, True])
def test_model_output_is_a_distribution_per_question(prior):
    b = random_batch()
    b.xt[..., -1] = b.xt[..., -1].abs()          # the prior variant reads x's last column as a share
    with torch.no_grad():
        mu, sigma = small_model(prior=prior)(b)
    sums = torch.zeros(2, 4).index_put_((torch.arange(2)[:, None].expand(2, 6)[~b.t_pad],
                                         b.t_seg[~b.t_pad]), mu[~b.t_pad], accumulate=True)
    assert torch.allclose(sums[0, :3], torch.ones(3), atol=1e-5)
    assert torch.allclose(sums[1, :2], torch.ones(2), atol=1e-5)
    assert torch.all(sigma >= 0.05)


def test_losses_ignore_padded_targets():
    model, b = small_model(), random_batch()
    for kind in ("gaussian_nll", "kl"):
        with torch.no_grad():
            mu, sigma = model(b)
            base = gpo.gpo_loss(mu, sigma, b, kind)
            b2 = perturbed(b, "yt", (1, 5))           # garbage y on a padded target
            assert torch.isclose(gpo.gpo_loss(mu, sigma, b2, kind), base)


def test_kl_loss_is_the_mean_per_question_kl():
    b = random_batch()
    mu = gpo.segment_softmax(torch.randn(2, 6), b.t_seg, b.t_pad)
    y = gpo.segment_softmax(torch.randn(2, 6), b.t_seg, b.t_pad)
    b.yt = y
    kls = []
    for row, n_q in ((0, 3), (1, 2)):
        for s in range(n_q):
            sel = (b.t_seg[row] == s) & ~b.t_pad[row]
            kls.append(float((y[row, sel] * (y[row, sel] / mu[row, sel]).log()).sum()))
    assert math.isclose(float(gpo.gpo_loss(mu, torch.ones_like(mu), b, "kl")), np.mean(kls),
                        rel_tol=1e-5)


# ---------------------------------------------------------------------------- group prior
def test_prior_model_outputs_the_prior_when_its_residual_is_zero():
    model, b = small_model(prior=True), random_batch()
    prior = torch.rand(2, 6) + 0.05
    b.xt[..., -1] = prior
    with torch.no_grad():
        model.head[-1].weight.zero_()
        model.head[-1].bias.zero_()
        mu, _ = model(b)
    assert torch.allclose(mu, gpo.segment_softmax(prior.log(), b.t_seg, b.t_pad), atol=1e-6)


def test_group_prior_table_holds_the_train_groups_profile_and_mean():
    items = {q: QuestionItem(q, q, ["a", "b"]) for q in ("q1", "q2")}
    dists = {"g1": {"q1": np.array([0.2, 0.8]), "q2": np.array([1.0, 0.0])},
             "g2": {"q1": np.array([0.6, 0.4])},
             "test": {"q1": np.array([0.9, 0.1]), "q2": np.array([0.5, 0.5])}}
    data = gpo.GroupOpinions("t", items, dists, {g: g for g in dists})
    emb = EmbeddingTable(np.arange(8, dtype=np.float32).reshape(4, 2),
                         {"q1": (0, 2), "q2": (2, 2)}, "toy", 2, key="k")
    t = gpo.with_group_prior(emb, data, ["g1", "g2"])
    # columns: x (2), g1 and g2 deviation from the mean, the mean
    np.testing.assert_allclose(t.vectors, [[0, 1, -0.2, 0.2, 0.4], [2, 3, 0.2, -0.2, 0.6],
                                           [4, 5, 0.0, 0.0, 1.0], [6, 7, 0.0, 0.0, 0.0]], atol=1e-6)
    assert t.dim == 5 and t.index == emb.index and t.key != emb.key
    # std of the answered deviations (g2 did not answer q2): 0.2 (q1) and 0 (q2 for g1)
    answered = [-0.2, 0.2, 0.2, -0.2, 0.0, 0.0]
    assert math.isclose(t.deviation_scale, 1 / np.std(answered), rel_tol=1e-5)
    dists["test"]["q1"] = np.array([0.1, 0.9])    # a held-out group's answers are never read
    np.testing.assert_array_equal(gpo.with_group_prior(emb, data, ["g1", "g2"]).vectors, t.vectors)


def test_meta_training_on_a_synthetic_task_with_the_group_prior():
    data, emb = synthetic(n_groups=16, n_q=60)
    split = gpo.split_groups(data, [0.75, 0.125, 0.125], seed=0)
    settings = gpo.GPOSettings(steps=150, lr=1e-3, loss="kl", batch_groups=8, ctx_range=(3, 10),
                               tar_range=(5, 10), eval_every=50, eval_k=5, seed=0,
                               prior="train_groups")
    with pytest.raises(ValueError, match="with_group_prior"):
        gpo.meta_train(data, emb, split["train"], split["val"], settings, progress=False)
    table = gpo.with_group_prior(emb, data, split["train"])
    res = gpo.meta_train(data, table, split["train"], split["val"], settings, progress=False)
    assert res.model.uses_prior and res.model.deviation_scale == table.deviation_scale
    jobs = [p.job(10) for p in gpo.eval_plans(data, split["test"], [10], seed=0).values()]
    s_gpo = gpo.score(data, gpo.predict(res.model, table, data, jobs))["score"]
    s_mean = gpo.score(data, gpo.train_mean_baseline(data, split["train"], jobs))["score"]
    assert s_gpo > s_mean + 0.05, (s_gpo, s_mean)     # the context is read within 150 steps


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


# ---------------------------------------------------------------------------- synthetic task
def synthetic(n_groups: int = 32, n_q: int = 120, dim: int = 12, seed: int = 0):
    """Two-option questions; group g has a type theta_g in {-2, +2}; its share of option 0 on
    question q is sigmoid(w_q + theta_g). x of option o carries +-w_q, so the truth is a
    function of (x, theta) and theta can only be read off the context. (With a multiplicative
    sigmoid(theta w_q) the context-free optimum is exactly uniform, a saddle GPO needs ~500
    steps to leave; this additive task converges in ~350.)"""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=n_q)
    items, rows, index = {}, [], {}
    for i in range(n_q):
        qid = f"q{i}"
        items[qid] = QuestionItem(qid, f"question {i}", ["yes", "no"])
        index[qid] = (2 * i, 2)
        for o, sign in enumerate((1.0, -1.0)):
            rows.append(np.concatenate([[sign * w[i]], np.eye(2)[o], rng.normal(size=dim - 3) * 0.1]))
    emb = EmbeddingTable(np.asarray(rows, np.float32), index, "synthetic", dim)
    theta = {f"g{j}": (2.0 if j % 2 else -2.0) for j in range(n_groups)}
    dists = {}
    for g, t in theta.items():
        p0 = 1 / (1 + np.exp(-(w + t)))
        dists[g] = {f"q{i}": np.array([p0[i], 1 - p0[i]]) for i in range(n_q)}
    data = gpo.GroupOpinions("synthetic", items, dists, {g: g for g in dists})
    return data, emb


@pytest.fixture(scope="module")
def synthetic_run():
    data, emb = synthetic()
    split = gpo.split_groups(data, [0.75, 0.125, 0.125], seed=0)
    settings = gpo.GPOSettings(steps=400, lr=1e-3, loss="kl", batch_groups=8, ctx_range=(3, 10),
                               tar_range=(5, 10), eval_every=50, eval_k=5, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny matrices: threads only add overhead (and spin on a busy CPU)
    try:
        res = gpo.meta_train(data, emb, split["train"], split["val"], settings, progress=False)
    finally:
        torch.set_num_threads(threads)
    return data, emb, split, res


def test_meta_training_converges_on_a_synthetic_task(synthetic_run):
    data, emb, split, res = synthetic_run
    losses = [h["loss"] for h in res.history]
    assert np.mean(losses[-25:]) < 0.5 * np.mean(losses[:25])
    plans = gpo.eval_plans(data, split["test"], [10], seed=0)
    jobs = [p.job(10) for p in plans.values()]
    s_gpo = gpo.score(data, gpo.predict(res.model, emb, data, jobs))["score"]
    s_mean = gpo.score(data, gpo.train_mean_baseline(data, split["train"], jobs))["score"]
    assert s_gpo > 0.93, s_gpo                   # close to the truth (1.0)
    assert s_gpo > s_mean + 0.1                   # the context is used: the mean cannot know theta
    assert res.best_step > 0 and "val_score" in res.history[res.best_step - 1]


def test_prediction_is_invariant_to_the_order_of_context_items(synthetic_run):
    data, emb, split, res = synthetic_run
    g = split["test"][0]
    qids = data.qids(g)
    ctx, tar = qids[:12], qids[12:20]
    a = gpo.predict(res.model, emb, data, [gpo.Job(g, ctx, tar)])[g]
    b = gpo.predict(res.model, emb, data, [gpo.Job(g, ctx[::-1], tar)])[g]
    c = gpo.predict(res.model, emb, data, [gpo.Job(g, ctx[5:] + ctx[:5], tar[::-1])])[g]
    for q in tar:
        np.testing.assert_allclose(a[q], b[q], atol=1e-5)
        np.testing.assert_allclose(a[q], c[q], atol=1e-5)
    # one target alone = all targets together (targets are independent given the context)
    d = gpo.predict(res.model, emb, data, [gpo.Job(g, ctx, tar[:1])])[g]
    np.testing.assert_allclose(a[tar[0]], d[tar[0]], atol=1e-5)


def test_episodes_follow_the_seed_and_are_reproducible():
    data, emb = synthetic(n_groups=8, n_q=40)
    groups = data.groups
    run = lambda seed: [h["loss"] for h in gpo.meta_train(
        data, emb, groups, [], gpo.GPOSettings(steps=3, batch_groups=4, ctx_range=(2, 5),
                                               tar_range=(2, 5), seed=seed), progress=False).history]
    assert run(0) == run(0)
    assert run(0) != run(1)          # bug 7.2.6: episodes must change with the seed


def test_save_and_load_give_the_same_predictions(tmp_path, synthetic_run):
    data, emb, split, res = synthetic_run
    gpo.save_model(res.model, tmp_path / "gpo.pt")
    again = gpo.load_model(tmp_path / "gpo.pt")
    g = split["test"][0]
    job = [gpo.Job(g, data.qids(g)[:5], data.qids(g)[5:9])]
    a, b = gpo.predict(res.model, emb, data, job)[g], gpo.predict(again, emb, data, job)[g]
    for q in a:
        np.testing.assert_allclose(a[q], b[q], atol=1e-6)


# ---------------------------------------------------------------------------- episodes and plans
def test_episode_sampling_is_disjoint_by_question():
    rng = np.random.default_rng(0)
    qids = [f"q{i}" for i in range(30)]
    for _ in range(50):
        n_ctx, n_tar = gpo.sample_sizes(rng, 30, (1, 25), (5, 20))
        assert 1 <= n_ctx <= 25 and 5 <= n_tar <= 20 and n_ctx + n_tar <= 30
        ctx, tar = gpo.sample_episode(rng, qids, n_ctx, n_tar)
        assert len(ctx) == n_ctx and len(tar) == n_tar and not set(ctx) & set(tar)


def test_eval_plans_keep_the_same_targets_for_every_k():
    data, _ = synthetic(n_groups=4, n_q=40)
    plans = gpo.eval_plans(data, data.groups, [1, 2, 5, 10, 20, 50], seed=0)
    for p in plans.values():
        assert p.n_ctx_max == 30                   # 40 questions - 10 targets
        tars = {tuple(p.job(k).tar) for k in (1, 5, 20, 50)}
        assert len(tars) == 1
        assert p.context(5) == p.context(20)[:5]   # nested contexts
        assert not set(p.context(50)) & set(p.targets)
    again = gpo.eval_plans(data, data.groups[::-1], [50], seed=0)
    assert all(again[g].perm == plans[g].perm for g in plans)   # independent of group order


# ---------------------------------------------------------------------------- groups and splits
def test_country_family_keeps_twins_together():
    assert gpo.country_family("S. Africa (Non-national sample)") == "S. Africa"
    assert gpo.country_family("India (Old national sample)") == "India"
    assert gpo.country_family("India (Current national sample)") == "India"
    assert gpo.country_family("Great Britain") == gpo.country_family("Britain")


@pytest.fixture(scope="module")
def goqa_groups(goqa_csv):
    from gdpolib.data.goqa import load_goqa

    return gpo.from_goqa(load_goqa(goqa_csv), min_questions=20)


def test_twin_countries_are_never_split_apart(goqa_groups):
    data = goqa_groups
    twins = [g for g in data.groups if "(" in g]
    assert len(twins) >= 5                          # real twins exist at this threshold
    for seed in range(10):
        split = gpo.split_groups(data, [0.6, 0.2, 0.2], seed, holdout=["S. Africa"])
        where = {g: s for s, gs in split.items() for g in gs}
        assert sorted(where) == data.groups
        for g in data.groups:
            same = [h for h in data.groups if data.family[h] == data.family[g]]
            assert {where[h] for h in same} == {where[g]}, (seed, g)
        assert where["S. Africa"] == "test"
        assert where["S. Africa (Non-national sample)"] == "test"
        assert split["train"] and split["val"]
    assert gpo.split_groups(data, [0.6, 0.2, 0.2], 1) != gpo.split_groups(data, [0.6, 0.2, 0.2], 2)


def test_from_goqa_filters_per_country():
    from gdpolib.data.goqa import GoqaData, GoqaQuestion, LoadReport

    qs = [GoqaQuestion(f"goqa-{i}", f"q{i}", ["a", "b"], "GAS",
                       {"X": np.array([0.3, 0.7]), "Y": np.array([0.0, 0.0]),
                        **({"Z": np.array([1.0, 0.0])} if i < 2 else {})}) for i in range(3)]
    qs.append(GoqaQuestion("goqa-9", "q9", ["a", "b", "c"], "GAS", {"X": np.array([1.0, 0.0])}))
    data = gpo.from_goqa(GoqaData(qs, ["X", "Y", "Z"], LoadReport()), min_questions=2)
    assert data.groups == ["X", "Z"]                 # Y all-zero everywhere; Z has 2
    assert sorted(data.dists["X"]) == ["goqa-0", "goqa-1", "goqa-2"]   # bad length dropped
    assert sorted(data.items) == ["goqa-0", "goqa-1", "goqa-2"]


# ---------------------------------------------------------------------------- baselines
def test_baselines_by_hand():
    items = {q: QuestionItem(q, q, ["a", "b"]) for q in ("c1", "c2", "t")}
    dists = {"new": {"c1": np.array([0.9, 0.1]), "c2": np.array([0.8, 0.2]), "t": np.array([0.7, 0.3])},
             "near": {"c1": np.array([0.85, 0.15]), "c2": np.array([0.8, 0.2]), "t": np.array([0.6, 0.4])},
             "far": {"c1": np.array([0.1, 0.9]), "t": np.array([0.2, 0.8])},
             "none": {"c2": np.array([0.5, 0.5])}}
    data = gpo.GroupOpinions("toy", items, dists, {g: g for g in dists})
    job = [gpo.Job("new", ["c1", "c2"], ["t"])]
    np.testing.assert_allclose(gpo.uniform_baseline(data, job)["new"]["t"], [0.5, 0.5])
    np.testing.assert_allclose(gpo.train_mean_baseline(data, ["near", "far", "none"], job)["new"]["t"],
                               [0.4, 0.6])
    np.testing.assert_allclose(gpo.knn_baseline(data, ["near", "far", "none"], job)["new"]["t"],
                               [0.6, 0.4])
    # "none" is closest on c2 but never answered t: the next nearest that did lends its answer
    np.testing.assert_allclose(gpo.knn_baseline(data, ["far", "none"], job)["new"]["t"], [0.2, 0.8])
    np.testing.assert_allclose(gpo.train_mean(data, ["none"], "t"), [0.5, 0.5])   # fallback


# ---------------------------------------------------------------------------- embeddings
def _tiny_lm(n_positions: int = 256):
    from transformers import GPT2Config, GPT2LMHeadModel

    from gdpolib.models import train_bpe_tokenizer

    texts = [embeddings.option_prompt("Is the sky blue?", ["Yes", "No", "Maybe"], k) for k in range(3)]
    tok = train_bpe_tokenizer(texts * 5 + list("ABCDEFGH"), vocab_size=300)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=n_positions, n_embd=16, n_layer=2,
                                       n_head=2)).eval()
    return model, tok


def test_lm_embeddings_are_masked_mean_pools_and_cached(tmp_path):
    model, tok = _tiny_lm()
    items = [QuestionItem("q1", "Is the sky blue?", ["Yes", "No", "Maybe"]),
             QuestionItem("q2", "Is it raining today in the city?", ["Yes", "No"])]
    table = embeddings.embed_questions(items, "tiny-test", directory=tmp_path, model=model,
                                       tokenizer=tok, batch_size=5)
    assert table.vectors.shape == (5, 16) and table.index == {"q1": (0, 3), "q2": (3, 2)}
    # one text alone (no padding) = the same text in a padded batch (up to float16 storage)
    text = embeddings.option_prompt("Is the sky blue?", ["Yes", "No", "Maybe"], 1)
    alone = embeddings.mean_pooled_states(model, tok, [text])[0]
    np.testing.assert_allclose(table.rows("q1")[1], alone, atol=2e-3)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    again = embeddings.embed_questions(items, "tiny-test", directory=tmp_path, model=model,
                                       tokenizer=tok)
    assert again.key == table.key and len(list(tmp_path.glob("*.npy"))) == 1   # re-used
    items[1] = QuestionItem("q2", "Is it raining?", ["Yes", "No"])
    embeddings.embed_questions(items, "tiny-test", directory=tmp_path, model=model, tokenizer=tok)
    assert len(list(tmp_path.glob("*.npy"))) == 2                               # recomputed


def test_sentence_embeddings_cache_is_reused(tmp_path, monkeypatch):
    calls = []

    class FakeEncoder:
        def encode(self, texts, **kw):
            calls.append(len(texts))
            return np.stack([np.full(4, len(t), np.float32) for t in texts])

    monkeypatch.setattr(embeddings, "load_sentence_encoder", lambda name, device=None: FakeEncoder())
    items = [QuestionItem("q1", "Q one?", ["Yes", "No"]), QuestionItem("q2", "Q two?", ["Yes", "No"])]
    t = embeddings.embed_questions(items, "minilm", directory=tmp_path)
    assert t.dim == 8 and t.vectors.shape == (4, 8)
    assert calls == [4]            # 2 unique questions + 2 unique answers ("A. Yes", "B. No")
    embeddings.embed_questions(items, "minilm", directory=tmp_path)
    assert calls == [4]            # cached
    np.testing.assert_allclose(t.rows("q1")[:, 0], [6, 6])     # question part
    np.testing.assert_allclose(t.rows("q1")[:, 4], [6, 5])     # "A. Yes", "B. No"


def test_lm_zero_shot_distribution_is_renormalised_over_options():
    model, tok = _tiny_lm()
    items = [QuestionItem("q1", "Is the sky blue?", ["Yes", "No", "Maybe"]),
             QuestionItem("q2", "Is it?", ["Yes", "No"])]
    d = gpo.lm_option_distributions(model, tok, items, batch_size=2)
    assert d["q1"].shape == (3,) and d["q2"].shape == (2,)
    for p in d.values():
        assert np.all(p > 0) and math.isclose(p.sum(), 1.0)


def test_prompts_longer_than_the_model_context_are_truncated_on_the_left():
    model, tok = _tiny_lm(n_positions=24)
    items = [QuestionItem("q1", "Is the sky blue? " * 20, ["Yes", "No", "Maybe"])]
    d = gpo.lm_option_distributions(model, tok, items)
    assert d["q1"].shape == (3,) and math.isclose(d["q1"].sum(), 1.0)
    texts = [embeddings.option_prompt(items[0].question, items[0].options, k) for k in range(3)]
    vecs = embeddings.mean_pooled_states(model, tok, texts)
    assert vecs.shape == (3, 16) and np.isfinite(vecs).all()


def test_to_beliefs_sums_options_into_beliefs():
    from gdpolib.beliefs import QuestionBeliefs

    qb = QuestionBeliefs("q", "q", ["a", "b", "c"], np.array([0.5, 0.5, 0, 0, 0, 0]),
                         np.array([1, 1, 0, 0, 0, 0]), ["x", "y", "", "", "", ""], [0, 1, 1])
    np.testing.assert_allclose(gpo.to_beliefs(np.array([0.2, 0.3, 0.5]), qb), [0.2, 0.8, 0, 0, 0, 0])
