"""The planted-signal study: can GPO read a context? (gdpolib.gpo.planted)

Synthetic groups answer a real survey's questions with a planted signal of between-group sd
--signals along the real first between-group factor; GPO is meta-trained on some of them (the
run's parameters: -f/-p, e.g. params/gpo-paper.yaml) and scored on held-out ones at every k,
beside the meta-train mean, ridge (alpha on validation groups) and nearest neighbour. One job
per (inputs, signal, steps, seed), each its own draw of groups and group split.

--inputs embeddings: x = the run's embedder (gpo_embedder, gpo_pooling) of the real questions;
--inputs factor: x = [m, u], the two numbers per option the planted answers are made of (the
control: can the path read a context when x carries the factor outright?);
--inputs embeddings+factor: both, [embedding, m, u] (the bisect: the factor is in x, beside the
embedding's dimensions: can the path find it there?).

    python scripts/gpo_planted.py -f params/gpo-paper.yaml --dataset opinionqa \\
        --signals 0.06 0.18 --steps 300 1200 --seeds 0 1 2 --inputs embeddings factor \\
        --workers 2 --out results/gpo/planted-opinionqa.json
Workers run one torch thread each. The JSON holds every score, the table (mean ± sd over
seeds) and the command, commit, machine and date.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gdpolib.config import add_params_arguments, gpo_k_problem, load_config  # noqa: E402
from gdpolib.gpo.experiment import GPOExperiment, TrainedGPO, method_predictions  # noqa: E402
from gdpolib.gpo.groups import split_groups  # noqa: E402
from gdpolib.gpo.meta_train import GPOSettings, meta_train  # noqa: E402
from gdpolib.gpo.planted import (between_group_sd, factor_table, first_factor,  # noqa: E402
                                 planted_groups, with_factor)
from gdpolib.gpo.predict import eval_plans, score  # noqa: E402
from gdpolib.gpo.results import provenance, write_results  # noqa: E402
from gdpolib.runs import Run  # noqa: E402
from gdpolib.stages.gpo import embed_groups, load_groups, validated  # noqa: E402

METHODS = ("gpo", "train_mean", "ridge", "knn")      # the rows of the table


def job(spec: dict) -> list[dict]:
    """Meta-train GPO on one draw of planted groups; score every method at every k."""
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    cfg = load_config(files=spec["files"], overrides={
        **spec["overrides"], "seed": spec["seed"], "gpo_steps": spec["steps"],
        "output_root": spec["output_root"], "update_run": True,
        "run_name": f"planted-{spec['dataset']}-{spec['inputs']}-s{spec['seed']}"})
    real = load_groups(cfg, spec["dataset"])
    data, _ = planted_groups(real, spec["signal"], seed=cfg.seed)
    if spec["inputs"] == "factor":
        emb = factor_table(real)
    else:
        emb = embed_groups(cfg, Run.open(cfg), real)
        emb = with_factor(emb, real) if spec["inputs"] == "embeddings+factor" else emb
    split = split_groups(data, cfg.gpo_group_split, cfg.seed)
    cpu = time.process_time()
    res = meta_train(data, emb, split["train"], split["val"], GPOSettings.from_config(cfg),
                     progress=False)
    cpu = time.process_time() - cpu
    exp = validated(GPOExperiment(data, emb, split,
                                  eval_plans(data, split["test"], spec["k_values"], cfg.seed),
                                  {"gpo": TrainedGPO(res.model, emb, res.history,
                                                     {"best_step": res.best_step})}), cfg)
    rows = []
    for k in spec["k_values"]:
        preds = method_predictions(exp, k)
        for method in METHODS:
            rows.append({"inputs": spec["inputs"], "embedder": emb.model, "signal": spec["signal"],
                         "steps": spec["steps"], "seed": spec["seed"], "k": k, "method": method,
                         "score": score(data, preds[method])["score"],
                         "selected_step": res.best_step if method == "gpo" else None,
                         "gpo_cpu_seconds": round(cpu, 1), "ridge_alpha": exp.ridge_alpha,
                         "measured_sd": between_group_sd(data),
                         "groups": {s: len(g) for s, g in split.items()}})
    return rows


def table(rows: pd.DataFrame) -> pd.DataFrame:
    """mean ± sd over seeds: one row per (inputs, signal, steps, method), one column per k."""
    keys = ["inputs", "signal", "steps", "method", "k"]
    g = rows.groupby(keys, sort=False).score
    cells = pd.concat([g.mean().rename("mean"), g.std().rename("sd"), g.count().rename("n")],
                      axis=1)
    text = cells.apply(lambda r: f"{r['mean']:.4f} ± {r['sd']:.4f}" if r["n"] > 1
                       else f"{r['mean']:.4f}", axis=1)
    return text.unstack("k")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_params_arguments(ap)
    ap.add_argument("--dataset", default="opinionqa", choices=("goqa", "opinionqa"))
    ap.add_argument("--signals", type=float, nargs="+", default=[0.06, 0.18])
    ap.add_argument("--steps", type=int, nargs="+", default=[300, 1200])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--k", type=int, nargs="+", default=[1, 5, 10, 20, 30])
    ap.add_argument("--inputs", nargs="+", default=["embeddings"],
                    choices=("embeddings", "factor", "embeddings+factor"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--output-root", default="outputs/gpo_planted")
    ap.add_argument("--out", required=True, help="the JSON results file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    record = provenance()
    overrides = dict(args.params)
    cfg = load_config(files=args.files, overrides=overrides)
    if (problem := gpo_k_problem(args.k, cfg.gpo_ctx_range)):
        raise SystemExit(f"--k: {problem}")
    real = load_groups(cfg, args.dataset)          # fails fast on a missing dataset
    _, _, share = first_factor(real)
    specs = [{"dataset": args.dataset, "files": args.files, "overrides": overrides, "inputs": i,
              "signal": s, "steps": n, "seed": seed, "k_values": args.k,
              "output_root": args.output_root}
             for i in args.inputs for s in args.signals for n in args.steps for seed in args.seeds]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = pd.DataFrame([r for rs in pool.map(job, specs) for r in rs])
    summary = table(rows)
    print(summary.to_string())
    write_results(args.out, "gpo-planted-signal", __doc__.split("\n")[0], {
        "dataset": args.dataset, "real_groups": len(real.groups), "questions": len(real.items),
        "real_between_group_sd": between_group_sd(real), "first_factor_share": share,
        "params": cfg.to_dict(),
        "score": "1 - JS distance" if real.metric == "js" else "1 - WD / WD_max",
        "unit": "mean over the test groups' (group, question) pairs; mean ± sd over seeds",
        "table": {" | ".join(map(str, i)): r.to_dict() for i, r in summary.iterrows()},
        "rows": rows.to_dict("records")}, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
