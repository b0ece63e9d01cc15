"""A user's survey file of invented groups through notebooks 01-04 (one model conditioned on two
groups, the CI schedule), then that model against one model per group and on a third group it
never trained on."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gdpolib import config, runs, train
from gdpolib.schemes import OptionsScheme
from gdpolib.config import PROJECT_ROOT
from gdpolib.data import goqa
from gdpolib.data.survey import SurveyRow
from gdpolib.data.survey_files import write_survey
from gdpolib.stages import groups as group_stage
from gdpolib.stages.data import prepare_data

OWLS, BIRDS, LARKS = "Night owls", "Early birds", "Larks"


def _invented_survey(goqa_csv, path):
    """30 real questions that Pakistan and the United States both answered, their answers
    renamed to two invented groups, and a third group halfway between them."""
    data = goqa.load_goqa(goqa_csv)
    scheme = OptionsScheme(10)
    shared = [q for q in data.questions if {"Pakistan", "United States"} <= set(q.selections)
              and len(q.options) <= 10][:30]
    rows = []
    for q in shared:
        pk, us = q.selections["Pakistan"], q.selections["United States"]
        for group, p in ((OWLS, pk), (BIRDS, us), (LARKS, (pk + us) / 2)):
            rows.append(SurveyRow(group, q.qid, q.question, list(q.options), p, None, "invented"))
    assert len(scheme.apply(shared, "Pakistan")[0]) == 30
    return write_survey(rows, path)


def _run(module, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=1500, env=env)


@pytest.mark.slow
def test_a_users_survey_runs_notebooks_01_to_04_and_the_group_comparisons(tmp_path, goqa_csv):
    survey = _invented_survey(goqa_csv, tmp_path / "owls.jsonl")
    # Fewer steps than params/ci.yaml: this test checks that the data runs, not what it learns.
    common = ["-f", str(PROJECT_ROOT / "params" / "ci.yaml"), "-p", "survey_path", str(survey),
              "-p", "output_root", str(tmp_path / "out"), "-p", "sft_steps", "20",
              "-p", "dpo_steps", "10", "-p", "gdpo_steps", "10"]
    # k-shot and ICF are left out of notebook 04 to keep the test short (the GOQA test has them).
    res = _run("gdpolib.pipeline", *common, "-p", "groups", f"[{OWLS}, {BIRDS}]",
               "-p", "methods", "[sft, dpo, gdpo]", "--only", "01,02,03,04")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run_dir = tmp_path / "out" / "owls-night-owls+early-birds-tiny"
    assert res.stdout.strip().splitlines()[-1] == str(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"]["questions"] == 32 and set(metrics["skew"]) >= {"dpo", "gdpo"}
    for method in ("sft", "dpo", "gdpo"):
        assert 0 <= metrics["methods"][method]["jsd"] <= 0.8326
    executed = (run_dir / "notebooks" / "04_evaluate.ipynb").read_text()
    assert "n_prompts" in executed and OWLS in executed       # the per-group table was shown

    # One model per group, trained on the same records (its SFT only, and in this process
    # rather than a new one: both to keep the test short).
    own = {}
    for group in (OWLS, BIRDS):
        assert train.main([*common, "-p", "group", group, "--method", "sft"]) == 0
        own[group] = tmp_path / "out" / f"owls-{group.lower().replace(' ', '-')}-tiny"
    cfg = config.load_config([run_dir / "config.yaml"])
    run = runs.Run.open(cfg)
    data = prepare_data(cfg, run)
    table = group_stage.per_group(cfg, run, data, ["sft", "gdpo"])
    assert list(table.index) == [BIRDS, OWLS, "all"]
    assert table.loc["all", "n_prompts"] == len(data.prompts["test"])
    versus = group_stage.versus_per_group(data, own, ["sft"], run_dir)   # same prompts checked
    assert set(versus.group) == {OWLS, BIRDS}
    assert np.all(versus.dropna().conditioned.between(0, 0.8326))

    zero, ranking = group_stage.zero_shot(cfg, run, data, "larks", own, ["sft"])
    assert {g for g, *_ in ranking} == {OWLS, BIRDS} and all(n == 16 for *_, n in ranking)
    assert set(zero.predictor) == {"uniform", "nearest p*", f"conditioned, named {LARKS}",
                                   "conditioned, named nearest", "per-group model, nearest"}
    assert (zero.n_prompts == 16 * 3).all() and zero.jsd.between(0, 0.8326).all()
    # Larks answer halfway between the two: the nearest group's answers are closer than uniform.
    by = zero.set_index("predictor").jsd
    assert by["nearest p*"] < by["uniform"]
