"""Does a tiny-model recipe write well-formed outputs? Train SFT (and optionally DPO / GDPO) with
the given parameters, sample the test prompts and print invalid rate, CBC, belief mass and JSD
(the recipe table of results/demo.md). The run's own stages do the work: data, base model,
training and the evaluation of notebook 04, in a run folder per recipe.

    python scripts/tiny_recipe.py --name llama-600 -p sft_steps 600
    python scripts/tiny_recipe.py --name gpt2 -p tiny_arch gpt2 --methods sft,dpo,gdpo
    python scripts/tiny_recipe.py --name w128 -p tiny_n_embd 128 -p tiny_n_layer 2 -p sft_lr 1e-2
    python scripts/tiny_recipe.py --name wf -f params/cpu-full.yaml -f params/tiny-wellformed.yaml

Torch threads as the pipeline picks them (one for the tiny model unless OMP_NUM_THREADS is set).
One JSON line per method goes to stdout (and to <output_root>/<name>/recipe.jsonl).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gdpolib import config, runs  # noqa: E402
from gdpolib import methods as registry  # noqa: E402
from gdpolib.pipeline import torch_threads  # noqa: E402
from gdpolib.stages.data import base_model, prepare_data  # noqa: E402
from gdpolib.stages.evaluate import Judging, evaluate_method, method_model  # noqa: E402

REPORTED = ("jsd", "belief_mass", "jsd_sampled", "invalid_rate", "cbc", "rs", "bpc",
            "margin_majority", "margin_minority", "shared_margin_majority",
            "shared_margin_minority")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", required=True, help="run folder name under output_root")
    ap.add_argument("--methods", default="sft", help="comma-separated: sft, dpo, gdpo")
    ap.add_argument("--output-root", default="outputs/tiny_recipe")
    config.add_params_arguments(ap)
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",")]
    trainable = registry.names(lambda m: m.trained)
    unknown = [m for m in methods if m not in trainable]
    if unknown:
        print(f"error: --methods: unknown {', '.join(unknown)} (allowed: {', '.join(trainable)})",
              file=sys.stderr)
        return 2
    params = dict(args.params)              # YAML scalars (config.add_params_arguments)
    overrides = {**params, "output_root": args.output_root, "run_name": args.name}
    try:
        cfg = config.load_config(args.files, overrides)
        run = runs.Run.open(cfg)                   # checks the run folder (preflight) first
    except (config.ConfigError, runs.RunError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(torch_threads(cfg))     # the pipeline's choice: 1 for the tiny model
    data = prepare_data(cfg, run)
    base_model(cfg, run, data)
    judging = Judging(cfg)
    with open(run.path("recipe.jsonl"), "a", encoding="utf-8") as out:
        for method in methods:
            start = time.time()
            method_model(cfg, run, data, method)       # trained here, or reused
            trained = time.time() - start
            summary = evaluate_method(cfg, run, data, method, judging)
            row = {"name": args.name, "method": method, "params": params,
                   **{k: round(summary[k], 4) for k in REPORTED if k in summary},
                   "train_s": round(trained, 1)}
            print(json.dumps(row), flush=True)
            out.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
