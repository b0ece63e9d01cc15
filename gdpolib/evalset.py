"""The prompts a model is scored on, with what the metrics need (p*, belief masks, labels,
reference responses, ordinal values): `EvalSet`. Light on purpose (numpy only, no torch), so
that the reports read it without loading the training stack."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass
class EvalSet:
    """Prompts with what the metrics need. Lists/arrays have N rows; per-belief vectors have
    K_MAX columns."""

    prompts: list[str]            # what the model sees (few-shot context + prompt)
    questions: list[str]          # the question text (what the chat judge is shown)
    qids: list[str]
    styles: list[str]
    p_star: np.ndarray            # [N, K] the group's TRUE p*
    mask: np.ndarray              # [N, K] 0/1
    labels: list[list[str]]       # [N][K]
    references: list[list[str]]   # [N][K] a reference response per belief ("" = none)
    ordinals: np.ndarray | None = None   # [N, K] ordinal value per belief, NaN off the scale

    @classmethod
    def from_table(cls, table, n: int | None = None, seed: int = 0) -> "EvalSet":
        """From an eval-prompt table (datasets.Dataset) of the data stage: all rows, or a fixed
        seeded subset of n rows (the tracking callback's eval subset)."""
        if n is not None and n < len(table):
            table = table.shuffle(seed=seed).select(range(n))
        prompts = list(table["prompt"])
        questions = list(table["question"]) if "question" in table.column_names else prompts
        mask = np.asarray(table["belief_mask"], dtype=np.int64)
        return cls(prompts=prompts, questions=questions, qids=[str(q) for q in table["qid"]],
                   styles=[str(s) for s in table["style"]],
                   p_star=np.asarray(table["p_star"], dtype=np.float64), mask=mask,
                   labels=[list(x) for x in table["labels"]],
                   references=[list(x) for x in table["references"]],
                   ordinals=_ordinals(table, mask.shape))

    def uniform(self) -> np.ndarray:
        """[N, K] the uniform distribution over each question's belief set (1/|B|): the
        `uniform` baseline's read-out."""
        return self.mask / self.mask.sum(axis=1, keepdims=True)

    def context_free(self, train: "EvalSet") -> np.ndarray:
        """[N, K] the `context_free` baseline's read-out: for each prompt, the mean p* of the
        training questions (`train`, each question once) whose belief set is the prompt's (under
        `options`: the same number of options). It ignores the question, as GPO's meta-train
        mean does: a model at this baseline has learnt only where answers tend to fall. A
        belief set no training question has gets the uniform distribution over it."""
        first = {q: i for i, q in reversed(list(enumerate(train.qids)))}
        rows = sorted(first.values())
        means: dict[bytes, np.ndarray] = {}
        for key in {train.mask[i].tobytes() for i in rows}:
            same = [i for i in rows if train.mask[i].tobytes() == key]
            means[key] = train.p_star[same].mean(axis=0)
        uniform = self.uniform()
        return np.stack([means.get(m.tobytes(), uniform[i]) for i, m in enumerate(self.mask)])

    def with_prompts(self, prompts: Sequence[str]) -> "EvalSet":
        return dataclasses.replace(self, prompts=list(prompts))

    def __len__(self) -> int:
        return len(self.prompts)


def _ordinals(table, shape: tuple[int, int]) -> np.ndarray | None:
    """[N, K] ordinal values from the table's `ordinal` column (a row's [] = no order: NaN);
    None when no row has one."""
    if "ordinal" not in table.column_names:
        return None
    rows = list(table["ordinal"])
    if not any(rows):
        return None
    out = np.full(shape, np.nan)
    for i, row in enumerate(rows):
        if row:
            out[i] = np.asarray(row, dtype=np.float64)
    return out
