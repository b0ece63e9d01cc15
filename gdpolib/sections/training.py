"""The training section: batch and schedule of each training stage, the preference and GDPO
loss settings, LoRA, checkpoints, model selection and trackers. A field that IS a TRL argument
says so (`trl=`, its name in TRL's configs), and `trl_args` builds a stage's TRL config
(SFTConfig, DPOConfig, GDPOConfig) from those fields directly."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gdpolib import methods as registry
from gdpolib.paramspec import param


def _check_ablations(value: list[str]) -> str | None:
    return registry.unknown_problem(value, lambda m: m.role == "ablation", "registered ablations")


@dataclasses.dataclass(frozen=True)
class TrainingSection:
    """How every training stage trains. The defaults are the demo's schedule (params/quick.yaml:
    the 4 x 64 smoke one)."""

    batch_size: int = param(16, "SFT examples or DPO/GDPO pairs per device per step.", ge=1,
                            trl="per_device_train_batch_size")
    grad_accum: int = param(1, "Gradient accumulation steps per optimizer step.", ge=1,
                            trl="gradient_accumulation_steps")
    sft_steps: int = param(3000, "SFT optimizer steps.", ge=1)
    sft_lr: float = param(5.0e-3, "SFT peak learning rate (linear warmup and decay).", gt=0)
    dpo_steps: int = param(100, "DPO optimizer steps.", ge=1)
    dpo_lr: float = param(2.0e-4, "DPO peak learning rate.", gt=0)
    gdpo_steps: int = param(100, "GDPO optimizer steps (also of its ablations).", ge=1)
    gdpo_lr: float = param(2.0e-4, "GDPO peak learning rate (also of its ablations).", gt=0)
    warmup_steps: int = param(10, "Linear warmup steps of each training stage (at most its "
                                  "steps - 1).", ge=0)
    beta: float = param(0.1, "DPO/GDPO beta: scale of the implicit reward (and the margins).", gt=0,
                        trl="beta")
    label_smoothing: float = param(0.0, "GDPO's DPO term: assumed rate of flipped preferences "
                                        "(conservative DPO); the DPO baseline needs 0.", ge=0,
                                  lt=0.5, trl="label_smoothing")
    lambda_cal: float = param(1.0, "GDPO weight of the calibration KL(p* || p_theta(b|x)).", ge=0,
                              trl="lambda_cal")
    lambda_nll: float = param(1.0, "GDPO weight of the belief NLL -log p_theta(b_c|x).", ge=0,
                              trl="lambda_nll")
    lambda_pref: float = param(1.0, "GDPO weight of the DPO term on shared-belief pairs.", ge=0,
                               trl="lambda_pref")
    calibration_form: str = param("renorm", "Calibration KL over the belief tokens renormalised "
                                            "or over the full vocabulary.",
                                  choices=("renorm", "full"), trl="calibration_form")
    ablations: list[str] = param([], "GDPO ablations to train and evaluate too (the methods of "
                                     "role ablation: cdpo = no calibration or NLL, mft = no "
                                     "preference term).", check=_check_ablations,
                                 allowed="names of gdpolib/methods.py's ablations")
    eval_every: int = param(25, "Steps between in-training evaluations (eval JSD, margins).", ge=1)
    eval_subset: int = param(64, "Eval prompts and pairs each in-training evaluation scores.", ge=1)
    precompute_ref_log_probs: bool = param(False, "Compute reference log-probs once before "
                                                  "training instead of keeping a reference "
                                                  "model.", trl="precompute_ref_log_probs")
    lora: bool = param(False, "Train LoRA adapters (PEFT, all linear layers) instead of all "
                              "weights; the frozen base is the reference.")
    lora_r: int = param(16, "LoRA rank r of the adapter matrices.", ge=1)
    lora_alpha: int = param(32, "LoRA alpha: adapter updates are scaled by alpha / r.", ge=1)
    gradient_checkpointing: bool = param(False, "Recompute activations in the backward pass to "
                                                "save memory (CUDA only).")
    report_to: str = param("none", "Experiment tracker for training curves, our eval JSD, belief "
                                   "mass and reward margins, and GPO's validation score: "
                                   "tensorboard (the run's logs/), trackio (local; project = "
                                   "the run's name) or wandb.",
                           choices=("none", "tensorboard", "trackio", "wandb"))
    push_to_hub: str | None = param(None, "Hugging Face hub repo id (org/name) that a trained "
                                          "model, its model card and the built datasets are "
                                          "published to; null = never publish.",
                                    pattern=r"[A-Za-z0-9][\w.-]*/[\w.-]+",
                                    allowed="a hub repo id org/name, or null")
    save_every: int = param(200, "Steps between Trainer checkpoints (to resume a stage).", ge=1,
                            trl="save_steps")
    select_by: str = param("last", "Checkpoint a stage keeps: its last step, or the evaluated step "
                                   "with the lowest eval JSD (never the loss).",
                           choices=("last", "eval_jsd"))

    def schedule(self, name: str) -> tuple[int, float]:
        """(optimizer steps, peak learning rate) of a schedule: sft, dpo or gdpo."""
        return getattr(self, f"{name}_steps"), getattr(self, f"{name}_lr")

    def trl_args(self, cls: type, *, steps: int, lr: float, cuda: bool, logs_dir: Path,
                 **stage: Any) -> Any:
        """The TRL config `cls` (SFTConfig, DPOConfig, GDPOConfig) of one training stage: every
        field of this section with a TRL name that `cls` takes, the stage's schedule (`steps`,
        peak `lr`, linear warmup and decay), Trainer checkpoints for resuming, the trackers
        (a stage is one tracker run, named after `logs_dir`), bf16 and gradient checkpointing
        on CUDA only; `stage` (output_dir, seed, max_length, the method's trainer_args, ...)
        is passed as it is and wins."""
        takes = {f.name for f in dataclasses.fields(cls)}
        declared = {f.metadata["trl"]: getattr(self, f.name) for f in dataclasses.fields(self)
                    if f.metadata.get("trl") in takes}
        derived = dict(max_steps=steps, learning_rate=lr, lr_scheduler_type="linear",
                       warmup_steps=min(self.warmup_steps, max(steps - 1, 0)),
                       logging_steps=max(1, min(10, steps // 20 or 1)), save_strategy="steps",
                       save_total_limit=1, run_name=Path(logs_dir).name,
                       report_to=[] if self.report_to == "none" else [self.report_to],
                       # transformers 5 renamed it; the old name still works but warns
                       activation_checkpointing=self.gradient_checkpointing and cuda,
                       dataloader_num_workers=0)
        return cls(**{**declared, **derived, **stage})
