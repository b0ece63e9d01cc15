"""The data stage for any group of any survey: OpinionQA groups, a user's survey file, one model
conditioned on several groups; the survey parameters; a bad file or group fails before anything
is written."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gdpolib import config, runs
from gdpolib.config import PROJECT_ROOT, ConfigError
from gdpolib.data import goqa, opinionqa
from gdpolib.data.records import DataError
from gdpolib.data.survey import SurveyRow
from gdpolib.data.survey_files import write_survey
from gdpolib.stages.data import prepare_data

SMALL = {"max_questions": 30, "sft_per_prompt": 2, "pairs_per_prompt": 2}


def _cfg(tmp_path, **over):
    return config.load_config(overrides={"output_root": str(tmp_path), **SMALL, **over})


def _prompts(data, split="test"):
    return {(r["qid"], r["style"]): r for r in data.prompts[split]}


def test_survey_parameters_go_together(tmp_path):
    assert _cfg(tmp_path, group="pk").country == "pk"                  # group wins (goqa)
    assert _cfg(tmp_path, country="us", group="pk").run_dir_name == "pk-tiny"
    assert _cfg(tmp_path).run_dir_name == "sa-tiny"                   # as before
    oqa = {"survey": "opinionqa", "opinionqa_path": str(tmp_path)}   # the config checks it exists
    cfg = _cfg(tmp_path, group="Democrat", **oqa)
    assert (cfg.run_dir_name, cfg.group_label) == ("oqa-democrat-tiny", "Democrat")
    cfg = _cfg(tmp_path, groups=["us", "pk", "sa"])
    assert cfg.run_dir_name == "us+pk+sa-tiny"
    assert cfg.group_label == "United States + Pakistan + S. Africa"
    survey = tmp_path / "my_survey.csv"
    survey.write_text("x")
    cfg = _cfg(tmp_path, survey_path=str(survey), group="Night owls")  # survey: file implied
    assert (cfg.survey, cfg.run_dir_name) == ("file", "my_survey-night-owls-tiny")
    for over, match in [
            (oqa, r"'group' .*survey=opinionqa needs a group"),
            ({"survey": "file"}, r"'survey_path' .*survey=file needs survey_path"),
            ({"survey": "goqa", "survey_path": str(survey)}, r"'survey_path' .*survey is goqa"),
            ({"group": "us", "groups": ["pk", "sa"]}, r"'groups' .*not both"),
            ({"groups": ["us", "Atlantis"]}, r"'groups' .*unknown country 'Atlantis'")]:
        with pytest.raises(ConfigError, match=match):
            _cfg(tmp_path, **over)


def test_opinionqa_group_data_stage(tmp_path, opinionqa_dir):
    cfg = _cfg(tmp_path, survey="opinionqa", group="POLPARTY_Democrat",
               opinionqa_path=str(opinionqa_dir))
    run = runs.Run.open(cfg)
    data = prepare_data(cfg, run)
    assert data.groups == ["Democrat"] and len(data.questions) == 30
    assert run.metrics()["data"]["questions"] == 30
    oqa = opinionqa.load_opinionqa(opinionqa_dir, ["Democrat"])
    dists = {q.qid: q.dists["Democrat"] for q in oqa.questions}
    for r in data.prompts["test"]:
        n = len(dists[r["qid"]])
        np.testing.assert_allclose(r["p_star"][:n], dists[r["qid"]], rtol=0, atol=1e-15)
        assert r["prompt"].startswith("<Q>") and r["group"] == "Democrat"
    meta = json.loads((data.path / "meta.json").read_text())
    assert meta["survey"] == "opinionqa" and "country" not in meta


def test_a_survey_file_gives_the_same_records_as_its_source(tmp_path, goqa_csv):
    """GlobalOpinionQA rows written to a survey file and read back: the same data stage."""
    rows = [r for r in goqa.to_survey(goqa.load_goqa(goqa_csv)).rows if r.group == "S. Africa"]
    path = write_survey(rows, tmp_path / "sa_only.jsonl")
    source = prepare_data(c := _cfg(tmp_path), runs.Run.open(c))
    mine = prepare_data(c := _cfg(tmp_path, survey_path=str(path)), runs.Run.open(c))
    assert mine.groups == ["S. Africa"] and c.run_dir_name == "sa_only-tiny"
    assert [q.qid for q in mine.questions] == [q.qid for q in source.questions]
    assert all(np.array_equal(a.p_star, b.p_star) for a, b in zip(mine.questions, source.questions))
    for kind in ("sft", "gdpo", "prompts"):
        for split in ("train", "test"):
            assert getattr(mine, kind)[split].to_list() == getattr(source, kind)[split].to_list()


def test_one_model_for_several_groups_keeps_each_groups_own_test_prompts(tmp_path):
    cond_cfg = _cfg(tmp_path, groups=["us", "pk"], max_questions=20)
    cond = prepare_data(cond_cfg, runs.Run.open(cond_cfg))
    assert cond.groups == ["United States", "Pakistan"] and len(cond.questions) == 40
    for g, alias in zip(cond.groups, ("us", "pk")):
        own_cfg = _cfg(tmp_path, country=alias, max_questions=20)
        own = prepare_data(own_cfg, runs.Run.open(own_cfg))
        for split in ("train", "test"):
            mine = {(q.removesuffix(f"@{g}"), s): r for (q, s), r in _prompts(cond, split).items()
                    if r["group"] == g}
            assert mine.keys() == _prompts(own, split).keys()      # the same split
            for key, r in mine.items():
                assert r["prompt"] == f"<G>{g}\n" + _prompts(own, split)[key]["prompt"]
                assert r["p_star"] == _prompts(own, split)[key]["p_star"]
        # the group's training records are its own run's draws, with the group in the prompt
        own_sft = sorted((r["qid"], r["completion"]) for r in own.sft["train"])
        cond_sft = sorted((r["qid"].removesuffix(f"@{g}"), r["completion"])
                          for r in cond.sft["train"] if r["group"] == g)
        assert cond_sft == own_sft
    assert cond.counts["sft"]["train"] == len(cond.sft["train"]) > 0
    # one split report for the run (notebooks and metrics.json read it): the groups' counts summed
    split, per_group = cond.reports["split"], cond.reports["groups"]
    assert split["protocol"] == "seen_questions"
    for s in ("train", "eval", "test"):
        assert split["prompts"][s] == sum(r["split"]["prompts"][s] for r in per_group.values())
        assert split["prompts"][s] == len(cond.prompts[s])
    with pytest.raises(DataError, match="needs a run of one group"):
        prepare_data(cond_cfg, runs.Run.open(cond_cfg), p_star_override={"goqa-0@Pakistan": [1]})


def _pipeline(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "gdpolib.pipeline", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=180, env=env)


def test_a_malformed_file_or_an_unknown_group_fails_before_anything_is_written(tmp_path):
    good = SurveyRow("Night owls", "q1", "Coffee?", ["Yes", "No"], np.array([0.7, 0.3]))
    path = write_survey([good], tmp_path / "owls.csv")
    path.write_text(path.read_text() + 'Early birds,Coffee?,"[""Yes"", ""No""]","[0.2, 0.2]",,,q1\n')
    out = tmp_path / "outputs"
    res = _pipeline("-p", "survey_path", str(path), "-p", "bad_rows", "error",
                    "-p", "output_root", str(out))
    assert res.returncode == 2, res.stderr
    assert "parameter 'survey_path'" in res.stderr
    assert "1 malformed row(s) of 2: row 2 (line 3): distribution sums to 0.4000" in res.stderr
    assert not out.exists()                                         # nothing written
    res = _pipeline("-p", "survey_path", str(path), "-p", "group", "Night owl",
                    "-p", "output_root", str(out))                  # skip: row 2 dropped
    assert res.returncode == 2 and "unknown group 'Night owl'" in res.stderr
    assert "closest: Night owls" in res.stderr and not out.exists()


def test_an_unknown_opinionqa_group_fails_before_anything_is_written(tmp_path, opinionqa_dir):
    out = tmp_path / "outputs"
    res = _pipeline("-p", "survey", "opinionqa", "-p", "group", "Republcan",
                    "-p", "opinionqa_path", str(opinionqa_dir), "-p", "output_root", str(out))
    assert res.returncode == 2 and "closest: Republican" in res.stderr and not out.exists()


def test_opinionqa_without_its_data_fails_in_one_line_saying_how_to_add_it(tmp_path):
    out = tmp_path / "outputs"
    env = {k: v for k, v in os.environ.items() if k != "GDPO_DATA_DIR"}
    res = subprocess.run([sys.executable, "-m", "gdpolib.pipeline", "-f", "params/oqa-democrat.yaml",
                          "-p", "output_root", str(out)], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=180, env=env)
    assert res.returncode == 2 and not out.exists()
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "'opinionqa_path'" in lines[0] and "GDPO_DATA_DIR" in lines[0]


def test_few_shot_gdpo_says_why_a_small_survey_cannot_have_it(tmp_path):
    from gdpolib.stages.fewshot_gdpo import gpo_experiment

    rows = [SurveyRow(g, f"q{i}", f"Question {i}?", ["Yes", "No"], np.array([0.3, 0.7]))
            for g in ("A", "B", "C") for i in range(40)]
    cfg = _cfg(tmp_path, survey_path=str(write_survey(rows, tmp_path / "abc.csv")), group="A",
               gpo_fewshot_gdpo=True)      # off in the demo's defaults
    exp, why = gpo_experiment(cfg, runs.Run.open(cfg), None)
    assert exp is None and why == f"survey {cfg.survey_path} has 0 groups with at least " \
                                  f"gpo_min_questions questions; GPO needs 4"
    exp, why = gpo_experiment(cfg.replace(gpo_min_questions=40), runs.Run.open(cfg), None)
    assert exp is None and "has 3 groups" in why
    cond = _cfg(tmp_path, survey_path=cfg.survey_path, groups=["A", "B"], gpo_fewshot_gdpo=True)
    assert gpo_experiment(cond, None, None) == (None, "a run of several groups (groups) has no "
                                                      "one group to predict")
