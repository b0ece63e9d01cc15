"""Tracking during training: a fixed eval subset scored every `eval_every` steps (JSD and belief
mass of the belief read-out; for preference methods the reward margins vs the reference, split by
majority / minority chosen belief, on the conflicting eval pairs for every method and, for the
GDPO family, also on its own shared-belief pairs: `shared_*`), written as JSON lines next to the
checkpoints and forwarded to the trackers `report_to` enabled. The numbers come from the same functions as the test evaluation
(gdpolib.scoring.readout, gdpolib.margins)."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from datasets import Dataset
from transformers import TrainerCallback

from gdpolib.margins import encode_pairs, margin_summary, pair_logps, reward_margins
from gdpolib.evalset import EvalSet
from gdpolib.scoring import readout
from gdpolib.trainers.fit import save_model

log = logging.getLogger("gdpolib.trainers")


class Tracker:
    """Evaluates a policy on a FIXED eval subset: JSD and belief mass on eval prompts, and (for
    preference methods) reward margins vs the reference, split by majority / minority, on
    `pairs` (keys margin_*, accuracy_*) and on `shared_pairs` when given (keys shared_*).

    `ref_logps_from`: the model whose pair log-probs are the reference, computed ONCE, here. A
    preference stage passes its policy before the first step (the SFT checkpoint it starts
    from, which is the reference of the DPO/GDPO loss too), so no second copy is kept."""

    def __init__(self, tokenizer, belief_ids: Sequence[int], prompts: EvalSet,
                 pairs: Dataset | None = None, ref_logps_from=None, beta: float = 0.1,
                 batch_size: int = 16, max_length: int | None = None,
                 shared_pairs: Dataset | None = None):
        self.tokenizer, self.belief_ids, self.prompts = tokenizer, list(belief_ids), prompts
        self.beta, self.batch_size, self.max_length = beta, batch_size, max_length
        # (key prefix, encoded pairs, majority [N], reference log-probs [N, 2]) per pair set
        self.sets = []
        for prefix, ds in (("", pairs), ("shared_", shared_pairs)):
            if ds is None:
                continue
            if ref_logps_from is None:
                raise ValueError("margins need the reference model (ref_logps_from)")
            enc = encode_pairs(tokenizer, ds)
            self.sets.append((prefix, enc, np.asarray(ds["majority"]).astype(bool),
                              pair_logps(ref_logps_from, tokenizer, enc, batch_size, max_length)))

    def evaluate(self, model) -> dict[str, float]:
        read = readout(model, self.tokenizer, self.prompts, self.belief_ids, self.batch_size)
        valid = read["valid"]     # as the test evaluation: a row without belief mass is counted
        rec = {"jsd": float(np.mean(read["jsd"][valid])) if valid.any() else float("nan"),
               "belief_mass": float(np.mean(read["mass"][valid])) if valid.any() else 0.0,
               "n_invalid": int((~valid).sum())}
        for prefix, enc, majority, ref in self.sets:
            pol = pair_logps(model, self.tokenizer, enc, self.batch_size, self.max_length)
            summary = margin_summary(reward_margins(pol, ref, self.beta), majority)
            rec.update({prefix + k: v for k, v in summary.items()})
        return rec


class TrackingCallback(TrainerCallback):
    """Runs the Tracker every `every` steps (and at steps 0 and last); appends JSON lines to
    `path`; forwards the values to TensorBoard / wandb through the trainer's own logging
    callbacks (only those report_to enabled). With `best_dir`, saves the policy whenever the eval
    JSD improves (select_by: eval_jsd)."""

    def __init__(self, tracker: Tracker, every: int, path: Path, method: str,
                 best_dir: Path | None = None):
        self.tracker, self.every, self.path, self.method = tracker, max(1, every), Path(path), method
        self.best_dir, self.best = best_dir, float("inf")
        self.handler = None   # set to trainer.callback_handler by attach()
        self.start = time.time()

    def attach(self, trainer) -> "TrackingCallback":
        trainer.add_callback(self)
        self.handler = trainer.callback_handler
        return self

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.start = time.time()
        if self.path.exists():
            # Resuming from step S > 0: keep the records up to S (the same trajectory) and go on
            # counting seconds from the last one. Starting again from 0: the killed attempt's
            # records are dropped.
            keep = [json.loads(ln) for ln in self.path.read_text().splitlines() if ln.strip()]
            keep = [r for r in keep if 0 < state.global_step and r["step"] <= state.global_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))
            self.best = min([r["jsd"] for r in keep] or [float("inf")])
            if keep:
                self.start -= keep[-1]["seconds"]
        if state.global_step == 0:
            self._evaluate(args, state, control, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            self._evaluate(args, state, control, model)

    def _evaluate(self, args, state, control, model):
        if not state.is_world_process_zero:
            return
        rec = {"method": self.method, "step": state.global_step,
               "seconds": round(time.time() - self.start, 2), **self.tracker.evaluate(model)}
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        log.info("%s step %d: eval JSD %.4f, mass %.3f%s", self.method, rec["step"], rec["jsd"],
                 rec["belief_mass"], f", margin maj/min {rec['margin_majority']:.3f}/"
                 f"{rec['margin_minority']:.3f}" if "margin" in rec else "")
        if self.best_dir is not None and rec["jsd"] < self.best:
            self.best = rec["jsd"]
            save_model(model, None, self.best_dir, in_place=False)
            (self.best_dir / "best.json").write_text(json.dumps(rec))
        if self.handler is not None and args.report_to:
            logs = {f"track/{k}": v for k, v in rec.items() if isinstance(v, float)}
            for cb in self.handler.callbacks:
                if cb is not self and type(cb).__name__ not in ("ProgressCallback", "PrinterCallback"):
                    cb.on_log(args, state, control, logs=logs)
