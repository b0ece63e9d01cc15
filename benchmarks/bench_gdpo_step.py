"""Time a GDPOTrainer step against a TRL DPOTrainer step on the same model and the same batch.

Both trainers get the same initial weights, the same reference model and the same GDPO pairs
(real GlobalOpinionQA data of the run); a "step" is `training_step` (forward over
[chosen; rejected], reference forward, backward), the optimizer update is the same for both and
left out. GDPO adds the answer-position logits (one position per pair) and a few tensor ops, so
the ratio should be close to 1.

    python benchmarks/bench_gdpo_step.py                       # tiny model, CPU
    python benchmarks/bench_gdpo_step.py -p model smollm2-135m -p batch_size 4 --reps 5
Writes benchmarks/results/bench_gdpo_step-<model>-<device>.json.
"""
from __future__ import annotations

import argparse
import copy
import json
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
    ap.add_argument("--reps", type=int, default=20, help="timed steps per trainer")
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()

    import torch
    from trl import DPOConfig, DPOTrainer

    from gdpolib import beliefs, config, models, runs
    from gdpolib.stages.data import base_model, prepare_data
    from gdpolib.trainers.fit import trl_args
    from gdpolib.trainers.gdpo_trainer import GDPOConfig, GDPOTrainer

    overrides = {"run_name": "bench-gdpo-step", **dict(args.params)}
    cfg = config.load_config(args.files, overrides)
    run = runs.Run.open(cfg)
    data = prepare_data(cfg, run)
    base, tok = models.load_pretrained(base_model(cfg, run, data)[0], cfg)
    device = models.resolve_device(cfg)
    ids = beliefs.check_belief_tokens(tok, data.k_max)
    pairs = data.gdpo["train"].select(range(cfg.batch_size * 4)).select_columns(
        ["prompt", "chosen", "rejected", "p_star", "belief_mask"])

    def make(cls, args_cls, out, **extra):
        targs = trl_args(cfg, args_cls, run.path("logs", "bench", out), 1, 1e-4,
                         run.path("logs", "bench"), save_strategy="no")
        return cls(model=copy.deepcopy(base), ref_model=copy.deepcopy(base), args=targs,
                   processing_class=tok, train_dataset=pairs, **extra)

    dpo = make(DPOTrainer, DPOConfig, "dpo")
    gdpo = make(GDPOTrainer, GDPOConfig, "gdpo", belief_token_ids=ids)
    rows = [gdpo.train_dataset[i] for i in range(cfg.batch_size)]
    batches = {"dpo": dpo.data_collator([dpo.train_dataset[i] for i in range(cfg.batch_size)]),
               "gdpo": gdpo.data_collator(rows)}
    assert torch.equal(batches["dpo"]["input_ids"], batches["gdpo"]["input_ids"]), "same batch"

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {"dpo": [], "gdpo": []}
    peak: dict[str, float] = {}
    for name, tr in (("dpo", dpo), ("gdpo", gdpo)):
        tr.create_optimizer_and_scheduler(num_training_steps=1)
        tr.current_gradient_accumulation_steps = 1   # set by Trainer.train() otherwise
        tr.model.train()
    # interleave the two trainers so that background load hits both alike
    for i in range(args.warmup + args.reps):
        for name, tr in (("dpo", dpo), ("gdpo", gdpo)):
            batch = {k: v.to(device) for k, v in batches[name].items()}
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync()
            t0 = time.perf_counter()
            tr.training_step(tr.model, batch)
            sync()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
                if device.type == "cuda":
                    peak[name] = max(peak.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**30)
            tr.model.zero_grad(set_to_none=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "gdpo_step_vs_trl_dpo_step", "model": cfg.model, "device": str(device),
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor(),
        "torch_threads": torch.get_num_threads(), "batch_pairs": cfg.batch_size,
        "seq_len": int(batches["gdpo"]["input_ids"].shape[1]), "reps": args.reps,
        "median_s": med, "mean_s": {k: statistics.fmean(v) for k, v in times.items()},
        "ratio_gdpo_over_dpo": med["gdpo"] / med["dpo"],
        "peak_memory_gib": peak or None,
        "params": sum(p.numel() for p in base.parameters()),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    out = ROOT / "benchmarks" / "results" / f"bench_gdpo_step-{cfg.model_slug}-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
