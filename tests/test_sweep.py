"""Sweeps on Ray: the grid, the completeness check, the summary table; and (slow) two real runs
of params/ci.yaml on a local Ray, a second invocation that reuses both, and a third whose added
runs fail without stopping the sweep."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from gdpolib import sweep, sweep_tables
from gdpolib.config import PROJECT_ROOT, ConfigError

CI = str(PROJECT_ROOT / "params" / "ci.yaml")


def test_grid_cells_names_and_commands(tmp_path):
    cells = sweep.build_grid(["params/tiny.yaml"], [("output_root", str(tmp_path))], ["sa", "us"],
                             [0, 1], ["params/ci.yaml"], ["gdpo_lr=1e-4,3e-4"])
    assert len(cells) == 2 * 2 * 2
    assert [c.name for c in cells[:4]] == ["sa-tiny-ci-gdpo-lr1e-4-s0", "sa-tiny-ci-gdpo-lr1e-4-s1",
                                           "sa-tiny-ci-gdpo-lr3e-4-s0", "sa-tiny-ci-gdpo-lr3e-4-s1"]
    cell = cells[2]
    assert cell.cfg.gdpo_lr == 3e-4 and cell.cfg.seed == 0 and cell.cfg.country_name == "S. Africa"
    assert cell.cfg.max_questions == 16                      # from params/ci.yaml
    assert cell.run_dir == tmp_path / cell.name
    assert cell.labels() == {"country": "S. Africa", "params": "ci", "gdpo_lr": "3e-4", "seed": 0}
    cmds = sweep.cell_commands(cell, "train", ["sft", "gdpo"], None, python="py")
    assert [c[-1] for c in cmds] == ["sft", "gdpo"]
    assert cmds[0][:3] == ["py", "-m", "gdpolib.train"]
    args = cmds[0]
    assert args[args.index("-f") + 1] == str(PROJECT_ROOT / "params" / "tiny.yaml")
    pairs = [(args[i + 1], args[i + 2]) for i, a in enumerate(args) if a == "-p"]
    assert ("run_name", cell.name) in pairs and ("gdpo_lr", "3e-4") in pairs
    pipe = sweep.cell_commands(cell, "pipeline", [], "01,03", python="py")
    assert pipe == [["py", "-m", "gdpolib.pipeline", *cell.command_args(), "--only", "01,03"]]


def test_grid_errors_name_the_cell_or_the_option(tmp_path):
    with pytest.raises(ConfigError, match="set by the sweep itself"):
        sweep.build_grid([], [("country", "pk")], ["sa"], [0], [], [])
    with pytest.raises(ConfigError, match="does not exist"):
        sweep.build_grid([], [], ["sa"], [0], ["params/nope.yaml"], [])
    with pytest.raises(ConfigError, match="KEY=VALUE1,VALUE2"):
        sweep.build_grid([], [], ["sa"], [0], [], ["gdpo_lr"])
    with pytest.raises(ConfigError, match="grid cell country=sa seed=0 gdpo_lr=fast.*gdpo_lr"):
        sweep.build_grid([], [], ["sa"], [0], [], ["gdpo_lr=fast"])
    with pytest.raises(ConfigError, match="country=Atlantis"):
        sweep.build_grid([], [], ["sa", "Atlantis"], [0], [], [])
    assert sweep.main(["--countries", "sa", "--methods", "gdpo,ppo", "-p", "output_root",
                       str(tmp_path)]) == 2


def test_complete_needs_same_params_marker_and_metrics(tmp_path):
    cell = sweep.build_grid([], [("output_root", str(tmp_path))], ["sa"], [0], [], [])[0]
    root = cell.run_dir
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump(cell.cfg.to_dict(), sort_keys=False))
    (root / "metrics.json").write_text(json.dumps({"methods": {"sft": {"jsd": 0.2},
                                                               "gdpo": {"jsd": 0.1}}}))
    assert not sweep.is_complete(cell, ["gdpo"])               # no completion record yet
    sweep.mark_complete(cell, ["sft", "gdpo"], 12.0)
    assert sweep.is_complete(cell, ["gdpo"]) and sweep.is_complete(cell, ["sft", "gdpo"])
    assert not sweep.is_complete(cell, ["dpo"])                # not trained by that sweep
    other = cell.cfg.replace(gdpo_lr=cell.cfg.gdpo_lr * 3)     # the folder now holds other params
    (root / "config.yaml").write_text(yaml.safe_dump(other.to_dict(), sort_keys=False))
    assert not sweep.is_complete(cell, ["gdpo"])


def test_summary_groups_seeds_and_keeps_the_grid_order():
    runs = pd.DataFrame([
        {"country": "S. Africa", "params": "-", "seed": 0, "method": "gdpo", "run": "a", "jsd": 0.10, "margin_majority": 1.0},
        {"country": "S. Africa", "params": "-", "seed": 1, "method": "gdpo", "run": "b", "jsd": 0.20, "margin_majority": 3.0},
        {"country": "S. Africa", "params": "-", "seed": 0, "method": "sft", "run": "a", "jsd": 0.30},
        {"country": "Pakistan", "params": "-", "seed": 0, "method": "gdpo", "run": "c", "jsd": 0.40, "margin_majority": 2.0},
    ])
    table = sweep_tables.summarize(runs, ["sft", "gdpo"])
    assert list(table.columns) == ["country", "method", "jsd_mean", "jsd_sd", "n_seeds", "margin_majority"]
    assert list(zip(table.country, table.method)) == [("S. Africa", "sft"), ("S. Africa", "gdpo"),
                                                      ("Pakistan", "gdpo")]
    sa = table.iloc[1]
    assert sa.jsd_mean == pytest.approx(0.15) and sa.n_seeds == 2
    assert sa.jsd_sd == pytest.approx(math.sqrt(0.005))       # sample sd of 0.10, 0.20
    assert sa.margin_majority == pytest.approx(2.0)
    md = sweep_tables.to_markdown(table)
    assert "| S. Africa | gdpo | 0.150 | 0.071 | 2 | 2.000 |" in md
    assert "| Pakistan | gdpo | 0.400 | – | 1 | 2.000 |" in md   # one seed: no sd


def test_results_table_per_protocol_with_seed_counts(tmp_path):
    rows = []
    for split_by, protocol in (("prompt", "seen_questions"), ("question", "unseen_questions")):
        for seed in (0, 1):
            for method, jsd in (("uniform", 0.30), ("sft", 0.20 + 0.01 * seed)):
                rows.append({"country": "S. Africa", "params": "ci", "split_by": split_by,
                             "seed": seed, "protocol": protocol, "method": method,
                             "run": f"r{seed}", "jsd": jsd + (0.05 if split_by == "question" else 0)})
    text = sweep_tables.write_results(pd.DataFrame(rows), tmp_path / "results.md", ["uniform", "sft"])
    assert text == (tmp_path / "results.md").read_text()
    assert text.startswith("# Results over 2 seed(s): mean ± sd")
    assert "`unseen_questions` = unseen questions: whole questions" in text
    assert "| protocol | params | country | method | seeds | jsd |" in text
    assert "| seen_questions | ci | S. Africa | sft | 2 | 0.205 ± 0.007 |" in text
    assert "| unseen_questions | ci | S. Africa | uniform | 2 | 0.350 ± 0.000 |" in text
    assert ("- unseen_questions / ci / S. Africa: SFT is below uniform in jsd: holds in 2 of 2 "
            "seeds (past its bar by +0.095 ± 0.007)") in text


# ============================================================== two real runs on local Ray
def _sweep(*args, timeout=1200):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    start = time.time()
    res = subprocess.run([sys.executable, "-m", "gdpolib.sweep", *args], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    print(f"sweep {' '.join(args[:3])} ...: {time.time() - start:.0f} s\n{res.stdout}")
    return res


@pytest.fixture(scope="module")
def ci_sweep(tmp_path_factory, goqa_csv):
    """Three invocations over one output folder; their results are shared by the tests below."""
    root = tmp_path_factory.mktemp("sweep")
    common = ["--countries", "sa,pk", "--seeds", "0", "--methods", "sft,gdpo", "--num-cpus", "2",
              "-p", "output_root", str(root), "-p", "goqa_path", str(goqa_csv), "--name", "ci"]
    first = _sweep("--param-files", CI, *common)
    summary = pd.read_csv(root / "sweeps" / "ci" / "summary.csv")
    png = (root / "sweeps" / "ci" / "jsd.png").read_bytes()
    logs = sorted(p.name for p in (root / "sweeps" / "ci" / "logs").iterdir())
    second = _sweep("--param-files", CI, *common)
    # Valid parameters (the file exists, so the config check passes); it holds no reviews, so
    # the data stage of each run fails at run time.
    (root / "no-reviews.txt").write_text("this is not a SNAP movie-reviews file\n")
    broken = root / "broken.yaml"
    broken.write_text(f"movies_path: {root / 'no-reviews.txt'}\n")
    third = _sweep("--param-files", CI, str(broken), *common)
    return {"root": root, "dir": root / "sweeps" / "ci", "first": first, "second": second,
            "third": third, "summary": summary, "png": png, "logs": logs}


@pytest.mark.slow
def test_sweep_runs_both_cells_and_writes_table_and_figure(ci_sweep):
    res, out = ci_sweep["first"], ci_sweep["dir"]
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == str(out)
    assert "2 run(s): 2 ran, 0 reused, 0 failed" in res.stdout
    table = ci_sweep["summary"]
    assert list(zip(table.country, table.method)) == [("S. Africa", "sft"), ("S. Africa", "gdpo"),
                                                      ("Pakistan", "sft"), ("Pakistan", "gdpo")]
    assert (table.n_seeds == 1).all() and table.jsd_sd.isna().all()
    for row in table.itertuples():
        run = "sa-tiny-ci-s0" if row.country == "S. Africa" else "pk-tiny-ci-s0"
        metrics = json.loads((ci_sweep["root"] / run / "metrics.json").read_text())
        assert row.jsd_mean == pytest.approx(metrics["methods"][row.method]["jsd"])
        assert 0 < row.jsd_mean < math.sqrt(math.log(2))
    gdpo = table[table.method == "gdpo"]
    assert gdpo.margin_majority.notna().all() and gdpo.margin_minority.notna().all()
    assert ci_sweep["png"][:8] == b"\x89PNG\r\n\x1a\n" and len(ci_sweep["png"]) > 10_000
    assert "| S. Africa | ci | seen_questions | gdpo |" in (out / "summary.md").read_text()
    results = (out / "results.md").read_text()
    assert "| seen_questions | ci | S. Africa | gdpo | 1 |" in results
    assert ci_sweep["logs"] == ["pk-tiny-ci-s0.log", "sa-tiny-ci-s0.log"]
    assert len(pd.read_csv(out / "runs.csv")) == 4


@pytest.mark.slow
def test_second_invocation_reuses_both_runs(ci_sweep):
    res = ci_sweep["second"]
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for name in ("sa-tiny-ci-s0", "pk-tiny-ci-s0"):
        assert f"{name}: complete (same params, metrics for sft, gdpo): reused" in res.stdout
    assert "on Ray" not in res.stdout and "2 run(s): 0 ran, 2 reused, 0 failed" in res.stdout


@pytest.mark.slow
def test_failed_runs_are_reported_and_do_not_stop_the_others(ci_sweep):
    res, out = ci_sweep["third"], ci_sweep["dir"]
    assert res.returncode == 1
    assert "4 run(s): 0 ran, 2 reused, 2 failed" in res.stdout
    for name in ("sa-tiny-broken-s0", "pk-tiny-broken-s0"):
        assert f"{name}: FAILED (exit 1)" in res.stderr
    assert "no-reviews.txt" in res.stderr                        # the tail of the failed run's log
    status = json.loads((out / "sweep.json").read_text())
    assert sorted(status["failed"]) == ["pk-tiny-broken-s0", "sa-tiny-broken-s0"]
    assert status["cells"]["sa-tiny-ci-s0"]["status"] == "reused"
    table = pd.read_csv(out / "summary.csv")                   # the good runs are still summarised
    assert set(table.params) == {"ci"} and len(table) == 4
