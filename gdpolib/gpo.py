"""GPO (Zhao, Dang, Grover, ICLR 2024): few-shot prediction of a group's opinion distribution.

A group answers a few survey questions (the context); GPO predicts its answer distribution on
new questions (the targets). Each (question, option) is a token: context tokens [x; y] carry
the group's share y of that option, target tokens [x; 0]; x is a frozen embedding of the
question with that option as the answer (gdpolib.embeddings). A transformer encoder without
positional encoding lets the targets attend to the context only, and a per-question softmax
turns the head's means into a distribution over each target question's options. The model is
meta-trained across groups (reference gpo-method.md §2) and never sees a test group's answers
except as context.

Layout of this module:
  groups       GroupOpinions (GlobalOpinionQA countries or OpinionQA groups), group splits
  model        GPOModel, the attention mask, the per-question softmax, the losses
  episodes     episode sampling and padding into EpisodeBatch tensors
  prediction   predict for (group, context, targets) jobs, evaluation plans, baselines, scores
  training     meta_train (Adam + cosine, model selection on VALIDATION groups only)
  experiment   run_gpo, alignment tables, the k curve, few-shot p* and few-shot GDPO; the
               steps of notebooks/05_gpo.ipynb

Fixed here, unlike the official code (§7.2): padded targets are left out of the loss mean,
sigma has a floor, seeds come from the run's seed (episodes too), selection never uses test
groups, a NaN score is never counted as perfect, and everything runs on any torch device.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from gdpolib.embeddings import EmbeddingTable, QuestionItem

log = logging.getLogger("gdpolib.gpo")

# ============================================================================ groups
# Two spellings of one national sample in GlobalOpinionQA (GAS vs WVS); such twins stay together.
SPELLING_TWINS = {"Great Britain": "Britain", "Czechia": "Czech Rep.",
                  "South Korea": "S. Korea", "Taiwan ROC": "Taiwan"}


def country_family(country: str) -> str:
    """The population a GOQA key samples: 'India (Non-national sample)' -> 'India'.

    All keys of one family go to the same split, so a held-out country's "(Non-national
    sample)" (or old/current national sample, or other spelling) never leaks into training.
    """
    base = country.split(" (")[0].strip()
    return SPELLING_TWINS.get(base, base)


@dataclass
class GroupOpinions:
    """The input of GPO: questions and each group's answer distribution per question.

    items: qid -> QuestionItem (question text and options);
    dists: group -> {qid: float64[K_q] distribution over the question's options};
    family: group -> family name (groups of one family share a split);
    ordinals: qid -> float64[K_q] ordinal values (OpinionQA: WD score) or None (JS score).
    """

    name: str
    items: dict[str, QuestionItem]
    dists: dict[str, dict[str, np.ndarray]]
    family: dict[str, str]
    ordinals: dict[str, np.ndarray] | None = None

    @property
    def groups(self) -> list[str]:
        return sorted(self.dists)

    @property
    def metric(self) -> str:
        return "js" if self.ordinals is None else "wd"

    def qids(self, group: str) -> list[str]:
        """The questions a group answered, sorted (a stable order for seeded permutations)."""
        return sorted(self.dists[group])


def from_goqa(goqa, min_questions: int = 60) -> GroupOpinions:
    """Every GlobalOpinionQA country with at least `min_questions` usable questions.

    goqa: gdpolib.data.goqa.GoqaData. The filter is per country (not the paper's
    14-country filter, which deletes questions Pakistan and S. Africa need): a (question,
    country) entry is used when its distribution has one finite, non-negative value per option
    and a positive sum; it is renormalised.
    """
    dists: dict[str, dict[str, np.ndarray]] = {}
    items: dict[str, QuestionItem] = {}
    for q in goqa.questions:
        for country, p in q.selections.items():
            p = np.asarray(p, dtype=np.float64)
            if p.shape != (len(q.options),) or not np.all(np.isfinite(p)) or np.any(p < 0) \
                    or p.sum() <= 0:
                continue
            dists.setdefault(country, {})[q.qid] = p / p.sum()
    dists = {c: d for c, d in dists.items() if len(d) >= min_questions}
    used = {qid for d in dists.values() for qid in d}
    for q in goqa.questions:
        if q.qid in used:
            items[q.qid] = QuestionItem(q.qid, q.question, list(q.options))
    if not dists:
        raise ValueError(f"no GlobalOpinionQA country has >= {min_questions} usable questions "
                         "(lower gpo_min_questions)")
    return GroupOpinions("goqa", items, dists, {c: country_family(c) for c in dists})


def from_opinionqa(oqa) -> GroupOpinions:
    """OpinionQA groups (gdpolib.data.opinionqa.OpinionQAData); scored by the WD alignment."""
    items = {q.qid: QuestionItem(q.qid, q.question, list(q.options)) for q in oqa.questions}
    dists = {g: {q.qid: q.dists[g] for q in oqa.questions if g in q.dists} for g in oqa.groups}
    ordinals = {q.qid: np.asarray(q.ordinals, dtype=np.float64) for q in oqa.questions}
    return GroupOpinions("opinionqa", items, dists, {g: g for g in dists}, ordinals)


def split_groups(data: GroupOpinions, fractions: Sequence[float], seed: int,
                 holdout: Sequence[str] = ()) -> dict[str, list[str]]:
    """Seeded meta-train / validation / test split of the groups, by FAMILY.

    fractions: (train, val, test), summing to 1, applied to the families other than the
    `holdout` ones; the families of `holdout` groups go to test. Validation and test get at
    least one family each when their fraction is positive and there are families to spare.
    Returns {"train": [...], "val": [...], "test": [...]} (sorted group names).
    """
    unknown = [g for g in holdout if g not in data.dists]
    if unknown:
        raise KeyError(f"holdout group(s) {unknown} not among the {len(data.dists)} groups "
                       f"(too few questions? groups: {', '.join(data.groups[:10])}, ...)")
    held = {data.family[g] for g in holdout}
    families = sorted(set(data.family.values()) - held)
    order = [families[i] for i in np.random.default_rng(seed).permutation(len(families))]
    n = len(order)
    n_val, n_test = round(fractions[1] * n), round(fractions[2] * n)
    if fractions[1] > 0 and n_val == 0 and n >= 3:
        n_val = 1
    if fractions[2] > 0 and n_test == 0 and n >= 3 and not held:
        n_test = 1
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"group split {list(fractions)} leaves no meta-train group ({n} families)")
    part = {f: "train" for f in order[:n_train]}
    part.update({f: "val" for f in order[n_train:n_train + n_val]})
    part.update({f: "test" for f in order[n_train + n_val:]})
    part.update({f: "test" for f in held})
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for g in data.groups:
        out[part[data.family[g]]].append(g)
    return out


# ============================================================================ group prior
PRIOR_FLOOR = 1e-3      # the smallest prior share the residual logits start from


@dataclass
class GroupPriorTable(EmbeddingTable):
    """An embedding table extended with what the meta-train groups answered (gpo_prior:
    train_groups), for the group-prior GPO variant (GPOModel.deviation_scale).

    Row (q, o) = [x_{q,o}; d_{g_1,q,o} .. d_{g_G,q,o}; m_{q,o}]: m is the mean share of option o
    over the meta-train groups that answered q (train_mean) and d_g = y_{g,q,o} - m (0 where g
    did not answer q). Questions are shared across groups (the paper's setting), so these are
    known for a new group's targets too; no validation or test group's answer is read.
    deviation_scale = 1 / std of the answered d's: deviations enter the model at unit scale.
    """

    deviation_scale: float = 1.0


def with_group_prior(emb: EmbeddingTable, data: "GroupOpinions",
                     train_groups: Sequence[str]) -> GroupPriorTable:
    """`emb` with the meta-train groups' answer profile and mean appended ([rows, d + G + 1])."""
    extra = np.zeros((len(emb.vectors), len(train_groups) + 1), np.float32)
    answered = np.zeros(extra.shape[:1] + (len(train_groups),), bool)
    for qid, (start, n) in emb.index.items():
        if qid not in data.items:
            continue
        m = train_mean(data, train_groups, qid)
        extra[start:start + n, -1] = m
        for j, g in enumerate(train_groups):
            if qid in data.dists[g]:
                extra[start:start + n, j] = data.dists[g][qid] - m
                answered[start:start + n, j] = True
    std = float(extra[:, :-1][answered].std()) if answered.any() else 0.0
    return GroupPriorTable(np.hstack([emb.vectors, extra]), emb.index, emb.model,
                           emb.dim + extra.shape[1], key=f"{emb.key}+prior{len(train_groups)}",
                           deviation_scale=1.0 / std if std > 0 else 1.0)


# ============================================================================ model
def build_mlp(dim_in: int, dim_hidden: int, dim_out: int, depth: int) -> nn.Sequential:
    """`depth` Linear layers with ReLU between them (the TNP embedder: depth 4)."""
    layers: list[nn.Module] = [nn.Linear(dim_in, dim_hidden)]
    for i in range(depth - 1):
        layers += [nn.ReLU(), nn.Linear(dim_hidden, dim_hidden if i < depth - 2 else dim_out)]
    return nn.Sequential(*layers)


def attention_mask(n_ctx: int, n_tar: int, device: torch.device | None = None) -> torch.Tensor:
    """Bool [L, L] (L = n_ctx + n_tar), True = may NOT attend. Every query (context or target)
    attends to context keys only: targets never see themselves or each other, so they are
    conditionally independent given the context (reference §2.4)."""
    mask = torch.ones(n_ctx + n_tar, n_ctx + n_tar, dtype=torch.bool, device=device)
    mask[:, :n_ctx] = False
    return mask


def segment_softmax(logits: torch.Tensor, seg: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Softmax of `logits` within each (row, segment): the options of one target question.

    logits: [B, N]; seg: long [B, N] question index of each token within its row (>= 0);
    pad: bool [B, N] (True = padding). Returns [B, N]: each question's entries sum to 1,
    padding is 0.
    """
    B, N = logits.shape
    if N == 0:
        return logits
    n_seg = int(seg.max().item()) + 2          # + one slot per row that collects the padding
    gid = seg.masked_fill(pad, n_seg - 1) + torch.arange(B, device=logits.device)[:, None] * n_seg
    flat, gid = logits.reshape(-1), gid.reshape(-1)
    top = torch.full((B * n_seg,), -math.inf, device=logits.device, dtype=logits.dtype)
    top = top.scatter_reduce(0, gid, flat.detach(), reduce="amax")      # for numerical safety
    e = torch.exp(flat - top[gid])
    den = torch.zeros(B * n_seg, device=logits.device, dtype=logits.dtype).index_add(0, gid, e)
    return (e / den[gid]).view(B, N).masked_fill(pad, 0.0)


@dataclass
class EpisodeBatch:
    """A padded batch of episodes (B groups). True in *_pad marks padding.

    xc: [B, Nc, d] context option embeddings;  yc: [B, Nc] the group's share of each option
    xt: [B, Nt, d] target option embeddings;   yt: [B, Nt] true shares (0 when unknown)
    c_pad: bool [B, Nc];  t_pad: bool [B, Nt];  t_seg: long [B, Nt] question index per target
    token within its row;  n_questions: number of real target questions in the batch.
    """

    xc: torch.Tensor
    yc: torch.Tensor
    c_pad: torch.Tensor
    xt: torch.Tensor
    yt: torch.Tensor
    t_pad: torch.Tensor
    t_seg: torch.Tensor
    n_questions: int

    def to(self, device) -> "EpisodeBatch":
        return EpisodeBatch(*(t.to(device) for t in (self.xc, self.yc, self.c_pad, self.xt,
                                                      self.yt, self.t_pad, self.t_seg)),
                            n_questions=self.n_questions)


class GPOModel(nn.Module):
    """The GPO transformer (TNP-D design): ~0.7 M parameters for d = 768, ~1.2 M for d = 4096.

    embedder: MLP(d+1 -> 128, 4 Linear layers); encoder: 6 post-LN layers, d_model 128, 4 heads,
    FFN 128, dropout 0, no positional encoding; head: 128 -> 128 -> 2 (raw mean, raw scale).
    x is standardised with statistics of the embedding table (buffers, saved with the model).

    deviation_scale (None = the paper's model): the group-prior variant, for x from a
    GroupPriorTable whose last column is the prior share m (the meta-train groups' mean). A
    context answer enters as its deviation (y - m) * deviation_scale, through the embedder and
    its own answer_embedder; the raw means are residuals over log m.
    """

    def __init__(self, dim_x: int, d_model: int = 128, n_layers: int = 6, n_heads: int = 4,
                 d_ff: int = 128, sigma_floor: float = 0.05, deviation_scale: float | None = None):
        super().__init__()
        self.dim_x, self.sigma_floor = dim_x, sigma_floor
        self.deviation_scale = deviation_scale
        self.config = dict(dim_x=dim_x, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                           d_ff=d_ff, sigma_floor=sigma_floor, deviation_scale=deviation_scale)
        self.register_buffer("x_mean", torch.zeros(dim_x))
        self.register_buffer("x_std", torch.ones(dim_x))
        self.embedder = build_mlp(dim_x + 1, d_model, d_model, depth=4)
        if self.uses_prior:
            # As one input among d + 1 the answer barely moves its token, and meta-training
            # settles on the context-free prior (measured on OpinionQA); its own embedding,
            # added to the token's, lets the context be read.
            self.answer_embedder = build_mlp(1, d_model, d_model, depth=2)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, 2))

    @property
    def uses_prior(self) -> bool:
        """True for the group-prior variant: x ends with the prior share (GroupPriorTable)."""
        return self.deviation_scale is not None

    def set_normalisation(self, vectors: np.ndarray) -> None:
        """Standardise inputs with the table's per-dimension mean and std ([rows, d])."""
        v = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
        self.x_mean.copy_(v.mean(0))
        self.x_std.copy_(v.std(0).clamp(min=1e-6))

    def head_outputs(self, b: EpisodeBatch) -> torch.Tensor:
        """Raw head outputs per target token: [B, Nt, 2] (raw mean, raw scale)."""
        if bool((b.c_pad.all(dim=1)).any()):
            raise ValueError("every episode needs at least one context token")
        n_ctx, n_tar = b.xc.shape[1], b.xt.shape[1]
        xc = (b.xc - self.x_mean) / self.x_std
        xt = (b.xt - self.x_mean) / self.x_std
        yc = b.yc.unsqueeze(-1)                                             # [B, Nc, 1]
        if self.uses_prior:
            yc = (yc - b.xc[..., -1:]) * self.deviation_scale
        hc = self.embedder(torch.cat([xc, yc], -1))                         # [B, Nc, 128]
        if self.uses_prior:
            hc = hc + self.answer_embedder(yc)
        ht = self.embedder(torch.cat([xt, torch.zeros_like(xt[..., :1])], -1))
        h = torch.cat([hc, ht], dim=1)                                      # [B, L, 128]
        mask = attention_mask(n_ctx, n_tar, device=h.device)
        # Targets are never keys (the mask), so only the context's padding needs masking.
        key_pad = torch.cat([b.c_pad, torch.ones_like(b.t_pad)], dim=1)
        h = self.encoder(h, mask=mask, src_key_padding_mask=key_pad)
        return self.head(h[:, n_ctx:])

    def forward(self, b: EpisodeBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (mu, sigma), each [B, Nt]: mu = per-question softmax of the raw means
        (plus log prior in the group-prior variant; 0 at padding),
        sigma = floor + (1 - floor) * softplus(raw scale)."""
        raw = self.head_outputs(b)
        logits = raw[..., 0]
        if self.uses_prior:
            logits = logits + torch.log(b.xt[..., -1].clamp(min=PRIOR_FLOOR))
        mu = segment_softmax(logits, b.t_seg, b.t_pad)
        sigma = self.sigma_floor + (1 - self.sigma_floor) * nn.functional.softplus(raw[..., 1])
        return mu, sigma


def gpo_loss(mu: torch.Tensor, sigma: torch.Tensor, b: EpisodeBatch,
             kind: str = "gaussian_nll") -> torch.Tensor:
    """The meta-training loss of a batch (a scalar).

    gaussian_nll: the paper's -log N(y; mu, sigma) per target token, averaged over REAL target
        tokens only (the official code also counted padding in the mean, bug §7.2.7).
    kl: KL(y_q || mu_q) per target question, averaged over the real questions.
    mu, sigma: [B, Nt]; targets and masks come from `b`.
    """
    real = (~b.t_pad).to(mu.dtype)
    if kind == "gaussian_nll":
        nll = -torch.distributions.Normal(mu, sigma).log_prob(b.yt)
        return (nll * real).sum() / real.sum().clamp(min=1)
    if kind == "kl":
        term = torch.xlogy(b.yt, b.yt) - b.yt * torch.log(mu.clamp(min=1e-12))
        return (term * real).sum() / max(b.n_questions, 1)
    raise ValueError(f"unknown GPO loss {kind!r} (gaussian_nll | kl)")


# ============================================================================ episodes
@dataclass
class Episode:
    """One group's episode in numpy, before padding: see EpisodeBatch for the fields."""

    xc: np.ndarray
    yc: np.ndarray
    xt: np.ndarray
    yt: np.ndarray
    t_seg: np.ndarray
    targets: list[str]          # target qids, in segment order


def make_episode(emb: EmbeddingTable, dists: dict[str, np.ndarray] | None,
                 ctx: Sequence[str], tar: Sequence[str], ctx_dists: dict | None = None,
                 ) -> Episode:
    """Tokens of one episode. dists: the group's {qid: distribution} (targets' y; None = unknown,
    y = 0); ctx_dists: where the context's y comes from (default: dists)."""
    ctx_dists = ctx_dists if ctx_dists is not None else dists
    if not ctx:
        raise ValueError("an episode needs at least one context question")
    xc = np.concatenate([emb.rows(q) for q in ctx])
    yc = np.concatenate([ctx_dists[q] for q in ctx])
    xt = np.concatenate([emb.rows(q) for q in tar]) if tar else np.zeros((0, emb.dim), np.float32)
    yt = (np.concatenate([dists[q] for q in tar]) if dists is not None and tar
          else np.zeros(len(xt)))
    seg = np.concatenate([np.full(emb.index[q][1], i) for i, q in enumerate(tar)]) if tar \
        else np.zeros(0, np.int64)
    return Episode(xc, yc, xt, yt, seg, list(tar))


def collate(episodes: Sequence[Episode]) -> EpisodeBatch:
    """Pad episodes to the longest context / target of the batch (CPU tensors)."""
    B, d = len(episodes), episodes[0].xc.shape[1]
    nc, nt = max(len(e.yc) for e in episodes), max(len(e.yt) for e in episodes)
    xc, yc = np.zeros((B, nc, d), np.float32), np.zeros((B, nc), np.float32)
    xt, yt = np.zeros((B, nt, d), np.float32), np.zeros((B, nt), np.float32)
    c_pad, t_pad = np.ones((B, nc), bool), np.ones((B, nt), bool)
    seg = np.zeros((B, nt), np.int64)
    for i, e in enumerate(episodes):
        a, b = len(e.yc), len(e.yt)
        xc[i, :a], yc[i, :a], c_pad[i, :a] = e.xc, e.yc, False
        xt[i, :b], yt[i, :b], t_pad[i, :b], seg[i, :b] = e.xt, e.yt, False, e.t_seg
    n_q = sum(len(e.targets) for e in episodes)
    return EpisodeBatch(*(torch.from_numpy(a) for a in (xc, yc, c_pad, xt, yt, t_pad, seg)),
                        n_questions=n_q)


def sample_sizes(rng: np.random.Generator, n_min: int, ctx_range: Sequence[int],
                 tar_range: Sequence[int]) -> tuple[int, int]:
    """Context and target sizes (in questions) of one training batch: n_ctx ~ U{ctx_range},
    n_tar ~ U{tar_range}, capped so that a group with `n_min` questions can hold both.
    One draw per batch (as the official OpinionQA collate does) keeps padding small."""
    c_lo, c_hi = ctx_range
    t_lo, t_hi = tar_range
    if n_min < c_lo + t_lo:
        raise ValueError(f"a group with {n_min} questions cannot hold {c_lo} context + {t_lo} "
                         "target questions")
    n_ctx = int(rng.integers(c_lo, min(c_hi, n_min - t_lo) + 1))
    n_tar = int(rng.integers(t_lo, min(t_hi, n_min - n_ctx) + 1))
    return n_ctx, n_tar


def sample_episode(rng: np.random.Generator, qids: Sequence[str], n_ctx: int, n_tar: int,
                   ) -> tuple[list[str], list[str]]:
    """Disjoint context and target QUESTION sets of one group, from its own permutation (all
    options of a question land on the same side)."""
    if n_ctx + n_tar > len(qids):
        raise ValueError(f"{n_ctx} + {n_tar} questions requested from a group with {len(qids)}")
    perm = rng.permutation(len(qids))
    return [qids[i] for i in perm[:n_ctx]], [qids[i] for i in perm[n_ctx:n_ctx + n_tar]]


# ============================================================================ prediction
@dataclass
class Job:
    """One prediction: a group, its context questions (answered) and target questions."""

    group: str
    ctx: list[str]
    tar: list[str]


@torch.no_grad()
def predict(model: GPOModel, emb: EmbeddingTable, data: GroupOpinions, jobs: Sequence[Job],
            batch_size: int = 32, ctx_dists: dict[str, dict] | None = None,
            ) -> dict[str, dict[str, np.ndarray]]:
    """Predicted distributions {group: {qid: [K_q]}} for every job (one job per group; one
    forward per batch of jobs).

    The context's answers come from data.dists[group], or from ctx_dists[group] when given
    (a new group's few answered questions). Targets' y is never read.
    """
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, dict[str, np.ndarray]] = {}
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


def train_mean(data: GroupOpinions, train_groups: Sequence[str], qid: str) -> np.ndarray:
    """Mean distribution of the meta-train groups that answered `qid` (uniform if none)."""
    ps = [data.dists[g][qid] for g in train_groups if qid in data.dists[g]]
    k = len(data.items[qid].options)
    return np.mean(ps, axis=0) if ps else np.full(k, 1 / k)


def train_mean_baseline(data: GroupOpinions, train_groups: Sequence[str],
                        jobs: Sequence[Job]) -> dict:
    return {j.group: {q: train_mean(data, train_groups, q) for q in j.tar} for j in jobs}


def knn_baseline(data: GroupOpinions, train_groups: Sequence[str], jobs: Sequence[Job],
                 ctx_dists: dict[str, dict] | None = None) -> dict:
    """Nearest neighbour from the context: for each target question, the meta-train group that
    answered it and whose answers on the shared context questions are closest (mean JS
    distance) lends its answer. No such group -> the meta-train mean."""
    from scipy.spatial.distance import jensenshannon

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


def lm_option_distributions(model, tokenizer, items: Sequence[QuestionItem],
                            batch_size: int = 8) -> dict[str, np.ndarray]:
    """Zero-shot option distribution of a causal LM: next-token probabilities of the option
    letters after the prompt "...Options: A. .. B. ..\\nAnswer:", renormalised over the
    question's options. Prompts longer than the model's context keep their end (left
    truncation). A letter's probability adds its " A" and "A" tokens (whichever exist
    as single tokens). Returns {qid: [K_q]}.
    """
    from tqdm.auto import tqdm

    from gdpolib.embeddings import LETTERS, question_prompt, token_limit

    device = next(model.parameters()).device
    items = sorted(items, key=lambda it: len(question_prompt(it.question, it.options)))
    letter_ids = []
    for L in LETTERS:
        ids = {t[0] for t in (tokenizer.encode(" " + L, add_special_tokens=False),
                              tokenizer.encode(L, add_special_tokens=False)) if len(t) == 1}
        letter_ids.append(sorted(ids))
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out = {}
    model.eval()
    with torch.no_grad():
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
    metrics.alignment_scores. NaN predictions raise (never scored as perfect)."""
    from gdpolib.metrics import alignment_scores

    return alignment_scores(preds, data.dists, ordinals=data.ordinals)


# ============================================================================ training
@dataclass
class GPOSettings:
    """Meta-training hyperparameters (RunConfig gpo_* parameters; reference §2.7 defaults for
    the optimiser, CPU-sized episodes and steps)."""

    steps: int = 1500
    lr: float = 3e-4
    loss: str = "gaussian_nll"
    batch_groups: int = 16
    ctx_range: tuple[int, int] = (1, 50)
    tar_range: tuple[int, int] = (5, 20)
    eval_every: int = 100
    eval_k: int = 20
    seed: int = 0
    prior: str = "none"               # none (the paper) | train_groups (GroupPriorTable)

    @classmethod
    def from_config(cls, cfg) -> "GPOSettings":
        return cls(steps=cfg.gpo_steps, lr=cfg.gpo_lr, loss=cfg.gpo_loss,
                           batch_groups=cfg.gpo_batch_groups, ctx_range=tuple(cfg.gpo_ctx_range),
                           tar_range=tuple(cfg.gpo_tar_range), eval_every=cfg.gpo_eval_every,
                           eval_k=cfg.gpo_k, seed=cfg.seed, prior=cfg.gpo_prior)


@dataclass
class MetaTrainResult:
    model: GPOModel                   # the weights with the best validation score
    history: list[dict]               # {"step", "loss", "lr", "tokens" (padded slots)} and,
                                      # at evaluations, "val_score"
    best_step: int
    best_val: float
    seconds: float                    # wall time
    skipped_groups: list[str] = field(default_factory=list)
    cpu_seconds: float = math.nan     # process CPU time (all threads), robust to a busy machine


def meta_train(data: GroupOpinions, emb: EmbeddingTable, train_groups: Sequence[str],
               val_groups: Sequence[str], settings: GPOSettings,
               device: torch.device | str = "cpu", progress: bool = True) -> MetaTrainResult:
    """Meta-train GPO on `train_groups`; keep the weights that score best on `val_groups`.

    Each step draws `batch_groups` training groups and one episode each (sample_sizes, then
    sample_episode per group), and takes
    an Adam step (CosineAnnealingLR over `steps`). Every `eval_every` steps and at the end the
    model predicts the validation groups' fixed targets from k = eval_k context questions
    (eval_plans seeded by settings.seed). Model init and episodes are seeded by settings.seed
    (bug §7.2.6: episodes must change with the seed), without touching the global RNGs.
    With no validation group the last weights are kept.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    need = settings.ctx_range[0] + settings.tar_range[0]
    usable = [g for g in train_groups if len(data.dists[g]) >= need]
    skipped = sorted(set(train_groups) - set(usable))
    if not usable:
        raise ValueError(f"no meta-train group has >= {need} questions")
    has_prior = isinstance(emb, GroupPriorTable)
    if has_prior != (settings.prior == "train_groups"):
        raise ValueError(f"GPO prior {settings.prior!r} needs "
                         + ("with_group_prior(emb, data, train_groups) as the table"
                            if not has_prior else "a plain embedding table"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = GPOModel(emb.dim, deviation_scale=emb.deviation_scale if has_prior else None)
    model.set_normalisation(emb.vectors)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(settings.steps, 1))
    rng = np.random.default_rng(settings.seed)
    qids = {g: data.qids(g) for g in usable}
    val_jobs = [p.job(settings.eval_k) for p in
                eval_plans(data, val_groups, [settings.eval_k], settings.seed).values()]

    def validate() -> float:
        return score(data, predict(model, emb, data, val_jobs))["score"] if val_jobs else math.nan

    history: list[dict] = []
    best_val, best_step, best_state = -math.inf, 0, copy.deepcopy(model.state_dict())
    start, cpu_start = time.time(), time.process_time()
    bar = tqdm(range(1, settings.steps + 1), desc="GPO meta-training", disable=not progress)
    for step in bar:
        model.train()
        groups = rng.choice(usable, size=min(settings.batch_groups, len(usable)), replace=False)
        n_ctx, n_tar = sample_sizes(rng, min(len(qids[g]) for g in groups), settings.ctx_range,
                                    settings.tar_range)
        eps = [make_episode(emb, data.dists[g], *sample_episode(rng, qids[g], n_ctx, n_tar))
               for g in groups]
        batch = collate(eps).to(device)
        mu, sigma = model(batch)
        loss = gpo_loss(mu, sigma, batch, settings.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()        # one batch per step, so T_max counts batches (bug §7.2.10)
        row = {"step": step, "loss": loss.item(), "lr": sched.get_last_lr()[0],
               "tokens": int(batch.yc.numel() + batch.yt.numel())}
        if val_jobs and (step % settings.eval_every == 0 or step == settings.steps):
            row["val_score"] = validate()
            if row["val_score"] > best_val:
                best_val, best_step = row["val_score"], step
                best_state = copy.deepcopy(model.state_dict())
            bar.set_postfix(loss=f"{row['loss']:.3f}", val=f"{row['val_score']:.4f}")
        history.append(row)
    if not val_jobs:
        best_state, best_step, best_val = copy.deepcopy(model.state_dict()), settings.steps, math.nan
    model.load_state_dict(best_state)
    model.eval()
    return MetaTrainResult(model, history, best_step, best_val, time.time() - start, skipped,
                           time.process_time() - cpu_start)


def save_model(model: GPOModel, path: str | Path) -> None:
    torch.save({"config": model.config, "state_dict": model.state_dict()}, path)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> GPOModel:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = GPOModel(**blob["config"])
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()


# ============================================================================ experiment
# The steps notebooks/05_gpo.ipynb runs; each is cached (embeddings across runs, the meta-trained
# model as the run stage `stages/gpo_<dataset>`).
METHODS = ("gpo", "uniform", "train_mean", "knn", "lm_zero_shot")


@dataclass
class GPOExperiment:
    """A meta-trained GPO on one dataset, with what is needed to evaluate it."""

    data: GroupOpinions
    emb: EmbeddingTable
    split: dict[str, list[str]]      # train / val / test groups
    plans: dict[str, EvalPlan]       # the test groups' fixed evaluation episodes
    model: GPOModel
    history: list[dict]
    info: dict                       # best_step, best_val, seconds, settings, embedder, ...
    lm_dists: dict[str, np.ndarray] | None = None   # the LM's zero-shot distribution per qid


def settings_from_config(cfg) -> GPOSettings:
    """GPOSettings from the run's gpo_* parameters, checked."""
    from gdpolib.config import ConfigError

    for name in ("gpo_ctx_range", "gpo_tar_range"):
        r = getattr(cfg, name)
        if len(r) != 2 or r[0] < 1 or r[0] > r[1]:
            raise ConfigError(f"parameter {name!r}: need [min, max] with 1 <= min <= max, got {r}")
    return GPOSettings.from_config(cfg)


def load_groups(cfg, dataset: str = "goqa") -> GroupOpinions:
    """GlobalOpinionQA countries (cfg.goqa_path or the hub) or OpinionQA groups
    (cfg.opinionqa_path) as GroupOpinions."""
    from gdpolib.config import resolve_path

    if dataset == "goqa":
        from gdpolib.data.goqa import load_goqa

        path = None if cfg.goqa_path in (None, "hub") else resolve_path(cfg.goqa_path)
        return from_goqa(load_goqa(path, revision=cfg.goqa_revision, bad_rows=cfg.bad_rows),
                         cfg.gpo_min_questions)
    if dataset == "opinionqa":
        from gdpolib.data.opinionqa import attribute_groups, load_opinionqa

        if not cfg.opinionqa_path:
            raise ValueError("dataset 'opinionqa' needs opinionqa_path (the opinions_qa "
                             "data/human_resp folder)")
        root = resolve_path(cfg.opinionqa_path)
        groups = attribute_groups(root) if cfg.opinionqa_groups == "all" else None
        return from_opinionqa(load_opinionqa(root, groups, bad_rows=cfg.bad_rows))
    raise ValueError(f"unknown GPO dataset {dataset!r} (goqa | opinionqa)")


def _load_lm(cfg, run, name: str):
    """(model, tokenizer, cache tag) of a causal LM: 'policy' = the run's base model (for the
    tiny model it is built from the run's data, as notebook 03 would), else a hub id, a path or
    smollm2-135m."""
    from gdpolib import models

    if name != "policy":
        return (*models.load_pretrained(name, cfg), name)
    if cfg.model != "tiny":
        return (*models.load_base_model(cfg, run), cfg.model)
    from gdpolib.data.pairs import prepare_data

    model, tok = models.load_base_model(cfg, run, prepare_data(cfg, run).texts())
    return model, tok, f"tiny-{run.stage_hash('checkpoints/base')}"


def embed_groups(cfg, run, data: GroupOpinions) -> EmbeddingTable:
    """Embeddings of every (question, option) of `data` with cfg.gpo_embedder, cached on disk."""
    from gdpolib import embeddings

    items = [data.items[q] for q in sorted(data.items)]
    name = cfg.gpo_embedder
    if embeddings.is_sentence_encoder(name):
        return embeddings.embed_questions(items, name, directory=embeddings.cache_dir(cfg))
    model, tok, tag = _load_lm(cfg, run, name)
    return embeddings.embed_questions(items, name, directory=embeddings.cache_dir(cfg),
                                      model=model, tokenizer=tok, model_name=tag)


def lm_zero_shot(cfg, run, data: GroupOpinions, qids: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The zero-shot option distributions of cfg.gpo_zero_shot_lm for `qids`, cached on disk
    (None when the parameter is 'none')."""
    from gdpolib import embeddings

    name = cfg.gpo_zero_shot_lm
    if name == "none":
        return None
    items = [data.items[q] for q in sorted(set(qids))]
    prompts = [embeddings.question_prompt(it.question, it.options) for it in items]
    model, tok, tag = _load_lm(cfg, run, name)
    key = embeddings.texts_key(tag, "zero-shot", prompts)

    def compute() -> np.ndarray:
        dists = lm_option_distributions(model, tok, items)
        return np.concatenate([dists[it.qid] for it in items])

    flat, _ = embeddings.cached_array(embeddings.cache_dir(cfg), f"zeroshot-{tag}", key, compute,
                                      meta={"model": tag}, dtype=np.float32)
    out, row = {}, 0
    for it in items:
        n = len(it.options)
        out[it.qid] = flat[row:row + n].astype(np.float64) / flat[row:row + n].sum()
        row += n
    return out


def run_gpo(cfg, run, dataset: str = "goqa", holdout: Sequence[str] | None = None,
            device=None, progress: bool = True) -> GPOExperiment:
    """Load the groups, embed, split, meta-train (run stage `stages/gpo_<dataset>`), plan.

    holdout: groups forced into the test split (default for GOQA: the run's country, so that
    few-shot GDPO can use the same model; its "(Non-national sample)" twins go with it).
    """
    from gdpolib.models import resolve_device
    from gdpolib.runs import stable_hash

    settings = settings_from_config(cfg)
    data = load_groups(cfg, dataset)
    if holdout is None:
        holdout = []
        if dataset == "goqa":
            try:
                from gdpolib.countries import resolve_country

                holdout = [resolve_country(cfg.country, available=data.groups)]
            except ValueError:
                log.warning("country %s has < %d questions: not a GPO group", cfg.country,
                            cfg.gpo_min_questions)
    emb = embed_groups(cfg, run, data)
    split = split_groups(data, cfg.gpo_group_split, cfg.seed, holdout=holdout)
    if settings.prior == "train_groups":
        emb = with_group_prior(emb, data, split["train"])
    plans = eval_plans(data, split["test"], cfg.gpo_k_values, cfg.seed)
    device = torch.device(device) if device is not None else resolve_device(cfg)
    signature = stable_hash({g: sorted(d) for g, d in data.dists.items()})
    key = {"dataset": dataset, "settings": asdict(settings), "split": split,
           "embeddings": emb.key, "groups": signature, "version": 1,
           "data_values": stable_hash({g: {q: np.round(p, 6).tolist() for q, p in d.items()}
                                       for g, d in data.dists.items()})}

    def build(out: Path) -> None:
        res = meta_train(data, emb, split["train"], split["val"], settings, device, progress)
        save_model(res.model, out / "gpo.pt")
        (out / "history.json").write_text(json.dumps(res.history))
        (out / "split.json").write_text(json.dumps(split, indent=1))
        (out / "info.json").write_text(json.dumps({
            "best_step": res.best_step, "best_val": res.best_val, "seconds": res.seconds,
            "cpu_seconds": res.cpu_seconds, "torch_threads": torch.get_num_threads(),
            "device": str(device), "settings": asdict(settings), "embedder": emb.model,
            "dim": emb.dim, "skipped_groups": res.skipped_groups,
            "parameters": sum(p.numel() for p in res.model.parameters())}, indent=1))

    stage = run.stage(f"stages/gpo_{dataset}", key, build)
    model = load_model(stage / "gpo.pt", device)
    history = json.loads((stage / "history.json").read_text())
    info = json.loads((stage / "info.json").read_text())
    return GPOExperiment(data, emb, split, plans, model, history, info)


def method_predictions(exp: GPOExperiment, k: int) -> dict[str, dict]:
    """Every method's predictions for the test groups' fixed targets with k context questions."""
    jobs = [p.job(k) for p in exp.plans.values()]
    train = exp.split["train"]
    preds = {"gpo": predict(exp.model, exp.emb, exp.data, jobs),
             "uniform": uniform_baseline(exp.data, jobs),
             "train_mean": train_mean_baseline(exp.data, train, jobs),
             "knn": knn_baseline(exp.data, train, jobs)}
    if exp.lm_dists is not None:
        preds["lm_zero_shot"] = fixed_baseline(exp.lm_dists, jobs)
    return preds


def alignment_table(exp: GPOExperiment, k: int):
    """Alignment per method and test group at k context questions: a long DataFrame with
    columns method, group, score, n (pairs), plus rows group="ALL" (micro mean over pairs)."""
    import pandas as pd

    rows = []
    for method, preds in method_predictions(exp, k).items():
        s = score(exp.data, preds)
        rows += [{"method": method, "group": g, "score": v, "n": len(preds[g])}
                 for g, v in s["per_group"].items()]
        rows.append({"method": method, "group": "ALL", "score": s["score"], "n": s["n"]})
    return pd.DataFrame(rows)


def k_curve(exp: GPOExperiment, k_values: Sequence[int]):
    """Alignment (micro mean over test pairs) per method for each k; the targets are the same
    for every k (EvalPlan). Columns k, method, score."""
    import pandas as pd

    rows = []
    for k in k_values:
        for method, preds in method_predictions(exp, k).items():
            rows.append({"k": k, "method": method, "score": score(exp.data, preds)["score"]})
    return pd.DataFrame(rows)


def gpo_metrics(table, k: int) -> dict:
    """The `gpo` part of metrics.json (GUIDE.md §6) from an alignment_table."""
    overall = table[table.group == "ALL"].set_index("method")["score"]
    return {"gpo": {"alignment": {m: float(v) for m, v in overall.items()}, "k": int(k)}}


def predicted_vs_true(exp: GPOExperiment, k: int, group: str, n: int = 4, seed: int = 0):
    """A long DataFrame (qid, question, option, source in {true, gpo, train_mean}, p) for n of
    the group's target questions, for plots."""
    import pandas as pd

    plan = exp.plans[group]
    job = plan.job(k)
    rng = np.random.default_rng(seed)
    qids = [job.tar[i] for i in sorted(rng.choice(len(job.tar), min(n, len(job.tar)),
                                                  replace=False))]
    pred = predict(exp.model, exp.emb, exp.data, [Job(group, job.ctx, qids)])[group]
    rows = []
    for q in qids:
        it = exp.data.items[q]
        mean = train_mean(exp.data, exp.split["train"], q)
        for o, opt in enumerate(it.options):
            for src, p in (("true", exp.data.dists[group][q]), ("gpo", pred[q]),
                           ("train_mean", mean)):
                rows.append({"qid": q, "question": it.question, "option": opt, "source": src,
                             "p": float(p[o])})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- few-shot GDPO
def to_beliefs(p_options: np.ndarray, qb) -> np.ndarray:
    """An option distribution mapped into a question's belief space (QuestionBeliefs):
    p_b[b] = sum of p over the options of belief b. Returns float64[K_MAX]."""
    out = np.zeros(len(qb.mask))
    for o, b in enumerate(qb.option_belief):
        out[b] += p_options[o]
    return out / out.sum()


@dataclass
class FewShotPrediction:
    """GPO's p* for a held-out group from k answered questions, in GDPO's belief space."""

    country: str
    k: int
    context: list[str]                    # the answered qids (their true p* is used)
    override: dict[str, np.ndarray]       # qid -> float64[K_MAX] for every GDPO question
    jsd: dict[str, float]                 # JS distance to the TRUE p* of each predicted qid


def few_shot_p_star(exp: GPOExperiment, questions, country: str, k: int) -> FewShotPrediction:
    """GPO's p* for `country` given k of its questions (EvalPlan.context(k), the same ones the
    k-curve uses), for the GDPO questions `questions` (pairs.RunData.questions, TRUE p*).

    Answered questions keep their true p*; the others get GPO's prediction mapped to beliefs.
    Questions GPO has no embedding for (none, normally) keep the true p* and are reported.
    """
    from gdpolib.metrics import jsd_per_prompt

    if country not in exp.plans:
        raise KeyError(f"{country!r} is not a test group of this GPO experiment "
                       f"(test groups: {sorted(exp.plans)})")
    ctx = exp.plans[country].context(k)
    by_qid = {qb.qid: qb for qb in questions}
    targets = [q for q in by_qid if q not in ctx and q in exp.emb]
    missing = [q for q in by_qid if q not in ctx and q not in exp.emb]
    if missing:
        log.warning("few-shot p*: %d GDPO questions have no GPO embedding; they keep the true p*",
                    len(missing))
    pred = predict(exp.model, exp.emb, exp.data, [Job(country, ctx, targets)])[country]
    override = {q: qb.p_star.copy() for q, qb in by_qid.items()}
    jsd = {}
    for q in targets:
        qb = by_qid[q]
        override[q] = to_beliefs(pred[q], qb)
        jsd[q] = float(jsd_per_prompt(override[q][None], qb.p_star[None], qb.mask[None])[0])
    return FewShotPrediction(country, k, list(ctx), override, jsd)


def _test_jsd_by_question(cfg, model_dir, data) -> dict[str, float]:
    """Mean JSD (belief read-out vs TRUE p*) per question over the run's test prompts."""
    from gdpolib import trainers
    from gdpolib.metrics import jsd_by_question

    model, tok = trainers.load_policy(model_dir, cfg)
    prompts = trainers.EvalPrompts.from_dataset(data.prompts["test"])
    read = trainers.belief_readout(model, tok, prompts, trainers.belief_token_ids(data, tok),
                                   cfg.eval_batch_size)
    return jsd_by_question(read["jsd"], prompts.qids)


def few_shot_gdpo(cfg, run, exp: GPOExperiment, k: int | None = None):
    """Few-shot GDPO for the run's country: GDPO trained on GPO's p* (from k answered questions)
    vs GDPO trained on the true p*, both scored against the TRUE p* on the run's test prompts of
    the questions GPO predicted (the k answered ones are left out of every mean); the GPO
    prediction itself is scored on the same questions.

    GDPO-on-true is the run's own `checkpoints/gdpo` (notebook 03's stage, trained here if
    missing); GDPO-on-predicted lives in its own run `<run>-gpo-k<k>` so that no stage of this
    run is replaced. Returns a one-row-per-method DataFrame (method, jsd, n_questions) with
    methods gpo_prediction, gdpo_on_predicted, gdpo_on_true, and the FewShotPrediction.
    """
    import pandas as pd

    from gdpolib import runs, trainers
    from gdpolib.data.pairs import prepare_data

    k = cfg.gpo_k if k is None else k
    data = prepare_data(cfg, run)
    fs = few_shot_p_star(exp, data.questions, cfg.country_name, k)
    sub_cfg = cfg.replace(run_name=f"{cfg.run_dir_name}-gpo-k{k}")
    sub_run = runs.Run.open(sub_cfg)
    sub_data = prepare_data(sub_cfg, sub_run, p_star_override=fs.override)
    on_pred = trainers.train_preference(sub_cfg, sub_run, sub_data, "gdpo")
    on_true = trainers.train_preference(cfg, run, data, "gdpo")
    runs.seed_everything(cfg.seed)      # Run.open of the sub-run re-seeded; restore the order
    per_q = {"gpo_prediction": fs.jsd,
             "gdpo_on_predicted": _test_jsd_by_question(cfg, on_pred, data),
             "gdpo_on_true": _test_jsd_by_question(cfg, on_true, data)}
    common = sorted(set.intersection(*(set(v) for v in per_q.values())))
    if not common:
        raise ValueError("few-shot GDPO: no predicted question has a test prompt")
    rows = [{"method": m, "jsd": float(np.mean([v[q] for q in common])),
             "n_questions": len(common)} for m, v in per_q.items()]
    log.info("few-shot GDPO (%s, k=%d): %s", cfg.country_name, k, rows)
    return pd.DataFrame(rows), fs


def save_results(run, dataset: str, table, curve) -> Path:
    """Write the alignment table and the k curve as CSV under `<run>/stages/gpo_<dataset>_results/`."""
    folder = run.path("stages", f"gpo_{dataset}_results", "x").parent
    table.to_csv(folder / "alignment.csv", index=False)
    curve.to_csv(folder / "k_curve.csv", index=False)
    return folder
