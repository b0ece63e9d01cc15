"""Tables of the README's "Any group of any survey" and "One model, many groups" sections, from
finished runs (train them first with `python -m gdpolib.train ... --method all`).

    python scripts/group_tables.py findings outputs/oqa-democrat-tiny outputs/oqa-republican-tiny
    python scripts/group_tables.py compare outputs/us+pk+sa-tiny \\
        --per-group "United States=outputs/us-tiny" "Pakistan=outputs/pk-tiny" "S. Africa=outputs/sa-tiny" \\
        --unseen Nigeria [--methods sft,dpo,gdpo]

findings: per run, the test JSD of SFT, DPO and GDPO, uniform's, and the DPO and GDPO reward
margins of majority- and minority-chosen test pairs (metrics.json). compare: the conditioned
run's test JSD per group beside each group's own run on the same test prompts, then the
zero-shot table for the unseen group (gdpolib.stages.groups); CSVs go to <run>/tables/.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from gdpolib import config, runs
from gdpolib.report.table2 import markdown_table
from gdpolib.stages import groups as group_stage
from gdpolib.stages.data import prepare_data


def _open(run_dir: str):
    cfg = config.load_config([Path(run_dir) / "config.yaml"])
    run = runs.Run.open(cfg)
    return cfg, run, prepare_data(cfg, run)


def findings(run_dirs: list[str]) -> pd.DataFrame:
    rows = []
    for d in run_dirs:
        cfg, run, data = _open(d)
        m = json.loads((Path(d) / "metrics.json").read_text())
        uniform = group_stage.per_group(cfg, run, data, []).loc["all", "uniform"]
        rows.append({"group": cfg.group_label, "questions": m["data"]["questions"],
                     "uniform": uniform, **{k: m["methods"][k]["jsd"] for k in ("sft", "dpo", "gdpo")},
                     **{f"{k} margin {w}": m["skew"][k][f"margin_{w}"]
                        for k in ("dpo", "gdpo") for w in ("majority", "minority")}})
    return pd.DataFrame(rows).set_index("group")


def compare(run_dir: str, per_group: dict[str, str], unseen: str, methods: list[str]) -> None:
    cfg, run, data = _open(run_dir)
    versus = group_stage.versus_per_group(data, per_group, methods, Path(run_dir))
    versus.to_csv(run.path("tables", "groups_versus_per_group.csv"), index=False)
    print(markdown_table(versus.pivot(index="method", columns="group",
                                      values=["conditioned", "per_group"])))
    zero, ranking = group_stage.zero_shot(cfg, run, data, unseen, per_group, methods)
    zero.to_csv(run.path("tables", f"groups_zero_shot_{unseen}.csv"), index=False)
    print("nearest trained groups (mean JSD to the unseen group, shared questions):", ranking)
    print(markdown_table(zero.set_index(["predictor", "method"])))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    f = sub.add_parser("findings")
    f.add_argument("runs", nargs="+")
    c = sub.add_parser("compare")
    c.add_argument("run")
    c.add_argument("--per-group", nargs="+", required=True, metavar="GROUP=RUN_DIR")
    c.add_argument("--unseen", required=True)
    c.add_argument("--methods", default="sft,dpo,gdpo")
    args = ap.parse_args(argv)
    if args.what == "findings":
        print(markdown_table(findings(args.runs)))
    else:
        compare(args.run, dict(x.split("=", 1) for x in args.per_group), args.unseen,
                args.methods.split(","))
    return 0


if __name__ == "__main__":
    sys.exit(main())
