"""Training entry point: the same params files as the notebooks, one method per call.

    python -m gdpolib.train -f params/sa.yaml --method gdpo
    python -m gdpolib.train -f params/us.yaml -f params/smollm2-135m.yaml -p gdpo_steps 50 --method dpo
    accelerate launch --num_processes 4 -m gdpolib.train -f params/gpt2-large.yaml --method gdpo

Builds (or reuses) the data stage and the SFT stage, trains the method (any method of the registry,
gdpolib.methods; `all` = every trained method of `methods` and `ablations`, by default sft, dpo
and gdpo), writes its test-split numbers into the run's metrics.json and prints the stage folder
last. A method that trains nothing (the baselines `uniform` and `zeroshot`, the prompted `kshot`)
gets its test read-out recorded (its folder printed).
With `push_to_hub: <repo id>` the method's model, its model card and the built datasets are then
published (gdpolib.publish). Under `accelerate launch` (DDP) every process
trains; data, stage bookkeeping, tracking and the test evaluation run on the main process.
A killed run resumes from its last Trainer checkpoint (`save_every`) when started again; a second
command on the same run folder while one runs fails at once, naming it.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from gdpolib import config, folders, integrity, runs
from gdpolib import methods as registry
from gdpolib.checks import ModelLoadError
from gdpolib.config import add_params_arguments


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m gdpolib.train", description=__doc__.split("\n\n")[0])
    add_params_arguments(ap)
    ap.add_argument("--method", default="gdpo", choices=[*registry.names(), "all"])
    ap.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = config.load_config(args.files, dict(args.params))
        runs.claim(cfg)     # every check, then the run folder, locked until this process ends
    except (config.ConfigError, runs.RunError, ModelLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        return _train(cfg, args)
    except (runs.RunError, integrity.RecordError) as err:     # a damaged record of the run
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        folders.release(cfg.run_dir)     # main() may be called in a process that goes on


def _train(cfg: config.RunConfig, args: argparse.Namespace) -> int:
    """The run of main(), once its folder is claimed."""
    # Deferred on purpose: the training stack takes seconds to import, and a config error must
    # be reported at once.
    from accelerate import PartialState

    from gdpolib import publish
    from gdpolib.models import resolve_device
    from gdpolib.stages.data import base_model, prepare_data
    from gdpolib.stages.evaluate import method_model, test_readout

    # cpu=True on a CPU run: otherwise main_process_first() waits for nobody under a
    # multi-process CPU launch and every process builds the data stage at once.
    state = PartialState(cpu=resolve_device(cfg).type == "cpu")
    run = runs.Run.open(cfg)
    with state.main_process_first():        # data and the tiny base model are built once
        data = prepare_data(cfg, run)
        base_model(cfg, run, data)
    methods = ([m for m in registry.in_order([*cfg.methods, *cfg.ablations])
                if registry.get(m).trained] if args.method == "all" else [args.method])
    log = logging.getLogger("gdpolib.train")
    out = None
    for method in methods:
        if registry.get(method).trained:
            out, _ = method_model(cfg, run, data, method)
        else:
            out = run.stage_dir(f"stages/test/{method}")
        if state.is_main_process and not args.no_eval:
            numbers = test_readout(cfg, run, data, method)
            log.info("%s test: %s", method, json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                                         for k, v in numbers.items()}))
    state.wait_for_everyone()
    if state.is_main_process and cfg.push_to_hub and (args.method == "all"
                                                       or registry.get(args.method).trained):
        published = "gdpo" if args.method == "all" else args.method
        folder = publish.prepare_upload(run.root, published, cfg.push_to_hub)
        log.info("published %s: %s", published, publish.push(folder, cfg.push_to_hub))
    if state.is_main_process:
        print(out)
    state.destroy_process_group()   # a gloo group left to the exit can abort a rank
    return 0


if __name__ == "__main__":
    sys.exit(main())
