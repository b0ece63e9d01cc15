"""GPO prediction and its comparisons: predict for (group, context, targets) jobs, the fixed
evaluation plans (the same targets for every k), the baselines (uniform, meta-train mean,
nearest neighbour, ridge regression on the meta-train groups, a fixed per-question distribution
such as an LM's zero-shot one), the alignment score, and a predictor's p* for a held-out group
in GDPO's belief space (few-shot p*)."""
from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.spatial.distance import jensenshannon
from tqdm.auto import tqdm

from gdpolib.embeddings import LETTERS, EmbeddingTable, QuestionItem, question_prompt, token_limit
from gdpolib.generation import padding_sides
from gdpolib.gpo.episodes import collate, make_episode
from gdpolib.gpo.groups import GroupOpinions, train_mean
from gdpolib.gpo.model import GPOModel
from gdpolib.metrics.alignment import alignment_scores
from gdpolib.metrics.distances import jsd_per_prompt

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One prediction: a group, its context questions (answered) and target questions."""

    group: str
    ctx: list[str]
    tar: list[str]


@torch.no_grad()
def predict(model: GPOModel, emb: EmbeddingTable, data: GroupOpinions, jobs: Sequence[Job],
            batch_size: int = 32, ctx_dists: dict[str, dict] | None = None,
            max_targets: int = 64) -> dict[str, dict[str, np.ndarray]]:
    """Predicted distributions {group: {qid: [K_q]}} for every job (one job per group; one
    forward per batch of jobs).

    The context's answers come from data.dists[group], or from ctx_dists[group] when given
    (a new group's few answered questions). Targets' y is never read. A job's targets go
    through in pieces of at most `max_targets` questions: targets are independent given the
    context, so the result is the same, and attention over hundreds of targets at once (which
    the mask discards) is avoided.
    """
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, dict[str, np.ndarray]] = {}
    jobs = [Job(j.group, j.ctx, j.tar[i:i + max_targets]) for j in jobs
            for i in range(0, max(len(j.tar), 1), max_targets)]
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        eps = [make_episode(emb, None, j.ctx, j.tar,
                            ctx_dists=(ctx_dists or data.dists)[j.group]) for j in chunk]
        batch = collate(eps).to(device)
        mu, _ = model(batch)
        mu = mu.float().cpu().numpy()
        for i, (j, e) in enumerate(zip(chunk, eps)):
            preds = out.setdefault(j.group, {})
            for s, q in enumerate(e.targets):
                p = mu[i, :len(e.t_seg)][e.t_seg == s].astype(np.float64)
                preds[q] = p / p.sum()
    return out


@dataclass
class EvalPlan:
    """Fixed evaluation episodes of one group: the same targets for every k, nested contexts.

    perm: the group's questions in a seeded order; targets: perm[n_ctx_max:];
    context(k) = perm[:min(k, n_ctx_max)].
    """

    group: str
    perm: list[str]
    n_ctx_max: int

    @property
    def targets(self) -> list[str]:
        return self.perm[self.n_ctx_max:]

    def context(self, k: int) -> list[str]:
        return self.perm[:min(k, self.n_ctx_max)]

    def job(self, k: int) -> Job:
        return Job(self.group, self.context(k), self.targets)


def eval_plans(data: GroupOpinions, groups: Sequence[str], k_values: Sequence[int], seed: int,
               min_targets: int = 10) -> dict[str, EvalPlan]:
    """One EvalPlan per group, seeded by (seed, group name), independent of the group order.

    n_ctx_max = min(max(k_values), n_questions - min_targets): a group too small for the largest
    k gets fewer context questions there (EvalPlan.context says how many).
    """
    plans = {}
    for g in groups:
        qids = data.qids(g)
        rng = np.random.default_rng([seed, zlib.crc32(g.encode())])
        perm = [qids[i] for i in rng.permutation(len(qids))]
        n_max = min(max(k_values), len(qids) - min_targets)
        if n_max < 1:
            raise ValueError(f"group {g!r} has {len(qids)} questions: too few for "
                             f"{min_targets} targets and a context")
        plans[g] = EvalPlan(g, perm, n_max)
    return plans


# ---- baselines: {group: {qid: distribution}} for the same jobs ----
def uniform_baseline(data: GroupOpinions, jobs: Sequence[Job]) -> dict:
    """1/K over each target question's options."""
    return {j.group: {q: np.full(len(data.items[q].options), 1 / len(data.items[q].options))
                      for q in j.tar} for j in jobs}


def train_mean_baseline(data: GroupOpinions, train_groups: Sequence[str],
                        jobs: Sequence[Job]) -> dict:
    """The meta-train groups' mean distribution (groups.train_mean) per target question."""
    return {j.group: {q: train_mean(data, train_groups, q) for q in j.tar} for j in jobs}


def knn_baseline(data: GroupOpinions, train_groups: Sequence[str], jobs: Sequence[Job],
                 ctx_dists: dict[str, dict] | None = None) -> dict:
    """Nearest neighbour from the context: for each target question, the meta-train group that
    answered it and whose answers on the shared context questions are closest (mean JS
    distance) lends its answer. No such group -> the meta-train mean."""
    out = {}
    for j in jobs:
        own = (ctx_dists or data.dists)[j.group]
        dist = {}
        for g in train_groups:
            shared = [q for q in j.ctx if q in data.dists[g]]
            if shared:
                dist[g] = float(np.mean([jensenshannon(own[q], data.dists[g][q])
                                         for q in shared]))
        ranked = sorted(dist, key=lambda g: (dist[g], g))
        preds = {}
        for q in j.tar:
            nn_g = next((g for g in ranked if q in data.dists[g]), None)
            preds[q] = data.dists[nn_g][q] if nn_g else train_mean(data, train_groups, q)
        out[j.group] = preds
    return out


RIDGE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)   # the grid ridge_alpha selects from
RIDGE_FLOOR = 1e-4        # smallest share of a ridge prediction before renormalising


def _deviations(data: GroupOpinions, train_groups: Sequence[str], qids: Sequence[str],
                ) -> tuple[np.ndarray, np.ndarray]:
    """(m [rows], D [rows, G]) over the options of `qids` in order: m = the meta-train mean,
    D[:, g] = group g's share minus m (0 where g did not answer the question)."""
    means, devs = [], []
    for q in qids:
        m = train_mean(data, train_groups, q)
        d = np.zeros((len(m), len(train_groups)))
        for j, g in enumerate(train_groups):
            if q in data.dists[g]:
                d[:, j] = data.dists[g][q] - m
        means.append(m)
        devs.append(d)
    return np.concatenate(means), np.concatenate(devs)


def ridge_baseline(data: GroupOpinions, train_groups: Sequence[str], jobs: Sequence[Job],
                   alpha: float, ctx_dists: dict[str, dict] | None = None) -> dict:
    """Ridge regression on the meta-train groups: the new group's context answers, as deviations
    from the meta-train mean, fitted as a mix of the meta-train groups' deviations,
    beta = argmin |D_c beta - (y_c - m_c)|^2 + alpha |beta|^2; each target question gets
    m_t + D_t beta, floored at RIDGE_FLOOR and renormalised. The strongest simple reader of
    the context we know; it uses what the group-prior GPO is given (gpo.groups.with_group_prior).
    """
    out = {}
    for j in jobs:
        own = (ctx_dists or data.dists)[j.group]
        m_c, d_c = _deviations(data, train_groups, j.ctx)
        r_c = np.concatenate([own[q] for q in j.ctx]) - m_c
        # the dual form: G may exceed the number of context rows
        beta = d_c.T @ np.linalg.solve(d_c @ d_c.T + alpha * np.eye(len(r_c)), r_c)
        preds = {}
        for q in j.tar:
            m_t, d_t = _deviations(data, train_groups, [q])
            p = np.maximum(m_t + d_t @ beta, RIDGE_FLOOR)
            preds[q] = p / p.sum()
        out[j.group] = preds
    return out


def ridge_alpha(data: GroupOpinions, train_groups: Sequence[str], val_jobs: Sequence[Job],
                alphas: Sequence[float] = RIDGE_ALPHAS) -> float:
    """The alpha of ridge_baseline that scores best on VALIDATION jobs (the largest without
    any: the most shrinkage towards the mean)."""
    if not val_jobs:
        return max(alphas)
    scores = {a: score(data, ridge_baseline(data, train_groups, val_jobs, a))["score"]
              for a in alphas}
    return max(alphas, key=lambda a: (scores[a], a))


def lm_option_distributions(model, tokenizer, items: Sequence[QuestionItem],
                            batch_size: int = 8) -> dict[str, np.ndarray]:
    """Zero-shot option distribution of a causal LM: next-token probabilities of the option
    letters after the prompt "...Options: A. .. B. ..\\nAnswer:", renormalised over the
    question's options. Prompts longer than the model's context keep their end (left
    truncation). A letter's probability adds its " A" and "A" tokens (whichever exist
    as single tokens). Returns {qid: [K_q]}.
    """
    device = next(model.parameters()).device
    items = sorted(items, key=lambda it: len(question_prompt(it.question, it.options)))
    letter_ids = []
    for L in LETTERS:
        ids = {t[0] for t in (tokenizer.encode(" " + L, add_special_tokens=False),
                              tokenizer.encode(L, add_special_tokens=False)) if len(t) == 1}
        letter_ids.append(sorted(ids))
    out = {}
    model.eval()
    with torch.no_grad(), padding_sides(tokenizer, "left", "left"):
        for start in tqdm(range(0, len(items), batch_size), desc="LM zero-shot"):
            chunk = items[start:start + batch_size]
            batch = tokenizer([question_prompt(it.question, it.options) for it in chunk],
                              return_tensors="pt", padding=True, truncation=True,
                              max_length=token_limit(model, 1024)).to(device)
            try:   # only the last position's logits are needed
                logits = model(**batch, logits_to_keep=1).logits[:, -1].float()   # [B, vocab]
            except TypeError:
                logits = model(**batch).logits[:, -1].float()
            probs = torch.softmax(logits, -1).cpu().numpy()
            for i, it in enumerate(chunk):
                p = np.array([probs[i, letter_ids[k]].sum() for k in range(len(it.options))],
                             dtype=np.float64)
                if not np.isfinite(p).all() or p.sum() <= 0:
                    raise ValueError(f"LM zero-shot: no probability on the option letters "
                                     f"for {it.qid} (the tokenizer has no single-token letters?)")
                out[it.qid] = p / p.sum()
    return out


def fixed_baseline(dists: dict[str, np.ndarray], jobs: Sequence[Job]) -> dict:
    """A group-independent prediction per question (e.g. the LM's zero-shot distribution)."""
    return {j.group: {q: dists[q] for q in j.tar} for j in jobs}


def score(data: GroupOpinions, preds: dict) -> dict:
    """Alignment score of predictions (JS for GOQA, WD for OpinionQA): see
    metrics.alignment.alignment_scores. NaN predictions raise (never scored as perfect)."""
    return alignment_scores(preds, data.dists, ordinals=data.ordinals)


# ---------------------------------------------------------------------------- few-shot p*
def to_beliefs(p_options: np.ndarray, qb) -> np.ndarray:
    """An option distribution mapped into a question's belief space (QuestionBeliefs):
    p_b[b] = sum of p over the options of belief b. Returns float64[K_MAX]."""
    out = np.zeros(len(qb.mask))
    for o, b in enumerate(qb.option_belief):
        out[b] += p_options[o]
    return out / out.sum()


@dataclass
class FewShotPrediction:
    """A predictor's p* for a held-out group from k answered questions, in GDPO's belief space."""

    country: str
    k: int
    context: list[str]                    # the answered qids (their true p* is used)
    override: dict[str, np.ndarray]       # qid -> float64[K_MAX] for every GDPO question
    jsd: dict[str, float]                 # JS distance to the TRUE p* of each predicted qid
    method: str = "gpo"                   # the predictor


def few_shot_p_star(pred: dict[str, np.ndarray], country: str, k: int, context: Sequence[str],
                    questions, method: str = "gpo") -> FewShotPrediction:
    """GDPO's training p* for a held-out group from a predictor's option distributions.

    pred: {qid: [K_q]} the predictor's distributions for the group's target questions (given
    the k answered `context` questions); questions: the GDPO questions (pairs.RunData.questions,
    TRUE p*). Answered questions keep their true p*; predicted ones get pred mapped to beliefs
    (to_beliefs); a question with no prediction (none, normally) keeps the true p* and is
    reported.
    """
    by_qid = {qb.qid: qb for qb in questions}
    missing = [q for q in by_qid if q not in context and q not in pred]
    if missing:
        log.warning("few-shot p*: %d GDPO questions have no %s prediction; they keep the true p*",
                    len(missing), method)
    override = {q: qb.p_star.copy() for q, qb in by_qid.items()}
    jsd = {}
    for q in by_qid:
        if q in context or q not in pred:
            continue
        qb = by_qid[q]
        override[q] = to_beliefs(pred[q], qb)
        jsd[q] = float(jsd_per_prompt(override[q][None], qb.p_star[None], qb.mask[None])[0])
    return FewShotPrediction(country, k, list(context), override, jsd, method)
