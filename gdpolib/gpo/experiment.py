"""A GPO experiment on one dataset and seed: the meta-trained GPO models (TrainedGPO), the
group split, the test groups' fixed evaluation episodes, every method's predictions for them
(predictions, method_predictions: the GPO models and the baselines), each predictor's score on
the validation groups, and the few-shot predictor chosen there (GPOExperiment.best). No I/O:
stages.gpo builds it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from gdpolib.embeddings import EmbeddingTable
from gdpolib.gpo.groups import GroupOpinions
from gdpolib.gpo.model import GPOModel
from gdpolib.gpo.predict import (EvalPlan, FewShotPrediction, Job, few_shot_p_star,
                                 fixed_baseline, knn_baseline, predict, ridge_baseline, score,
                                 train_mean_baseline, uniform_baseline)

# The predictors few-shot GDPO may take its p* from (the one best on validation groups wins; on
# a tie the earlier one). Uniform and an LM's zero-shot distribution ignore the context.
FEW_SHOT_PREDICTORS = ("gpo", "gpo_prior", "ridge", "knn", "train_mean")


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
    val_scores: dict[str, float] = field(default_factory=dict)   # validation_scores()

    @property
    def methods(self) -> list[str]:
        """Every method this experiment can predict with: its GPO models, then the baselines."""
        return [*self.gpos, "ridge", "knn", "train_mean", "uniform"] + \
            (["lm_zero_shot"] if self.lm_dists is not None else [])

    @property
    def best(self) -> str:
        """The few-shot predictor with the best validation score (FEW_SHOT_PREDICTORS)."""
        candidates = [m for m in FEW_SHOT_PREDICTORS if m in self.val_scores]
        if not candidates:
            raise ValueError("no predictor was scored on validation groups (validation_scores; "
                             "gpo_group_split needs a validation fraction)")
        return max(candidates, key=lambda m: (self.val_scores[m], -candidates.index(m)))

    def selected_step(self, method: str) -> int | None:
        """The meta-training step whose weights a GPO method uses (None for a baseline)."""
        return int(self.gpos[method].info["best_step"]) if method in self.gpos else None

    def test_plan(self, group: str) -> EvalPlan:
        """The fixed evaluation episodes of a test group (a clear error for any other group)."""
        if group not in self.plans:
            raise KeyError(f"{group!r} is not a test group of this GPO experiment "
                           f"(test groups: {sorted(self.plans)})")
        return self.plans[group]


def predictions(exp: GPOExperiment, method: str, jobs: Sequence[Job]) -> dict:
    """{group: {qid: distribution}} of one method for `jobs` (GPOExperiment.methods)."""
    train = exp.split["train"]
    if method in exp.gpos:
        g = exp.gpos[method]
        return predict(g.model, g.emb, exp.data, jobs)
    if method == "ridge":
        return ridge_baseline(exp.data, train, jobs, exp.ridge_alpha)
    if method == "knn":
        return knn_baseline(exp.data, train, jobs)
    if method == "train_mean":
        return train_mean_baseline(exp.data, train, jobs)
    if method == "uniform":
        return uniform_baseline(exp.data, jobs)
    if method == "lm_zero_shot" and exp.lm_dists is not None:
        return fixed_baseline(exp.lm_dists, jobs)
    raise KeyError(f"unknown GPO method {method!r} (this experiment has {exp.methods})")


def method_predictions(exp: GPOExperiment, k: int) -> dict[str, dict]:
    """Every method's predictions for the test groups' fixed targets with k context questions."""
    jobs = [p.job(k) for p in exp.plans.values()]
    return {m: predictions(exp, m, jobs) for m in exp.methods}


def validation_scores(exp: GPOExperiment, val_jobs: Sequence[Job]) -> dict[str, float]:
    """Each few-shot predictor's alignment on the VALIDATION jobs (the episodes GPO's checkpoint
    and ridge's alpha were chosen on); {} without validation jobs."""
    if not val_jobs:
        return {}
    return {m: score(exp.data, predictions(exp, m, val_jobs))["score"]
            for m in FEW_SHOT_PREDICTORS if m in exp.methods}


def few_shot_prediction(exp: GPOExperiment, method: str, group: str, k: int, questions,
                        ) -> FewShotPrediction:
    """`method`'s p* for the held-out test group `group` from k answered questions (its test
    plan's context(k), the same ones the k curve uses), for the GDPO questions `questions`
    (pairs.RunData.questions, TRUE p*): predict.few_shot_p_star."""
    ctx = exp.test_plan(group).context(k)
    targets = [qb.qid for qb in questions if qb.qid not in ctx and qb.qid in exp.data.items]
    pred = predictions(exp, method, [Job(group, ctx, targets)]).get(group, {})
    return few_shot_p_star(pred, group, k, ctx, questions, method)
