"""Where a training step of the tiny model spends its time: the trainers' step against the bare
maths of the same batches in plain PyTorch, before and after the cuts of the step overhead.

Trainers (`--kinds`), each built as the training stages build it (the run's parameters):
  sft-random  TRL's SFTTrainer with random batches (before: padding to the longest row)
  sft       TRL's SFTTrainer as the SFT stage runs it (after: rows of similar length batched)
  dpo-random  TRL's DPOTrainer with random batches of pairs (before)
  dpo       TRL's DPOTrainer as the DPO stage runs it: its loss unchanged, pairs of similar
            length batched (gdpolib.trainers.pairs; after)
  gdpo-random, gdpo  GDPOTrainer likewise (TRL's DPO head; a log-probs-only head was measured in
            bench_step_overhead-tiny-cpu-t1-after.json at ~2 %, within noise, and not kept)
`--steps` steps of `trainer.train()` are timed step by step, split into collation, forward +
loss (policy forward and, for DPO/GDPO, the reference forward), backward, optimizer step (with
clipping), Trainer logging and the rest. The bare step runs batches of the trainer's own
dataloader (same collator, same padding) through plain PyTorch: forward (logits at every
position), loss, reference forward under no_grad, backward, AdamW. The tracking evaluation of
the stages (gdpolib.trainers.tracking, every `eval_every` steps) is timed once and reported per
step. Padding is reported as padded / real tokens of the batches.

    python benchmarks/bench_step_overhead.py --label after          # the demo's parameters
    OMP_NUM_THREADS=1 python benchmarks/bench_step_overhead.py -p batch_size 8 --kinds sft,dpo
Writes benchmarks/results/bench_step_overhead-<model>-cpu-t<threads>[-<label>].json: CPU seconds
of this process per step (the main figure: robust to other jobs, with one torch thread) and wall
seconds, medians over the steps.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", category=FutureWarning)


class Timers:
    """Seconds per named part, per step (step k = between two on_step_end events), as CPU
    seconds of this process (robust to other jobs on a shared machine; one torch thread) and as
    wall seconds."""

    def __init__(self):
        self.step: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.steps: list[dict[str, list[float]]] = []
        self.last_end: tuple[float, float] | None = None

    def wrap(self, obj, attr: str, part: str) -> None:
        fn = getattr(obj, attr)

        def timed(*args, **kwargs):
            c0, t0 = time.process_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(part, time.process_time() - c0, time.perf_counter() - t0)
        setattr(obj, attr, timed)

    def add(self, part: str, cpu: float, wall: float) -> None:
        self.step[part][0] += cpu
        self.step[part][1] += wall

    def end_step(self) -> None:
        now = (time.process_time(), time.perf_counter())
        if self.last_end is not None:
            self.steps.append({**self.step, "total": [now[0] - self.last_end[0],
                                                      now[1] - self.last_end[1]]})
        self.step = defaultdict(lambda: [0.0, 0.0])
        self.last_end = now

    def medians(self, which: int) -> dict[str, float]:
        """Median per part over the steps; which = 0 for CPU seconds, 1 for wall seconds."""
        keys = sorted({k for s in self.steps for k in s})
        out = {k: statistics.median(s[k][which] if k in s else 0.0 for s in self.steps) for k in keys}
        out["other"] = max(out["total"] - sum(v for k, v in out.items() if k != "total"), 0.0)
        return out


def instrument(trainer, timers: Timers):
    """Wrap the trainer's collator, loss, backward, optimizer step and logging with timers."""
    from transformers import TrainerCallback

    timers.wrap(trainer, "data_collator", "collate")     # before train(): its dataloader takes it
    timers.wrap(trainer, "compute_loss", "forward+loss")
    timers.wrap(trainer.accelerator, "backward", "backward")
    timers.wrap(trainer, "log", "log")

    class Clock(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kw):
            self.t0 = (time.process_time(), time.perf_counter())

        def on_optimizer_step(self, args, state, control, **kw):
            timers.add("optimizer", time.process_time() - self.t0[0], time.perf_counter() - self.t0[1])

        def on_step_end(self, args, state, control, **kw):
            timers.end_step()

    trainer.add_callback(Clock())


def batches_of(trainer, n: int) -> list[dict]:
    """n batches of the trainer's own dataloader (same collator, same padding)."""
    out = []
    for batch in trainer.get_train_dataloader():
        out.append(batch)
        if len(out) == n:
            break
    return out


def padding(batches: list[dict]) -> dict[str, float]:
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["attention_mask"].numel() for b in batches)
    lengths = [b["attention_mask"].shape[1] for b in batches]
    return {"real_tokens_per_batch": real / len(batches), "padded_tokens_per_batch": padded / len(batches),
            "padded_over_real": padded / real, "mean_padded_length": statistics.fmean(lengths)}


def bare_steps(kind: str, model, ref, batches: list[dict], lr: float, beta: float, belief_ids) -> list[float]:
    """Plain PyTorch on the same batches: forward (logits everywhere), loss, reference forward,
    backward, AdamW step. Returns (CPU seconds, wall seconds) of each step."""
    import torch
    import torch.nn.functional as F

    from gdpolib import losses

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    times = []
    for batch in batches:
        c0, t0 = time.process_time(), time.perf_counter()
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if kind.startswith("sft"):
            labels = batch["labels"]
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        else:
            resp = batch["completion_mask"][:, 1:].float()

            def seq_logps(m, grad: bool):
                with torch.set_grad_enabled(grad):
                    out = m(input_ids=ids, attention_mask=mask)
                    lp = torch.log_softmax(out.logits[:, :-1].float(), -1)
                    tok = lp.gather(-1, ids[:, 1:, None]).squeeze(-1)
                    return tok, (tok * resp).sum(1), out
            tok, pol, out = seq_logps(model, True)
            _, ref_lp, _ = seq_logps(ref, False)
            pol_c, pol_r = pol.chunk(2)
            ref_c, ref_r = ref_lp.chunk(2)
            if kind == "dpo":
                loss = losses.dpo_loss(pol_c, pol_r, ref_c, ref_r, beta)[0].mean()
            else:
                n = pol_c.shape[0]
                rows = torch.arange(n)
                logits_a = out.logits[:n][rows, batch["answer_pos"]].float()
                loss = losses.gdpo_loss(
                    pol_c, pol_r, ref_c, ref_r, logits_a[:, belief_ids], batch["p_star"],
                    batch["belief_mask"], tok[:n], batch["belief_span_mask"][:n, 1:].float(),
                    beta=beta, full_logsumexp=torch.logsumexp(logits_a, -1))[0].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append((time.process_time() - c0, time.perf_counter() - t0))
    return times


def main() -> None:
    from gdpolib.config import add_params_arguments

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_params_arguments(ap)
    ap.add_argument("--steps", type=int, default=30, help="timed trainer steps per trainer")
    ap.add_argument("--label", default="", help="suffix of the result file (e.g. before, after)")
    ap.add_argument("--kinds", default="sft-random,sft,dpo-random,dpo,gdpo-random,gdpo")
    args = ap.parse_args()

    import torch
    from trl import DPOConfig, SFTConfig, SFTTrainer

    from gdpolib import beliefs, config, models, runs
    from gdpolib.generation import max_context
    from gdpolib.evalset import EvalSet
    from gdpolib.stages.data import base_model, prepare_data, sequence_length
    from gdpolib.trainers.fit import trl_args
    from gdpolib.trainers.gdpo_trainer import GDPOConfig, GDPOTrainer
    from gdpolib.trainers.pairs import DPOTrainer
    from gdpolib.trainers.tracking import Tracker

    overrides = {"run_name": "bench-step-overhead", "update_run": True, **dict(args.params)}
    cfg = config.load_config(args.files, overrides)
    run = runs.Run.open(cfg)
    data = prepare_data(cfg, run)
    base, tok = models.load_policy(base_model(cfg, run, data)[0], cfg, train=True)
    length = sequence_length(cfg, data, tok, max_context(base))
    ids = beliefs.check_belief_tokens(tok, data.k_max)
    eval_set = EvalSet.from_table(data.prompts["eval"], cfg.eval_subset, cfg.seed)
    n = args.steps + 1
    results: dict[str, dict] = {}
    for kind in args.kinds.split(","):
        model = copy.deepcopy(base)
        out_dir = run.path("logs", "bench", kind)
        common = dict(save_strategy="no", max_length=length)
        if kind.startswith("sft"):
            sampling = "random" if kind == "sft-random" else "group_by_length"
            targs = trl_args(cfg, SFTConfig, out_dir, n, cfg.sft_lr, out_dir, **common,
                             completion_only_loss=True, packing=False,
                             train_sampling_strategy=sampling)
            trainer = SFTTrainer(
                model=model, args=targs, processing_class=tok,
                train_dataset=data.sft["train"].select_columns(["prompt", "completion"]))
            tracker = Tracker(tok, ids, eval_set, batch_size=cfg.eval_batch_size)
            lr = cfg.sft_lr
        else:
            dpo = kind.startswith("dpo")
            pairs = data.dpo if dpo else data.gdpo
            cols = ["prompt", "chosen", "rejected"] + ([] if dpo else ["p_star", "belief_mask"])
            ref = copy.deepcopy(base)
            lr = cfg.dpo_lr if dpo else cfg.gdpo_lr
            common["train_sampling_strategy"] = "random" if kind.endswith("-random") else "group_by_length"
            if dpo:
                targs = trl_args(cfg, DPOConfig, out_dir, n, lr, out_dir, **common)
                trainer = DPOTrainer(model=model, ref_model=ref, args=targs, processing_class=tok,
                                     train_dataset=pairs["train"].select_columns(cols))
            else:
                targs = trl_args(cfg, GDPOConfig, out_dir, n, lr, out_dir, **common)
                trainer = GDPOTrainer(model=model, ref_model=ref, args=targs, processing_class=tok,
                                      train_dataset=pairs["train"].select_columns(cols),
                                      belief_token_ids=ids)
            ev = pairs["eval"].shuffle(seed=cfg.seed).select(range(min(cfg.eval_subset, len(pairs["eval"]))))
            tracker = Tracker(tok, ids, eval_set, pairs=ev, ref_logps_from=ref, beta=cfg.beta,
                              batch_size=cfg.eval_batch_size, max_length=length)
        batches = batches_of(trainer, n)
        timers = Timers()
        instrument(trainer, timers)
        trainer.train()
        c0, t0 = time.process_time(), time.perf_counter()
        tracker.evaluate(trainer.model)
        track = (time.process_time() - c0, time.perf_counter() - t0)
        bare = bare_steps(kind.split("-")[0], copy.deepcopy(base),
                          None if kind.startswith("sft") else ref, batches[1:], lr, cfg.beta,
                          torch.tensor(ids))
        results[kind] = {"steps": args.steps, "padding": padding(batches)}
        for which, unit in ((0, "cpu"), (1, "wall")):
            med = timers.medians(which)
            bare_med = statistics.median(b[which] for b in bare)
            results[kind][unit] = {
                "trainer_step_s": med, "bare_step_s": bare_med,
                "ratio_trainer_over_bare": med["total"] / bare_med,
                "tracking_eval_s": track[which], "tracking_per_step_s": track[which] / cfg.eval_every,
                "ratio_with_tracking": (med["total"] + track[which] / cfg.eval_every) / bare_med}
        print(kind, json.dumps(results[kind], indent=1), flush=True)
    threads = torch.get_num_threads()
    result = {"benchmark": "step_overhead", "model": cfg.model, "device": "cpu",
              "torch_threads": threads, "load_average": os.getloadavg(),
              "params": {k: getattr(cfg, k) for k in ("batch_size", "tiny_n_layer", "tiny_n_embd",
                                                       "tiny_vocab_size", "eval_every", "eval_subset")},
              "model_parameters": sum(p.numel() for p in base.parameters()),
              "results": results, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    suffix = f"-{args.label}" if args.label else ""
    out = ROOT / "benchmarks" / "results" / f"bench_step_overhead-{cfg.model_slug}-cpu-t{threads}{suffix}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
