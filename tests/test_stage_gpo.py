"""gdpolib.stages.gpo (notebook 05's steps): run_gpo on the real GlobalOpinionQA file with each
`gpo_prior` setting, and the tables, k curve, metrics and plot frames of an experiment."""
from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from gdpolib.config import load_config
from gdpolib.gpo.groups import GroupPriorTable
from gdpolib.gpo.meta_train import GPOSettings
from gdpolib.gpo.predict import eval_plans
from gdpolib.runs import Run
from gdpolib.stages.gpo import (GPOExperiment, alignment_table, gpo_metrics, k_curve,
                                method_predictions, predicted_vs_true, run_gpo, save_results)


@pytest.mark.parametrize("prior", ["none", "train_groups"])
def test_run_gpo_on_real_data_builds_the_model_its_prior_setting_asks_for(tmp_path, goqa_csv, prior):
    cfg = load_config(overrides={"output_root": str(tmp_path), "goqa_path": str(goqa_csv),
                                 "gpo_steps": 2, "gpo_prior": prior})
    run = Run.open(cfg)
    exp = run_gpo(cfg, run, "goqa", progress=False)
    with_prior = prior == "train_groups"
    assert isinstance(exp.emb, GroupPriorTable) == with_prior
    assert exp.model.uses_prior == with_prior == exp.info["group_prior"]
    # the run's country (and any other sample of it) is held out; the plans are the test groups'
    assert "S. Africa" in exp.split["test"]
    assert all(exp.data.family[g] != "S. Africa" for g in exp.split["train"] + exp.split["val"])
    assert sorted(exp.plans) == exp.split["test"]
    assert exp.info["settings"] == json.loads(json.dumps(asdict(GPOSettings.from_config(cfg))))
    assert [h["step"] for h in exp.history] == [1, 2]
    again = run_gpo(cfg, run, "goqa", progress=False)      # the cached stage is reused
    assert again.info == exp.info


@pytest.fixture(scope="module")
def experiment(gpo_synthetic_run):
    data, emb, split, res = gpo_synthetic_run
    plans = eval_plans(data, split["test"], [1, 5], seed=0)
    return GPOExperiment(data, emb, split, plans, res.model, res.history, {})


def test_alignment_table_k_curve_and_metrics_agree(experiment, tmp_cfg):
    exp = experiment
    table, curve = alignment_table(exp, 5), k_curve(exp, [1, 5])
    assert set(table.method) == {"gpo", "uniform", "train_mean", "knn"}    # no LM distributions
    assert set(table.group) == set(exp.split["test"]) | {"ALL"}
    overall = table[table.group == "ALL"].set_index("method")["score"]
    at_5 = curve[curve.k == 5].set_index("method")["score"]
    pd.testing.assert_series_equal(overall.sort_index(), at_5.sort_index())
    for method, rows in table[table.group != "ALL"].groupby("method"):   # ALL = micro mean
        assert math.isclose(np.average(rows.score, weights=rows.n), overall[method])
    assert gpo_metrics(table, 5) == {"gpo": {"alignment": overall.to_dict(), "k": 5}}
    folder = save_results(Run.open(tmp_cfg), "synthetic", table, curve)
    pd.testing.assert_frame_equal(pd.read_csv(folder / "alignment.csv"), table)
    pd.testing.assert_frame_equal(pd.read_csv(folder / "k_curve.csv"), curve)


def test_lm_zero_shot_joins_the_methods_when_its_distributions_are_set(experiment):
    exp = GPOExperiment(**{**experiment.__dict__,
                           "lm_dists": {q: np.array([0.5, 0.5]) for q in experiment.data.items}})
    preds = method_predictions(exp, 5)
    assert set(preds) == {"gpo", "uniform", "train_mean", "knn", "lm_zero_shot"}
    for g, by_q in preds["lm_zero_shot"].items():
        for q, p in by_q.items():
            np.testing.assert_array_equal(p, preds["uniform"][g][q])


def test_predicted_vs_true_frames_distributions_of_a_test_group_only(experiment):
    exp = experiment
    frame = predicted_vs_true(exp, 5, exp.split["test"][0], n=4, seed=0)
    assert len(frame) == 4 * 2 * 3            # questions x options x {true, gpo, train_mean}
    np.testing.assert_allclose(frame.groupby(["qid", "source"]).p.sum(), 1.0)
    assert set(frame.qid) <= set(exp.plans[exp.split["test"][0]].targets)
    with pytest.raises(KeyError, match="not a test group"):
        predicted_vs_true(exp, 5, exp.split["train"][0])
