"""gdpolib.gpo.meta_train: settings from the run config, meta-training on a synthetic task with
a known answer (the paper's model and the group prior), seeded episodes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from gdpolib.config import ConfigError, load_config
from gdpolib.gpo.groups import split_groups, with_group_prior
from gdpolib.gpo.meta_train import GPOSettings, meta_train
from gdpolib.gpo.predict import eval_plans, predict, score, train_mean_baseline


def test_settings_are_the_run_configs_gpo_parameters():
    cfg = load_config(overrides={"gpo_steps": 7, "gpo_ctx_range": [2, 4], "seed": 3,
                                 "gpo_init": "torch", "gpo_k": 3, "gpo_k_values": [2, 4],
                                 "gpo_episodes": "shared"})
    s = GPOSettings.from_config(cfg)
    assert dataclasses.asdict(s) == {
        "steps": 7, "lr": cfg.gpo_lr, "loss": cfg.gpo_loss, "batch_groups": cfg.gpo_batch_groups,
        "ctx_range": (2, 4), "tar_range": tuple(cfg.gpo_tar_range), "episodes": "shared",
        "eval_every": cfg.gpo_eval_every, "eval_k": 3, "seed": 3, "init": "torch"}
    assert load_config().gpo_loss == "gaussian_nll"          # the paper's loss by default
    with pytest.raises(TypeError):
        GPOSettings(steps=7)                       # no defaults of its own
    with pytest.raises(ConfigError, match="gpo_tar_range"):
        GPOSettings.from_config(load_config(overrides={"gpo_tar_range": [9, 3]}))


@pytest.mark.parametrize("overrides, name, bad", [
    ({"gpo_k_values": [1, 5, 50]}, "gpo_k_values", "k = 50"),
    ({"gpo_ctx_range": [10, 100]}, "gpo_k_values", "k = 1, 5"),      # the default curve
    ({"gpo_ctx_range": [1, 10], "gpo_k_values": [1, 5]}, "gpo_k", "k = 20")])
def test_a_k_outside_the_training_context_range_is_refused(overrides, name, bad):
    """Scored outside the episodes' context range, GPO pays for the range, not for what the
    context says: the configuration refuses such a k before anything runs."""
    ctx = overrides.get("gpo_ctx_range", [1, 30])
    with pytest.raises(ConfigError, match=rf"parameter '{name}' from [^:]+: {bad} outside the "
                                          rf"training context range gpo_ctx_range \{ctx}"):
        load_config(overrides=overrides)
    assert load_config(overrides={"gpo_ctx_range": [10, 100], "gpo_k_values": [10, 20, 100]})


def test_meta_training_converges_on_a_synthetic_task(gpo_synthetic_run):
    data, emb, split, res = gpo_synthetic_run
    losses = [h["loss"] for h in res.history]
    assert np.mean(losses[-25:]) < 0.5 * np.mean(losses[:25])
    plans = eval_plans(data, split["test"], [10], seed=0)
    jobs = [p.job(10) for p in plans.values()]
    s_gpo = score(data, predict(res.model, emb, data, jobs))["score"]
    s_mean = score(data, train_mean_baseline(data, split["train"], jobs))["score"]
    assert s_gpo > 0.93, s_gpo                   # close to the truth (1.0)
    assert s_gpo > s_mean + 0.1                   # the context is used: the mean cannot know theta
    assert res.best_step > 0 and "val_score" in res.history[res.best_step - 1]
    assert not res.model.uses_prior               # a plain table: the paper's model


def leaves_the_mean(gpo_synthetic, prior: bool, seed: int, threads: int, steps: int = 100):
    """(GPO's test score, the meta-train mean's) after `steps` steps on the synthetic task whose
    truth needs the context (a group's type can only be read off its answers)."""
    data, emb = gpo_synthetic(n_groups=16, n_q=60)
    split = split_groups(data, [0.75, 0.125, 0.125], seed=0)
    table = with_group_prior(emb, data, split["train"]) if prior else emb
    settings = GPOSettings(steps=steps, lr=1e-3, loss="kl", batch_groups=8, ctx_range=(3, 10),
                           tar_range=(5, 10), episodes="per_group", eval_every=50, eval_k=5,
                           seed=seed, init="answer")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        res = meta_train(data, table, split["train"], split["val"], settings, progress=False)
    finally:
        torch.set_num_threads(before)
    assert res.model.uses_prior == prior           # the table's type alone decides the variant
    jobs = [p.job(10) for p in eval_plans(data, split["test"], [10], seed=0).values()]
    return (score(data, predict(res.model, table, data, jobs))["score"],
            score(data, train_mean_baseline(data, split["train"], jobs))["score"])


@pytest.mark.parametrize("prior", [False, True], ids=["paper", "group_prior"])
def test_meta_training_leaves_the_mean_for_most_seeds(gpo_synthetic, prior):
    """Robust to the machine's float path: with PyTorch's default init, whether training left
    the mean depended on rounding (the same seed did on one CPU and not on another); with our
    init every seed of 5 did, on 1 and 2 threads (the slow test). Here: a majority of 3 seeds
    within 100 steps, on one thread."""
    scores = [leaves_the_mean(gpo_synthetic, prior, seed, threads=1) for seed in range(3)]
    assert sum(g > m + 0.1 for g, m in scores) >= 2, scores


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("prior", [False, True], ids=["paper", "group_prior"])
def test_meta_training_leaves_the_mean_for_every_seed_and_thread_count(gpo_synthetic, prior,
                                                                       threads):
    scores = [leaves_the_mean(gpo_synthetic, prior, seed, threads, steps=150) for seed in range(5)]
    assert all(g > m + 0.1 for g, m in scores), scores


def test_on_eval_gets_every_validation(gpo_synthetic):
    data, emb = gpo_synthetic(n_groups=8, n_q=40)
    split = split_groups(data, [0.75, 0.125, 0.125], seed=0)
    settings = GPOSettings(steps=5, lr=1e-3, loss="gaussian_nll", batch_groups=4,
                           ctx_range=(2, 5), tar_range=(2, 5), episodes="per_group",
                           eval_every=2, eval_k=3, seed=0, init="answer")
    calls, probed = [], []

    def probe(step, model):
        assert not model.training                                # scored in eval mode
        probed.append(step)
        return {"probe": float(step)}

    res = meta_train(data, emb, split["train"], split["val"], settings, progress=False,
                     on_eval=lambda step, values: calls.append((step, values)), probe=probe)
    assert [c[0] for c in calls] == probed == [2, 4, 5]        # every eval_every and the last
    for step, values in calls:
        row = res.history[step - 1]
        assert values == {"loss": row["loss"], "val_score": row["val_score"], "lr": row["lr"]}
        assert row["probe"] == step                            # the probe's numbers join the row


def test_episodes_follow_the_seed_and_are_reproducible(gpo_synthetic):
    data, emb = gpo_synthetic(n_groups=8, n_q=40)
    groups = data.groups

    def run(seed: int) -> list[float]:
        cfg = load_config(overrides={"gpo_steps": 3, "gpo_batch_groups": 4, "gpo_ctx_range": [2, 5],
                                     "gpo_tar_range": [2, 5], "gpo_loss": "gaussian_nll",
                                     "gpo_k": 5, "gpo_k_values": [2, 5], "seed": seed})
        res = meta_train(data, emb, groups, [], GPOSettings.from_config(cfg), progress=False)
        return [h["loss"] for h in res.history]

    assert run(0) == run(0)
    assert run(0) != run(1)          # episodes must change with the seed (docs/deviations.md)
