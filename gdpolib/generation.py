"""Belief-distribution read-out and belief-first sampling (batched, left padding).

Prompts are tokenised exactly as in training (the tokenizer's defaults) and LEFT-padded, so the
last column of every row is the last prompt token: the answer position where the belief digit is
predicted. Position ids are computed from the attention mask so that a padded row gives the same
logits as the row alone (tested).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList, TopPLogitsWarper

from gdpolib import console


@contextmanager
def padding_sides(tokenizer, padding: str, truncation: str | None = None):
    """Temporarily pad (and truncate) on the given sides, with a pad token if the tokenizer has
    none; the caller's tokenizer settings are restored on exit."""
    saved = tokenizer.padding_side, tokenizer.truncation_side, tokenizer.pad_token
    tokenizer.padding_side = padding
    tokenizer.truncation_side = truncation or tokenizer.truncation_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = saved[:2]
        if saved[2] is None:
            tokenizer.pad_token = None


def left_padding(tokenizer):
    """Temporarily pad on the left (padding_sides)."""
    return padding_sides(tokenizer, "left")


def _device(model) -> torch.device:
    return next(model.parameters()).device


def encode_left(tokenizer, prompts: Sequence[str], device, max_tokens: int | None = None
                ) -> dict[str, torch.Tensor]:
    """Left-padded input_ids, attention_mask and position_ids ([B, T] each).

    max_tokens: keep at most the LAST max_tokens tokens of each prompt (the answer position is
    at the end). Callers pass the model's window, so a prompt longer than the model can read
    (a long GOQA question on the tiny model, a few-shot prompt) loses its beginning instead of
    failing.
    """
    with left_padding(tokenizer):
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True)
    if max_tokens is not None and enc["input_ids"].shape[1] > max_tokens:
        # Left padding puts every prompt's end in the last column, so cutting columns on the left
        # keeps each prompt's last max_tokens tokens.
        enc = {k: v[:, -max_tokens:] for k, v in enc.items()}
    mask = enc["attention_mask"]
    # Positions count real tokens only, so padding does not shift them (GPT-2 and RoPE models).
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": mask.to(device),
            "position_ids": pos.to(device)}


def last_token_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits at the last column (the answer position) [B, V], one forward."""
    try:
        out = model(**batch, logits_to_keep=1)
    except TypeError:   # models without logits_to_keep
        out = model(**batch)
    return out.logits[:, -1, :].float()


@torch.no_grad()
def belief_distributions(model, tokenizer, prompts: Sequence[str], belief_token_ids: Sequence[int],
                         batch_size: int = 32) -> np.ndarray:
    """Next-token probabilities of the belief tokens at the answer position.

    prompts: N strings; belief_token_ids: K token ids (the digits "0".."K-1").
    Returns [N, K] float64: a FULL-vocabulary softmax read at those ids, so a row sums to the
    mass the model puts on belief tokens (<= 1). Renormalise over the belief mask for JSD
    (metrics.renormalise). One forward per batch of `batch_size` prompts, no gradients.
    """
    was_training = model.training
    model.eval()
    ids = torch.tensor(list(belief_token_ids), dtype=torch.long)
    out = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = encode_left(tokenizer, prompts[start:start + batch_size], _device(model),
                                max_tokens=max_context(model))
            probs = torch.softmax(last_token_logits(model, batch), dim=-1)
            out.append(probs[:, ids.to(probs.device)].cpu().double().numpy())
    finally:
        model.train(was_training)
    k = len(belief_token_ids)
    return np.concatenate(out) if out else np.zeros((0, k))


def max_context(model, max_new_tokens: int = 0) -> int | None:
    """How many prompt tokens fit: the model's position limit minus the tokens to generate."""
    limit = getattr(model.config, "max_position_embeddings", None) or \
        getattr(model.config, "n_positions", None)
    return None if limit is None else max(1, limit - max_new_tokens)


class AfterBelief(LogitsProcessor):
    """Apply `warper` to every generated token but the first (the belief digit, which stays drawn
    from the model's own p(b|x)). prompt_len: the (left-padded) prompt's length in tokens."""

    def __init__(self, warper: LogitsProcessor, prompt_len: int):
        self.warper, self.prompt_len = warper, prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores if input_ids.shape[1] <= self.prompt_len else self.warper(input_ids, scores)


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: Sequence[str], n: int = 8, *,
                       temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                       response_top_p: float = 1.0, max_new_tokens: int = 64,
                       batch_size: int = 16, seed: int = 0,
                       progress: bool = False) -> list[list[str]]:
    """n independent samples per prompt: belief digit, then `<description>`, then the response.

    Pure ancestral sampling by default (temperature 1, no top-k/top-p cut; the paper's decoding):
    the first generated token is the belief drawn from the model's own p(b|x). The n samples come
    from `num_return_sequences=n` in one generate call (independent draws, not copies;
    docs/deviations.md), under a torch RNG seeded with `seed + batch start`, so results are
    reproducible for a given batch size and do not disturb the caller's RNG. response_top_p < 1
    cuts every token after the belief digit to its nucleus (taken before temperature and top_k;
    the digit itself stays a pure draw). Only the generated
    token slice is decoded (never a string replacement of the prompt). Prompts longer than the
    context are cut from the LEFT (the end of the prompt, where the answer starts, is kept).
    Returns [N][n] strings.
    """
    was_training = model.training
    model.eval()
    device = _device(model)
    limit = max_context(model, max_new_tokens)
    eos = tokenizer.eos_token_id
    out: list[list[str]] = []
    starts = range(0, len(prompts), batch_size)
    bar = console.Progress("sampling", len(starts)) if progress else None
    try:
        for done, start in enumerate(starts, 1):
            batch = encode_left(tokenizer, prompts[start:start + batch_size], device,
                                max_tokens=limit)
            batch.pop("position_ids")   # generate() derives them from the attention mask
            devices = [device.index] if device.type == "cuda" else []
            after = LogitsProcessorList([AfterBelief(TopPLogitsWarper(response_top_p),
                                                     batch["input_ids"].shape[1])]
                                        if response_top_p < 1 else [])
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed + start)
                gen = model.generate(
                    **batch, do_sample=True, temperature=temperature, top_k=top_k,
                    top_p=top_p, logits_processor=after, num_return_sequences=n,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                    else eos, eos_token_id=eos)
            texts = tokenizer.batch_decode(gen[:, batch["input_ids"].shape[1]:],
                                           skip_special_tokens=True)
            out += [texts[i * n:(i + 1) * n] for i in range(len(texts) // n)]
            if bar is not None:
                bar.update(done)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    return out
