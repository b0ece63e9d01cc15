"""A GPO experiment on one dataset and seed: the meta-trained GPO models (TrainedGPO), the
group split, the test groups' fixed evaluation episodes, and every method's predictions for
them (method_predictions: the GPO models and the baselines). No I/O: stages.gpo builds it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gdpolib.embeddings import EmbeddingTable
from gdpolib.gpo.groups import GroupOpinions
from gdpolib.gpo.model import GPOModel
from gdpolib.gpo.predict import (EvalPlan, fixed_baseline, knn_baseline, predict, ridge_baseline,
                                 train_mean_baseline, uniform_baseline)


@dataclass
class TrainedGPO:
    """One meta-trained GPO model with the embedding table it reads."""

    model: GPOModel
    emb: EmbeddingTable              # a GroupPriorTable for gpo_prior
    history: list[dict]
    info: dict                       # best_step, best_val, seconds, settings, embedder, ...


@dataclass
class GPOExperiment:
    """The meta-trained GPO models of one dataset and seed, with what is needed to evaluate them."""

    data: GroupOpinions
    emb: EmbeddingTable              # the plain (question, option) embeddings
    split: dict[str, list[str]]      # train / val / test groups
    plans: dict[str, EvalPlan]       # the test groups' fixed evaluation episodes
    gpos: dict[str, TrainedGPO]      # "gpo" (the paper's model) and, if trained, "gpo_prior"
    ridge_alpha: float = 1.0         # chosen on the validation groups
    lm_dists: dict[str, np.ndarray] | None = None   # the LM's zero-shot distribution per qid

    @property
    def best(self) -> str:
        """The GPO method with the best validation score (few-shot GDPO uses it)."""
        return max(self.gpos, key=lambda m: (self.gpos[m].info.get("best_val", -1.0), m == "gpo"))

    def test_plan(self, group: str) -> EvalPlan:
        """The fixed evaluation episodes of a test group (a clear error for any other group)."""
        if group not in self.plans:
            raise KeyError(f"{group!r} is not a test group of this GPO experiment "
                           f"(test groups: {sorted(self.plans)})")
        return self.plans[group]


def method_predictions(exp: GPOExperiment, k: int) -> dict[str, dict]:
    """Every method's predictions for the test groups' fixed targets with k context questions."""
    jobs = [p.job(k) for p in exp.plans.values()]
    train = exp.split["train"]
    preds = {m: predict(g.model, g.emb, exp.data, jobs) for m, g in exp.gpos.items()}
    preds.update({"ridge": ridge_baseline(exp.data, train, jobs, exp.ridge_alpha),
                  "knn": knn_baseline(exp.data, train, jobs),
                  "train_mean": train_mean_baseline(exp.data, train, jobs),
                  "uniform": uniform_baseline(exp.data, jobs)})
    if exp.lm_dists is not None:
        preds["lm_zero_shot"] = fixed_baseline(exp.lm_dists, jobs)
    return preds
