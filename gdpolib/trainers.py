"""Training: SFT (TRL SFTTrainer), the DPO baseline (TRL DPOTrainer, unchanged) and GDPO.

GDPOTrainer subclasses TRL's DPOTrainer and replaces only `_compute_loss` (plus the dataset and
collator hooks that carry the belief spans). One policy forward over [chosen; rejected] gives
  - the summed response log-probs for the belief-conditioned DPO term (TRL's fused LM head),
  - the belief-span token log-probs of the chosen rows (same fused head, same forward),
  - the logits at the answer position (the last prompt token of each chosen row), computed from
    the backbone's hidden states of that forward (a forward hook; one position per row, cheap),
and one reference forward (TRL's `compute_ref_log_probs`) or none with precomputed reference
log-probs (TRL's `precompute_ref_log_probs`, which caches them next to the dataset's files).

The belief prefix `b_c<label>` is the same on both sides of a GDPO pair, so its log-prob cancels
in the DPO log-ratio; the collator drops it from `completion_mask` (the DPO mask), which keeps the
DPO value unchanged and the reference log-probs to the response. Spans come from character
offsets (gdpolib.beliefs.belief_span), never from a '>' token search (bug B8).

Stages (cached in the run directory, keyed by the parameters and upstream stage hashes):
  train_sft(cfg, run, data, dataset=None, name="sft") -> Path
  train_preference(cfg, run, data, method) -> Path        method in dpo | gdpo | cdpo | mft
  evaluate_test(cfg, run, data, method) -> dict           test JSD (+ skew margins) -> metrics.json
Model selection is a fixed schedule (the last step) for every method unless `select_by: eval_jsd`
keeps the step with the lowest eval-subset JSD; never a method's own loss (bug B20).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer  # noqa: E402
from trl.data_utils import common_prefix_length  # noqa: E402
from trl.trainer.dpo_trainer import DataCollatorForPreference  # noqa: E402

from gdpolib import beliefs, losses  # noqa: E402

log = logging.getLogger("gdpolib.trainers")

PREFERENCE_METHODS = ("dpo", "gdpo", "cdpo", "mft")
SELECT_BY = ("last", "eval_jsd")
# Batch keys the GDPO collator adds (the model never sees them).
GDPO_KEYS = ("belief_span_mask", "answer_pos", "p_star", "belief_mask")
# Dataset columns the GDPO trainer keeps besides TRL's own.
GDPO_COLUMNS = ("belief_len", "prefix_len", "p_star", "belief_mask")


def method_lambdas(cfg, method: str) -> dict[str, float]:
    """lambda_cal, lambda_nll, lambda_pref for gdpo and its ablations (same code path)."""
    lam = {"lambda_cal": cfg.lambda_cal, "lambda_nll": cfg.lambda_nll, "lambda_pref": cfg.lambda_pref}
    if method == "cdpo":
        lam.update(lambda_cal=0.0, lambda_nll=0.0)
    elif method == "mft":
        lam.update(lambda_pref=0.0)
    elif method != "gdpo":
        raise ValueError(f"no GDPO weights for method {method!r} (gdpo | cdpo | mft)")
    return lam


# ============================================================== belief spans (character offsets)
def belief_spans(tokenizer, prompt: str, chosen: str, rejected_ids: Sequence[int],
                 prompt_ids: Sequence[int], chosen_ids: Sequence[int]) -> dict[str, int]:
    """Token counts of the belief span and of the DPO-excluded prefix of one GDPO pair.

    The chosen completion `k<label>response` is tokenised with offsets exactly as TRL tokenises it
    (`tokenizer(prompt + chosen)`); completion token j covers characters [s_j, e_j) of `chosen`.
    - belief_len: tokens overlapping the digit, '<' and the label (chars [0, L-1) of the prefix
      `k<label>` of length L); a token merging ')>' counts as belief.
    - prefix_len: tokens lying inside `k<label>` (chars [0, L)) that are also a common token prefix
      of the chosen and rejected completions, so that excluding them from DPO is exact.
    """
    start, end = beliefs.belief_span(chosen)
    enc = tokenizer(prompt + chosen, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    n_prompt = len(prompt_ids)
    if list(ids[n_prompt:]) != list(chosen_ids):
        raise ValueError(f"tokenisation with offsets differs from TRL's for prompt {prompt[:60]!r}")
    base = len(prompt)
    rel = [(s - base, e - base) for s, e in offsets[n_prompt:]]
    if not rel or rel[0] != (start, start + 1):
        raise beliefs.BeliefTokenError(
            f"the belief digit of {chosen[:20]!r} is not a single token right after the prompt "
            f"(first completion token covers chars {rel[:1]})")
    belief_len = sum(1 for s, _ in rel if s < end - 1)
    inside = sum(1 for _, e in rel if e <= end)
    prefix_len = min(inside, common_prefix_length(list(chosen_ids), list(rejected_ids)))
    return {"belief_len": belief_len, "prefix_len": prefix_len}


@dataclass
class GDPOCollator(DataCollatorForPreference):
    """TRL's preference collator plus the GDPO tensors.

    Adds, for a batch of N pairs ([chosen; rejected] = 2N rows, T columns):
      completion_mask [2N, T]: TRL's mask minus the shared belief prefix (the DPO/response mask),
      belief_span_mask [2N, T]: 1 on the chosen rows' belief-span tokens (0 on rejected rows),
      answer_pos [N]: index of the last prompt token of each chosen row (predicts the digit),
      p_star, belief_mask [N, K_MAX].
    """

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = super().torch_call(examples)
        n = len(examples)
        span = torch.zeros_like(out["completion_mask"])
        answer = torch.empty(n, dtype=torch.long)
        for i, ex in enumerate(examples):
            p = len(ex["prompt_ids"])
            out["completion_mask"][i, p:p + ex["prefix_len"]] = 0
            out["completion_mask"][n + i, p:p + ex["prefix_len"]] = 0
            span[i, p:p + ex["belief_len"]] = 1
            answer[i] = p - 1
        out["belief_span_mask"] = span
        out["answer_pos"] = answer
        out["p_star"] = torch.tensor([ex["p_star"] for ex in examples], dtype=torch.float32)
        out["belief_mask"] = torch.tensor([ex["belief_mask"] for ex in examples], dtype=torch.long)
        return out


def _unwrap(trainer_or_accel, model):
    """The plain causal LM behind DDP / PEFT wrappers."""
    from accelerate.utils import is_peft_model

    m = trainer_or_accel.unwrap_model(model) if trainer_or_accel is not None else model
    return m.get_base_model() if is_peft_model(m) else m


class GDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer with the GDPO loss: lambda_cal*KL + lambda_pref*DPO - lambda_nll*log p(b_c).

    Extra arguments: belief_token_ids (K_MAX ids of the digits "0".."K_MAX-1"), the lambdas and
    calibration_form. Ablations: cdpo = (lambda_cal = lambda_nll = 0), mft = (lambda_pref = 0).
    The training rows need GDPO pairs (both completions start with the chosen belief prefix) with
    p_star and belief_mask columns.
    """

    def __init__(self, *args, belief_token_ids: Sequence[int], lambda_cal: float = 1.0,
                 lambda_nll: float = 1.0, lambda_pref: float = 1.0,
                 calibration_form: str = "renorm", **kwargs):
        if calibration_form not in losses.CALIBRATION_FORMS:
            raise ValueError(f"calibration_form {calibration_form!r} not in {losses.CALIBRATION_FORMS}")
        self.belief_token_ids = torch.tensor(list(belief_token_ids), dtype=torch.long)
        self.lambdas = {"lambda_cal": lambda_cal, "lambda_nll": lambda_nll, "lambda_pref": lambda_pref}
        self.calibration_form = calibration_form
        kwargs_args = kwargs.get("args")
        tokenizer = kwargs.get("processing_class")
        if kwargs.get("data_collator") is None and tokenizer is not None:
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            kwargs["data_collator"] = GDPOCollator(
                pad_token_id=pad, max_length=getattr(kwargs_args, "max_length", None))
        super().__init__(*args, **kwargs)
        cfg = self.model.config.get_text_config()
        if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
            raise NotImplementedError("GDPOTrainer reads answer-position logits through lm_head; "
                                      "models with logit soft-capping or scaling are not supported")

    # ---- dataset: TRL's tokenisation plus the belief spans ----
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if "belief_len" in dataset.column_names:
            return dataset
        missing = [c for c in ("p_star", "belief_mask") if c not in dataset.column_names]
        if missing:
            raise ValueError(f"GDPO {dataset_name} pairs need the columns {missing}")
        tok = self._tokenizer

        def add(ex):
            start, end = beliefs.belief_span(ex["chosen"])
            if ex["rejected"][:end] != ex["chosen"][:end]:
                raise ValueError(f"GDPO pair does not share the chosen belief prefix: "
                                 f"{ex['chosen'][:end]!r} vs {ex['rejected'][:end]!r}")
            return belief_spans(tok, ex["prompt"], ex["chosen"], ex["rejected_ids"],
                                ex["prompt_ids"], ex["chosen_ids"])

        return dataset.map(add, desc=f"Belief spans ({dataset_name})")

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *GDPO_COLUMNS]))

    def compute_ref_log_probs(self, model, inputs):
        """TRL's reference log-probs over the response mask (GDPO keys dropped)."""
        return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k not in GDPO_KEYS})

    # ---- the loss ----
    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        extra = {k: inputs[k] for k in GDPO_KEYS}
        inputs = {k: v for k, v in inputs.items() if k not in GDPO_KEYS}
        n = inputs["input_ids"].shape[0] // 2
        resp_mask, span = inputs["completion_mask"], extra["belief_span_mask"]
        labels = inputs["input_ids"].masked_fill((resp_mask + span) == 0, -100)
        model_kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
                        "use_cache": False}

        # ONE policy forward; the hook keeps the backbone's hidden states of this forward only.
        lm = _unwrap(self.accelerator, model)
        captured: dict[str, torch.Tensor] = {}
        def keep_hidden(module, args, out):   # returns None: the output is left untouched
            captured.setdefault("h", out[0])

        hook = lm.base_model.register_forward_hook(keep_hidden)
        try:
            outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        finally:
            hook.remove()
        seq = resp_mask.size(1) - 1
        token_logps = outputs.log_probs[:, -seq:]                      # [2N, T-1]
        logps = (token_logps * resp_mask[:, 1:]).sum(dim=1)
        pol_c, pol_r = logps.chunk(2, dim=0)

        rows = torch.arange(n, device=token_logps.device)
        h_answer = captured["h"][:n][rows, extra["answer_pos"].to(rows.device)]          # [N, H]
        logits = lm.get_output_embeddings()(h_answer.to(lm.get_output_embeddings().weight.device)).float()
        belief_logits = logits[:, self.belief_token_ids.to(logits.device)]              # [N, K]
        full_lse = torch.logsumexp(logits, dim=-1)

        if self.precompute_ref_logps:
            ref_c, ref_r = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_c, ref_r = self.compute_ref_log_probs(
                self.ref_model if self.ref_model is not None else model, inputs)

        loss_vec, diag = losses.gdpo_loss(
            pol_c, pol_r, ref_c.to(pol_c.device), ref_r.to(pol_c.device), belief_logits,
            extra["p_star"].to(logits.device), extra["belief_mask"].to(logits.device),
            token_logps[:n], span[:n, 1:], beta=self.beta, label_smoothing=self.label_smoothing,
            form=self.calibration_form, full_logsumexp=full_lse, **self.lambdas)
        loss = loss_vec.mean()

        gather = self.accelerator.gather_for_metrics
        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(gather(diag["reward_c"]).mean().item())
        metrics["rewards/rejected"].append(gather(diag["reward_r"]).mean().item())
        metrics["rewards/accuracies"].append(gather((diag["margin"] > 0).float()).mean().item())
        metrics["rewards/margins"].append(gather(diag["margin"]).mean().item())
        metrics["logps/chosen"].append(gather(pol_c.detach()).mean().item())
        metrics["logps/rejected"].append(gather(pol_r.detach()).mean().item())
        for key in ("kl", "dpo", "belief_logp", "belief_mass"):
            metrics[f"gdpo/{key}"].append(gather(diag[key]).mean().item())
        if return_outputs:  # as TRL: the fused head builds no logits, recompute them
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return loss, outputs
        return loss


# ============================================================== evaluation helpers
def encode_pairs(tokenizer, pairs: Dataset) -> list[dict[str, list[int]]]:
    """prompt_ids / chosen_ids / rejected_ids exactly as TRL's DPOTrainer tokenises them."""
    eos = tokenizer.eos_token
    out = []
    for ex in pairs:
        chosen = ex["chosen"] if ex["chosen"].endswith(eos) else ex["chosen"] + eos
        rejected = ex["rejected"] if ex["rejected"].endswith(eos) else ex["rejected"] + eos
        p = tokenizer(ex["prompt"])["input_ids"]
        pc = tokenizer(ex["prompt"] + chosen)["input_ids"]
        pr = tokenizer(ex["prompt"] + rejected)["input_ids"]
        n = min(common_prefix_length(p, pc), common_prefix_length(p, pr))
        out.append({"prompt_ids": p[:n], "chosen_ids": pc[n:], "rejected_ids": pr[n:]})
    return out


@torch.no_grad()
def completion_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs of a TRL preference batch: (chosen [N], rejected [N]).

    Runs the backbone once and the LM head row by row (no [2N, T, V] tensor)."""
    lm = _unwrap(None, model)
    was_training = model.training
    model.eval()
    try:
        device = lm.get_output_embeddings().weight.device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        cmask = batch["completion_mask"].to(device)
        hidden = lm.base_model(input_ids=ids, attention_mask=mask, use_cache=False)[0]
        head = lm.get_output_embeddings()
        sums = []
        for i in range(ids.size(0)):
            lp = torch.log_softmax(head(hidden[i, :-1]).float(), dim=-1)
            tok = lp.gather(-1, ids[i, 1:, None]).squeeze(-1)
            sums.append((tok * cmask[i, 1:]).sum())
        sums = torch.stack(sums).cpu()
    finally:
        model.train(was_training)
    return sums.chunk(2)


def pair_logps(model, tokenizer, encoded: list[dict], batch_size: int = 16,
               max_length: int | None = None) -> np.ndarray:
    """[N, 2] summed log-probs (chosen, rejected) of encoded pairs (encode_pairs), sequences cut
    to max_length as TRL's collator cuts them in training."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collate = DataCollatorForPreference(pad_token_id=pad, max_length=max_length)
    out = []
    for s in range(0, len(encoded), batch_size):
        c, r = completion_logps(model, collate(encoded[s:s + batch_size]))
        out.append(torch.stack([c, r], dim=1).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2))


def margin_summary(margins: np.ndarray, majority: np.ndarray) -> dict[str, float]:
    """Mean reward margin and pairwise accuracy, all pairs and split by majority / minority
    chosen belief (majority = b_c is argmax p*). margins, majority: [N]."""
    margins, majority = np.asarray(margins, float), np.asarray(majority).astype(bool)

    def mean(x):
        return float(np.mean(x)) if len(x) else float("nan")

    return {"margin": mean(margins), "margin_majority": mean(margins[majority]),
            "margin_minority": mean(margins[~majority]), "accuracy": mean(margins > 0),
            "accuracy_majority": mean(margins[majority] > 0),
            "accuracy_minority": mean(margins[~majority] > 0),
            "n_majority": int(majority.sum()), "n_minority": int((~majority).sum())}


@dataclass
class EvalPrompts:
    """Prompts with their targets, for the belief-distribution read-out."""

    prompts: list[str]
    p_star: np.ndarray        # [N, K_MAX]
    mask: np.ndarray          # [N, K_MAX]
    qids: list[str]

    @classmethod
    def from_dataset(cls, ds: Dataset, n: int | None = None, seed: int = 0) -> "EvalPrompts":
        """All rows, or a fixed seeded subset of n rows."""
        if n is not None and n < len(ds):
            ds = ds.shuffle(seed=seed).select(range(n))
        return cls(list(ds["prompt"]), np.asarray(ds["p_star"], float),
                   np.asarray(ds["belief_mask"], float), [str(q) for q in ds["qid"]])


def belief_readout(model, tokenizer, prompts: EvalPrompts, belief_ids: Sequence[int],
                   batch_size: int = 32) -> dict[str, Any]:
    """Belief distributions at the answer position: probs [N, K] (full softmax at the belief ids),
    per-prompt JSD vs p* (renormalised, scipy distance) and the mass on the belief set."""
    from gdpolib import generation, metrics

    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if limit:
        lengths = [len(ids) for ids in tokenizer(prompts.prompts)["input_ids"]]
        too_long = [(n, q) for n, q in zip(lengths, prompts.qids) if n >= limit]
        if too_long:
            raise ValueError(
                f"{len(too_long)} eval prompt(s) do not fit the model's {limit} positions (longest "
                f"{max(too_long)[0]} tokens, question {max(too_long)[1]}): raise max_length (the tiny "
                f"model's context is max_length) or use a model with a longer context")
    probs = generation.belief_distributions(model, tokenizer, prompts.prompts, belief_ids, batch_size)
    jsd = metrics.jsd_per_prompt(probs, prompts.p_star, prompts.mask)
    mass = (probs * prompts.mask).sum(axis=1)
    return {"probs": probs, "jsd": jsd, "mass": mass}


class Tracker:
    """Evaluates a policy on a FIXED eval subset: JSD and belief mass on eval prompts, and (for
    preference methods) reward margins vs the reference, split by majority / minority."""

    def __init__(self, tokenizer, belief_ids: Sequence[int], prompts: EvalPrompts,
                 pairs: Dataset | None = None, ref_model=None, beta: float = 0.1,
                 batch_size: int = 16, max_length: int | None = None):
        self.tokenizer, self.belief_ids, self.prompts = tokenizer, list(belief_ids), prompts
        self.beta, self.batch_size, self.max_length = beta, batch_size, max_length
        self.pairs = encode_pairs(tokenizer, pairs) if pairs is not None else None
        self.majority = np.asarray(pairs["majority"]).astype(bool) if pairs is not None else None
        self.ref = None
        if self.pairs is not None:
            if ref_model is None:
                raise ValueError("margins need the reference model")
            self.ref = pair_logps(ref_model, tokenizer, self.pairs, batch_size, max_length)

    def evaluate(self, model) -> dict[str, float]:
        read = belief_readout(model, self.tokenizer, self.prompts, self.belief_ids, self.batch_size)
        rec = {"jsd": float(np.mean(read["jsd"])), "belief_mass": float(np.mean(read["mass"]))}
        if self.pairs is not None:
            pol = pair_logps(model, self.tokenizer, self.pairs, self.batch_size, self.max_length)
            margins = self.beta * ((pol[:, 0] - self.ref[:, 0]) - (pol[:, 1] - self.ref[:, 1]))
            rec.update(margin_summary(margins, self.majority))
        return rec


class TrackingCallback(TrainerCallback):
    """Runs the Tracker every `every` steps (and at steps 0 and last); appends JSON lines to
    `path`; forwards the values to TensorBoard / wandb through the trainer's own logging
    callbacks (only those report_to enabled). With `best_dir`, saves the policy whenever the eval
    JSD improves (select_by: eval_jsd)."""

    def __init__(self, tracker: Tracker, every: int, path: Path, method: str,
                 best_dir: Path | None = None):
        self.tracker, self.every, self.path, self.method = tracker, max(1, every), Path(path), method
        self.best_dir, self.best = best_dir, float("inf")
        self.handler = None   # set to trainer.callback_handler by attach()
        self.start = time.time()

    def attach(self, trainer) -> "TrackingCallback":
        trainer.add_callback(self)
        self.handler = trainer.callback_handler
        return self

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.start = time.time()
        if self.path.exists():   # resuming: keep the records up to the resumed step
            keep = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln)["step"] <= state.global_step]
            self.path.write_text("".join(ln + "\n" for ln in keep))
            self.best = min([json.loads(ln)["jsd"] for ln in keep] or [float("inf")])
        if state.global_step == 0:
            self._evaluate(args, state, control, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            self._evaluate(args, state, control, model)

    def _evaluate(self, args, state, control, model):
        if not state.is_world_process_zero:
            return
        rec = {"method": self.method, "step": state.global_step,
               "seconds": round(time.time() - self.start, 2), **self.tracker.evaluate(model)}
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        log.info("%s step %d: eval JSD %.4f, mass %.3f%s", self.method, rec["step"], rec["jsd"],
                 rec["belief_mass"], f", margin maj/min {rec['margin_majority']:.3f}/"
                 f"{rec['margin_minority']:.3f}" if "margin" in rec else "")
        if self.best_dir is not None and rec["jsd"] < self.best:
            self.best = rec["jsd"]
            _save_model(model, None, self.best_dir, in_place=False)
            (self.best_dir / "best.json").write_text(json.dumps(rec))
        if self.handler is not None and args.report_to:
            logs = {f"track/{k}": v for k, v in rec.items() if isinstance(v, float)}
            for cb in self.handler.callbacks:
                if cb is not self and type(cb).__name__ not in ("ProgressCallback", "PrinterCallback"):
                    cb.on_log(args, state, control, logs=logs)


def read_tracking(path: Path):
    """tracking.jsonl as a pandas DataFrame."""
    import pandas as pd

    return pd.read_json(path, lines=True)


# ============================================================== models, args, checkpoints
def _save_model(model, tokenizer, out: Path, in_place: bool = True) -> None:
    """safetensors model and tokenizer; LoRA adapters are merged (into a copy unless in_place,
    so that a model still training keeps its adapters)."""
    from accelerate.utils import is_peft_model

    out.mkdir(parents=True, exist_ok=True)
    m = model
    if is_peft_model(model):
        m = (model if in_place else copy.deepcopy(model)).merge_and_unload()
    m.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)


def belief_token_ids(data, tokenizer) -> list[int]:
    """Ids of the digits "0".."K_MAX-1", each checked to be one token (bug B9)."""
    return beliefs.check_belief_tokens(tokenizer, data.k_max)


def _device_flags(cfg) -> dict[str, Any]:
    """bf16 and gradient checkpointing on CUDA only; CPU runs stay fp32 (TRL defaults to bf16)."""
    from gdpolib import models

    device = models.resolve_device(cfg)
    cuda = device.type == "cuda"
    bf16 = cuda and cfg.dtype in ("auto", "bfloat16") and torch.cuda.is_bf16_supported()
    return {"bf16": bf16, "fp16": False, "use_cpu": device.type == "cpu",
            "gradient_checkpointing": bool(cfg.gradient_checkpointing and cuda)}


def training_args(cfg, cls, out_dir: Path, steps: int, lr: float, logs_dir: Path, **extra):
    """TRL config (SFTConfig / DPOConfig) shared by every stage; TensorBoard logs under logs_dir."""
    if cfg.report_to == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(logs_dir)
    kwargs = dict(
        output_dir=str(out_dir), max_steps=steps, learning_rate=lr,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        warmup_steps=min(cfg.warmup_steps, max(steps - 1, 0)), lr_scheduler_type="linear",
        logging_steps=max(1, min(10, steps // 20 or 1)),
        save_strategy="steps", save_steps=max(1, cfg.save_every), save_total_limit=1,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        seed=cfg.seed, data_seed=cfg.seed, max_length=cfg.max_length,
        dataloader_num_workers=0, disable_tqdm=False, **_device_flags(cfg))
    return cls(**{**kwargs, **extra})


def _peft_config(cfg):
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def load_policy(path: Path | str, cfg, train: bool = False):
    """A checkpoint and its tokenizer; fp32 weights for training (bf16 autocast on GPU) unless LoRA."""
    from gdpolib import models

    model, tok = models.load_pretrained(path, cfg)
    if train and not cfg.lora and model.dtype != torch.float32:
        model = model.float()
    return model, tok


def _progress_dir(run, name: str, key_hash: str) -> Path:
    """checkpoints/<name>-steps: Trainer checkpoints for resuming; wiped when the key changes."""
    from accelerate import PartialState

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


def _last_checkpoint(d: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(d)) if d.exists() else None


def _finish_stage(run, name: str, key: dict, progress: Path) -> Path:
    """Move progress/final into the cached stage folder (main process), then drop progress."""
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        def build(out: Path) -> None:
            for item in (progress / "final").iterdir():
                shutil.move(str(item), out / item.name)
        run.stage(name, key, build)
        shutil.rmtree(progress, ignore_errors=True)
    state.wait_for_everyone()
    return run.stage_dir(name)


def _fit(trainer, progress: Path, tokenizer, callback: TrackingCallback | None,
         summary: dict) -> None:
    """Train (resuming from the last checkpoint), then write the final folder."""
    from accelerate import PartialState

    resume = _last_checkpoint(progress)
    if resume:
        log.info("resuming from %s", resume)
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
            _save_model(trainer.model, tokenizer, final)
        if callback is not None and callback.path.exists():
            shutil.copy(callback.path, final / "tracking.jsonl")
        (final / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        summary.update(train_seconds=round(time.time() - start, 2), steps=trainer.state.global_step,
                       train_loss=result.training_loss, resumed_from=resume)
        (final / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


# ============================================================== data access
def _check_select_by(cfg) -> None:
    if cfg.select_by not in SELECT_BY:
        raise ValueError(f"parameter 'select_by': {cfg.select_by!r} is not one of {', '.join(SELECT_BY)}")


def _data_hash(run, data) -> str:
    """The hash of the data stage the datasets come from (data or data_override)."""
    return run.stage_hash(str(Path(data.path).resolve().relative_to(run.root.resolve())))


def _dataset_hash(ds: Dataset, columns: Sequence[str]) -> str:
    from gdpolib.runs import stable_hash

    return stable_hash({c: ds[c] for c in columns})


TRAIN_KEYS = ("seed", "batch_size", "grad_accum", "warmup_steps", "max_length", "lora", "lora_r",
              "lora_alpha", "device", "dtype", "select_by")


# ============================================================== stages
def train_sft(cfg, run, data, dataset: Dataset | None = None, name: str = "sft",
              base: str | Path | None = None) -> Path:
    """SFT stage `checkpoints/<name>` with TRL's SFTTrainer (completion-only loss).

    dataset: prompt/completion rows (default: the run's SFT train split); pass another one (e.g.
    ICF prompts with a few-shot context) with another `name` to reuse this stage.
    base: starting checkpoint (default: the run's base model).
    """
    from gdpolib import models

    _check_select_by(cfg)
    train = dataset if dataset is not None else data.sft["train"]
    if base is None:
        if cfg.model == "tiny":
            models.load_base_model(cfg, run, data.texts())   # builds/reuses checkpoints/base
            base, base_key = run.stage_dir("checkpoints/base"), run.stage_hash("checkpoints/base")
        else:
            base, base_key = cfg.model, cfg.model
    else:
        base_key = str(base)
    key = {"stage": name, **cfg.subset(*TRAIN_KEYS, "sft_steps", "sft_lr", "eval_every",
                                       "eval_subset", "model"),
           "base": base_key, "data": _dataset_hash(train, ["prompt", "completion"])}
    stage = f"checkpoints/{name}"
    if run.stage_done(stage, key):
        return run.stage_dir(stage)
    from gdpolib.runs import stable_hash

    progress = _progress_dir(run, name, stable_hash(key))
    model, tok = load_policy(base, cfg, train=True)
    ids = belief_token_ids(data, tok)
    tracker = Tracker(tok, ids, EvalPrompts.from_dataset(data.prompts["eval"], cfg.eval_subset,
                                                         cfg.seed), batch_size=cfg.eval_batch_size)
    args = training_args(cfg, SFTConfig, progress, cfg.sft_steps, cfg.sft_lr, run.path("logs", name),
                         completion_only_loss=True, packing=False)
    trainer = SFTTrainer(model=model, args=args, processing_class=tok,
                         train_dataset=train.select_columns(["prompt", "completion"]),
                         peft_config=_peft_config(cfg))
    cb = TrackingCallback(tracker, cfg.eval_every, progress / "tracking.jsonl", name,
                          best_dir=progress / "best" if cfg.select_by == "eval_jsd" else None).attach(trainer)
    _fit(trainer, progress, tok, cb, {"method": name, "rows": len(train)})
    return _finish_stage(run, stage, key, progress)


def train_preference(cfg, run, data, method: str) -> Path:
    """DPO (TRL DPOTrainer, unchanged, on the conflicting pairs) or GDPO / cdpo / mft
    (GDPOTrainer on the shared-belief pairs), from the SFT checkpoint, which is also the reference.
    Returns the stage folder `checkpoints/<method>`."""
    if method not in PREFERENCE_METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(PREFERENCE_METHODS)}")
    _check_select_by(cfg)
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
           "data": _data_hash(run, data)}
    if not is_dpo:
        key.update(method_lambdas(cfg, method), calibration_form=cfg.calibration_form,
                   label_smoothing=cfg.label_smoothing)
    stage = f"checkpoints/{method}"
    if run.stage_done(stage, key):
        return run.stage_dir(stage)
    from gdpolib.runs import stable_hash

    progress = _progress_dir(run, method, stable_hash(key))
    model, tok = load_policy(sft_dir, cfg, train=True)
    ids = belief_token_ids(data, tok)
    eval_pairs = pairs["eval"]
    eval_pairs = eval_pairs.shuffle(seed=cfg.seed).select(range(min(cfg.eval_subset, len(eval_pairs))))
    tracker = Tracker(tok, ids, EvalPrompts.from_dataset(data.prompts["eval"], cfg.eval_subset,
                                                         cfg.seed),
                      pairs=eval_pairs, ref_model=model, beta=cfg.beta, batch_size=cfg.eval_batch_size,
                      max_length=cfg.max_length)
    ref_model = None
    if not (cfg.precompute_ref_log_probs or cfg.lora):
        ref_model, _ = load_policy(sft_dir, cfg)
    cols = ["prompt", "chosen", "rejected"] + ([] if is_dpo else ["p_star", "belief_mask"])
    train = pairs["train"].select_columns(cols)
    args = training_args(cfg, DPOConfig, progress, steps, lr, run.path("logs", method),
                         beta=cfg.beta, precompute_ref_log_probs=cfg.precompute_ref_log_probs,
                         label_smoothing=cfg.label_smoothing)
    common = dict(model=model, ref_model=ref_model, args=args, processing_class=tok,
                  train_dataset=train, peft_config=_peft_config(cfg))
    if is_dpo:
        trainer = DPOTrainer(**common)
    else:
        trainer = GDPOTrainer(**common, belief_token_ids=ids, calibration_form=cfg.calibration_form,
                              **method_lambdas(cfg, method))
    cb = TrackingCallback(tracker, cfg.eval_every, progress / "tracking.jsonl", method,
                          best_dir=progress / "best" if cfg.select_by == "eval_jsd" else None).attach(trainer)
    _fit(trainer, progress, tok, cb, {"method": method, "pairs": len(train), **key})
    return _finish_stage(run, stage, key, progress)


def evaluate_test(cfg, run, data, method: str, write: bool = True) -> dict[str, Any]:
    """Test-split numbers of a trained stage: mean JSD from probabilities and belief mass on the
    test prompts; for preference methods also the reward margins on the test pairs vs the SFT
    reference, by majority / minority. Cached as stage `stages/test/<method>`; merged into
    metrics.json (methods.<m>.jsd, and skew.<m> for dpo and gdpo)."""
    key = {"method": method, "model": run.stage_hash(f"checkpoints/{method}"),
           "data": _data_hash(run, data), "beta": cfg.beta}
    if method in PREFERENCE_METHODS:
        key["ref"] = run.stage_hash("checkpoints/sft")

    def build(out: Path) -> None:
        model, tok = load_policy(run.stage_dir(f"checkpoints/{method}"), cfg)
        prompts = EvalPrompts.from_dataset(data.prompts["test"])
        read = belief_readout(model, tok, prompts, belief_token_ids(data, tok), cfg.eval_batch_size)
        res: dict[str, Any] = {"jsd": float(np.mean(read["jsd"])),
                               "belief_mass": float(np.mean(read["mass"])),
                               "n_prompts": len(prompts.prompts)}
        if method in PREFERENCE_METHODS:
            ref, _ = load_policy(run.stage_dir("checkpoints/sft"), cfg)
            pairs = (data.dpo if method == "dpo" else data.gdpo)["test"]
            enc = encode_pairs(tok, pairs)
            pol = pair_logps(model, tok, enc, cfg.eval_batch_size, cfg.max_length)
            rl = pair_logps(ref, tok, enc, cfg.eval_batch_size, cfg.max_length)
            margins = cfg.beta * ((pol[:, 0] - rl[:, 0]) - (pol[:, 1] - rl[:, 1]))
            res.update(margin_summary(margins, np.asarray(pairs["majority"])))
        (out / "test.json").write_text(json.dumps(res, indent=2))

    out = json.loads((run.stage(f"stages/test/{method}", key, build) / "test.json").read_text())
    if write:
        part: dict[str, Any] = {"methods": {method: {"jsd": out["jsd"]}}}
        if method in ("dpo", "gdpo"):
            part["skew"] = {method: {"margin_majority": out["margin_majority"],
                                     "margin_minority": out["margin_minority"]}}
        run.merge_metrics(part)
    return out


# ============================================================== notebook helpers
def load_tracks(run, methods: Sequence[str]):
    """The tracking records of the trained stages among `methods`, as one DataFrame."""
    import pandas as pd

    frames = [read_tracking(p) for m in methods
              if (p := run.stage_dir(f"checkpoints/{m}") / "tracking.jsonl").exists()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def compare_distributions(cfg, run, data, methods: Sequence[str], n: int = 4,
                          split: str = "test") -> dict[str, Any]:
    """Belief distributions of several trained methods on n prompts of `split` (those where the
    first two methods differ most in JSD), ready for plots.plot_belief_bars. Returns p_star,
    dists {METHOD: probs [n, K]}, mask, labels, titles, and the per-prompt JSDs."""
    ds = data.prompts[split]
    prompts = EvalPrompts.from_dataset(ds)
    reads = {}
    for m in methods:
        model, tok = load_policy(run.stage_dir(f"checkpoints/{m}"), cfg)
        reads[m] = belief_readout(model, tok, prompts, belief_token_ids(data, tok), cfg.eval_batch_size)
    first, second = methods[0], methods[-1]
    order = np.argsort(-(reads[second]["jsd"] - reads[first]["jsd"]))[:n]
    return {"p_star": prompts.p_star[order], "mask": prompts.mask[order],
            "dists": {m.upper(): reads[m]["probs"][order] for m in methods},
            "labels": [ds[int(i)]["labels"] for i in order],
            "titles": [f"{ds[int(i)]['qid']}: {ds[int(i)]['question']}  (JSD " +
                       ", ".join(f"{m} {reads[m]['jsd'][i]:.3f}" for m in methods) + ")"
                       for i in order]}


def results_table(results: dict[str, dict]):
    """Test numbers per method (rows) as a DataFrame."""
    import pandas as pd

    cols = ["jsd", "belief_mass", "margin_majority", "margin_minority", "accuracy_majority",
            "accuracy_minority"]
    return pd.DataFrame({m: {c: r.get(c, np.nan) for c in cols} for m, r in results.items()}).T


def findings(results: dict[str, dict]) -> list[str]:
    """What the test numbers say about the paper's claims, in sentences (numbers included)."""
    out = []
    sft, dpo, gdpo = results.get("sft"), results.get("dpo"), results.get("gdpo")
    if sft and dpo:
        verb = "raises" if dpo["jsd"] > sft["jsd"] else "does NOT raise"
        out.append(f"DPO {verb} the test JSD over SFT: {sft['jsd']:.3f} -> {dpo['jsd']:.3f}; "
                   f"mass on belief tokens {sft['belief_mass']:.2f} -> {dpo['belief_mass']:.2f}.")
    if dpo and "margin_majority" in dpo:
        verb = "exceed" if dpo["margin_majority"] > dpo["margin_minority"] else "do NOT exceed"
        out.append(f"DPO's majority-chosen margins {verb} its minority-chosen ones: "
                   f"{dpo['margin_majority']:.3f} vs {dpo['margin_minority']:.3f} "
                   f"(pairwise accuracy {dpo['accuracy_majority']:.2f} vs {dpo['accuracy_minority']:.2f}).")
    if gdpo and dpo:
        verb = "lowers" if gdpo["jsd"] < dpo["jsd"] else "does NOT lower"
        ref = f", SFT {sft['jsd']:.3f}" if sft else ""
        out.append(f"GDPO {verb} the test JSD below DPO: {gdpo['jsd']:.3f} vs {dpo['jsd']:.3f}{ref}.")
    if gdpo and "margin_minority" in gdpo:
        line = (f"GDPO margins (shared-belief pairs): majority {gdpo['margin_majority']:.3f}, "
                f"minority {gdpo['margin_minority']:.3f}")
        if dpo and "margin_minority" in dpo and dpo["margin_majority"] > 0 and gdpo["margin_majority"] > 0:
            line += (f"; minority/majority ratio {gdpo['margin_minority'] / gdpo['margin_majority']:.2f} "
                     f"(DPO {dpo['margin_minority'] / dpo['margin_majority']:.2f})")
        out.append(line + ".")
    for m in ("cdpo", "mft"):
        if m in results:
            out.append(f"Ablation {m}: test JSD {results[m]['jsd']:.3f}.")
    return out
