"""Publishing, offline: the upload folder and model card of a real (very short) training run on
GlobalOpinionQA; the hub client's create_repo / upload_folder are replaced to capture their
arguments, so nothing leaves the machine."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from huggingface_hub import HfApi, ModelCard

from gdpolib import publish

REPO = "someone/gdpo-sa-tiny"
SCHEDULE = {"max_questions": 4, "tiny_n_layer": 1, "tiny_n_embd": 32, "tiny_n_head": 2,
            "tiny_vocab_size": 400, "batch_size": 4, "sft_steps": 4, "dpo_steps": 2,
            "gdpo_steps": 2, "eval_every": 2, "eval_subset": 4, "device": "cpu"}


PUSHED: list = []


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, goqa_csv):
    """sft, dpo and gdpo trained for a few steps by the training entry point (about 20 s), with
    push_to_hub set: the entry point prepares the upload and calls publish.push, captured here
    (the network call itself is the hub client's)."""
    from gdpolib import train

    root = tmp_path_factory.mktemp("pub")
    args = ["--method", "all"]
    for k, v in {**SCHEDULE, "output_root": str(root), "run_name": "r", "goqa_path": str(goqa_csv),
                 "push_to_hub": REPO}.items():
        args += ["-p", k, str(v)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(publish, "push", lambda folder, repo_id: PUSHED.append((folder, repo_id))
                   or f"https://huggingface.co/{repo_id}/commit/0")
        assert train.main(args) == 0
    return root / "r"


def test_the_training_entry_point_publishes_gdpo_when_push_to_hub_is_set(run_dir):
    assert PUSHED == [(run_dir / "publish" / "gdpo", REPO)]
    assert (run_dir / "publish" / "gdpo" / "README.md").exists()


@pytest.fixture(scope="module")
def folder(run_dir):
    return publish.prepare_upload(run_dir, "gdpo", REPO)


def test_upload_folder_holds_the_model_its_training_records_and_the_data(folder, run_dir):
    from transformers import AutoModelForCausalLM
    import torch

    assert folder == run_dir / "publish" / "gdpo"
    names = {p.name for p in folder.iterdir()}
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json", "training", "data"} <= names
    assert "stage.json" not in names and not list(folder.parent.glob(".*building"))
    assert {p.name for p in (folder / "training").iterdir()} == {
        "summary.json", "log_history.json", "tracking.jsonl"}
    # the published weights are the trained stage's
    a = AutoModelForCausalLM.from_pretrained(folder)
    b = AutoModelForCausalLM.from_pretrained(run_dir / "checkpoints" / "gdpo")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    # every built dataset split as parquet, with the run's row counts and columns
    counts = json.loads((run_dir / "data" / "counts.json").read_text())
    for kind in ("sft", "dpo", "gdpo", "prompts"):
        for split in ("train", "eval", "test"):
            table = pd.read_parquet(folder / "data" / kind / f"{split}.parquet")
            assert len(table) == counts[kind][split], (kind, split)
    gdpo = pd.read_parquet(folder / "data" / "gdpo" / "train.parquet")
    assert {"prompt", "chosen", "rejected", "p_star", "belief_mask", "b_c"} <= set(gdpo.columns)
    assert (folder / "data" / "questions.jsonl").read_text() == \
        (run_dir / "data" / "questions.jsonl").read_text()


def test_model_card_metadata_metrics_parameters_provenance_and_citations(folder, run_dir, goqa_csv):
    text = (folder / "README.md").read_text()
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "cc-by-nc-sa-4.0"
    assert card.data.datasets == ["Anthropic/llm_global_opinions"]
    assert card.data.library_name == "transformers" and "gdpo" in card.data.tags
    assert "base_model" not in card.data.to_dict()   # the tiny model has no hub base
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for m in ("sft", "dpo", "gdpo"):
        jsd = f"{metrics['methods'][m]['jsd']:.4f}"
        row = next(ln for ln in text.splitlines() if ln.startswith(f"| {m} |") or ln.startswith(f"| **{m}**"))
        assert jsd in row, (m, row)
    assert "| **gdpo** (this model) |" in text
    assert f"{metrics['skew']['dpo']['margin_majority']:.4f}" in text
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert f"| `gdpo_steps` | {cfg['gdpo_steps']} |" in text and "| `beta` | 0.1 |" in text
    assert f"push_to_hub: {REPO}" in text                      # the full config, in <details>
    sha = json.loads((run_dir / "data" / "stage.json").read_text())["key"]["goqa_sha"]
    assert goqa_csv.name in text and sha in text and "S. Africa" in text
    assert "2412.20299" in text and "2310.11523" in text and "2306.16388" in text
    first_test_prompt = pd.read_parquet(folder / "data" / "prompts" / "test.parquet")["prompt"][0]
    assert json.dumps(first_test_prompt) in text and f'from_pretrained("{REPO}")' in text
    assert str(run_dir.parent) not in text   # no local absolute path leaves the machine


def test_push_calls_the_hub_client_with_the_folder(folder, monkeypatch):
    calls = {}

    def create_repo(self, repo_id, **kw):
        calls["create"] = {"repo_id": repo_id, **kw}

    def upload_folder(self, **kw):
        calls["upload"] = kw
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{kw['repo_id']}/commit/abc"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    url = publish.push(folder, REPO, private=True)
    assert url == f"https://huggingface.co/{REPO}/commit/abc"
    assert calls["create"] == {"repo_id": REPO, "repo_type": "model", "private": True, "exist_ok": True}
    assert calls["upload"]["repo_id"] == REPO and calls["upload"]["repo_type"] == "model"
    assert calls["upload"]["folder_path"] == str(folder)


def test_push_failure_and_bad_input_are_one_clear_error(folder, run_dir, monkeypatch):
    def offline(self, *a, **kw):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(HfApi, "create_repo", offline)
    with pytest.raises(publish.PublishError, match=f"to {REPO} failed: ConnectionError"):
        publish.push(folder, REPO)
    with pytest.raises(publish.PublishError, match="not a hub repository id"):
        publish.prepare_upload(run_dir, "gdpo", "no-slash")
    with pytest.raises(publish.PublishError, match="--method cdpo"):
        publish.prepare_upload(run_dir, "cdpo", REPO)


def test_cli_dry_run_takes_the_repository_from_push_to_hub(run_dir, capsys):
    assert publish.main([str(run_dir), "--method", "sft", "--dry-run"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out == str(run_dir / "publish" / "sft")
    assert f'from_pretrained("{REPO}")' in (run_dir / "publish" / "sft" / "README.md").read_text()
