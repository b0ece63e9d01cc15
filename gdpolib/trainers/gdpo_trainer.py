"""GDPO on TRL: `GDPOConfig` (TRL's DPOConfig plus the GDPO weights) and `GDPOTrainer`
(TRL's DPOTrainer with the GDPO loss), constructed the way TRL users construct trainers:

    args = GDPOConfig(output_dir=..., beta=0.1, lambda_cal=1.0, lambda_nll=1.0, lambda_pref=1.0)
    trainer = GDPOTrainer(model=..., ref_model=..., args=args, processing_class=tokenizer,
                          train_dataset=gdpo_pairs, belief_token_ids=ids)

GDPOTrainer replaces only `_compute_loss` (plus the dataset and collator hooks that carry the
belief spans). One policy forward over [chosen; rejected] gives
  - the summed response log-probs for the belief-conditioned DPO term (TRL's fused LM head),
  - the belief-span token log-probs of the chosen rows (same fused head, same forward),
  - the logits at the answer position (the last prompt token of each chosen row), computed from
    the backbone's hidden states of that forward (a forward hook; one position per row, cheap),
and one reference forward (TRL's `compute_ref_log_probs`) or none with precomputed reference
log-probs (TRL's `precompute_ref_log_probs`, which caches them next to the dataset's files).

The belief prefix `b_c<label>` is the same on both sides of a GDPO pair, so its log-prob cancels
in the DPO log-ratio; the collator drops it from `completion_mask` (the DPO mask), which keeps the
DPO value unchanged and the reference log-probs to the response. Spans come from character
offsets (gdpolib.beliefs.belief_span), never from a '>' token search (docs/deviations.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from trl import DPOConfig, DPOTrainer
from trl.data_utils import common_prefix_length
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.utils import global_then_local_main_first

from gdpolib import beliefs, losses
from gdpolib.models import plain_lm
from gdpolib.trainers.pairs import LengthGroupedPairs

# Batch keys the GDPO collator adds (the model never sees them).
GDPO_KEYS = ("belief_span_mask", "answer_pos", "p_star", "belief_mask")
# Dataset columns the GDPO trainer keeps besides TRL's own.
GDPO_COLUMNS = ("belief_len", "prefix_len", "p_star", "belief_mask")


@dataclass
class GDPOConfig(DPOConfig):
    """TRL's DPOConfig plus the GDPO loss weights:
    L = lambda_cal * KL(p* || p_theta(b|x)) - lambda_nll * log p_theta(b_c|x) + lambda_pref * DPO.
    Ablations through the same code path (their weights: gdpolib.methods): cdpo (lambda_cal =
    lambda_nll = 0), mft (lambda_pref = 0).
    """

    lambda_cal: float = field(default=1.0, metadata={
        "help": "Weight of the calibration KL(p* || p_theta(b|x)) at the answer position."})
    lambda_nll: float = field(default=1.0, metadata={
        "help": "Weight of -log p_theta(b_c|x), the chosen belief span's mean token log-prob."})
    lambda_pref: float = field(default=1.0, metadata={
        "help": "Weight of the belief-conditioned DPO term (both sides share b_c)."})
    calibration_form: str = field(default="renorm", metadata={
        "help": "renorm: KL over the belief set, renormalised (the quantity the JSD metric reads); "
                "full: the authors' full-vocabulary log-softmax (= renorm - log Z).",
        "choices": losses.CALIBRATION_FORMS})

    def __post_init__(self):
        if self.calibration_form not in losses.CALIBRATION_FORMS:
            raise ValueError(f"calibration_form {self.calibration_form!r} not in "
                             f"{losses.CALIBRATION_FORMS}")
        super().__post_init__()

    @property
    def lambdas(self) -> dict[str, float]:
        return {"lambda_cal": self.lambda_cal, "lambda_nll": self.lambda_nll,
                "lambda_pref": self.lambda_pref}


# ---------------------------------------------------------------- belief spans (character offsets)
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


class GDPOTrainer(LengthGroupedPairs, DPOTrainer):
    """TRL's DPOTrainer with the GDPO loss: lambda_cal*KL + lambda_pref*DPO - lambda_nll*log p(b_c),
    and length-grouped batches of pairs under `train_sampling_strategy="group_by_length"`.

    `args` must be a GDPOConfig (the weights and the calibration form); `belief_token_ids` are
    the K_MAX ids of the digits "0".."K_MAX-1" (beliefs.check_belief_tokens). The training rows
    are GDPO pairs (both completions start with the chosen belief prefix) with p_star and
    belief_mask columns.
    """

    def __init__(self, *args, belief_token_ids: Sequence[int], **kwargs):
        train_args = kwargs.get("args")
        if not isinstance(train_args, GDPOConfig):
            raise TypeError(f"GDPOTrainer needs args=GDPOConfig(...), got {type(train_args).__name__}")
        self.belief_token_ids = torch.tensor(list(belief_token_ids), dtype=torch.long)
        self.lambdas = train_args.lambdas
        self.calibration_form = train_args.calibration_form
        tokenizer = kwargs.get("processing_class")
        if kwargs.get("data_collator") is None and tokenizer is not None:
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            kwargs["data_collator"] = GDPOCollator(pad_token_id=pad, max_length=train_args.max_length)
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

        with global_then_local_main_first():   # as TRL's own maps: one process writes the cache
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
        lm = plain_lm(model, self.accelerator)
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
