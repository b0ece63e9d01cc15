"""Does the embedding carry the groups' first direction of disagreement? (gdpolib.gpo.planted)

GPO can only use a group's context on a new question if it can tell, from that question's
embedding, how the question divides groups. This measures it without training GPO: the
R^2 of ridge regression from each (question, option) embedding to the option's entry of the
real first between-group factor u (and to the real mean answer m), on questions held out in 5
folds and on the questions it was fitted to (gdpolib.gpo.planted.factor_r2). One row per
embedder × pooling.

    python scripts/gpo_factor_r2.py -f params/gpo-paper.yaml -p opinionqa_groups all \\
        --dataset opinionqa --embedders smollm2-135m:option smollm2-135m:text minilm \\
        --out results/gpo/factor-r2-opinionqa.json
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gdpolib.config import add_params_arguments, load_config  # noqa: E402
from gdpolib.gpo.planted import factor_r2, first_factor  # noqa: E402
from gdpolib.gpo.results import provenance, write_results  # noqa: E402
from gdpolib.runs import Run  # noqa: E402
from gdpolib.stages.gpo import embed_groups, load_groups  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_params_arguments(ap)
    ap.add_argument("--dataset", default="opinionqa", choices=("goqa", "opinionqa"))
    ap.add_argument("--embedders", nargs="+", default=["smollm2-135m:option", "minilm"],
                    help="gpo_embedder[:gpo_pooling] (pooling applies to causal LMs)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--output-root", default="outputs/gpo_factor_r2")
    ap.add_argument("--out", required=True, help="the JSON results file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    record = provenance()
    rows = []
    for spec in args.embedders:
        name, _, pooling = spec.partition(":")
        cfg = load_config(files=args.files, overrides={
            **dict(args.params), "gpo_embedder": name, "output_root": args.output_root,
            "update_run": True, "run_name": "factor-r2",
            **({"gpo_pooling": pooling} if pooling else {})})
        real = load_groups(cfg, args.dataset)
        emb = embed_groups(cfg, Run.open(cfg), real)
        r2 = factor_r2(emb, real, args.folds)
        rows.append({"embedder": name, "pooling": pooling or "-", "dim": emb.dim,
                     **{f"r2_{key}": r2[key] for key in ("u_new", "u_seen", "m_new", "m_seen")},
                     "options": r2["rows"],
                     "questions": r2["questions"]})
    print(pd.DataFrame(rows).round(4).to_string(index=False))
    _, _, share = first_factor(real)
    write_results(args.out, "gpo-factor-r2", __doc__.split("\n")[0], {
        "dataset": args.dataset, "groups": len(real.groups), "first_factor_share": share,
        "folds": args.folds,
        "metric": "R^2 of ridge (alpha by leave-one-out) from the standardised embedding to u "
                  "(around 0) and to m (around its mean); _new: out of fold, questions held "
                  "out; _seen: in sample",
        "rows": rows}, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
