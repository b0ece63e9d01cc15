"""scripts/seed_table.py: the demo's findings counted over finished runs' metrics.json."""
from __future__ import annotations

import json
import subprocess
import sys

import yaml

from gdpolib.config import PROJECT_ROOT


def _run(root, name, country, seed, gdpo_vs_sft):
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"country": country, "seed": seed,
                                                     "sft_steps": 3000}))
    methods = {"uniform": {"jsd": 0.26}, "context_free": {"jsd": 0.20},
               "sft": {"jsd": 0.15, "jsd_vs_context_free": -0.05,
                       "jsd_vs_context_free_ci": [-0.07, -0.03], "invalid_rate": 0.01, "cbc": 0.93},
               "dpo": {"jsd": 0.25, "jsd_vs_sft": 0.10, "jsd_vs_sft_ci": [0.08, 0.12],
                       "invalid_rate": 0.04, "cbc": 0.91},
               "gdpo": {"jsd": 0.15 + gdpo_vs_sft, "jsd_vs_sft": gdpo_vs_sft,
                        "jsd_vs_sft_ci": [gdpo_vs_sft - 0.01, gdpo_vs_sft + 0.01],
                        "invalid_rate": 0.02, "cbc": 0.95}}
    skew = {"dpo": {"margin_majority": 0.5, "margin_minority": 0.1},
            "gdpo": {"margin_majority": 0.3, "margin_minority": 0.2}}
    (run / "metrics.json").write_text(json.dumps({"data": {"protocol": "seen_questions"},
                                                  "methods": methods, "skew": skew}))
    return run


def test_findings_are_counted_per_country_over_seeds(tmp_path):
    runs = [_run(tmp_path / "s0", "sa-tiny", "sa", 0, -0.02),
            _run(tmp_path / "s1", "sa-tiny", "sa", 1, +0.01),
            _run(tmp_path / "p0", "pk-tiny", "pk", 0, -0.01)]
    out = tmp_path / "seeds.json"
    res = subprocess.run([sys.executable, "scripts/seed_table.py", *map(str, runs), "--out",
                          str(out)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    table = json.loads(out.read_text())
    lines = table["findings"]["paper_claims"]
    assert "seen_questions / S. Africa: GDPO's JSD is below SFT's: holds in 1 of 2 seeds " \
           "(past its bar by +0.005 ± 0.021)" in lines
    assert any(x.startswith("seen_questions / Pakistan: GDPO's JSD is below SFT's: holds in 1 "
                            "of 1") for x in lines)
    assert any("S. Africa: SFT writes well-formed outputs" in x and "2 of 2" in x for x in lines)
    assert table["runs"]["s1/sa-tiny"] == {"country": "S. Africa", "seed": 1}
    assert {r["method"] for r in table["rows"]} == {"uniform", "context_free", "sft", "dpo", "gdpo"}
    assert table["parameters_that_differ"] == []


def test_the_same_seed_twice_is_refused(tmp_path):
    runs = [_run(tmp_path / "a", "sa-tiny", "sa", 0, -0.02),
            _run(tmp_path / "b", "sa-tiny", "sa", 0, -0.02)]
    res = subprocess.run([sys.executable, "scripts/seed_table.py", *map(str, runs)],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "a seed is counted once" in res.stderr
