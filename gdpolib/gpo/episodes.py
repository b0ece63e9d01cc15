"""GPO episodes: one group's context and target questions as tokens (Episode), their padding
into EpisodeBatch tensors, and the seeded sampling of meta-training episodes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from gdpolib.embeddings import EmbeddingTable
from gdpolib.gpo.model import EpisodeBatch

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


EPISODES = ("per_group", "shared")     # how a training batch draws its questions


def sample_batch(rng: np.random.Generator, qids: dict[str, Sequence[str]], groups: Sequence[str],
                 ctx_range: Sequence[int], tar_range: Sequence[int], episodes: str = "per_group",
                 ) -> list[tuple[list[str], list[str]]]:
    """(context, target) question lists for each group of one training batch.

    episodes: "per_group" (ours): one size draw (sample_sizes), then each group its own
    questions; "shared" (the official OpinionQA batches): one draw of questions, from those every
    group of the batch answered, for all of them, so the groups differ only in their answers.
    """
    if episodes == "per_group":
        n_ctx, n_tar = sample_sizes(rng, min(len(qids[g]) for g in groups), ctx_range, tar_range)
        return [sample_episode(rng, qids[g], n_ctx, n_tar) for g in groups]
    if episodes != "shared":
        raise ValueError(f"unknown GPO episodes {episodes!r} ({' | '.join(EPISODES)})")
    common = sorted(set.intersection(*(set(qids[g]) for g in groups)))
    if len(common) < ctx_range[0] + tar_range[0]:
        raise ValueError(f"shared episodes: groups {', '.join(groups)} answered {len(common)} "
                         f"questions in common, fewer than {ctx_range[0]} context + "
                         f"{tar_range[0]} target questions (use gpo_episodes per_group)")
    n_ctx, n_tar = sample_sizes(rng, len(common), ctx_range, tar_range)
    return [sample_episode(rng, common, n_ctx, n_tar)] * len(groups)
