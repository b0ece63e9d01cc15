"""Few-shot alignment: GDPO on the p* the best predictor gives from k answered questions.

For each GlobalOpinionQA country (held out of GPO's training: run_gpo's holdout) and seed, the
GPO models are meta-trained on the other countries, the predictor with the best validation
alignment among gpo, gpo_prior, ridge, nearest neighbour and the meta-train mean is chosen,
and GDPO is trained on its p* (from k answered questions), on the meta-train mean's p* (no
context) and on the true p* (stages.fewshot_gdpo.few_shot_gdpo); all are scored by the test
JSD to the TRUE p* on the predicted questions. The run's other parameters come from -f/-p (the
demo's defaults: the tiny model and its schedule).

    python scripts/gpo_fewshot.py --countries us pk sa --seeds 0 1 2 --k 20 \\
        -p gpo_steps 300 -p gpo_prior train_groups --workers 2 \\
        --out results/gpo/fewshot-goqa.json
Paired 95 % intervals (gdpolib.metrics.paired: scipy.stats.bootstrap, paired, percentile): within
each (country, seed) cell over its predicted questions, and over the cells when there are several
(each cell's mean JSD one paired observation).
Workers run one torch thread each; each cell's training output goes to
<output-root>/fewshot-<country>-s<seed>.log, the console gets one line per finished cell. The
JSON holds every per-question JSD, the predictor chosen
in each cell with every predictor's validation score, the table, and the command, commit,
machine and date.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")    # before tqdm is imported: it reads this once

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gdpolib.config import add_params_arguments, load_config  # noqa: E402
from gdpolib.gpo.results import provenance, write_results  # noqa: E402
from gdpolib.metrics.paired import paired_difference  # noqa: E402
from gdpolib.runs import Run  # noqa: E402
from gdpolib.stages.fewshot_gdpo import few_shot_gdpo  # noqa: E402
from gdpolib.stages.gpo import run_gpo  # noqa: E402

ARMS = ("gdpo_on_predicted", "gdpo_on_true", "gdpo_on_train_mean")
CONTRASTS = (("gdpo_on_predicted", "gdpo_on_true"), ("gdpo_on_predicted", "gdpo_on_train_mean"),
             ("gdpo_on_train_mean", "gdpo_on_true"), ("prediction", "train_mean_prediction"))


def job(spec: dict) -> dict:
    """One (country, seed), its trainers' output in its own log file."""
    log = Path(spec["output_root"]) / f"fewshot-{spec['country']}-s{spec['seed']}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        result = cell(spec)
    print(f"{result['country']}, seed {result['seed']}: predictor {result['predictor']}, "
          f"{time.time() - start:.0f} s (log: {log})", flush=True)
    return result


def cell(spec: dict) -> dict:
    """One (country, seed): GPO with the country held out, then few-shot GDPO's three arms."""
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    cfg = load_config(files=spec["files"], overrides={
        **spec["overrides"], "country": spec["country"], "seed": spec["seed"],
        "gpo_k": spec["k"], "gpo_fewshot_gdpo": True, "output_root": spec["output_root"],
        "update_run": True, "run_name": f"fewshot-{spec['country']}-s{spec['seed']}"})
    run = Run.open(cfg)
    exp = run_gpo(cfg, run, "goqa", progress=False)
    res = few_shot_gdpo(cfg, run, exp, spec["k"])
    return {"country": cfg.country_name, "seed": cfg.seed, "predictor": res.predictor,
            "val_scores": exp.val_scores,
            "selected_step": {m: exp.selected_step(m) for m in exp.gpos},
            "answered": res.prediction.context,
            "per_question": res.per_question.assign(country=cfg.country_name, seed=cfg.seed)}


def paired(x: np.ndarray, y: np.ndarray) -> dict:
    """gdpolib.metrics.paired.paired_difference of x - y (10,000 resamples), flattened for the
    JSON, with how often x < y."""
    d = paired_difference(x, y, n_boot=10_000, seed=0)
    return {"diff": d["difference"], "ci_lo": d["ci"][0], "ci_hi": d["ci"][1],
            "a_lower_in": int(np.sum(x < y)), "n": d["n"]}


def contrasts_by_cell(per_q: pd.DataFrame) -> list[dict]:
    """Each CONTRAST within each (country, seed) cell, paired over its predicted questions."""
    out = []
    for (country, seed), cell_rows in per_q.groupby(["country", "seed"], sort=False):
        wide = cell_rows.pivot_table(index="qid", columns="method", values="jsd")
        out += [{"country": country, "seed": seed, "a": a, "b": b,
                 **paired(wide[a].to_numpy(), wide[b].to_numpy())} for a, b in CONTRASTS]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_params_arguments(ap)
    ap.add_argument("--countries", nargs="+", default=["us", "pk", "sa"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--output-root", default="outputs/gpo_fewshot")
    ap.add_argument("--out", required=True, help="the JSON results file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    record = provenance()
    overrides = dict(args.params)
    cfg = load_config(files=args.files, overrides={**overrides, "gpo_k": args.k})  # fails fast
    specs = [{"files": args.files, "overrides": overrides, "country": c, "seed": s, "k": args.k,
              "output_root": args.output_root} for c in args.countries for s in args.seeds]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(job, specs))
    per_q = pd.concat([r.pop("per_question") for r in results], ignore_index=True)
    cells = per_q.pivot_table(index=["country", "seed"], columns="method", values="jsd",
                              aggfunc="mean")
    counts = per_q.groupby(["country", "seed"]).qid.nunique().rename("questions")
    summary = {m: {"mean": float(cells[m].mean()), "sd": float(cells[m].std(ddof=1))}
               for m in cells.columns}
    contrasts = ([{"a": a, "b": b, **paired(cells[a].to_numpy(), cells[b].to_numpy())}
                  for a, b in CONTRASTS] if len(cells) > 1 else [])    # one cell: no interval
    by_cell = contrasts_by_cell(per_q)
    print(cells.join(counts).round(4).to_string())
    print(pd.DataFrame(summary).T.round(4).to_string())
    print(pd.DataFrame(contrasts).round(4).to_string())
    print(pd.DataFrame(by_cell).round(4).to_string())
    write_results(args.out, "gpo-fewshot-gdpo", __doc__.split("\n")[0], {
        "k": args.k, "countries": sorted({r["country"] for r in results}), "seeds": args.seeds,
        "params": cfg.to_dict(),
        "metric": "JS distance (natural log) of the trained policy's belief distribution to the "
                  "TRUE p*, mean over the test prompts of the predicted questions (the k "
                  "answered ones left out); lower is better",
        "cells": cells.join(counts).reset_index().to_dict("records"),
        "summary": summary, "paired": contrasts, "paired_by_cell": by_cell, "jobs": results,
        "rows": per_q.to_dict("records")}, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
