"""GDPO under DDP (2 CPU processes, gloo) equals one process over the same global batch.

tests/scripts/ddp_gdpo.py trains GDPOTrainer for 2 steps on 8 real GDPO pairs (GlobalOpinionQA,
S. Africa) from the tiny model with dropout off: once as one process with 8 pairs per step, once
under `accelerate launch --multi_gpu --num_processes 2` with 4 pairs per process. On a machine
without CUDA, accelerate starts the 2 processes with torchrun and the Trainer (use_cpu) joins them
with gloo. (`accelerate launch --cpu --num_processes 2` starts ONE process unless MPI is set up,
so the test checks the world size each run reports.)
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gdpolib.config import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "tests" / "scripts" / "ddp_gdpo.py"
pytestmark = pytest.mark.slow   # about 50 s: two launches of torch + TRL
STEP_KEYS = ("loss", "grad_norm", "gdpo/kl", "gdpo/dpo", "gdpo/belief_logp", "rewards/margins")


def _free_port() -> int:
    with socket.socket() as s:   # other jobs on this machine may hold accelerate's default 29500
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT),
           "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""}   # CPU + gloo even on a GPU machine
    res = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    (out.parent / f"{out.name}.log").write_text(res.stdout + res.stderr)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, goqa_csv):
    """Build the data stage and the tiny base model once, then train both layouts."""
    from gdpolib import config, runs as runs_mod
    from gdpolib.stages.data import base_model, prepare_data

    root = tmp_path_factory.mktemp("ddp")
    cfg = config.load_config(overrides=dict(
        output_root=str(root), run_name="base", goqa_path=str(goqa_csv), max_questions=4,
        tiny_n_layer=2, tiny_n_embd=32, tiny_n_head=2, tiny_vocab_size=400, device="cpu"))
    run = runs_mod.Run.open(cfg)
    data = prepare_data(cfg, run)
    base, _ = base_model(cfg, run, data)
    out = {}
    for name, launcher, batch in (
            ("one", [sys.executable], 8),
            ("two", [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                     "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                     "--dynamo_backend", "no", "--main_process_port", str(_free_port())], 4)):
        data_copy = root / f"data-{name}"   # own copy: no shared dataset cache between layouts
        shutil.copytree(data.path, data_copy)
        _run([*launcher, str(SCRIPT), "--data", str(data_copy), "--model", str(base),
              "--out", str(root / name), "--batch", str(batch)], root / name)
        out[name] = root / name
    out["base"] = base
    return out


def _history(d: Path) -> list[dict]:
    return [h for h in json.loads((d / "log_history.json").read_text()) if "loss" in h]


def test_both_layouts_ran_with_their_world_size(runs):
    for name, n in (("one", 1), ("two", 2)):
        for mode in ("live", "precomputed"):
            world = json.loads((runs[name] / mode / "world.json").read_text())
            assert world["num_processes"] == n, (name, mode)


def test_ddp_loss_and_metrics_match_one_process(runs):
    for mode in ("live", "precomputed"):
        one, two = _history(runs["one"] / mode), _history(runs["two"] / mode)
        assert [h["step"] for h in one] == [h["step"] for h in two] == [1, 2]
        for a, b in zip(one, two):
            for key in STEP_KEYS:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (mode, a["step"], key)
        assert one[1]["loss"] < one[0]["loss"]   # the steps did train


def test_ddp_updated_weights_match_one_process(runs):
    from safetensors.torch import load_file

    start = load_file(str(runs["base"] / "model.safetensors"))
    for mode in ("live", "precomputed"):
        one = torch.load(runs["one"] / mode / "weights.pt")
        two = torch.load(runs["two"] / mode / "weights.pt")
        assert one.keys() == two.keys()
        moved = 0.0
        for name, w in one.items():
            assert torch.allclose(two[name], w, rtol=1e-4, atol=1e-5), (mode, name)
            if name in start:
                moved = max(moved, (w - start[name]).abs().max().item())
        assert moved > 1e-4   # the weights did move (lr 1e-3, 2 Adam steps)


def test_precomputed_reference_logps_agree_across_processes(runs):
    one = json.loads((runs["one"] / "precomputed" / "ref-rank0.json").read_text())
    ranks = [json.loads((runs["two"] / "precomputed" / f"ref-rank{r}.json").read_text())
             for r in (0, 1)]
    assert len(one["chosen"]) == 8
    for rank in ranks:
        assert rank["chosen"] == one["chosen"]   # same rows in the same order
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            assert rank[key] == pytest.approx(one[key], rel=1e-5)
    assert all(v < 0 for v in one["ref_chosen_logps"])
    # cached reference log-probs train exactly like the live reference model
    for name in ("one", "two"):
        live, cached = _history(runs[name] / "live"), _history(runs[name] / "precomputed")
        for a, b in zip(live, cached):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), (name, a["step"])
