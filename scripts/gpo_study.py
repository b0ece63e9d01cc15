"""What makes GPO's context useful, and how it does on unseen groups (the README's GPO study).

validation: each variant (run parameters) is meta-trained for each seed (each its own group
    split) and scored on the VALIDATION groups at every k, beside the baselines (ridge alpha
    and the GPO checkpoint are chosen on the same validation groups, at k = gpo_k). Each job's
    rows (one per dataset, variant, seed, method, k) are appended to <out>.jsonl as it ends
    (progress; removed at the end), then --out (a .json) gets every row, the table, and the
    command, commit, machine and date; the table is printed.
test: the seed table of notebook 05 (stages.gpo.seed_pairs + gpo.compare.summarise) on the
    TEST groups, the seeds run in parallel (one run folder per seed); CSVs go to --out.

    python scripts/gpo_study.py validation --dataset opinionqa --seeds 0 1 2 \\
        --variant paper -p gpo_loss gaussian_nll --variant kl -p gpo_loss kl --out val.json
    python scripts/gpo_study.py test -f params/gpo-paper.yaml --dataset goqa --seeds 0 1 2 \\
        --out results/
Workers run one torch thread each (GPO models are small: threads only add overhead).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gdpolib import config  # noqa: E402
from gdpolib.config import gpo_k_problem, load_config  # noqa: E402
from gdpolib.gpo.compare import pair_scores, seed_table_text, summarise  # noqa: E402
from gdpolib.gpo.groups import split_groups, with_group_prior  # noqa: E402
from gdpolib.gpo.meta_train import GPOSettings, meta_train  # noqa: E402
from gdpolib.gpo.predict import eval_plans  # noqa: E402
from gdpolib.gpo.results import provenance, write_results  # noqa: E402
from gdpolib.runs import Run  # noqa: E402
from gdpolib.stages.gpo import (GPOExperiment, TrainedGPO, embed_groups, load_groups,  # noqa: E402
                                method_predictions, seed_pairs, validated)

BASELINES = "baselines"      # the variant name of the rows that hold the baselines


def _config(files, overrides: dict, seed: int, output_root: str, name: str):
    return load_config(files=files, overrides={**overrides, "seed": seed, "output_root": output_root,
                                               "run_name": name, "update_run": True})


def validation_job(job: dict) -> list[dict]:
    """One (dataset, variant, seed): meta-train the variant's model (or, for BASELINES, none)
    and score every method on the validation groups at every k."""
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    cfg = _config(job["files"], job["overrides"], job["seed"], job["output_root"],
                  f"val-{job['dataset']}-{job['variant']}-s{job['seed']}")
    run = Run.open(cfg)
    data = load_groups(cfg, job["dataset"])
    emb = embed_groups(cfg, run, data)
    split = split_groups(data, cfg.gpo_group_split, cfg.seed)
    gpos, cpu = {}, time.process_time()
    if job["variant"] != BASELINES:
        table = with_group_prior(emb, data, split["train"]) if job["method"] == "gpo_prior" else emb
        res = meta_train(data, table, split["train"], split["val"], GPOSettings.from_config(cfg),
                         progress=False)
        gpos[job["method"]] = TrainedGPO(res.model, table, res.history,
                                         {"best_step": res.best_step, "best_val": res.best_val})
    exp = validated(GPOExperiment(data, emb, split,
                                  eval_plans(data, split["val"], job["k_values"], cfg.seed), gpos),
                    cfg)
    cpu = time.process_time() - cpu
    rows = []
    for k in job["k_values"]:
        for method, preds in method_predictions(exp, k).items():
            if (job["variant"] == BASELINES) == (method in gpos):
                continue
            s = pair_scores(data, preds).score.mean()
            rows.append({"dataset": job["dataset"], "variant": job["variant"], "method": method,
                         "seed": job["seed"], "k": k, "score": float(s),
                         "overrides": job["overrides"], "cpu_seconds": round(cpu, 1),
                         "best_step": next(iter(gpos.values())).info["best_step"] if gpos else None,
                         "val_groups": len(split["val"]), "train_groups": len(split["train"]),
                         "ridge_alpha": exp.ridge_alpha})
    return rows


def test_job(job: dict) -> pd.DataFrame:
    """The seed table's pairs of one seed, in its own run folder."""
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    cfg = _config(job["files"], job["overrides"], job["seed"], job["output_root"],
                  f"test-{job['dataset']}-s{job['seed']}")
    run = Run.open(cfg)
    return seed_pairs(cfg, run, job["dataset"], [job["seed"]], cfg.gpo_k_values, progress=False)


def parse_variants(argv: list[str]) -> list[tuple[str, str, dict]]:
    """--variant NAME [-m METHOD] [-p KEY VALUE]... groups -> [(name, method, overrides)]."""
    out, cur = [], None
    it = iter(argv)
    for a in it:
        if a == "--variant":
            cur = [next(it), "gpo", {}]
            out.append(cur)
        elif a == "-m" and cur is not None:
            cur[1] = next(it)
        elif a == "-p" and cur is not None:
            key, value = next(it), next(it)
            cur[2][key] = config.parse_value(value)
        else:
            raise SystemExit(f"unexpected argument {a!r} in the variants")
    return [tuple(v) for v in out]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    split_at = argv.index("--variant") if "--variant" in argv else len(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("validation", "test"))
    config.add_params_arguments(ap)           # -f / -p: for every variant
    ap.add_argument("--dataset", action="append", required=True, choices=("goqa", "opinionqa"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--k", type=int, nargs="+", default=[1, 5, 10, 20, 30],
                    help="context sizes scored (validation; each within gpo_ctx_range)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--output-root", default="outputs/gpo_study")
    ap.add_argument("--out", required=True, help="a .json file (validation) or a folder (test)")
    args = ap.parse_args(argv[:split_at])
    torch.set_num_threads(1)
    record = provenance()
    if args.mode == "validation" and not args.out.endswith(".json"):
        raise SystemExit(f"--out {args.out}: validation writes a .json file")
    common = dict(args.params)
    if args.mode == "validation":
        variants = [(BASELINES, "", {})] + [(n, m, {**common, **o})
                                              for n, m, o in parse_variants(argv[split_at:])]
        for name, _, overrides in variants:     # every scored k inside the training range
            cfg = load_config(files=args.files, overrides=overrides or common)
            if (problem := gpo_k_problem(args.k, cfg.gpo_ctx_range)):
                raise SystemExit(f"variant {name}: --k {problem}")
        jobs = [{"dataset": d, "variant": n, "method": m, "overrides": o or common, "seed": s,
                 "files": args.files, "k_values": args.k, "output_root": args.output_root}
                for d in args.dataset for n, m, o in variants for s in args.seeds]
        rows = []
        partial = Path(args.out).with_suffix(".jsonl")
        partial.parent.mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(args.workers) as pool, open(partial, "a") as out:
            for job_rows in pool.map(validation_job, jobs):
                for r in job_rows:
                    out.write(json.dumps(r) + "\n")
                out.flush()
                rows += job_rows
        table = validation_table(pd.DataFrame(rows))
        print(table.to_string())
        write_results(args.out, "gpo-validation-variants", __doc__.split("\n")[0], {
            "groups": "validation", "unit": "mean over the validation groups' (group, question) "
                      "pairs; mean ± sd over seeds",
            "table": {" | ".join(map(str, i)): r.to_dict() for i, r in table.iterrows()},
            "rows": rows}, record)
        partial.unlink()           # every row is in the JSON now
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for d in args.dataset:
        jobs = [{"dataset": d, "overrides": common, "seed": s, "files": args.files,
                 "output_root": args.output_root} for s in args.seeds]
        with ProcessPoolExecutor(min(args.workers, len(jobs))) as pool:
            pairs = pd.concat(list(pool.map(test_job, jobs)), ignore_index=True)
        summary = summarise(pairs)
        pairs.to_csv(out / f"pairs_{d}.csv", index=False)
        summary.to_csv(out / f"seed_table_{d}.csv", index=False)
        print(f"== {d}: test groups, {len(args.seeds)} seeds")
        print(seed_table_text(summary).to_string())


def validation_table(rows: pd.DataFrame) -> pd.DataFrame:
    """mean ± sd over seeds of the validation score, one row per (dataset, variant, method)."""
    g = rows.groupby(["dataset", "variant", "method", "k"]).score
    stats = g.mean().to_frame("mean").join(g.std().to_frame("sd")).join(g.count().to_frame("n"))
    cells = stats.apply(lambda r: f"{r['mean']:.4f} ± {r['sd']:.4f}" if r["n"] > 1
                        else f"{r['mean']:.4f}", axis=1)
    return cells.unstack("k")


if __name__ == "__main__":
    main()
