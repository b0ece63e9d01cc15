"""Training stages on real data: tracking, the stage cache, resume after a kill, test numbers
into metrics.json."""
from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest

from gdpolib import config, methods, runs
from gdpolib.stages import evaluate, train
from gdpolib.stages.data import prepare_data
from gdpolib.trainers.tracking import TrackingCallback


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, goqa_csv):
    """A real-data run (GlobalOpinionQA, S. Africa, 8 questions) with a very short schedule."""
    cfg = config.load_config(overrides=dict(
        output_root=str(tmp_path_factory.mktemp("runs")), run_name="t", goqa_path=str(goqa_csv),
        max_questions=8, tiny_n_layer=1, tiny_n_embd=32, tiny_n_head=2, tiny_vocab_size=400,
        batch_size=4, sft_steps=6, dpo_steps=4, gdpo_steps=4, eval_every=2, save_every=2,
        eval_subset=8, device="cpu"))
    run = runs.Run.open(cfg)
    return cfg, run, prepare_data(cfg, run)


def test_stages_track_cache_resume_and_write_metrics(small_run, monkeypatch):
    cfg, run, data = small_run
    sft = train.train_sft(cfg, run, data)
    assert (sft / "model.safetensors").exists() and (sft / "tokenizer.json").exists()
    sft_tracks = pd.read_json(sft / "tracking.jsonl", lines=True)
    assert list(sft_tracks["step"]) == [0, 2, 4, 6] and "margin" not in sft_tracks

    # a run killed after step 3 resumes from its step-2 checkpoint
    original = TrackingCallback.on_step_end

    def crash(self, args, state, control, **kw):
        if state.global_step == 3:
            raise KeyboardInterrupt("simulated kill")
        return original(self, args, state, control, **kw)

    monkeypatch.setattr(TrackingCallback, "on_step_end", crash)
    with pytest.raises(KeyboardInterrupt):
        train.train_preference(cfg, run, data, "gdpo")
    assert not (run.root / "checkpoints" / "gdpo").exists()          # nothing partial
    # a kill while saving checkpoint-3 left its weights but no trainer_state.json
    steps_dir = run.root / "checkpoints" / "gdpo-steps"
    shutil.copytree(steps_dir / "checkpoint-2", steps_dir / "checkpoint-3")
    (steps_dir / "checkpoint-3" / "trainer_state.json").unlink()
    monkeypatch.setattr(TrackingCallback, "on_step_end", original)
    gdpo = train.train_preference(cfg, run, data, "gdpo")
    summary = json.loads((gdpo / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["steps"] == 4
    tracks = pd.read_json(gdpo / "tracking.jsonl", lines=True)
    assert list(tracks["step"]) == [0, 2, 4]
    assert tracks["seconds"].is_monotonic_increasing                  # time goes on after a resume
    assert {"margin_majority", "margin_minority", "accuracy", "jsd", "belief_mass"} <= set(tracks)
    assert tracks["margin"].iloc[0] == pytest.approx(0.0, abs=1e-5)     # policy = reference at step 0
    # cached: the same key reuses the stage
    assert train.train_preference(cfg, run, data, "gdpo") == gdpo
    assert json.loads((gdpo / "summary.json").read_text()) == summary

    # DPO killed at step 1, before its first checkpoint: the rerun starts from 0 and its
    # tracking holds one record per step, not the killed attempt's step 0 too
    def early_crash(self, args, state, control, **kw):
        if state.global_step == 1:
            raise KeyboardInterrupt("simulated kill")
        return original(self, args, state, control, **kw)

    monkeypatch.setattr(TrackingCallback, "on_step_end", early_crash)
    with pytest.raises(KeyboardInterrupt):
        train.train_preference(cfg, run, data, "dpo")
    monkeypatch.setattr(TrackingCallback, "on_step_end", original)
    dpo = train.train_preference(cfg, run, data, "dpo")
    assert (dpo / "model.safetensors").exists()
    assert json.loads((dpo / "summary.json").read_text())["resumed_from"] is None
    assert list(pd.read_json(dpo / "tracking.jsonl", lines=True)["step"]) == [0, 2, 4]
    for m in ("sft", "dpo", "gdpo"):
        evaluate.test_readout(cfg, run, data, m)
    metrics = run.metrics()
    assert set(metrics["methods"]) >= {"sft", "dpo", "gdpo"}
    assert all(0 <= metrics["methods"][m]["jsd"] <= math.sqrt(math.log(2)) for m in ("sft", "dpo", "gdpo"))
    assert set(metrics["skew"]) == {"dpo", "gdpo"}
    assert set(metrics["skew"]["dpo"]) == {"margin_majority", "margin_minority"}
    # GDPO on the same conflicting pairs as DPO (like for like), and on its own pairs too
    assert set(metrics["skew"]["gdpo"]) == {"margin_majority", "margin_minority",
                                            "shared_margin_majority", "shared_margin_minority"}
    test = {m: json.loads((run.stage_dir(f"stages/test/{m}") / "test.json").read_text())
            for m in ("dpo", "gdpo")}
    assert test["dpo"]["n_majority"] + test["dpo"]["n_minority"] == data.dpo["test"].num_rows
    assert (test["gdpo"]["n_majority"], test["gdpo"]["n_minority"]) == (
        test["dpo"]["n_majority"], test["dpo"]["n_minority"])
    assert {"shared_margin_majority", "shared_margin_minority"} <= set(tracks)
    assert "shared_margin_majority" not in pd.read_json(dpo / "tracking.jsonl", lines=True)
    # every method row has both JSD conventions, the mass, TVD and an interval over
    # questions; the baselines (uniform 1/|B|, the untrained base model) sit beside them
    for m in methods.baselines():
        evaluate.test_readout(cfg, run, data, m)
    metrics = run.metrics()
    for m in ("uniform", "context_free", "zeroshot", "sft", "dpo", "gdpo"):
        row = metrics["methods"][m]
        assert {"jsd", "jsd_digits", "belief_mass", "tvd", "jsd_ci", "entropy",
                "entropy_target", "n_invalid"} <= set(row), m
        assert row["jsd_ci"][0] <= row["jsd"] <= row["jsd_ci"][1] and row["n_invalid"] == 0
        assert row["n_questions"] == metrics["data"]["test_questions"] == 4
    uniform = metrics["methods"]["uniform"]
    assert uniform["belief_mass"] == 1.0 and uniform["jsd_digits"] == pytest.approx(uniform["jsd"])
    assert "uniform" not in metrics["skew"]
    assert metrics["methods"]["context_free"]["belief_mass"] == pytest.approx(1.0)

    # paired per-question differences to SFT and to the context-free baseline
    numbers = evaluate.paired_comparisons(cfg, run, data, ["context_free", "sft", "gdpo"])
    gdpo_row = run.metrics()["methods"]["gdpo"]
    d = gdpo_row["jsd_vs_sft"]
    assert d == pytest.approx(gdpo_row["jsd"] - metrics["methods"]["sft"]["jsd"], abs=1e-9)
    assert gdpo_row["jsd_vs_sft_ci"][0] <= d <= gdpo_row["jsd_vs_sft_ci"][1]
    assert gdpo_row["jsd_vs_sft_questions"] == 4 and "jsd_vs_context_free" in gdpo_row
    assert "jsd_vs_sft" not in numbers["sft"] and "jsd_vs_sft" in numbers["context_free"]
