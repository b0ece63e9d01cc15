"""Findings over seeds and countries from finished pipeline runs: each run's metrics.json (the
methods and baselines, their paired differences and margins) in one table, the paper's findings
as the demo checks them counted per country over seeds (gdpolib.report.claims.seed_findings:
the demo's claims, and the others), as JSON and as text.

    python scripts/seed_table.py outputs/sa-tiny outputs/sa-tiny-seed1 ... --out results/demo/seeds.json

A run is labelled by its config.yaml (country, seed, protocol from metrics.json); runs that differ
in anything else should not be counted together: the JSON keeps each run's folder name and the
parameters that differ between the runs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gdpolib import sweep_tables  # noqa: E402
from gdpolib.config import PROJECT_ROOT, default_of, resolve_country  # noqa: E402
from gdpolib.report import claims  # noqa: E402

METHODS = default_of("methods")      # the demo's methods (the registry's baselines come too)
IGNORED = {"run_name", "output_root", "seed", "country", "update_run"}


@dataclass
class RunCell:
    """A finished run folder as sweep_tables.collect reads a grid cell."""
    run_dir: Path
    config: dict[str, Any]

    @property
    def name(self) -> str:      # the output root's last folder and the run's: unique per run
        return f"{self.run_dir.parent.name}/{self.run_dir.name}"

    def labels(self) -> dict[str, Any]:
        return {"country": resolve_country(self.config["country"]), "seed": self.config["seed"]}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (with metrics.json)")
    ap.add_argument("--out", type=Path, help="write the table and findings here (JSON)")
    args = ap.parse_args(argv)
    cells = []
    for run in args.runs:
        if not (run / "metrics.json").is_file() or not (run / "config.yaml").is_file():
            print(f"error: {run} has no metrics.json / config.yaml (not a finished run)",
                  file=sys.stderr)
            return 1
        cells.append(RunCell(run, yaml.safe_load((run / "config.yaml").read_text())))
    seen: dict[tuple, str] = {}
    for c in cells:
        key = (c.labels()["country"], c.labels()["seed"])
        if key in seen:
            print(f"error: {seen[key]} and {c.name} are both {key[0]}, seed {key[1]}: a seed is "
                  "counted once", file=sys.stderr)
            return 1
        seen[key] = c.name
    rows = sweep_tables.collect(cells, {c.name: METHODS for c in cells})
    keys = ["protocol", "country"]
    findings = {"paper_claims": claims.seed_findings(rows, keys, demo=True),
                "claims": claims.seed_findings(rows, keys)}
    params = {k for c in cells for k in c.config if k not in IGNORED
              and len({json.dumps(d.config.get(k)) for d in cells}) > 1}
    for line in findings["paper_claims"]:
        print(line)
    if params:
        print(f"warning: the runs differ in {sorted(params)}", file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": "python scripts/seed_table.py " + " ".join(c.name for c in cells)
                       + f" --out {args.out.name}  (run folders named by their output root's "
                         "last folder and the run's)",
            "commit": _commit(), "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "runs": {c.name: c.labels() for c in cells},
            "parameters_that_differ": sorted(params),
            "findings": findings,
            "rows": json.loads(rows.to_json(orient="records")),
        }, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
