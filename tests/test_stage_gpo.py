"""gdpolib.stages.gpo (notebook 05's steps): run_gpo on the real GlobalOpinionQA file with each
`gpo_prior` setting, the seed table's pairs, and the tables, k curve, metrics and plot frames of
an experiment."""
from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from gdpolib.config import load_config
from gdpolib.gpo.compare import summarise
from gdpolib.gpo.groups import GroupPriorTable
from gdpolib.gpo.meta_train import GPOSettings
from gdpolib.gpo.experiment import predictions
from gdpolib.gpo.predict import eval_plans, score
from gdpolib.runs import Run
from gdpolib.stages.gpo import (GPOExperiment, TrainedGPO, alignment_table, k_curve,
                                method_predictions, predicted_vs_true, record, run_gpo,
                                save_results, seed_pairs, validated)


@pytest.mark.parametrize("prior", ["none", "train_groups"])
def test_run_gpo_on_real_data_builds_the_models_its_prior_setting_asks_for(tmp_path, goqa_csv,
                                                                          prior):
    cfg = load_config(overrides={"output_root": str(tmp_path), "goqa_path": str(goqa_csv),
                                 "gpo_steps": 2, "gpo_prior": prior})
    run = Run.open(cfg)
    exp = run_gpo(cfg, run, "goqa", progress=False)
    with_prior = prior == "train_groups"
    assert sorted(exp.gpos) == (["gpo", "gpo_prior"] if with_prior else ["gpo"])
    paper = exp.gpos["gpo"]                  # the paper's model: a plain table, the paper's loss
    assert not isinstance(paper.emb, GroupPriorTable) and not paper.model.uses_prior
    assert paper.info["settings"]["loss"] == "gaussian_nll" and not paper.info["group_prior"]
    if with_prior:
        ours = exp.gpos["gpo_prior"]
        assert isinstance(ours.emb, GroupPriorTable) and ours.model.uses_prior
        assert ours.info["group_prior"] and ours.emb.key.startswith(exp.emb.key)
    # the run's country (and any other sample of it) is held out; the plans are the test groups'
    assert "S. Africa" in exp.split["test"]
    assert all(exp.data.family[g] != "S. Africa" for g in exp.split["train"] + exp.split["val"])
    assert sorted(exp.plans) == exp.split["test"]
    assert paper.info["settings"] == json.loads(json.dumps(asdict(GPOSettings.from_config(cfg))))
    assert [h["step"] for h in paper.history] == [1, 2]
    assert set(exp.val_scores) == set(exp.gpos) | {"ridge", "knn", "train_mean"}
    assert exp.best == max(exp.val_scores, key=exp.val_scores.get)
    again = run_gpo(cfg, run, "goqa", progress=False)      # the cached stages are reused
    assert {m: g.info for m, g in again.gpos.items()} == {m: g.info for m, g in exp.gpos.items()}


def test_seed_pairs_give_every_method_at_every_k_for_each_seed(tmp_path, goqa_csv):
    cfg = load_config(overrides={"output_root": str(tmp_path), "goqa_path": str(goqa_csv),
                                 "gpo_steps": 2, "gpo_eval_every": 1, "gpo_zero_shot_lm": "none",
                                 "gpo_prior": "train_groups"})
    run = Run.open(cfg)
    calls = []
    run_gpo(cfg, run, "goqa", progress=False, on_eval=lambda step, v: calls.append((step, v)))
    assert [c[0] for c in calls] == [1, 2, 1, 2]               # two models, two validations each
    assert set(calls[0][1]) == {"gpo_goqa_seed0/loss", "gpo_goqa_seed0/val_score",
                                "gpo_goqa_seed0/lr"}
    pairs = seed_pairs(cfg, run, "goqa", [0, 1], [1, 20], progress=False)
    assert set(pairs.method) == {"gpo", "gpo_prior", "ridge", "knn", "train_mean", "uniform"}
    assert set(pairs.seed) == {0, 1} and set(pairs.k) == {1, 20}
    gpo_rows = pairs.method.str.startswith("gpo")      # the selected step beside each GPO score
    assert pairs[gpo_rows].step.between(1, 2).all() and pairs[~gpo_rows].step.isna().all()
    # every method is scored on the same (seed, k, group, question) pairs; seeds split differently
    keys = {m: set(map(tuple, f[["seed", "k", "group", "qid"]].values))
            for m, f in pairs.groupby("method")}
    assert len({frozenset(v) for v in keys.values()}) == 1
    tests = {s: set(f.group) for s, f in pairs.groupby("seed")}
    assert tests[0] != tests[1] and "S. Africa" in tests[0] & tests[1]
    assert pairs.score.between(0, 1).all()
    table = summarise(pairs, n_boot=50)
    assert len(table) == 6 * 2 and table.seeds.eq(2).all()
    seed0 = run_gpo(cfg, run, "goqa", progress=False)        # seed 0's stages were reused
    assert (run.root / "stages" / "gpo_goqa_seed1").exists()
    assert seed0.gpos["gpo"].info == json.loads(
        (run.root / "stages" / "gpo_goqa_seed0" / "info.json").read_text())


def test_validation_scores_reach_the_tracker_report_to_names(tmp_path, goqa_csv):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(overrides={"output_root": str(tmp_path), "goqa_path": str(goqa_csv),
                                 "gpo_steps": 2, "gpo_eval_every": 1, "gpo_prior": "none",
                                 "report_to": "tensorboard"})
    run = Run.open(cfg)
    exp = run_gpo(cfg, run, "goqa", progress=False)
    events = EventAccumulator(str(run.root / "logs" / "gpo_goqa")).Reload()
    scores = events.Scalars("gpo_goqa_seed0/val_score")
    assert [s.step for s in scores] == [1, 2]
    history = exp.gpos["gpo"].history                 # the same numbers as meta-training's record
    assert [s.value for s in scores] == pytest.approx([h["val_score"] for h in history], abs=1e-6)


@pytest.fixture(scope="module")
def experiment(gpo_synthetic_run):
    data, emb, split, res = gpo_synthetic_run
    plans = eval_plans(data, split["test"], [1, 5], seed=0)
    info = {"best_val": res.best_val, "best_step": res.best_step}
    return GPOExperiment(data, emb, split, plans, {"gpo": TrainedGPO(res.model, emb, res.history,
                                                                    info)})


def test_alignment_table_k_curve_and_metrics_agree(experiment, tmp_cfg):
    exp = experiment
    table, curve = alignment_table(exp, 5), k_curve(exp, [1, 5])
    assert set(table.method) == {"gpo", "ridge", "uniform", "train_mean", "knn"}   # no LM dists
    assert set(table.group) == set(exp.split["test"]) | {"ALL"}
    overall = table[table.group == "ALL"].set_index("method")["score"]
    at_5 = curve[curve.k == 5].set_index("method")["score"]
    pd.testing.assert_series_equal(overall.sort_index(), at_5.sort_index())
    for method, rows in table[table.group != "ALL"].groupby("method"):   # ALL = micro mean
        assert math.isclose(np.average(rows.score, weights=rows.n), overall[method])
    best_step = exp.gpos["gpo"].info["best_step"]
    run = Run.open(tmp_cfg)
    part = {"gpo": {"alignment": overall.to_dict(), "k": 5, "selected_step": {"gpo": best_step}}}
    assert record(run, table, 5) == part
    assert run.metrics()["gpo"] == part["gpo"]          # the library writes metrics.json's part
    folder = save_results(run, "synthetic", table, curve)
    pd.testing.assert_frame_equal(pd.read_csv(folder / "alignment.csv", dtype={"step": "Int64"}),
                                  table)
    pd.testing.assert_frame_equal(pd.read_csv(folder / "k_curve.csv", dtype={"step": "Int64"}),
                                  curve)


def test_the_selected_step_stands_beside_every_gpo_score(experiment):
    """Selection can keep an early checkpoint, near the model's starting point: every table
    says which step each GPO score comes from (baselines have none)."""
    exp = experiment
    step = exp.gpos["gpo"].info["best_step"]
    for frame in (alignment_table(exp, 5), k_curve(exp, [1, 5])):
        assert (frame[frame.method == "gpo"].step == step).all()
        assert frame[frame.method != "gpo"].step.isna().all()
    pairs = pd.concat([pd.DataFrame({"seed": s, "k": 5, "method": m, "group": "g", "qid": "q",
                                     "score": 0.5, "step": st}, index=[0])
                       for s, st in ((0, 300), (1, 250)) for m, st in (("gpo", st),
                                                                        ("train_mean", None))])
    table = summarise(pairs.astype({"step": "Int64"}), n_boot=10).set_index("method")
    assert table.loc["gpo", "steps"] == "300/250" and table.loc["train_mean", "steps"] == ""


def test_the_few_shot_predictor_is_the_best_on_validation_groups(experiment, tmp_cfg):
    exp = validated(GPOExperiment(**{**experiment.__dict__, "val_scores": {}}),
                    tmp_cfg.replace(gpo_k=5))
    val_jobs = [p.job(5) for p in eval_plans(exp.data, exp.split["val"], [5], 0).values()]
    assert exp.val_scores == {m: score(exp.data, predictions(exp, m, val_jobs))["score"]
                              for m in ("gpo", "ridge", "knn", "train_mean")}
    assert exp.best == max(exp.val_scores, key=exp.val_scores.get)
    exp.val_scores = {"gpo": 0.7, "ridge": 0.9, "knn": 0.9, "train_mean": 0.8}
    assert exp.best == "ridge"                      # a tie goes to the earlier predictor
    with pytest.raises(ValueError, match="no predictor was scored on validation groups"):
        _ = GPOExperiment(**{**exp.__dict__, "val_scores": {}}).best


def test_lm_zero_shot_joins_the_methods_when_its_distributions_are_set(experiment):
    exp = GPOExperiment(**{**experiment.__dict__,
                           "lm_dists": {q: np.array([0.5, 0.5]) for q in experiment.data.items}})
    preds = method_predictions(exp, 5)
    assert set(preds) == {"gpo", "ridge", "uniform", "train_mean", "knn", "lm_zero_shot"}
    for g, by_q in preds["lm_zero_shot"].items():
        for q, p in by_q.items():
            np.testing.assert_array_equal(p, preds["uniform"][g][q])


def test_predicted_vs_true_frames_distributions_of_a_test_group_only(experiment):
    exp = experiment
    frame = predicted_vs_true(exp, 5, exp.split["test"][0], n=4, seed=0)
    assert len(frame) == 4 * 2 * 3            # questions x options x {true, gpo, train_mean}
    assert set(frame.source) == {"true", "gpo", "train_mean"}
    np.testing.assert_allclose(frame.groupby(["qid", "source"]).p.sum(), 1.0)
    assert set(frame.qid) <= set(exp.plans[exp.split["test"][0]].targets)
    with pytest.raises(KeyError, match="not a test group"):
        predicted_vs_true(exp, 5, exp.split["train"][0])
