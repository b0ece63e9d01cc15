"""Reward margins of preference pairs under a policy and its reference (the paper's skew figure).

margin = beta * [(log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r))], with the summed
completion log-probs of each side tokenised exactly as TRL's DPOTrainer tokenises them, and pairs
split by whether the chosen belief is the question's majority belief (argmax p*). Used by the
tracking callback during training and by the test evaluation: the same numbers in both places.
"""
from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from trl.data_utils import common_prefix_length
from trl.trainer.dpo_trainer import DataCollatorForPreference

from gdpolib.models import plain_lm


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
    lm = plain_lm(model)
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


def reward_margins(policy_logps: np.ndarray, ref_logps: np.ndarray, beta: float) -> np.ndarray:
    """beta * [(pi_c - ref_c) - (pi_r - ref_r)] per pair; inputs [N, 2] from pair_logps."""
    return beta * ((policy_logps[:, 0] - ref_logps[:, 0]) - (policy_logps[:, 1] - ref_logps[:, 1]))


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
