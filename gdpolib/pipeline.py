"""Run every numbered notebook in notebooks/ in order with papermill, headless.

    python -m gdpolib.pipeline [-f PARAMS.yaml]... [-p KEY VALUE]... [--only 01,03]

No arguments = the embedded demo (params/defaults.yaml: offline, tiny model, minutes on a CPU).
The parameters, the run folder, the device, the model and the survey are checked before
anything is written (a misspelled key or an unknown country fails at once, naming the file).
The pipeline then holds the run folder's lock until the last notebook is done (its kernels run
under it), so a second run on the same folder fails at once. Executed notebooks go to
outputs/<run>/notebooks/; a parameter value holding a credential is handed to the kernels in
their environment, never written into them. The run directory is printed last, so scripts can
read it with `tail -n 1`.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence


from gdpolib import console, folders
from gdpolib.config import (PROJECT_ROOT, ConfigError, add_params_arguments, load_config,
                            read_yaml)
from gdpolib.checks import ModelLoadError
from gdpolib.runs import RunError, claim
from gdpolib.scrub import hand_over

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"


def numbered_notebooks(only: Sequence[str] | None = None) -> list[Path]:
    """notebooks/NN_*.ipynb in order; `only` keeps those whose number is listed."""
    books = sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {o.strip().zfill(2) for o in only}
        unknown = wanted - {p.name[:2] for p in books}
        if unknown:
            raise SystemExit(f"--only: no notebook numbered {', '.join(sorted(unknown))} in "
                             f"{NOTEBOOK_DIR} (have {', '.join(p.name for p in books)})")
        books = [p for p in books if p.name[:2] in wanted]
    return books


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m gdpolib.pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_arguments(ap)
    ap.add_argument("--only", type=lambda s: s.split(","), default=None,
                    help="comma-separated notebook numbers, e.g. 01,03")
    ap.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    return ap.parse_args(argv)


# The tiny model from this hidden size on trains ~1.6x faster on two threads than on one (2 x 128,
# measured); a 4 x 64 model gains nothing from a second thread. Its numbers move with the thread
# count (floating-point sums in another order), so it gets a FIXED count, the same on any machine
# with at least that many cores, never "every core".
TINY_WIDE, TINY_THREADS = 128, 2


def torch_threads(cfg) -> int:
    """Threads each kernel's torch uses: OMP_NUM_THREADS when the user set it; else for the
    tiny model TINY_THREADS when it is at least TINY_WIDE wide (the demo's) and one when it is
    narrower, and every core for the other models."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return int(os.environ["OMP_NUM_THREADS"])
    cores = max(1, os.cpu_count() or 1)
    if cfg.model == "tiny":
        return min(TINY_THREADS, cores) if cfg.tiny_n_embd >= TINY_WIDE else 1
    return cores


def kernel_environment(threads: int) -> dict[str, str]:
    """What the pipeline's kernels inherit: the thread count, OpenMP threads that sleep while
    they wait (unless OMP_WAIT_POLICY is set), the console protocol, no bars (the console draws
    its own) and no tokenizers fork warning."""
    # Spinning OpenMP threads on a machine whose cores other jobs share took ~6x the CPU per
    # step of the tiny model on two threads (the waiting thread burns the core the working one
    # needs); passive waiting changes no number (the same threads split the same work).
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
            console.ENV: "1", "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (the kernels)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = dict(args.params)          # YAML scalars, as papermill parses -p
    try:
        cfg = load_config(args.files, overrides)
        books = numbered_notebooks(args.only)
        claim(cfg)          # every check, then the first write: the run folder, locked
    except (ConfigError, RunError, ModelLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    folders.lend_to_children(cfg.run_dir)      # the kernels run under this process's lock
    # Pass the user's own values only; each notebook fills the rest from the RunConfig defaults.
    parameters: dict[str, Any] = {}
    for f in args.files:
        parameters.update(read_yaml(f))
    parameters.update(overrides)
    parameters = hand_over(parameters)      # credentials reach the kernels, not the notebooks

    import papermill as pm  # imported late: --help and config errors stay fast

    out_dir = cfg.run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = cfg.run_dir / "logs" / "pipeline.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    threads = torch_threads(cfg)
    os.environ.update(kernel_environment(threads))
    start, cpu_start = time.time(), cpu_seconds()
    with console.Console(log_path) as con:
        plural = lambda n: "s" if n > 1 else ""   # noqa: E731
        con.show(f"run {cfg.run_dir_name}: {len(books)} notebook{plural(len(books))}, "
                 f"{threads} torch thread{plural(threads)}; full log {log_path}")
        for i, book in enumerate(books, 1):
            out = out_dir / book.name
            t0, c0 = time.time(), cpu_seconds()
            con.show(f"[{i}/{len(books)}] {book.stem}")
            try:
                pm.execute_notebook(str(book), str(out), parameters=parameters,
                                    kernel_name=args.kernel, cwd=str(PROJECT_ROOT),
                                    progress_bar=False, log_output=False,
                                    stdout_file=con.stream(), stderr_file=con.stream())
            except pm.PapermillExecutionError as err:
                con.show(f"FAILED: {book.name}, cell {err.exec_count}: {err.ename}: {err.evalue}\n"
                         f"The executed copy (with the traceback) is {out}; the log {log_path}",
                         error=True)
                return 1
            con.show(f"{console.INDENT}done in {time.time() - t0:.0f} s "
                     f"(CPU {cpu_seconds() - c0:.0f} s)")
        con.show(f"all done in {time.time() - start:.0f} s (CPU {cpu_seconds() - cpu_start:.0f} s)")
    print(cfg.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
