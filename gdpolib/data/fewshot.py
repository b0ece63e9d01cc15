"""Few-shot prompts: solved examples from the TRAIN split placed before a prompt, for the k-shot
baseline (the base model prompted with k examples) and for ICF (in-context fine-tuning: SFT on
prompts that carry such a context, the GDPO paper's baselines)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from datasets import Dataset

from gdpolib.seeds import stable_seed

DEMO_SEPARATOR = "\n\n"


def demo_pool(data) -> tuple[list[str], list[str]]:
    """Solved examples `prompt + k<desc>response` from the TRAIN split (SFT records), with their
    question ids (a prompt never gets a demonstration from its own question: that would hand it
    samples of its own p*)."""
    train = data.sft["train"]
    demos = [p + c for p, c in zip(train["prompt"], train["completion"])]
    return demos, [str(q) for q in train["qid"]]


def fewshot_prompts(prompts: Sequence[str], qids: Sequence[str], pool: tuple[list[str], list[str]],
                    tokenizer, k: int, max_tokens: int | Sequence[int], seed: int, salt: str
                    ) -> list[str]:
    """Each prompt preceded by up to k demonstrations (random, seeded, from other questions),
    separated by blank lines, keeping only as many as fit in `max_tokens` (one budget, or one
    per prompt) together with the prompt.

    Returns N strings `demo_1 \\n\\n ... demo_j \\n\\n prompt` (j <= k).
    """
    demos, demo_qids = pool
    demo_len = np.array([len(x) for x in tokenizer(demos, add_special_tokens=False)["input_ids"]]) \
        if demos else np.zeros(0, int)
    prompt_len = [len(x) for x in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    sep = len(tokenizer(DEMO_SEPARATOR, add_special_tokens=False)["input_ids"])
    budgets = [max_tokens] * len(prompt_len) if isinstance(max_tokens, (int, np.integer)) \
        else list(max_tokens)
    out = []
    for i, (prompt, qid) in enumerate(zip(prompts, qids)):
        rng = np.random.default_rng(stable_seed("fewshot", salt, seed, i, prompt))
        chosen, used = [], prompt_len[i]
        for j in rng.permutation(len(demos)):
            if len(chosen) == k:
                break
            if demo_qids[j] == qid or used + demo_len[j] + sep > budgets[i]:
                continue
            chosen.append(demos[j])
            used += demo_len[j] + sep
        out.append("".join(d + DEMO_SEPARATOR for d in chosen) + prompt)
    return out


def icf_dataset(cfg, data, tokenizer, max_length: int) -> Dataset:
    """ICF training set: every SFT train record with a few-shot context block before its prompt
    (the paper's ICF: SFT on `context + <Q>...<A>`). The context holds as many of kshot_k
    demonstrations as fit in `max_length` (the run's sequence length) together with the prompt
    and its completion (+ EOS), so that SFT never truncates the completion (the authors raised
    their limits to 1024 for ICF)."""
    train = data.sft["train"]
    completion_len = [len(x) for x in tokenizer(list(train["completion"]),
                                                add_special_tokens=False)["input_ids"]]
    budgets = [max_length - n - 2 for n in completion_len]
    prompts = fewshot_prompts(train["prompt"], train["qid"], demo_pool(data), tokenizer,
                              cfg.kshot_k, budgets, cfg.seed, "icf-train")
    return Dataset.from_dict({"prompt": prompts, "completion": list(train["completion"])})
