"""Stages of notebooks 02 and 03: SFT (TRL SFTTrainer), the DPO baseline (TRL DPOTrainer,
unchanged) and GDPO with its ablations (GDPOTrainer), each a cached, resumable run stage
`checkpoints/<method>/` keyed by its parameters and the hashes of the stages it starts from.

  train_sft(cfg, run, data, dataset=None, name="sft") -> Path
  train_preference(cfg, run, data, method) -> Path        method in dpo | gdpo | cdpo | mft
Model selection is a fixed schedule (the last step) for every method unless `select_by: eval_jsd`
keeps the step with the lowest eval-subset JSD; never a method's own loss (bug B20).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from datasets import Dataset
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from gdpolib import beliefs, models
from gdpolib.data.records import RunData
from gdpolib.seeds import stable_hash
from gdpolib.scoring import EvalSet
from gdpolib.generation import max_context
from gdpolib.stages.data import base_model, sequence_length
from gdpolib.trainers.fit import finish_stage, fit, peft_config, progress_dir, training_args
from gdpolib.trainers.gdpo_trainer import GDPOConfig, GDPOTrainer, method_lambdas
from gdpolib.trainers.tracking import Tracker, TrackingCallback

PREFERENCE_METHODS = ("dpo", "gdpo", "cdpo", "mft")
# Parameters every training stage depends on.
TRAIN_KEYS = ("seed", "batch_size", "grad_accum", "warmup_steps", "max_length", "lora", "lora_r",
              "lora_alpha", "device", "dtype", "select_by")


def data_hash(run, data: RunData) -> str:
    """The hash of the data stage the datasets come from (data or data_override)."""
    return run.stage_hash(str(Path(data.path).resolve().relative_to(run.root.resolve())))


def _dataset_hash(ds: Dataset, columns: Sequence[str]) -> str:
    return stable_hash({c: ds[c] for c in columns})


@dataclass
class _Start:
    """What a training stage starts from: its progress folder, the policy (trainable) and its
    tokenizer, the run's checked sequence length, the belief token ids and when it started."""

    progress: Path
    model: Any
    tok: Any
    length: int
    ids: list[int]
    started: float


def _start(cfg, run, data: RunData, name: str, key: dict, checkpoint: str | Path) -> _Start:
    started = time.time()
    progress = progress_dir(run, name, stable_hash(key))
    model, tok = models.load_policy(checkpoint, cfg, train=True)
    length = sequence_length(cfg, data, tok, max_context(model))   # before any step
    return _Start(progress, model, tok, length, beliefs.check_belief_tokens(tok, data.k_max),
                  started)


def _callback(cfg, tracker: Tracker, progress: Path, name: str, trainer) -> TrackingCallback:
    best = progress / "best" if cfg.select_by == "eval_jsd" else None
    return TrackingCallback(tracker, cfg.eval_every, progress / "tracking.jsonl", name,
                            best_dir=best).attach(trainer)


def train_sft(cfg, run, data: RunData, dataset: Dataset | None = None, name: str = "sft",
              base: str | Path | None = None) -> Path:
    """SFT stage `checkpoints/<name>` with TRL's SFTTrainer (completion-only loss).

    dataset: prompt/completion rows (default: the run's SFT train split); pass another one (e.g.
    ICF prompts with a few-shot context) with another `name` to reuse this stage.
    base: starting checkpoint (default: the run's base model).
    """
    train = dataset if dataset is not None else data.sft["train"]
    if base is None:
        base, base_key = base_model(cfg, run, data)
    else:
        base_key = str(base)
    key = {"stage": name, **cfg.subset(*TRAIN_KEYS, "sft_steps", "sft_lr", "eval_every",
                                       "eval_subset", "model"),
           "base": base_key, "data": _dataset_hash(train, ["prompt", "completion"])}
    stage = f"checkpoints/{name}"
    if run.stage_done(stage, key):
        return run.stage_dir(stage)
    s = _start(cfg, run, data, name, key, base)
    tracker = Tracker(s.tok, s.ids, EvalSet.from_table(data.prompts["eval"], cfg.eval_subset,
                                                       cfg.seed), batch_size=cfg.eval_batch_size)
    args = training_args(cfg, SFTConfig, s.progress, cfg.sft_steps, cfg.sft_lr,
                         run.path("logs", name), completion_only_loss=True, packing=False,
                         max_length=s.length,
                         # Rows of similar length share a batch: padding to the longest row
                         # had doubled the tokens an SFT step computes (bench_step_overhead.py).
                         train_sampling_strategy="group_by_length")
    trainer = SFTTrainer(model=s.model, args=args, processing_class=s.tok,
                         train_dataset=train.select_columns(["prompt", "completion"]),
                         peft_config=peft_config(cfg))
    cb = _callback(cfg, tracker, s.progress, name, trainer)
    fit(trainer, s.progress, s.tok, cb, {"method": name, "rows": len(train)})
    return finish_stage(run, stage, key, s.progress, s.started)


def train_preference(cfg, run, data: RunData, method: str) -> Path:
    """DPO (TRL DPOTrainer, unchanged, on the conflicting pairs) or GDPO / cdpo / mft
    (GDPOTrainer on the shared-belief pairs), from the SFT checkpoint, which is also the reference.
    Returns the stage folder `checkpoints/<method>`."""
    if method not in PREFERENCE_METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(PREFERENCE_METHODS)}")
    sft_dir = train_sft(cfg, run, data)   # reused when already trained
    is_dpo = method == "dpo"
    pairs = data.dpo if is_dpo else data.gdpo
    steps, lr = (cfg.dpo_steps, cfg.dpo_lr) if is_dpo else (cfg.gdpo_steps, cfg.gdpo_lr)
    if is_dpo and cfg.label_smoothing:
        raise ValueError("label_smoothing: TRL's sigmoid DPO ignores it; the DPO baseline runs TRL "
                         "unchanged, so leave label_smoothing at 0 for it")
    key = {"stage": method, **cfg.subset(*TRAIN_KEYS, "beta", "eval_every", "eval_subset",
                                         "precompute_ref_log_probs", "model"),
           "steps": steps, "lr": lr, "sft": run.stage_hash("checkpoints/sft"),
           "data": data_hash(run, data)}
    if not is_dpo:
        key.update(method_lambdas(cfg, method), calibration_form=cfg.calibration_form,
                   label_smoothing=cfg.label_smoothing)
    stage = f"checkpoints/{method}"
    if run.stage_done(stage, key):
        return run.stage_dir(stage)
    s = _start(cfg, run, data, method, key, sft_dir)
    eval_pairs = pairs["eval"]
    eval_pairs = eval_pairs.shuffle(seed=cfg.seed).select(range(min(cfg.eval_subset, len(eval_pairs))))
    tracker = Tracker(s.tok, s.ids, EvalSet.from_table(data.prompts["eval"], cfg.eval_subset,
                                                       cfg.seed),
                      pairs=eval_pairs, ref_model=s.model, beta=cfg.beta,
                      batch_size=cfg.eval_batch_size, max_length=s.length)
    ref_model = None
    if not (cfg.precompute_ref_log_probs or cfg.lora):
        ref_model, _ = models.load_policy(sft_dir, cfg)
    cols = ["prompt", "chosen", "rejected"] + ([] if is_dpo else ["p_star", "belief_mask"])
    train = pairs["train"].select_columns(cols)
    common = dict(beta=cfg.beta, precompute_ref_log_probs=cfg.precompute_ref_log_probs,
                  label_smoothing=cfg.label_smoothing, max_length=s.length)
    logs = run.path("logs", method)
    if is_dpo:
        args = training_args(cfg, DPOConfig, s.progress, steps, lr, logs, **common)
    else:
        args = training_args(cfg, GDPOConfig, s.progress, steps, lr, logs, **common,
                             calibration_form=cfg.calibration_form, **method_lambdas(cfg, method))
    kwargs = dict(model=s.model, ref_model=ref_model, args=args, processing_class=s.tok,
                  train_dataset=train, peft_config=peft_config(cfg))
    trainer = DPOTrainer(**kwargs) if is_dpo else GDPOTrainer(**kwargs, belief_token_ids=s.ids)
    cb = _callback(cfg, tracker, s.progress, method, trainer)
    fit(trainer, s.progress, s.tok, cb, {"method": method, "pairs": len(train), **key})
    return finish_stage(run, stage, key, s.progress, s.started)
