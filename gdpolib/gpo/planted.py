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
"cannot find the factor in x". `with_factor` appends those two numbers to an embedding: the
bisect's arm "the factor is in x, beside 576 other dimensions". `factor_r2` asks the other half
of the question: how much of u can any linear reader get from the embedding alone?
"""
from __future__ import annotations

import hashlib

import numpy as np
from scipy.optimize import brentq
from scipy.special import log_softmax, softmax
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

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


def with_factor(emb: EmbeddingTable, data: GroupOpinions) -> EmbeddingTable:
    """`emb` with [m_q,o, u_q,o] (factor_table) appended to every row: float32 [n_rows, dim + 2],
    the same rows and index. Only the questions of `data` that `emb` holds are kept."""
    factor = factor_table(data)
    qids = [q for q in emb.index if q in factor.index]
    index, parts, row = {}, [], 0
    for q in qids:
        e, f = emb.rows(q), factor.rows(q)
        if len(e) != len(f):
            raise ValueError(f"{q}: {len(e)} embedded options but {len(f)} in the factor table")
        parts.append(np.concatenate([e, f], 1))
        index[q] = (row, len(e))
        row += len(e)
    vectors = np.concatenate(parts).astype(np.float32)
    return EmbeddingTable(vectors, index, f"{emb.model}+factor", emb.dim + 2,
                          key=f"{emb.key}+{factor.key}")


def factor_r2(emb: EmbeddingTable, data: GroupOpinions, folds: int = 5) -> dict[str, float]:
    """How much of the first factor u (and of the mean m) a linear map of the embedding gives:
    R^2 of ridge regression (alpha by RidgeCV's efficient leave-one-out) from the embedding row
    of each (question, option), standardised with the fitting rows' statistics, to u_q,o and to
    m_q,o.

    "_new": out of fold, the questions split into `folds` groups (GroupKFold: a question's
    options stay together), i.e. on questions the map never saw; "_seen": in sample, on the
    questions it was fitted to (GPO's test groups answer the meta-train questions, so this is
    what a linear reader of x can get there). R^2 = 1 - SSE / SS around 0 for u (u_q sums to 0
    over a question's options: 0 is the no-information prediction) and around the mean for m.
    Returns {"u_new", "u_seen", "m_new", "m_seen", "rows", "questions"}."""
    m, u, _ = first_factor(data)
    qids = [q for q in sorted(data.items) if q in emb]
    x = np.concatenate([emb.rows(q) for q in qids]).astype(np.float64)
    groups = np.concatenate([[i] * len(m[q]) for i, q in enumerate(qids)])
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 5, 13)))
    out = {"rows": len(x), "questions": len(qids)}
    for name, target in (("u", u), ("m", m)):
        y = np.concatenate([target[q] for q in qids])
        centre = 0.0 if name == "u" else y.mean()

        def r2(pred: np.ndarray) -> float:
            return float(1 - np.sum((y - pred) ** 2) / np.sum((y - centre) ** 2))
        out[f"{name}_new"] = r2(cross_val_predict(ridge, x, y, groups=groups,
                                                  cv=GroupKFold(folds)))
        out[f"{name}_seen"] = r2(ridge.fit(x, y).predict(x))
    return out
