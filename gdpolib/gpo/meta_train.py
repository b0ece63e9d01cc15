"""GPO meta-training: its settings (from the run config only) and meta_train (Adam + cosine
over sampled episodes, model selection on VALIDATION groups only)."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from gdpolib.config import ConfigError, RunConfig
from gdpolib.embeddings import EmbeddingTable
from gdpolib.gpo.episodes import collate, make_episode, sample_batch
from gdpolib.gpo.groups import GroupOpinions, GroupPriorTable
from gdpolib.gpo.model import GPOModel, gpo_loss
from gdpolib.gpo.predict import eval_plans, predict, score


@dataclass
class GPOSettings:
    """Meta-training hyperparameters. No defaults of their own: they are the run's gpo_*
    parameters (from_config; params/defaults.yaml holds the defaults), or every field is given.

    ctx_range, tar_range: [min, max] questions per episode (context, targets); episodes: how a
    batch draws its questions (episodes.sample_batch: per_group | shared); eval_k: context
    questions of the validation episodes; seed: model init and episodes; init: GPOModel's
    initialisation (answer | torch).
    """

    steps: int
    lr: float
    loss: str                         # gaussian_nll (the paper's) | kl (ours) (gpo_loss)
    batch_groups: int
    ctx_range: tuple[int, int]
    tar_range: tuple[int, int]
    episodes: str
    eval_every: int
    eval_k: int
    seed: int
    init: str

    @classmethod
    def from_config(cls, cfg: RunConfig) -> "GPOSettings":
        """The run's gpo_* parameters (and seed), checked."""
        for name in ("gpo_ctx_range", "gpo_tar_range"):
            r = getattr(cfg, name)
            if len(r) != 2 or r[0] < 1 or r[0] > r[1]:
                raise ConfigError(f"parameter {name!r}: need [min, max] with 1 <= min <= max, "
                                  f"got {r}")
        return cls(steps=cfg.gpo_steps, lr=cfg.gpo_lr, loss=cfg.gpo_loss,
                   batch_groups=cfg.gpo_batch_groups, ctx_range=tuple(cfg.gpo_ctx_range),
                   tar_range=tuple(cfg.gpo_tar_range), episodes=cfg.gpo_episodes,
                   eval_every=cfg.gpo_eval_every,
                   eval_k=cfg.gpo_k, seed=cfg.seed, init=cfg.gpo_init)


@dataclass
class MetaTrainResult:
    """The selected model, the training history and timings of one meta_train call."""

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
               device: torch.device | str = "cpu", progress: bool = True,
               on_eval: Callable[[int, dict[str, float]], None] | None = None,
               probe: Callable[[int, GPOModel], dict] | None = None) -> MetaTrainResult:
    """Meta-train GPO on `train_groups`; keep the weights that score best on `val_groups`.

    Each step draws `batch_groups` training groups and one episode each (sample_batch, as
    settings.episodes says), and takes an Adam step (CosineAnnealingLR over `steps`). Every
    `eval_every` steps and at the end the model predicts the validation groups' fixed targets
    from k = eval_k context questions (eval_plans seeded by settings.seed). Model init and
    episodes are seeded by settings.seed (episodes must change with the seed: docs/deviations.md),
    without touching the global RNGs.
    With no validation group the last weights are kept. A GroupPriorTable `emb` gives the
    group-prior model (GPOModel.deviation_scale), any other table the paper's model.
    on_eval(step, {"loss", "val_score", "lr"}) is called at every validation (e.g. to forward
    the score to the run's tracker; this module imports none). probe(step, model), also called
    at every validation (the model in eval mode), returns numbers that join that step's history
    row (e.g. scores at several k while training runs on a GPU).
    """
    device = torch.device(device)
    need = settings.ctx_range[0] + settings.tar_range[0]
    usable = [g for g in train_groups if len(data.dists[g]) >= need]
    skipped = sorted(set(train_groups) - set(usable))
    if not usable:
        raise ValueError(f"no meta-train group has >= {need} questions")
    has_prior = isinstance(emb, GroupPriorTable)        # the one switch of the group prior
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = GPOModel(emb.dim, deviation_scale=emb.deviation_scale if has_prior else None,
                         init=settings.init)
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
        draws = sample_batch(rng, qids, groups, settings.ctx_range, settings.tar_range,
                             settings.episodes)
        eps = [make_episode(emb, data.dists[g], ctx, tar) for g, (ctx, tar) in zip(groups, draws)]
        batch = collate(eps).to(device)
        mu, sigma = model(batch)
        loss = gpo_loss(mu, sigma, batch, settings.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()        # one batch per step, so T_max counts batches (docs/deviations.md)
        row = {"step": step, "loss": loss.item(), "lr": sched.get_last_lr()[0],
               "tokens": int(batch.yc.numel() + batch.yt.numel())}
        if val_jobs and (step % settings.eval_every == 0 or step == settings.steps):
            row["val_score"] = validate()
            if row["val_score"] > best_val:
                best_val, best_step = row["val_score"], step
                best_state = copy.deepcopy(model.state_dict())
            bar.set_postfix(loss=f"{row['loss']:.3f}", val=f"{row['val_score']:.4f}")
            if on_eval is not None:
                on_eval(step, {k: row[k] for k in ("loss", "val_score", "lr")})
            if probe is not None:
                row.update(probe(step, model))
        history.append(row)
    if not val_jobs:
        best_state, best_step, best_val = copy.deepcopy(model.state_dict()), settings.steps, math.nan
    model.load_state_dict(best_state)
    model.eval()
    return MetaTrainResult(model, history, best_step, best_val, time.time() - start, skipped,
                           time.process_time() - cpu_start)
