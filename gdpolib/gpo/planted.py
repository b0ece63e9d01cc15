"""A planted group signal on real survey questions: can a GPO model read a context at all?

Real groups differ little (OpinionQA: the group-specific part is ~7.5 % of the answers'
variance, between-group sd ~0.06) and mostly along one direction. Here synthetic groups answer
the REAL questions with a signal of known size along the REAL first direction:

    y_g(q) = softmax(log m_q + s * theta_g * u_q),   theta_g ~ N(0, 1)

m_q: the real groups' mean answer to q; u_q: q's rows of the first left singular vector of the
real deviations (options x groups; a group that did not answer q counts as no deviation);
s: set so that the between-group sd of the planted answers (pooled over every option and
group, as `between_group_sd` measures it) is exactly `signal_sd` for the drawn thetas. A
model that reads the context can recover theta_g from k answered questions (ridge on the
first factor does); one that only learns a per-question prior stays at the mean.
`factor_table` gives a model the two numbers per option it would have to learn from an
embedding, [m_q,o, u_q,o], as its x: the control that separates "cannot read a context" from
"cannot find the factor in x".
"""
from __future__ import annotations

import hashlib

import numpy as np
from scipy.optimize import brentq
from scipy.special import log_softmax, softmax

from gdpolib.embeddings import EmbeddingTable
from gdpolib.gpo.groups import GroupOpinions, train_mean

LOG_FLOOR = 1e-9         # an option no real group chose keeps (almost) no mass


def between_group_sd(data: GroupOpinions) -> float:
    """sd of every group's share minus the mean over the groups that answered the question,
    pooled over all answered (group, question, option) entries (ddof 0)."""
    devs = []
    for q in data.items:
        answered = [g for g in data.groups if q in data.dists[g]]
        if len(answered) < 2:
            continue
        y = np.stack([data.dists[g][q] for g in answered])            # [G_q, K_q]
        devs.append((y - y.mean(0)).ravel())
    if not devs:
        raise ValueError(f"{data.name}: no question was answered by two groups")
    return float(np.concatenate(devs).std())


def first_factor(data: GroupOpinions) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """(m, u, share): per question the mean answer m_q [K_q] and the first between-group factor
    u_q [K_q] (rows of the unit first left singular vector of the deviation matrix), and the
    share of the deviations' sum of squares that factor carries."""
    qids = sorted(data.items)
    m, devs = {}, []
    for q in qids:
        m[q] = train_mean(data, data.groups, q)
        d = np.zeros((len(m[q]), len(data.groups)))
        for j, g in enumerate(data.groups):
            if q in data.dists[g]:
                d[:, j] = data.dists[g][q] - m[q]
        devs.append(d)
    u_all, s, _ = np.linalg.svd(np.concatenate(devs), full_matrices=False)
    u, row = {}, 0
    for q in qids:
        u[q] = u_all[row:row + len(m[q]), 0]
        row += len(m[q])
    return m, u, float(s[0] ** 2 / (s ** 2).sum())


def _answers(log_m: dict, u: dict, theta: np.ndarray, scale: float) -> dict[str, np.ndarray]:
    """{qid: [len(theta), K_q]} softmax(log m_q + scale * theta * u_q) for every theta."""
    return {q: softmax(log_m[q][None] + scale * theta[:, None] * u[q][None], axis=1)
            for q in log_m}


def signal_scale(log_m: dict, u: dict, theta: np.ndarray, signal_sd: float) -> float:
    """The s at which the between-group sd of the answers of groups `theta` is `signal_sd`."""
    def sd(scale: float) -> float:
        y = _answers(log_m, u, theta, scale)
        return float(np.concatenate([(v - v.mean(0)).ravel() for v in y.values()]).std())

    hi = 1.0
    while sd(hi) < signal_sd:
        hi *= 2
        if hi > 1e6:
            raise ValueError(f"a between-group sd of {signal_sd} cannot be planted on these "
                             f"questions (largest reachable {sd(hi):.3f})")
    return float(brentq(lambda s: sd(s) - signal_sd, 0.0, hi, xtol=1e-10))


def planted_groups(data: GroupOpinions, signal_sd: float, n_groups: int | None = None,
                   seed: int = 0) -> tuple[GroupOpinions, dict[str, float]]:
    """Synthetic groups that answer every question of `data` with a planted signal of
    between-group sd `signal_sd` along the real first factor.

    n_groups: how many (default: as many as `data` has). Returns (GroupOpinions named
    "<data.name>-planted<signal_sd>", each group its own family, the same ordinals; {group:
    theta_g}).
    """
    if signal_sd <= 0:
        raise ValueError(f"signal_sd must be > 0, got {signal_sd}")
    n_groups = len(data.groups) if n_groups is None else n_groups
    if n_groups < 2:
        raise ValueError(f"planted groups need n_groups >= 2, got {n_groups}")
    m, u, _ = first_factor(data)
    log_m = {q: log_softmax(np.log(np.maximum(p, LOG_FLOOR))) for q, p in m.items()}
    theta = np.random.default_rng(seed).standard_normal(n_groups)
    scale = signal_scale(log_m, u, theta, signal_sd)
    names = [f"planted-{i:03d}" for i in range(n_groups)]
    answers = _answers(log_m, u, theta, scale)
    dists = {g: {q: answers[q][i] for q in answers} for i, g in enumerate(names)}
    out = GroupOpinions(f"{data.name}-planted{signal_sd:g}", data.items, dists,
                        {g: g for g in names}, data.ordinals)
    return out, dict(zip(names, theta.tolist()))


def factor_table(data: GroupOpinions) -> EmbeddingTable:
    """x = [m_q,o, u_q,o] per (question, option) of `data` (first_factor of its groups), rows
    in sorted qid order: float32 [n_options, 2]."""
    m, u, _ = first_factor(data)
    qids = sorted(data.items)
    index, row = {}, 0
    for q in qids:
        index[q] = (row, len(m[q]))
        row += len(m[q])
    vectors = np.concatenate([np.stack([m[q], u[q]], 1) for q in qids]).astype(np.float32)
    key = hashlib.sha256(vectors.tobytes()).hexdigest()[:16]
    return EmbeddingTable(vectors, index, f"{data.name}-factor", 2, key=f"factor-{key}")
