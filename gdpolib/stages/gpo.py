"""Notebook 05's GPO steps: load the groups (GlobalOpinionQA countries or OpinionQA groups),
embed every (question, option), split, meta-train GPO as the cached run stage
`stages/gpo_<dataset>`, the LM zero-shot baseline, alignment tables, the k curve, the `gpo` part
of metrics.json, and the CSV results. The config's `gpo_prior` is read here only: it decides
whether the embedding table gets the meta-train groups' answers (gpo.groups.with_group_prior).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from gdpolib import embeddings, models
from gdpolib.config import RunConfig, resolve_path
from gdpolib.countries import resolve_country
from gdpolib.data import goqa
from gdpolib.data.opinionqa import attribute_groups, load_opinionqa
from gdpolib.embeddings import EmbeddingTable
from gdpolib.gpo.groups import (GroupOpinions, from_goqa, from_opinionqa, from_survey,
                                split_groups, train_mean, with_group_prior)
from gdpolib.gpo.meta_train import GPOSettings, meta_train
from gdpolib.gpo.model import GPOModel, load_model, save_model
from gdpolib.gpo.predict import (EvalPlan, Job, eval_plans, fixed_baseline, knn_baseline,
                                 lm_option_distributions, predict, score, train_mean_baseline,
                                 uniform_baseline)
from gdpolib.runs import Run, stable_hash
from gdpolib.stages.data import base_model, load_survey, target_groups

log = logging.getLogger(__name__)


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

    def test_plan(self, group: str) -> EvalPlan:
        """The fixed evaluation episodes of a test group (a clear error for any other group)."""
        if group not in self.plans:
            raise KeyError(f"{group!r} is not a test group of this GPO experiment "
                           f"(test groups: {sorted(self.plans)})")
        return self.plans[group]


def load_groups(cfg: RunConfig, dataset: str = "goqa") -> GroupOpinions:
    """GlobalOpinionQA countries (cfg.goqa_path or the hub), OpinionQA groups
    (cfg.opinionqa_path) or the groups of the run's own survey ("survey": cfg.survey, read as
    the data stage reads it) as GroupOpinions."""
    if dataset == "survey":
        return from_survey(load_survey(cfg), cfg.gpo_min_questions)
    if dataset == "goqa":
        source = goqa.local_path(cfg.goqa_path)
        return from_goqa(goqa.load_goqa(source, revision=cfg.goqa_revision, bad_rows=cfg.bad_rows),
                         cfg.gpo_min_questions)
    if dataset == "opinionqa":
        if not cfg.opinionqa_path:
            raise ValueError("dataset 'opinionqa' needs opinionqa_path (the opinions_qa "
                             "data/human_resp folder)")
        root = resolve_path(cfg.opinionqa_path)
        groups = attribute_groups(root) if cfg.opinionqa_groups == "all" else None
        return from_opinionqa(load_opinionqa(root, groups, bad_rows=cfg.bad_rows))
    raise ValueError(f"unknown GPO dataset {dataset!r} (goqa | opinionqa)")


def _load_lm(cfg: RunConfig, run: Run, name: str):
    """(model, tokenizer, cache tag) of a causal LM: 'policy' = the run's base model (for the
    tiny model it is built from the run's data, as notebook 03 would), else a hub id, a path or
    smollm2-135m."""
    if name != "policy":
        return (*models.load_pretrained(name, cfg), name)
    path, key = base_model(cfg, run)
    return (*models.load_pretrained(path, cfg), cfg.model if cfg.model != "tiny" else f"tiny-{key}")


def embed_groups(cfg: RunConfig, run: Run, data: GroupOpinions) -> EmbeddingTable:
    """Embeddings of every (question, option) of `data` with cfg.gpo_embedder, cached on disk."""
    items = [data.items[q] for q in sorted(data.items)]
    name = cfg.gpo_embedder
    if embeddings.is_sentence_encoder(name):
        return embeddings.embed_questions(items, name, directory=embeddings.cache_dir(cfg))
    model, tok, tag = _load_lm(cfg, run, name)
    return embeddings.embed_questions(items, name, directory=embeddings.cache_dir(cfg),
                                      model=model, tokenizer=tok, model_name=tag)


def lm_zero_shot(cfg: RunConfig, run: Run, data: GroupOpinions,
                 qids: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The zero-shot option distributions of cfg.gpo_zero_shot_lm for `qids`, cached on disk
    (None when the parameter is 'none')."""
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


def run_gpo(cfg: RunConfig, run: Run, dataset: str = "goqa", holdout: Sequence[str] | None = None,
            device=None, progress: bool = True) -> GPOExperiment:
    """Load the groups, embed, split, meta-train (run stage `stages/gpo_<dataset>`), plan.

    holdout: groups forced into the test split (default for GOQA: the run's country, so that
    few-shot GDPO can use the same model; its "(Non-national sample)" twins go with it; for
    "survey", the run's own survey: the run's group).
    """
    settings = GPOSettings.from_config(cfg)
    data = load_groups(cfg, dataset)
    if holdout is None:
        holdout = []
        if dataset == "survey":     # the run's own group, for few-shot GDPO
            holdout = [g for g in target_groups(cfg, load_survey(cfg))[:1] if g in data.dists]
        elif dataset == "goqa":
            try:
                holdout = [resolve_country(cfg.country, available=data.groups)]
            except ValueError:
                log.warning("country %s has < %d questions: not a GPO group", cfg.country,
                            cfg.gpo_min_questions)
    emb = embed_groups(cfg, run, data)
    split = split_groups(data, cfg.gpo_group_split, cfg.seed, holdout=holdout)
    if cfg.gpo_prior == "train_groups":      # the table's type is what meta_train reads
        emb = with_group_prior(emb, data, split["train"])
    plans = eval_plans(data, split["test"], cfg.gpo_k_values, cfg.seed)
    device = torch.device(device) if device is not None else models.resolve_device(cfg)
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
            "dim": emb.dim, "group_prior": res.model.uses_prior,
            "skipped_groups": res.skipped_groups,
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
    job = exp.test_plan(group).job(k)
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


def save_results(run: Run, dataset: str, table, curve) -> Path:
    """Write the alignment table and the k curve as CSV under `<run>/stages/gpo_<dataset>_results/`."""
    folder = run.path("stages", f"gpo_{dataset}_results", "x").parent
    table.to_csv(folder / "alignment.csv", index=False)
    curve.to_csv(folder / "k_curve.csv", index=False)
    return folder
