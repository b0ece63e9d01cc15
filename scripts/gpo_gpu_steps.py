"""GPO's paper configuration for as many steps as a time budget allows, scored against steps.

The k = 20 -> 50 slope and the gain over the meta-train mean against meta-training steps (one
JSON, one figure).

The schedule is fixed before training (the cosine schedule needs its length): a short timed
warm-up measures a step and a probe, and --seconds sets the steps (a multiple of
gpo_eval_every). Every gpo_eval_every steps meta-training scores its validation groups (model
selection, as always) and the probe scores the TEST groups at each --k (never used for any
choice), beside the meta-train mean and ridge (constant over steps).

    python scripts/gpo_gpu_steps.py -f params/gpo-paper.yaml -f params/gpo-paper-gpu.yaml \\
        -p gpo_embedder smollm2-135m -p model_cache_dir outputs/gpu_cache \\
        --dataset opinionqa --seconds 420 --out results/gpo/gpu-steps.json
A dry run on a CPU (the same code, a few steps):
    python scripts/gpo_gpu_steps.py -f params/gpo-paper.yaml -f params/gpo-paper-gpu.yaml \\
        -p device cpu -p gpo_embedder minilm -p gpo_eval_every 5 --steps 10 \\
        --out outputs/gpu-steps-dry.json
The embeddings come from the run's cache (model_cache_dir): embed once where the embedder is
available and carry the cache folder; a cached table needs no model.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gdpolib import models  # noqa: E402
from gdpolib.config import add_params_arguments, gpo_k_problem, load_config  # noqa: E402
from gdpolib.gpo.experiment import GPOExperiment, predictions  # noqa: E402
from gdpolib.gpo.groups import split_groups  # noqa: E402
from gdpolib.gpo.meta_train import GPOSettings, meta_train  # noqa: E402
from gdpolib.gpo.predict import eval_plans, predict, score  # noqa: E402
from gdpolib.gpo.results import provenance, write_results  # noqa: E402
from gdpolib.runs import Run  # noqa: E402
from gdpolib.stages.gpo import embed_groups, load_groups, validated  # noqa: E402

WARMUP_STEPS = 20


def plan_steps(seconds: float, step_s: float, probe_s: float, every: int) -> int:
    """The most steps (a multiple of `every`, at least `every`) whose training and probes fit
    in `seconds`."""
    per_block = every * step_s + probe_s
    return max(1, math.floor(seconds / per_block)) * every


def figure(rows: list[dict], ks: list[int], baselines: dict, path: Path) -> None:
    """Left: the k = ks[0] -> ks[-1] slope of GPO's test score; right: GPO's gain over the
    meta-train mean at each k (ridge's gain dotted), against steps."""
    steps = [r["step"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(steps, [r["slope"] for r in rows], marker="o")
    a.axhline(0, color="grey", lw=0.8)
    a.set(xlabel="meta-training step", ylabel=f"score(k={ks[-1]}) - score(k={ks[0]})",
          title="GPO reads the context: k slope (test groups)")
    for k in ks:
        line, = b.plot(steps, [r[f"gain_k{k}"] for r in rows], marker="o", label=f"gpo, k={k}")
        b.axhline(baselines[f"ridge_k{k}"] - baselines["train_mean"], ls=":",
                  color=line.get_color(), label=f"ridge, k={k}")
    b.axhline(0, color="grey", lw=0.8)
    b.set(xlabel="meta-training step", ylabel="score - meta-train mean",
          title="gain over the meta-train mean (test groups)")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_params_arguments(ap)
    ap.add_argument("--dataset", default="opinionqa", choices=("goqa", "opinionqa"))
    ap.add_argument("--k", type=int, nargs=2, default=[20, 50], help="the two k of the slope")
    budget = ap.add_mutually_exclusive_group(required=True)
    budget.add_argument("--seconds", type=float, help="time budget of training + probes")
    budget.add_argument("--steps", type=int, help="a fixed number of steps instead")
    ap.add_argument("--output-root", default="outputs/gpo_gpu_steps")
    ap.add_argument("--out", required=True, help="the JSON results file (the figure: .png)")
    args = ap.parse_args(argv)
    overrides = dict(args.params)
    cfg = load_config(files=args.files, overrides={**overrides, "output_root": args.output_root,
                                                   "run_name": "gpu-steps", "update_run": True})
    if (problem := gpo_k_problem(args.k, cfg.gpo_ctx_range)):
        raise SystemExit(f"--k: {problem}")
    torch.set_num_threads(1)      # a CPU run (the dry run): GPO's matrices are small
    record = provenance()
    logging.disable(logging.WARNING)
    device = models.resolve_device(cfg)
    data = load_groups(cfg, args.dataset)
    emb = embed_groups(cfg, Run.open(cfg), data)
    split = split_groups(data, cfg.gpo_group_split, cfg.seed)
    plans = eval_plans(data, split["test"], args.k, cfg.seed)
    exp = validated(GPOExperiment(data, emb, split, plans, {}), cfg)
    jobs = {k: [p.job(k) for p in plans.values()] for k in args.k}
    mean = predictions(exp, "train_mean", jobs[args.k[0]])
    baselines = {"train_mean": score(data, mean)["score"]}
    for k in args.k:
        baselines[f"ridge_k{k}"] = score(data, predictions(exp, "ridge", jobs[k]))["score"]

    def probe(step: int, model) -> dict:
        out = {f"test_k{k}": score(data, predict(model, emb, data, jobs[k]))["score"]
               for k in args.k}
        out["slope"] = out[f"test_k{args.k[-1]}"] - out[f"test_k{args.k[0]}"]
        out.update({f"gain_k{k}": out[f"test_k{k}"] - baselines["train_mean"] for k in args.k})
        out["seconds"] = round(time.time() - start, 1)
        return out

    settings = GPOSettings.from_config(cfg)
    warmup = {}
    if args.steps is None:        # time one short schedule (and one probe) on this device
        t = time.time()
        res = meta_train(data, emb, split["train"], [], replace(settings, steps=WARMUP_STEPS),
                         device, progress=False)
        step_s = (time.time() - t) / WARMUP_STEPS
        start = time.time()
        probe(0, res.model)
        probe_s = time.time() - start
        steps = plan_steps(args.seconds, step_s, probe_s, settings.eval_every)
        warmup = {"step_seconds": step_s, "probe_seconds": probe_s, "budget_seconds": args.seconds}
    else:
        steps = args.steps
    settings = replace(settings, steps=steps)
    print(f"{steps} steps on {device} ({len(split['train'])} meta-train, {len(split['val'])} "
          f"validation, {len(split['test'])} test groups)", flush=True)
    start = time.time()
    res = meta_train(data, emb, split["train"], split["val"], settings, device, progress=True,
                     probe=probe)
    rows = [{k: v for k, v in h.items() if k != "tokens"} for h in res.history if "slope" in h]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure(rows, args.k, baselines, out.with_suffix(".png"))
    write_results(out, "gpo-gpu-steps", __doc__.split("\n")[0], {
        "dataset": args.dataset, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
        "embedder": emb.model, "dim": emb.dim, "k": args.k, "steps": steps, "warmup": warmup,
        "selected_step": res.best_step, "best_val": res.best_val, "seconds": res.seconds,
        "groups": {s: len(g) for s, g in split.items()}, "baselines": baselines,
        "params": cfg.to_dict(),
        "score": "1 - JS distance" if data.metric == "js" else "1 - WD / WD_max",
        "rows": rows, "figure": out.with_suffix(".png").name}, record)
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
