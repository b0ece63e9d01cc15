"""gdpolib.gpo.episodes: episode tokens and their padding into a batch, seeded sampling of
disjoint context and target questions."""
from __future__ import annotations

import numpy as np
import pytest

from gdpolib.gpo.episodes import (collate, make_episode, sample_batch, sample_episode,
                                  sample_sizes)


def test_episodes_are_tokens_per_option_padded_into_a_batch(gpo_synthetic):
    data, emb = gpo_synthetic(n_groups=2, n_q=10)          # two options per question, d = 12
    a = make_episode(emb, data.dists["g0"], ["q0", "q1", "q2"], ["q3", "q4"])
    b = make_episode(emb, data.dists["g1"], ["q5"], ["q6"])
    batch = collate([a, b])
    assert batch.xc.shape == (2, 6, 12) and batch.xt.shape == (2, 4, 12)
    assert batch.c_pad.tolist() == [[False] * 6, [False] * 2 + [True] * 4]
    assert batch.t_pad.tolist() == [[False] * 4, [False] * 2 + [True] * 2]
    assert batch.t_seg.tolist() == [[0, 0, 1, 1], [0, 0, 0, 0]]
    assert batch.n_questions == 3
    np.testing.assert_allclose(batch.yc[0].numpy(),
                               np.concatenate([data.dists["g0"][q] for q in ("q0", "q1", "q2")]),
                               rtol=1e-6)
    np.testing.assert_array_equal(batch.xt[1, :2].numpy(), emb.rows("q6"))
    assert (batch.yc[1, 2:] == 0).all() and (batch.xt[1, 2:] == 0).all()
    # prediction: the targets' y is unknown (0); the context's comes from ctx_dists
    e = make_episode(emb, None, ["q0"], ["q1"], ctx_dists=data.dists["g0"])
    assert (e.yt == 0).all() and e.yc.tolist() == data.dists["g0"]["q0"].tolist()
    with pytest.raises(ValueError, match="context"):
        make_episode(emb, data.dists["g0"], [], ["q1"])


def test_episode_sampling_is_disjoint_by_question():
    rng = np.random.default_rng(0)
    qids = [f"q{i}" for i in range(30)]
    for _ in range(50):
        n_ctx, n_tar = sample_sizes(rng, 30, (1, 25), (5, 20))
        assert 1 <= n_ctx <= 25 and 5 <= n_tar <= 20 and n_ctx + n_tar <= 30
        ctx, tar = sample_episode(rng, qids, n_ctx, n_tar)
        assert len(ctx) == n_ctx and len(tar) == n_tar and not set(ctx) & set(tar)


def test_batches_draw_questions_per_group_or_shared_by_the_whole_batch():
    qids = {"a": [f"q{i}" for i in range(30)], "b": [f"q{i}" for i in range(10, 40)],
            "c": [f"q{i}" for i in range(5, 60)]}
    groups = ["a", "b", "c"]
    # per_group: the draws of one size pair, then each group its own permutation (as before)
    rng, ref = np.random.default_rng(0), np.random.default_rng(0)
    draws = sample_batch(rng, qids, groups, (2, 8), (3, 6), "per_group")
    n_ctx, n_tar = sample_sizes(ref, 30, (2, 8), (3, 6))
    assert draws == [sample_episode(ref, qids[g], n_ctx, n_tar) for g in groups]
    # shared: one draw from the questions every group answered, for every group
    for seed in range(20):
        ctx, tar = sample_batch(np.random.default_rng(seed), qids, groups, (2, 8), (3, 6),
                                "shared")[0]
        shared = sample_batch(np.random.default_rng(seed), qids, groups, (2, 8), (3, 6), "shared")
        assert all(d == (ctx, tar) for d in shared) and len(shared) == 3
        assert set(ctx + tar) <= {f"q{i}" for i in range(10, 30)} and not set(ctx) & set(tar)
    with pytest.raises(ValueError, match="answered 20 questions in common, fewer than 16 context "
                                         r"\+ 5 target"):
        sample_batch(np.random.default_rng(0), qids, groups, (16, 20), (5, 6), "shared")
    with pytest.raises(ValueError, match="unknown GPO episodes"):
        sample_batch(np.random.default_rng(0), qids, groups, (2, 8), (3, 6), "official")
