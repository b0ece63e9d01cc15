"""Running a TRL trainer as a run stage: the TRL arguments every stage shares, LoRA, resuming from
the last Trainer checkpoint, and moving the final model into the cached stage folder.

A stage trains in `checkpoints/<name>-steps/` (Trainer checkpoints every `save_every` steps, so a
killed run resumes) and, on success, becomes `checkpoints/<name>/` (model, tokenizer,
tracking.jsonl, log_history.json, summary.json). Under `accelerate launch` every process trains;
the bookkeeping runs on the main process.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import is_peft_model
from peft import LoraConfig
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from gdpolib import console
from gdpolib.models import resolve_device

log = logging.getLogger("gdpolib.trainers")


def save_model(model, tokenizer, out: Path, in_place: bool = True) -> None:
    """safetensors model and tokenizer; LoRA adapters are merged (into a copy unless in_place,
    so that a model still training keeps its adapters)."""
    out.mkdir(parents=True, exist_ok=True)
    m = model
    if is_peft_model(model):
        m = (model if in_place else copy.deepcopy(model)).merge_and_unload()
    m.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)


def trl_args(cfg, cls, out_dir: Path, steps: int, lr: float, logs_dir: Path, **stage: Any):
    """A stage's TRL config (SFTConfig / DPOConfig / GDPOConfig): the training section's own
    arguments (TrainingSection.trl_args) with the run's seed, device and tracker project; `stage`
    (max_length, the method's trainer_args, ...) wins. bf16 on a CUDA device that has it; CPU runs
    stay fp32 (TRL defaults to bf16). The trackers of `report_to` get the stage as one run:
    TensorBoard logs under logs_dir (`<run>/logs/<stage>`), trackio/wandb the project = the
    run's name and the run = the stage's name."""
    if cfg.report_to == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(logs_dir)
    device = resolve_device(cfg)
    cuda = device.type == "cuda"
    bf16 = cuda and cfg.dtype in ("auto", "bfloat16") and torch.cuda.is_bf16_supported()
    return cfg.training.trl_args(
        cls, steps=steps, lr=lr, cuda=cuda, logs_dir=logs_dir, output_dir=str(out_dir),
        **{"seed": cfg.seed, "data_seed": cfg.seed, "project": cfg.run_dir_name,
           "max_length": cfg.max_length, "bf16": bf16, "fp16": False,
           "use_cpu": device.type == "cpu", "disable_tqdm": console.piped(), **stage})


def peft_config(cfg) -> LoraConfig | None:
    """LoRA on every linear layer when `lora: true`."""
    if not cfg.lora:
        return None
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def progress_dir(run, name: str, key_hash: str) -> Path:
    """checkpoints/<name>-steps: Trainer checkpoints for resuming; wiped when the key changes."""
    d = run.path("checkpoints", f"{name}-steps")
    marker = d / "key.txt"
    state = PartialState()
    if state.is_main_process:
        if d.exists() and (not marker.exists() or marker.read_text() != key_hash):
            shutil.rmtree(d)
        d.mkdir(parents=True, exist_ok=True)
        marker.write_text(key_hash)
    state.wait_for_everyone()
    return d


def last_checkpoint(d: Path) -> str | None:
    """The newest COMPLETE Trainer checkpoint in `d` (None if there is none).

    The Trainer writes trainer_state.json last, so a checkpoint without it was cut short by a
    kill during the save: it is removed (and said), and the one before it is resumed from."""
    if not d.exists():
        return None
    while (last := get_last_checkpoint(str(d))) is not None:
        if (Path(last) / "trainer_state.json").exists():
            return last
        log.warning("removing the incomplete checkpoint %s (no trainer_state.json: the run was "
                    "killed while saving it)", last)
        shutil.rmtree(last)
    return None


def finish_stage(run, name: str, key: dict, progress: Path, started: float | None = None) -> Path:
    """Move progress/final into the cached stage folder (main process), then drop progress.
    `started`: when the stage's work began (its seconds count from there)."""
    state = PartialState()
    if state.is_main_process:
        def build(out: Path) -> None:
            for item in (progress / "final").iterdir():
                shutil.move(str(item), out / item.name)
        run.stage(name, key, build, started=started)
        shutil.rmtree(progress, ignore_errors=True)
    state.wait_for_everyone()
    return run.stage_dir(name)


class ConsoleProgress(TrainerCallback):
    """The steps of a training stage as a console bar (pipeline kernels, where the Trainer's own
    tqdm bar is off)."""

    def __init__(self, label: str):
        self.label, self.bar = label, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = console.Progress(f"{self.label} steps", state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()


def fit(trainer, progress: Path, tokenizer, callback, summary: dict) -> None:
    """Train (resuming from the last checkpoint), then write the final folder: the model (or,
    with select_by eval_jsd, the best tracked one), tracking.jsonl, log_history and a summary.
    `callback` is the stage's TrackingCallback (or None)."""
    resume = last_checkpoint(progress)
    if resume:
        log.info("resuming from %s", resume)
    if console.piped():
        trainer.add_callback(ConsoleProgress(str(summary.get("method", "training"))))
    start = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    final = progress / "final"
    if PartialState().is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        best = progress / "best"
        if callback is not None and callback.best_dir is not None and (best / "config.json").exists():
            shutil.copytree(best, final)
            tokenizer.save_pretrained(final)
        else:
            save_model(trainer.model, tokenizer, final)
        if callback is not None and callback.path.exists():
            shutil.copy(callback.path, final / "tracking.jsonl")
        (final / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        summary.update(train_seconds=round(time.time() - start, 2), steps=trainer.state.global_step,
                       train_loss=result.training_loss, resumed_from=resume)
        (final / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
