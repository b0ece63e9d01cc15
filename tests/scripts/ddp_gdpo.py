"""A few GDPO steps, under `accelerate launch` or plain python (for tests/test_ddp.py).

    python tests/scripts/ddp_gdpo.py --data D --model M --out O --batch 8
    accelerate launch --multi_gpu --num_processes 2 tests/scripts/ddp_gdpo.py --data D ... --batch 4

Trains GDPOTrainer for --steps steps on the first --pairs GDPO train pairs of a built data stage
(D: a copy of a run's `data/` folder), from the tiny model in M with dropout off, in fp32: on the
CPU (gloo) or, where CUDA is available, on the GPUs (e.g. `--config_file
configs/accelerate/fsdp2.yaml`). With --pairs = processes x --batch, every optimiser step sees all
the pairs, whatever the process layout, so a 2-process run must give the loss and the weights of
a 1-process run with twice the per-device batch. Two trainings run one after the other: `live`
(reference model in memory) and `precomputed` (TRL's precompute_ref_log_probs, same start).
Writes into O/<mode>/: log_history.json, weights.pt and world.json (main process), and for
`precomputed` ref-rank<R>.json (every process): the reference log-probs that process trains with.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)

import torch  # noqa: E402
from accelerate import PartialState  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from gdpolib.beliefs import check_belief_tokens  # noqa: E402
from gdpolib.data.records import load_run_data  # noqa: E402
from gdpolib.trainers.gdpo_trainer import GDPOConfig, GDPOTrainer  # noqa: E402

COLUMNS = ["prompt", "chosen", "rejected", "p_star", "belief_mask"]


def without_dropout(path: str):
    """The checkpoint's config with every dropout rate at 0 (GPT-2's *_pdrop, Llama's
    attention_dropout, ...): dropout masks differ per process."""
    config = AutoConfig.from_pretrained(path)
    for key, value in config.to_dict().items():
        if ("drop" in key) and isinstance(value, float):
            setattr(config, key, 0.0)
    return config


def train(mode: str, args, state: PartialState, model, tok, train_ds, belief_ids) -> None:
    out = Path(args.out) / mode
    precompute = mode == "precomputed"
    config = GDPOConfig(
        output_dir=str(out / "trainer"), per_device_train_batch_size=args.batch,
        max_steps=args.steps, learning_rate=1e-3, lr_scheduler_type="constant", warmup_steps=0,
        bf16=False, use_cpu=not torch.cuda.is_available(), activation_checkpointing=False, report_to=[], save_strategy="no",
        logging_steps=1, beta=0.1, max_length=args.max_length, disable_tqdm=True, seed=0,
        data_seed=0, dataloader_num_workers=0, precompute_ref_log_probs=precompute)
    trainer = GDPOTrainer(model=copy.deepcopy(model),
                          ref_model=None if precompute else copy.deepcopy(model),
                          args=config, processing_class=tok, train_dataset=train_ds,
                          belief_token_ids=belief_ids)
    if precompute:   # what THIS process will train with, in dataset order
        out.mkdir(parents=True, exist_ok=True)
        ds = trainer.train_dataset
        (out / f"ref-rank{state.process_index}.json").write_text(json.dumps(
            {"chosen": list(ds["chosen"]), "ref_chosen_logps": list(ds["ref_chosen_logps"]),
             "ref_rejected_logps": list(ds["ref_rejected_logps"])}))
    trainer.train()
    if state.is_main_process:
        weights = trainer.accelerator.unwrap_model(trainer.model).state_dict()
        torch.save({k: v.detach().cpu() for k, v in weights.items()}, out / "weights.pt")
        (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        (out / "world.json").write_text(json.dumps({
            "num_processes": state.num_processes,
            "distributed_type": str(trainer.accelerator.distributed_type)}))
    state.wait_for_everyone()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="a built data stage folder (a copy)")
    ap.add_argument("--model", required=True, help="the tiny base model folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, required=True, help="pairs per process per step")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=256)
    args = ap.parse_args()
    # Without CUDA, torchrun's processes (accelerate launch --multi_gpu) join with gloo on CPU.
    state = PartialState(cpu=not torch.cuda.is_available())
    if args.pairs != args.batch * state.num_processes:
        raise SystemExit(f"--pairs {args.pairs} must equal --batch {args.batch} x "
                         f"{state.num_processes} processes (one global batch = every pair)")
    data = load_run_data(args.data)
    train_ds = data.gdpo["train"].select(range(args.pairs)).select_columns(COLUMNS)
    model = AutoModelForCausalLM.from_pretrained(args.model, config=without_dropout(args.model))
    tok = AutoTokenizer.from_pretrained(args.model)
    belief_ids = check_belief_tokens(tok, data.k_max)
    for mode in ("live", "precomputed"):
        train(mode, args, state, model, tok, train_ds, belief_ids)
    # A gloo group left to the interpreter's exit can abort a rank ("terminate called without
    # an active exception") after all its work is written.
    state.destroy_process_group()


if __name__ == "__main__":
    main()
