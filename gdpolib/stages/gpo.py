"""Notebook 05's GPO steps: load the groups (GlobalOpinionQA countries or OpinionQA groups),
embed every (question, option), split, meta-train the GPO models as cached run stages
`stages/<method>_<dataset>_seed<seed>`, the LM zero-shot baseline, alignment tables, the k
curve, the seed table (every method at every k over several seeds and group splits), the `gpo`
part of metrics.json, and the CSV results.

Methods: `gpo` is the paper's model (its loss is gpo_loss, the paper's Gaussian NLL by default);
`gpo_prior` is our group-prior variant, meta-trained beside it when gpo_prior is train_groups
(the one place that reads that parameter: the variant is the model of a GroupPriorTable, built
by gpo.groups.with_group_prior after the split). Baselines: uniform, train_mean, knn, ridge
(alpha chosen on the validation groups) and lm_zero_shot.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from gdpolib import console, embeddings, models, sources
from gdpolib.config import RunConfig
from gdpolib.countries import resolve_country
from gdpolib.data import goqa
from gdpolib.data.opinionqa import attribute_groups, load_opinionqa
from gdpolib.embeddings import EmbeddingTable
from gdpolib.gpo.compare import pair_scores
from gdpolib.gpo.experiment import (GPOExperiment, TrainedGPO, method_predictions,
                                    validation_scores)
from gdpolib.gpo.groups import (GroupOpinions, from_goqa, from_opinionqa, from_survey,
                                split_groups, train_mean, with_group_prior)
from gdpolib.gpo.meta_train import GPOSettings, meta_train
from gdpolib.gpo.model import load_model, save_model
from gdpolib.gpo.predict import (Job, eval_plans, lm_option_distributions, predict, ridge_alpha,
                                 score)
from gdpolib.runs import Run
from gdpolib.seeds import stable_hash
from gdpolib.stages.data import base_model, load_survey, target_groups
from gdpolib.trackers import open_tracker

log = logging.getLogger(__name__)


def has_opinionqa(cfg: RunConfig) -> bool:
    """Whether OpinionQA is here (`opinionqa_path`, or auto through $GDPO_DATA_DIR); when it is
    not, one console line says how to add it and the caller skips its part."""
    line = sources.skip_line(cfg, "opinionqa_path")
    if line:
        console.say(line)
    return line is None


def load_groups(cfg: RunConfig, dataset: str = "goqa") -> GroupOpinions:
    """GlobalOpinionQA countries (cfg.goqa_path or the hub), OpinionQA groups
    (cfg.opinionqa_path) or the groups of the run's own survey ("survey": cfg.survey, read as
    the data stage reads it) as GroupOpinions."""
    if dataset == "survey":
        return from_survey(load_survey(cfg), cfg.gpo_min_questions)
    if dataset == "goqa":
        return from_goqa(goqa.load_for_run(cfg), cfg.gpo_min_questions)
    if dataset == "opinionqa":
        root = sources.for_run(cfg, "opinionqa_path")
        if root is None:
            raise ValueError(sources.skip_line(cfg, "opinionqa_path"))
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
    """Embeddings of every (question, option) of `data` with cfg.gpo_embedder (a causal LM's
    states pooled as cfg.gpo_pooling says), cached on disk; a named LM (not the run's policy)
    is loaded only when the cache misses."""
    items = [data.items[q] for q in sorted(data.items)]
    name = cfg.gpo_embedder
    if embeddings.is_sentence_encoder(name):
        return embeddings.embed_questions(items, name, directory=embeddings.cache_dir(cfg))
    common = dict(directory=embeddings.cache_dir(cfg), pooling=cfg.gpo_pooling)
    if name != "policy":
        return embeddings.embed_questions(items, name, model_name=name, **common,
                                          load=lambda: _load_lm(cfg, run, name)[:2])
    model, tok, tag = _load_lm(cfg, run, name)
    return embeddings.embed_questions(items, name, model=model, tokenizer=tok, model_name=tag,
                                      **common)


def lm_zero_shot(cfg: RunConfig, run: Run, data: GroupOpinions,
                 qids: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The zero-shot option distributions of cfg.gpo_zero_shot_lm for `qids`, cached on disk
    (None when the parameter is 'none'). Ask for every question of a dataset once (one cache
    entry) rather than for each split's targets."""
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


def _meta_train_stage(cfg: RunConfig, run: Run, dataset: str, method: str, data: GroupOpinions,
                      emb: EmbeddingTable, split: dict[str, list[str]], device, progress: bool,
                      on_eval: Callable[[int, dict[str, float]], None] | None) -> TrainedGPO:
    """Meta-train one GPO model as the cached stage `stages/<method>_<dataset>_seed<seed>`."""
    settings = GPOSettings.from_config(cfg)
    name = f"{method}_{dataset}_seed{cfg.seed}"
    key = {"dataset": dataset, "method": method, "settings": asdict(settings), "split": split,
           "embeddings": emb.key, "version": 2,
           "groups": stable_hash({g: sorted(d) for g, d in data.dists.items()}),
           "data_values": stable_hash({g: {q: np.round(p, 6).tolist() for q, p in d.items()}
                                       for g, d in data.dists.items()})}
    forward = None if on_eval is None else (
        lambda step, values: on_eval(step, {f"{name}/{k}": v for k, v in values.items()}))

    def build(out: Path) -> None:
        res = meta_train(data, emb, split["train"], split["val"], settings, device, progress,
                         on_eval=forward)
        save_model(res.model, out / "gpo.pt")
        (out / "history.json").write_text(json.dumps(res.history))
        (out / "split.json").write_text(json.dumps(split, indent=1))
        (out / "info.json").write_text(json.dumps({
            "method": method, "best_step": res.best_step, "best_val": res.best_val,
            "seconds": res.seconds, "cpu_seconds": res.cpu_seconds,
            "torch_threads": torch.get_num_threads(), "device": str(device),
            "settings": asdict(settings), "embedder": emb.model, "dim": emb.dim,
            "group_prior": res.model.uses_prior, "skipped_groups": res.skipped_groups,
            "parameters": sum(p.numel() for p in res.model.parameters())}, indent=1))

    stage = run.stage(f"stages/{name}", key, build)
    return TrainedGPO(load_model(stage / "gpo.pt", device), emb,
                      json.loads((stage / "history.json").read_text()),
                      json.loads((stage / "info.json").read_text()))


def run_gpo(cfg: RunConfig, run: Run, dataset: str = "goqa", holdout: Sequence[str] | None = None,
            device=None, progress: bool = True,
            on_eval: Callable[[int, dict[str, float]], None] | None = None) -> GPOExperiment:
    """Load the groups, embed, split (seeded by cfg.seed), meta-train the paper's GPO and (if
    gpo_prior is train_groups) the group-prior variant, each a cached run stage; plan the test
    episodes; choose the ridge baseline's alpha on the validation groups.

    holdout: groups forced into the test split (default for GOQA: the run's country, so that
    few-shot GDPO can use the same model; its "(Non-national sample)" twins go with it; for
    "survey", the run's own survey: the run's group).
    on_eval(step, {"<stage>/loss", "<stage>/val_score", "<stage>/lr"}): called at every
    validation of meta-training; by default the numbers go to the tracker `report_to` names
    (the loop `gpo_<dataset>` of the run).
    """
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
    device = torch.device(device) if device is not None else models.resolve_device(cfg)
    tables = {"gpo": emb}
    if cfg.gpo_prior == "train_groups":      # the table's type is what meta_train reads
        tables["gpo_prior"] = with_group_prior(emb, data, split["train"])
    tracker = open_tracker(cfg, run, f"gpo_{dataset}")    # report_to: the validation scores
    try:
        log_eval = on_eval or (lambda step, values: tracker.log(values, step))
        gpos = {m: _meta_train_stage(cfg, run, dataset, m, data, t, split, device, progress,
                                     log_eval) for m, t in tables.items()}
    finally:
        tracker.close()
    plans = eval_plans(data, split["test"], cfg.gpo_k_values, cfg.seed)
    return validated(GPOExperiment(data, emb, split, plans, gpos), cfg)


def validated(exp: GPOExperiment, cfg: RunConfig) -> GPOExperiment:
    """`exp` with what is chosen on the VALIDATION groups' episodes at k = gpo_k (the episodes
    meta-training selected GPO's checkpoint on): the ridge baseline's alpha, then every few-shot
    predictor's score (GPOExperiment.best)."""
    val_jobs = [p.job(cfg.gpo_k) for p in eval_plans(exp.data, exp.split["val"], [cfg.gpo_k],
                                                      cfg.seed).values()]
    exp.ridge_alpha = ridge_alpha(exp.data, exp.split["train"], val_jobs)
    exp.val_scores = validation_scores(exp, val_jobs)
    return exp


def alignment_table(exp: GPOExperiment, k: int):
    """Alignment per method and test group at k context questions: a long DataFrame with
    columns method, group, score, n (pairs), step (the meta-training step a GPO method's weights
    come from; <NA> for a baseline), plus rows group="ALL" (micro mean over pairs)."""
    rows = []
    for method, preds in method_predictions(exp, k).items():
        s, step = score(exp.data, preds), exp.selected_step(method)
        rows += [{"method": method, "group": g, "score": v, "n": len(preds[g]), "step": step}
                 for g, v in s["per_group"].items()]
        rows.append({"method": method, "group": "ALL", "score": s["score"], "n": s["n"],
                     "step": step})
    return pd.DataFrame(rows).astype({"step": "Int64"})


def k_curve(exp: GPOExperiment, k_values: Sequence[int]):
    """Alignment (micro mean over test pairs) per method for each k; the targets are the same
    for every k (EvalPlan). Columns k, method, score, step (as in alignment_table)."""
    rows = []
    for k in k_values:
        for method, preds in method_predictions(exp, k).items():
            rows.append({"k": k, "method": method, "score": score(exp.data, preds)["score"],
                         "step": exp.selected_step(method)})
    return pd.DataFrame(rows).astype({"step": "Int64"})


def seed_pairs(cfg: RunConfig, run: Run, dataset: str, seeds: Sequence[int],
               k_values: Sequence[int], progress: bool = True):
    """Every method's score on every (test group, target question) pair, for each seed (each
    its own group split and models, cached stages) and k: a long DataFrame with columns seed,
    k, method, group, qid, score, step (a GPO method's selected meta-training step, <NA> for a
    baseline; gpo.compare.summarise turns it into the seed table)."""
    frames, lm = [], None
    for seed in seeds:
        exp = run_gpo(cfg.replace(seed=seed), run, dataset, progress=progress)
        if lm is None:
            lm = lm_zero_shot(cfg, run, exp.data, sorted(exp.data.items))
        exp.lm_dists = lm
        for k in k_values:
            for method, preds in method_predictions(exp, k).items():
                frames.append(pair_scores(exp.data, preds).assign(
                    seed=seed, k=k, method=method, step=exp.selected_step(method)))
    cols = ["seed", "k", "method", "group", "qid", "score", "step"]
    return pd.concat(frames, ignore_index=True)[cols].astype({"step": "Int64"})


def record(run: Run, table, k: int) -> dict:
    """THE writer of the `gpo` part of metrics.json: every method's alignment over the test
    groups (the alignment_table's "ALL" rows, at k context questions), k, and the
    meta-training step each GPO method's weights come from (selected_step). Returns the part."""
    overall = table[table.group == "ALL"].set_index("method")
    steps = overall["step"].dropna()
    part = {"gpo": {"alignment": {m: float(v) for m, v in overall["score"].items()}, "k": int(k),
                    "selected_step": {m: int(v) for m, v in steps.items()}}}
    run.merge_metrics(part)
    return part


def predicted_vs_true(exp: GPOExperiment, k: int, group: str, n: int = 4, seed: int = 0):
    """A long DataFrame (qid, question, option, source in {true, <each GPO method>,
    train_mean}, p) for n of the group's target questions, for plots."""
    job = exp.test_plan(group).job(k)
    rng = np.random.default_rng(seed)
    qids = [job.tar[i] for i in sorted(rng.choice(len(job.tar), min(n, len(job.tar)),
                                                  replace=False))]
    preds = {m: predict(g.model, g.emb, exp.data, [Job(group, job.ctx, qids)])[group]
             for m, g in exp.gpos.items()}
    rows = []
    for q in qids:
        it = exp.data.items[q]
        sources = [("true", exp.data.dists[group][q])] + [(m, p[q]) for m, p in preds.items()]
        sources.append(("train_mean", train_mean(exp.data, exp.split["train"], q)))
        for o, opt in enumerate(it.options):
            for src, p in sources:
                rows.append({"qid": q, "question": it.question, "option": opt, "source": src,
                             "p": float(p[o])})
    return pd.DataFrame(rows)


def save_results(run: Run, dataset: str, table, curve, seed_table=None) -> Path:
    """Write the alignment table, the k curve and (if given) the seed table as CSV under
    `<run>/stages/gpo_<dataset>_results/`."""
    folder = run.path("stages", f"gpo_{dataset}_results", "x").parent
    table.to_csv(folder / "alignment.csv", index=False)
    curve.to_csv(folder / "k_curve.csv", index=False)
    if seed_table is not None:
        seed_table.to_csv(folder / "seed_table.csv", index=False)
    return folder
