"""Run directories, environment record, metrics merging and cached stages."""
from __future__ import annotations

import json

import pytest
import torch

from gdpolib import runs, seeds
from gdpolib.runs import Run


def test_open_creates_layout_and_records(tmp_cfg):
    run = Run.open(tmp_cfg)
    assert run.root == tmp_cfg.run_dir and run.root.name == "sa-tiny"
    for sub in ("data", "checkpoints", "figures", "notebooks"):
        assert (run.root / sub).is_dir()
    assert "country: sa" in (run.root / "config.yaml").read_text()
    env = json.loads((run.root / "environment.json").read_text())
    assert env["packages"]["torch"].startswith("2.") and "git_commit" in env


def test_seed_everything_is_deterministic():
    seeds.seed_everything(5)
    a = torch.rand(3)
    seeds.seed_everything(5)
    assert torch.equal(a, torch.rand(3))


def test_merge_metrics_deep_merges(tmp_cfg):
    run = Run.open(tmp_cfg)
    run.merge_metrics({"methods": {"sft": {"jsd": 0.2}}})
    run.merge_metrics({"methods": {"dpo": {"jsd": 0.3}, "sft": {"cbc": 0.9}}, "data": {"test": 4}})
    assert run.metrics() == {"methods": {"sft": {"jsd": 0.2, "cbc": 0.9}, "dpo": {"jsd": 0.3}},
                             "data": {"test": 4}}


def test_stage_is_reused_when_key_unchanged_and_rebuilt_when_changed(tmp_cfg):
    run = Run.open(tmp_cfg)
    calls = []

    def build(out):
        calls.append(out)
        (out / "x.txt").write_text(str(len(calls)))

    first = run.stage("data", {"a": 1}, build)
    assert run.stage("data", {"a": 1}, build) == first and len(calls) == 1
    run.stage("data", {"a": 2}, build)
    assert len(calls) == 2 and (first / "x.txt").read_text() == "2"
    assert run.stage_hash("data") == seeds.stable_hash({"a": 2})


def test_failed_build_keeps_the_previous_stage_and_leaves_nothing_partial(tmp_cfg):
    run = Run.open(tmp_cfg)
    run.stage("checkpoints/sft", {"v": 1}, lambda out: (out / "ok").write_text("1"))

    def broken(out):
        (out / "half").write_text("partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run.stage("checkpoints/sft", {"v": 2}, broken)
    stage = run.stage_dir("checkpoints/sft")
    assert (stage / "ok").exists() and not (stage / "half").exists()
    assert not list(stage.parent.glob(".*building"))
    assert run.stage_done("checkpoints/sft", {"v": 1})


def test_two_runs_never_share_artifacts(tmp_cfg):
    a = Run.open(tmp_cfg)
    b = Run.open(tmp_cfg.replace(country="us"))
    a.stage("data", {"k": 1}, lambda out: (out / "f").write_text("a"))
    b.stage("data", {"k": 1}, lambda out: (out / "f").write_text("b"))
    assert (a.root / "data" / "f").read_text() == "a" and (b.root / "data" / "f").read_text() == "b"
    assert a.root != b.root


def test_a_run_folder_made_with_other_parameters_is_never_rewritten(tmp_cfg):
    run = Run.open(tmp_cfg)
    run.merge_metrics({"methods": {"sft": {"jsd": 0.2}}})
    before = (run.root / "config.yaml").read_text()
    other = tmp_cfg.replace(gdpo_steps=7, seed=3)
    with pytest.raises(runs.RunError, match=rf"gdpo_steps: {tmp_cfg.gdpo_steps} -> 7.*update_run"):
        Run.open(other)
    assert (run.root / "config.yaml").read_text() == before
    assert run.metrics() == {"methods": {"sft": {"jsd": 0.2}}}
    # parameters that change nothing the folder holds are fine
    Run.open(tmp_cfg.replace(methods=["sft"], report_to="tensorboard"))
    # asked to: reused with the new parameters, its numbers cleared (the notebooks refill them)
    again = Run.open(other.replace(update_run=True))
    assert "gdpo_steps: 7" in (again.root / "config.yaml").read_text()
    assert again.metrics() == {}


def test_an_unwritable_output_root_is_one_clear_error(tmp_cfg, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the outputs should go")   # fails even for root, unlike chmod
    with pytest.raises(runs.RunError, match="cannot write the run folder .*output_root"):
        Run.open(tmp_cfg.replace(output_root=str(blocker)))


def test_leftovers_of_a_killed_build_are_removed_on_open(tmp_cfg):
    run = Run.open(tmp_cfg)
    left = [run.root / "stages" / ".eval.building", run.root / "checkpoints" / ".sft.old"]
    for d in left:
        d.mkdir(parents=True)
        (d / "partial.bin").write_bytes(b"x")
    Run.open(tmp_cfg)
    assert not any(d.exists() for d in left)


def test_an_unavailable_model_fails_before_any_folder_is_written(tmp_cfg, monkeypatch):
    from gdpolib.checks import ModelLoadError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = tmp_cfg.replace(model="EleutherAI/pythia-2.8b")
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        Run.open(cfg)
    assert not cfg.run_dir.exists()
