"""Sweeps on Ray: every country x params file x grid value x seed as its own run.

    python -m gdpolib.sweep -f params/ci.yaml --countries sa,pk --seeds 0,1 --methods sft,dpo,gdpo
    python -m gdpolib.sweep --param-files params/ci.yaml params/cpu-full.yaml --countries us --grid gdpo_lr=1e-4,3e-4
    python -m gdpolib.sweep ... --address auto            # an existing Ray cluster (`ray start --head`)
    python -m gdpolib.sweep ... --entry pipeline          # every notebook per run instead of training only

A grid cell is one run folder `<output_root>/<run_name>/` (run_name = `<country>-<model>[-<params
file stem>][-<grid key><value>...]-s<seed>`). Each cell is one Ray task that runs the stable entry
points as subprocesses: `python -m gdpolib.train ... --method M` for each requested method in turn
(the data and SFT stages are built once and reused), or `python -m gdpolib.pipeline ...`. Locally
Ray uses every core (`--num-cpus`), one core per run (`--cpus-per-run`) and, where Ray sees GPUs,
one GPU per run. On a cluster every node needs this checkout and its environment at the same
path, and `output_root` on storage every node shares.

A cell whose run folder holds the same parameters (config.yaml), the sweep's completion record
for them and test metrics for every requested method is reused without starting anything; any
other cell is run, and inside it the stage cache reuses what is already built. A failed run is
reported with its name and the tail of its log; the others go on; the exit status is 1 at the end.

Written to `<output_root>/sweeps/<name>/`: runs.csv (one row per run x method, with the run's
evaluation protocol), summary.csv and summary.md (country x method: JSD mean, sd and number of
seeds, and the means of the other metrics present), results.md (the multi-seed table: every
read-out metric as mean ± sd over seeds per protocol x country x method, and each finding with
the number of seeds it holds in: gdpolib.report), jsd.png (seaborn), sweep.json (the grid and
each cell's status) and logs/. The summary table is printed, and the sweep folder last. The sweep
name is one folder name; an existing folder is reused only when it is a sweep's (sweep.json);
every cell's run folder is checked before anything is written (gdpolib.runs.check_run_folder);
the sweep holds its folder's lock while it runs. Credentials in values are masked in its records.

The README's multi-seed results (both protocols, baselines beside the methods):
    python -m gdpolib.sweep --param-files params/cpu-full.yaml --countries sa,pk,us --seeds 0,1,2 \
        --grid split_by=prompt,question --methods uniform,zeroshot,sft,dpo,gdpo --name results
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

from gdpolib import folders, runs, sweep_tables
from gdpolib import methods as registry
from gdpolib.config import (PROJECT_ROOT, ConfigError, RunConfig, add_params_arguments,
                            load_config, resolve_path, value_text)
from gdpolib.paramspec import name_problem
from gdpolib.scrub import scrub, scrub_text

ENTRIES = ("train", "pipeline")
MARKER = "sweep-cell.json"    # written into a run folder when its cell finished
LOG_TAIL = 40                 # lines of a failed run's log shown in the report


@dataclasses.dataclass
class Cell:
    """One grid cell = one run folder."""

    country: str
    seed: int
    params: list[str]                   # this cell's own params files (the params axis)
    extra: dict[str, str]               # grid KEY -> value (as given on the command line)
    files: list[str]                    # every -f file, in order
    overrides: list[tuple[str, Any]]    # every -p pair, in order (the cell's values last)
    cfg: RunConfig

    @property
    def name(self) -> str:
        return self.cfg.run_dir_name

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    @property
    def params_label(self) -> str:
        return "+".join(Path(p).stem for p in self.params) or "-"

    def labels(self) -> dict[str, Any]:
        """The cell's grid coordinates, for the tables."""
        return {"country": self.cfg.country_name, "params": self.params_label, **self.extra,
                "seed": self.seed}

    def command_args(self) -> list[str]:
        """-f/-p arguments shared by both entry points."""
        args: list[str] = []
        for f in self.files:
            args += ["-f", f]
        for key, value in self.overrides:
            args += ["-p", key, value_text(value)]
        return args


# ============================================================== the grid
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-").lower()


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def config_hash(cfg: RunConfig) -> str:
    blob = json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def build_grid(files: Sequence[str], overrides: Sequence[tuple[str, Any]], countries: Sequence[str],
               seeds: Sequence[int], params: Sequence[str], grid: Sequence[str]) -> list[Cell]:
    """Every cell, with its parameters validated (ConfigError names the cell and the key)."""
    axes: dict[str, list[str]] = {}
    for spec in grid:
        key, sep, values = spec.partition("=")
        if not sep or not _split(values):
            raise ConfigError(f"--grid {spec!r}: expected KEY=VALUE1,VALUE2")
        axes[key.strip()] = _split(values)
    taken = {"country", "seed", "run_name"} & ({k for k, _ in overrides} | set(axes))
    if taken:
        raise ConfigError(f"{', '.join(sorted(taken))}: set by the sweep itself (--countries, "
                          f"--seeds, the run names); do not pass it with -p or --grid")
    for p in (q for combo in params for q in combo.split("+")):
        if not Path(_absolute(p)).exists():
            raise ConfigError(f"--param-files: params file {p!r} does not exist")
    files = [_absolute(f) for f in files]
    combos = [dict(zip(axes, values)) for values in _product(list(axes.values()))]
    cells = []
    for country in countries:
        for combo_files in ([[_absolute(f) for f in c.split("+")] for c in params] or [[]]):
            for extra in combos:
                for seed in seeds:
                    all_files = [*files, *combo_files]
                    cell_over = [*overrides, *extra.items(), ("country", country), ("seed", str(seed))]
                    where = f"grid cell country={country} seed={seed}" + "".join(
                        f" {k}={v}" for k, v in extra.items()) + (
                        f" params={'+'.join(combo_files)}" if combo_files else "")
                    try:
                        base = load_config(all_files, dict(cell_over))
                    except ConfigError as err:
                        raise ConfigError(f"{where}: {err}") from None
                    name = "-".join([base.run_dir_name,
                                     *(_slug(Path(f).stem) for f in combo_files),
                                     *(f"{_slug(k)}{_slug(v)}" for k, v in extra.items()),
                                     f"s{seed}"])
                    cell_over.append(("run_name", name))
                    cells.append(Cell(country=country, seed=seed, params=combo_files,
                                      extra=dict(extra), files=all_files, overrides=cell_over,
                                      cfg=load_config(all_files, dict(cell_over))))
    names = [c.name for c in cells]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"grid cells share run folders {dupes}: give params files distinct names")
    return cells


def _absolute(path: str) -> str:
    """A params file as an absolute path: relative to the current folder if it is there, else to
    the project root (the runs start in the project root)."""
    return str(Path(path).resolve() if Path(path).exists() else resolve_path(path))


def _product(lists: list[list[str]]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for values in lists:
        out = [[*head, v] for head in out for v in values]
    return out


# ============================================================== one cell
def requested_methods(cell: Cell, entry: str, methods: Sequence[str]) -> list[str]:
    """The methods whose test metrics make a cell complete."""
    return list(methods) if entry == "train" else list(cell.cfg.methods)


def cell_commands(cell: Cell, entry: str, methods: Sequence[str], only: str | None,
                  python: str = sys.executable) -> list[list[str]]:
    """The subprocess command lines of one cell (stable entry-point contracts only)."""
    if entry == "pipeline":
        return [[python, "-m", "gdpolib.pipeline", *cell.command_args(),
                 *(["--only", only] if only else [])]]
    return [[python, "-m", "gdpolib.train", *cell.command_args(), "--method", m] for m in methods]


def is_complete(cell: Cell, methods: Sequence[str]) -> bool:
    """Same parameters, this sweep's completion record for them, and metrics for every method."""
    root = cell.run_dir
    try:
        saved = yaml.safe_load((root / "config.yaml").read_text())
        marker = json.loads((root / MARKER).read_text())
        metrics = json.loads((root / "metrics.json").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return (saved == runs.recorded_config(cell.cfg) and marker.get("config_hash") == config_hash(cell.cfg)
            and set(methods) <= set(marker.get("methods", []))
            and all("jsd" in metrics.get("methods", {}).get(m, {}) for m in methods))


def mark_complete(cell: Cell, methods: Sequence[str], seconds: float) -> None:
    """Write the cell's completion record into its run folder, under the folder's lock
    (folders.FolderError when another process runs in it now)."""
    with folders.holding(cell.run_dir, "run"):
        (cell.run_dir / MARKER).write_text(json.dumps(
            {"config_hash": config_hash(cell.cfg), "methods": list(methods),
             "seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")},
            indent=2))


def run_commands(name: str, commands: list[list[str]], log_path: str, cwd: str,
                 threads: int) -> dict[str, Any]:
    """Run one cell's commands in turn (inside a Ray task); stop at the first failure.
    Output goes to log_path; the result carries the log's tail for the report."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [cwd, os.environ.get("PYTHONPATH")]))}
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    code = 0
    with open(log_path, "w") as log:
        for cmd in commands:
            log.write(scrub_text(f"$ {' '.join(cmd)}\n"))
            log.flush()
            code = subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
            if code != 0:
                break
    lines = Path(log_path).read_text(errors="replace").splitlines()
    return {"name": name, "ok": code == 0, "returncode": code, "seconds": time.time() - start,
            "tail": "\n".join(lines[-LOG_TAIL:])}


# ============================================================== main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m gdpolib.sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_arguments(ap)
    ap.add_argument("--countries", required=True, help="comma-separated, e.g. sa,pk,us or 'Japan'")
    ap.add_argument("--seeds", default="0", help="comma-separated integers (default 0)")
    ap.add_argument("--methods", default="sft,dpo,gdpo",
                    help=f"train entry: comma-separated methods of the registry "
                         f"(gdpolib.methods: {', '.join(registry.names())})")
    ap.add_argument("--param-files", nargs="+", default=[], metavar="FILE[+FILE]",
                    help="the params-file axis: one cell per file (a+b = both files)")
    ap.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                    help="another axis over one parameter (repeatable)")
    ap.add_argument("--entry", choices=ENTRIES, default="train",
                    help="train (training + test numbers) or pipeline (every notebook)")
    ap.add_argument("--only", help="pipeline entry: notebook numbers, e.g. 01,03")
    ap.add_argument("--name", help="sweep folder name (default: a hash of the grid)")
    ap.add_argument("--address", help="Ray cluster address (e.g. auto); default: a local Ray")
    ap.add_argument("--num-cpus", type=int, default=None, help="local Ray: cores (default all)")
    ap.add_argument("--cpus-per-run", type=int, default=1)
    ap.add_argument("--gpus-per-run", type=float, default=None,
                    help="default 1 where Ray sees GPUs, else 0")
    return ap.parse_args(argv)


def claim_sweep(name: str, out: Path, cells: Sequence[Cell]) -> None:
    """Check the sweep's name and folder and every cell's run folder (runs.check_run_folder),
    then hold the sweep folder's lock: the sweep's first write. ConfigError, RunError or
    folders.FolderError otherwise."""
    if (problem := name_problem(name)):
        raise ConfigError(f"--name: {problem}; allowed: one folder name")
    if (problem := folders.foreign_problem(out, "sweep.json", "sweep")):
        raise ConfigError(f"--name: {problem}")
    for cell in cells:
        try:
            runs.check_run_folder(cell.cfg)
        except runs.RunError as err:
            raise runs.RunError(f"grid cell {cell.name}: {err}") from None
    folders.hold(out, "sweep")


def _start_ray(address: str | None, num_cpus: int | None):
    # Deferred: importing Ray takes seconds, and --help or a config error should not wait for it.
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet = dict(log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
    if address:
        ray.init(address=address, **quiet)
    else:
        # "local": always a new instance of our own, never another job's Ray found on this machine
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 **quiet)
    return ray


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    methods = _split(args.methods)
    bad = [m for m in methods if m not in registry.BY_NAME]
    try:
        if bad:
            raise ConfigError(f"--methods: {bad} not among {', '.join(registry.names())}")
        seeds = [int(s) for s in _split(args.seeds)]
        cells = build_grid(args.files, [tuple(p) for p in args.params], _split(args.countries),
                           seeds, args.param_files, args.grid)
        spec = {"files": args.files, "param_files": args.param_files,
                "countries": _split(args.countries), "seeds": seeds, "methods": methods,
                "grid": args.grid, "entry": args.entry,
                "overrides": [list(p) for p in args.params]}
        name = args.name or "grid-" + hashlib.sha256(
            json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
        out = resolve_path(cells[0].cfg.output_root) / "sweeps" / name
        claim_sweep(name, out, cells)
    except (ConfigError, ValueError, runs.RunError, folders.FolderError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    spec = scrub(spec)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"spec": spec, "status": "running"}, indent=2))
    wanted = {c.name: requested_methods(c, args.entry, methods) for c in cells}

    status: dict[str, dict[str, Any]] = {}
    todo = []
    for cell in cells:
        if is_complete(cell, wanted[cell.name]):
            status[cell.name] = {"status": "reused", "seconds": 0.0}
            print(f"{cell.name}: complete (same params, metrics for {', '.join(wanted[cell.name])}): "
                  f"reused", flush=True)
        else:
            todo.append(cell)
    start = time.time()
    if todo:
        ray = _start_ray(args.address, args.num_cpus)
        gpus = args.gpus_per_run
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(run_commands).options(num_cpus=args.cpus_per_run, num_gpus=gpus,
                                                max_retries=0)
        print(f"{len(todo)} run(s) on Ray ({int(ray.cluster_resources().get('CPU', 0))} CPUs, "
              f"{args.cpus_per_run} per run, {gpus:g} GPU per run); logs in {out / 'logs'}",
              flush=True)
        pending = {task.remote(c.name, cell_commands(c, args.entry, wanted[c.name], args.only),
                               str(out / "logs" / f"{c.name}.log"), str(PROJECT_ROOT),
                               args.cpus_per_run): c for c in todo}
        done_n = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            done_n += 1
            try:
                res = ray.get(ready[0])
            except ray.exceptions.RayError as err:   # the task itself died (node lost, OOM kill)
                res = {"ok": False, "returncode": None, "seconds": time.time() - start,
                       "tail": f"{type(err).__name__}: {err}"}
            if res["ok"]:
                try:
                    mark_complete(cell, wanted[cell.name], res["seconds"])
                except folders.FolderError as err:
                    res = {**res, "ok": False, "tail": str(err)}
            if res["ok"]:
                status[cell.name] = {"status": "ran", "seconds": round(res["seconds"], 1)}
                print(f"[{done_n}/{len(todo)}] {cell.name}: done in {res['seconds']:.0f} s", flush=True)
            else:
                status[cell.name] = {"status": "failed", "seconds": round(res["seconds"], 1),
                                     "returncode": res["returncode"]}
                tail = "\n".join("    " + ln for ln in res["tail"].splitlines())
                print(f"[{done_n}/{len(todo)}] {cell.name}: FAILED (exit {res['returncode']}) "
                      f"after {res['seconds']:.0f} s; log {out / 'logs' / (cell.name + '.log')}; "
                      f"its last lines:\n{tail}", file=sys.stderr, flush=True)
        ray.shutdown()

    ok_cells = [c for c in cells if status[c.name]["status"] != "failed"]
    rows = sweep_tables.collect(ok_cells, wanted)
    table = sweep_tables.summarize(rows, methods if args.entry == "train" else list(dict.fromkeys(
        m for c in cells for m in wanted[c.name])))
    rows.to_csv(out / "runs.csv", index=False)
    table.to_csv(out / "summary.csv", index=False)
    md = sweep_tables.to_markdown(table) if not table.empty else "(no completed run)"
    (out / "summary.md").write_text(md + "\n")
    if not rows.empty:
        sweep_tables.plot_jsd(rows, out / "jsd.png", list(table["method"].unique()))
        sweep_tables.write_results(rows, out / "results.md", list(table["method"].unique()))
    failed = [n for n, s in status.items() if s["status"] == "failed"]
    (out / "sweep.json").write_text(json.dumps(
        {"spec": spec, "cells": {c.name: {**c.labels(), "run_dir": str(c.run_dir),
                                          "methods": wanted[c.name], **status[c.name]}
                                 for c in cells},
         "failed": failed, "seconds": round(time.time() - start, 1)}, indent=2, default=str))
    print(f"\n{md}\n")
    print(f"{len(cells)} run(s): {sum(s['status'] == 'ran' for s in status.values())} ran, "
          f"{sum(s['status'] == 'reused' for s in status.values())} reused, {len(failed)} failed"
          + (f" ({', '.join(failed)})" if failed else ""))
    print(out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
