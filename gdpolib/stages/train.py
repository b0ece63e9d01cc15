"""Stages of notebooks 02 and 03: SFT (TRL SFTTrainer) and the preference methods of the
registry (gdpolib.methods): those of trainer `dpo` (TRL DPOTrainer, its loss unchanged but for
their trainer_args, e.g. the DPO baseline) and of trainer `gdpo` (GDPOTrainer: GDPO and its
ablations), pairs of similar length batched (gdpolib.trainers.pairs); each a cached, resumable
run stage `checkpoints/<method>/` keyed by its parameters and the hashes of the stages it starts
from.

  train_sft(cfg, run, data, dataset=None, name="sft") -> Path
  train_preference(cfg, run, data, method) -> Path        a registered preference method
Model selection is a fixed schedule (the last step) for every method unless `select_by: eval_jsd`
keeps the step with the lowest eval-subset JSD; never a method's own loss (docs/deviations.md).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from datasets import Dataset
from trl import DPOConfig, SFTConfig, SFTTrainer

from gdpolib import beliefs, models
from gdpolib import methods as registry
from gdpolib.data.records import RunData
from gdpolib.generation import max_context
from gdpolib.evalset import EvalSet
from gdpolib.seeds import stable_hash
from gdpolib.stages.data import base_model, sequence_length
from gdpolib.trainers.fit import finish_stage, fit, peft_config, progress_dir, trl_args
from gdpolib.trainers.gdpo_trainer import GDPOConfig, GDPOTrainer
from gdpolib.trainers.pairs import DPOTrainer
from gdpolib.trainers.tracking import Tracker, TrackingCallback

# A preference trainer of the registry -> (its TRL config, its TRL trainer, the pair columns).
TRAINERS = {"dpo": (DPOConfig, DPOTrainer, ("prompt", "chosen", "rejected")),
            "gdpo": (GDPOConfig, GDPOTrainer,
                     ("prompt", "chosen", "rejected", "p_star", "belief_mask"))}
GDPO_WEIGHTS = ("lambda_cal", "lambda_nll", "lambda_pref")
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
    args = trl_args(cfg, SFTConfig, s.progress, cfg.sft_steps, cfg.sft_lr,
                    run.path("logs", name), completion_only_loss=True, packing=False,
                    max_length=s.length,
                    # Rows of similar length share a batch: padding to the longest row had
                    # doubled the tokens an SFT step computes (bench_step_overhead.py).
                    train_sampling_strategy="group_by_length")
    trainer = SFTTrainer(model=s.model, args=args, processing_class=s.tok,
                         train_dataset=train.select_columns(["prompt", "completion"]),
                         peft_config=peft_config(cfg))
    cb = _callback(cfg, tracker, s.progress, name, trainer)
    fit(trainer, s.progress, s.tok, cb, {"method": name, "rows": len(train)})
    return finish_stage(run, stage, key, s.progress, s.started)


def method_args(cfg, method: registry.Method) -> dict[str, Any]:
    """What a preference method trains with beyond the shared training values (its stage key
    holds them): its trainer_args and, for GDPOTrainer, the GDPO weights (the training section's,
    overridden by the method's: an ablation zeroes some), calibration form and label smoothing."""
    if method.trainer != "gdpo":
        return dict(method.trainer_args)
    return {**cfg.subset(*GDPO_WEIGHTS), **method.trainer_args,
            **cfg.subset("calibration_form", "label_smoothing")}


def train_preference(cfg, run, data: RunData, method: str) -> Path:
    """A registered preference method from the SFT checkpoint, which is also the reference:
    trainer `dpo` (TRL DPOTrainer on its records, e.g. the DPO baseline on the conflicting
    pairs) or `gdpo` (GDPOTrainer on the shared-belief pairs: GDPO, cdpo, mft). Returns the
    stage folder `checkpoints/<method>`."""
    m = registry.get(method)
    if not m.preference:
        raise ValueError(f"method {method!r} is not one of the preference methods "
                         f"({', '.join(registry.names(lambda x: x.preference))})")
    sft_dir = train_sft(cfg, run, data)   # reused when already trained
    args_cls, trainer_cls, cols = TRAINERS[m.trainer]
    pairs = getattr(data, m.records)
    steps, lr = cfg.training.schedule(m.schedule)
    if m.trainer == "dpo" and cfg.label_smoothing:
        raise ValueError(f"label_smoothing: TRL's DPOTrainer runs {method} unchanged, and "
                         f"label_smoothing is GDPO's (its DPO term); leave it at 0 for {method}")
    extra = method_args(cfg, m)
    key = {"stage": method, **cfg.subset(*TRAIN_KEYS, "beta", "eval_every", "eval_subset",
                                         "precompute_ref_log_probs", "model"),
           "steps": steps, "lr": lr, "sft": run.stage_hash("checkpoints/sft"),
           "data": data_hash(run, data), "batches": "group_by_length", **extra}
    stage = f"checkpoints/{method}"
    if run.stage_done(stage, key):
        return run.stage_dir(stage)
    s = _start(cfg, run, data, method, key, sft_dir)
    # The same eval pairs for every method (the registry's `margins`: the conflicting DPO pairs)
    # measure the skew like for like; the GDPO family's own shared-belief pairs
    # (`shared_margins`) are the same draws (row i of data.dpo and data.gdpo), tracked as shared_*.
    like_for_like = getattr(data, m.margins)["eval"]
    n_eval = min(cfg.eval_subset, len(like_for_like))

    def subset(ds):    # the same seeded shuffle of equally long datasets: the same rows
        return ds.shuffle(seed=cfg.seed).select(range(n_eval))

    shared = getattr(data, m.shared_margins)["eval"] if m.shared_margins else None
    tracker = Tracker(s.tok, s.ids, EvalSet.from_table(data.prompts["eval"], cfg.eval_subset,
                                                       cfg.seed),
                      pairs=subset(like_for_like), ref_logps_from=s.model, beta=cfg.beta,
                      batch_size=cfg.eval_batch_size, max_length=s.length,
                      shared_pairs=None if shared is None else subset(shared))
    ref_model = None
    if not (cfg.precompute_ref_log_probs or cfg.lora):
        ref_model, _ = models.load_policy(sft_dir, cfg)
    train = pairs["train"].select_columns(list(cols))
    # Pairs of similar length share a batch, as SFT's rows (trainers.pairs): random batches
    # padded every pair to the longest, 1.8-1.9x the real tokens.
    args = trl_args(cfg, args_cls, s.progress, steps, lr, run.path("logs", method),
                    max_length=s.length, train_sampling_strategy="group_by_length", **extra)
    kwargs = dict(model=s.model, ref_model=ref_model, args=args, processing_class=s.tok,
                  train_dataset=train, peft_config=peft_config(cfg))
    if m.trainer == "gdpo":
        kwargs["belief_token_ids"] = s.ids
    trainer = trainer_cls(**kwargs)
    cb = _callback(cfg, tracker, s.progress, method, trainer)
    fit(trainer, s.progress, s.tok, cb, {"method": method, "pairs": len(train), **key})
    return finish_stage(run, stage, key, s.progress, s.started)
