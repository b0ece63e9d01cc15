"""Time the JSD-from-probabilities evaluation batched (one forward per batch of left-padded
prompts) against one prompt at a time (the authors' evaluate.py ran batch 1), on the same model
and the same prompts, and check that both give the same probabilities and the same mean JSD.

The model is the run's SFT checkpoint when it exists (else the untrained base model); the prompts
are the run's eval prompts of every split (train + eval + test), so there are enough of them.

    python benchmarks/bench_jsd_batched.py                                # tiny model, CPU
    python benchmarks/bench_jsd_batched.py -p model smollm2-135m -p max_questions 40 --reps 1
    OMP_NUM_THREADS=1 python benchmarks/bench_jsd_batched.py -p run_name eval-sa-tiny
Writes benchmarks/results/bench_jsd_batched-<model>-<device>[-t<threads>].json. The JSON also
records the machine's load average: on a shared CPU, oversubscribed threads slow small
per-prompt forwards far more than batched ones.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", category=FutureWarning)


def main() -> None:
    from gdpolib.config import add_params_arguments

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_params_arguments(ap)
    ap.add_argument("--batch-sizes", default="8,32", help="comma-separated batch sizes")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per setting")
    ap.add_argument("--max-prompts", type=int, default=None, help="cap on the number of prompts")
    args = ap.parse_args()

    import numpy as np
    import torch

    from gdpolib import beliefs, config, generation, models, runs
    from gdpolib.metrics.distances import mean_jsd
    from gdpolib.stages.data import base_model, prepare_data

    overrides = {"run_name": "bench-jsd-batched", **dict(args.params)}
    cfg = config.load_config(args.files, overrides)
    run = runs.Run.open(cfg)
    data = prepare_data(cfg, run)
    sft = run.stage_dir("checkpoints/sft")
    if (sft / "stage.json").exists():
        model, tok = models.load_pretrained(sft, cfg)
        which = "sft checkpoint"
    else:
        model, tok = models.load_pretrained(base_model(cfg, run, data)[0], cfg)
        which = "base model (no SFT checkpoint in the run)"
    model.eval()
    device = models.resolve_device(cfg)
    ids = beliefs.check_belief_tokens(tok, data.k_max)
    rows = [r for s in ("train", "eval", "test") for r in data.prompts[s]]
    rows = rows[:args.max_prompts] if args.max_prompts else rows
    prompts = [r["prompt"] for r in rows]
    p_star = np.asarray([r["p_star"] for r in rows])
    mask = np.asarray([r["belief_mask"] for r in rows])

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(bs: int):
        sync()
        t0 = time.perf_counter()
        probs = generation.belief_distributions(model, tok, prompts, ids, batch_size=bs)
        jsd = mean_jsd(probs, p_star, mask)
        sync()
        return time.perf_counter() - t0, probs, jsd

    sizes = [1] + [int(b) for b in args.batch_sizes.split(",")]
    timed(max(sizes))                                  # warm-up (allocator, kernels)
    times: dict[int, list[float]] = {b: [] for b in sizes}
    probs: dict[int, np.ndarray] = {}
    jsds: dict[int, float] = {}
    for _ in range(args.reps):                         # interleaved: background load hits all
        for b in sizes:
            t, probs[b], jsds[b] = timed(b)
            times[b].append(t)
    med = {b: statistics.median(v) for b, v in times.items()}
    result = {
        "benchmark": "jsd_from_probabilities_batched_vs_one_at_a_time", "model": cfg.model,
        "checkpoint": which, "device": str(device),
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor(),
        "torch_threads": torch.get_num_threads(), "n_prompts": len(prompts),
        "prompt_tokens_mean": float(np.mean([len(x) for x in tok(prompts)["input_ids"]])),
        "reps": args.reps,
        "median_s": {str(b): med[b] for b in sizes},
        "prompts_per_s": {str(b): len(prompts) / med[b] for b in sizes},
        "speedup_vs_one_at_a_time": {str(b): med[1] / med[b] for b in sizes if b != 1},
        "max_abs_prob_diff_vs_one_at_a_time": {str(b): float(np.abs(probs[b] - probs[1]).max())
                                               for b in sizes if b != 1},
        "mean_jsd": {str(b): jsds[b] for b in sizes},
        "params": sum(p.numel() for p in model.parameters()),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "command": " ".join(["python benchmarks/" + Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    # CPU timings depend on the thread count (and on other load: see the README of the results)
    threads = f"-t{torch.get_num_threads()}" if device.type == "cpu" else ""
    out = ROOT / "benchmarks" / "results" / \
        f"bench_jsd_batched-{cfg.model_slug}-{device.type}{threads}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
