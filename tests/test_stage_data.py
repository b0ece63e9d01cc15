"""The data stage of a run on real data: built once and reused, stance6 and split by question,
a p* override that changes the training target only."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gdpolib import config, runs
from gdpolib.beliefs import BeliefError
from gdpolib.stages import data as stage_data
from gdpolib.stages.data import prepare_data


@pytest.fixture()
def cfg(tmp_path):
    return config.load_config(overrides={"country": "sa", "output_root": str(tmp_path),
                                         "run_name": "t", "max_questions": 30,
                                         "sft_per_prompt": 2, "pairs_per_prompt": 2})


def test_prepare_data_stage(cfg, monkeypatch):
    run = runs.Run.open(cfg)
    d = prepare_data(cfg, run)
    assert d.scheme == "options" and d.k_max == 10 and len(d.questions) == 30
    assert set(d.dpo["train"].column_names) >= {"prompt", "chosen", "rejected", "qid", "style",
                                               "split", "p_star", "belief_mask", "b_c", "b_r",
                                               "majority"}
    assert set(d.sft["train"].column_names) >= {"prompt", "completion", "b"}
    assert set(d.prompts["test"].column_names) >= {"prompt", "qid", "p_star", "belief_mask",
                                                  "labels", "references"}
    m = run.metrics()["data"]
    # seen questions: all 30 trained in 5 styles, the 6th (story) split 15 / 15 into eval / test
    overlap = json.loads((d.path / "reports.json").read_text())["split"]["overlap"]
    assert m == {"questions": 30, **{s: d.dpo[s].num_rows for s in ("train", "eval", "test")},
                 "protocol": "seen_questions", "heldout_styles": ["story"],
                 "test_prompts": 15, "test_questions": 15,
                 "test_overlap": overlap["longest_shared_span_mean"]}
    assert 0 < m["test_overlap"] < 0.7 and overlap["containing_a_training_prompt"] == 0
    assert (m["train"], m["eval"], m["test"]) == (30 * 5 * 2, 15 * 2, 15 * 2)
    split = json.loads((d.path / "reports.json").read_text())["split"]
    assert split["split_by"] == "prompt" and split["styles"]["test"] == ["story"]
    assert set(d.prompts["test"]["style"]) == {"story"}
    assert d.prompts["test"]["ordinal"][0] == []              # options: no ordinal scale
    # Unchanged params: the stage is reused, not rebuilt.
    monkeypatch.setattr(stage_data, "build_survey", lambda *a, **k: pytest.fail("rebuilt"))
    again = prepare_data(cfg, run)
    assert again.dpo["train"]["chosen"] == d.dpo["train"]["chosen"]


def test_prepare_data_stance6_and_question_split(cfg):
    cfg = cfg.replace(belief_scheme="stance6", split_by="question", max_questions=None)
    d = prepare_data(cfg, runs.Run.open(cfg))
    assert d.k_max == 6 and len(d.questions) == 91
    rep = json.loads((d.path / "reports.json").read_text())["scheme"]
    assert rep["unmapped_occurrences"] == 91 and rep["skipped"] == 34
    qids = {s: set(d.prompts[s]["qid"]) for s in ("train", "eval", "test")}
    assert not (qids["train"] & qids["eval"] or qids["train"] & qids["test"]
                or qids["eval"] & qids["test"])
    run = runs.Run.open(cfg)
    assert run.metrics()["data"]["protocol"] == "unseen_questions"
    assert run.metrics()["data"]["heldout_styles"] == []
    ordinal = d.prompts["test"]["ordinal"][0]                  # stance6: class 0 is off the scale
    assert np.isnan(ordinal[0]) and ordinal[1:] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_p_star_override_keeps_true_p_star(cfg):
    run = runs.Run.open(cfg)
    base = prepare_data(cfg, run)
    q = base.questions[0]
    n = len(q.beliefs)
    pred = np.ones(n) / n
    d = prepare_data(cfg, run, p_star_override={q.qid: pred})
    assert d.path.name == "data_override"
    rec = [r for r in d.gdpo["train"].to_list() + d.gdpo["test"].to_list()
           + d.gdpo["eval"].to_list() if r["qid"] == q.qid]
    assert rec
    for r in rec:
        np.testing.assert_allclose(r["p_star"][:n], pred)
        np.testing.assert_allclose(r["p_star_true"], q.p_star)
    prompts = [r for s in ("train", "eval", "test") for r in d.prompts[s] if r["qid"] == q.qid]
    np.testing.assert_allclose(prompts[0]["p_star"], q.p_star)
    np.testing.assert_allclose(prompts[0]["p_star_target"][:n], pred)
    # The main data stage and metrics are untouched.
    assert run.metrics()["data"]["questions"] == 30
    with pytest.raises(BeliefError, match="not in the data"):
        prepare_data(cfg, run, p_star_override={"goqa-999999": [1.0]})


def test_too_few_questions_or_an_empty_split_fail_with_the_counts(cfg):
    from gdpolib.data.records import DataError

    few = cfg.replace(min_questions=200, run_name="few")
    with pytest.raises(DataError, match=r"S\. Africa has 125 usable questions .*min_questions is 200"):
        prepare_data(few, runs.Run.open(few))
    assert not (few.run_dir / "data" / "stage.json").exists()   # nothing saved as finished
    tiny = cfg.replace(max_questions=2, split_by="question", run_name="two")
    with pytest.raises(DataError, match=r"leaves no question in eval, test"):
        prepare_data(tiny, runs.Run.open(tiny))


def test_japan_with_the_defaults_fits_the_tiny_model(tmp_path):
    """The README's "any country" example: its longest prompt (~357 tokens) used to overflow a
    fixed 256-position context; the context is now sized from the run's own data."""
    from gdpolib import models
    from gdpolib.generation import max_context
    from gdpolib.stages.data import base_model, sequence_length

    cfg = config.load_config(overrides={"country": "Japan", "output_root": str(tmp_path)})
    run = runs.Run.open(cfg)
    data = prepare_data(cfg, run)
    model, tok = models.load_pretrained(base_model(cfg, run, data)[0], cfg)
    longest = data.longest(tok)
    assert longest["prompt"][0] > 256                   # the case that failed before
    length = sequence_length(cfg, data, tok, max_context(model))
    assert length == longest["sequence"][0] <= model.config.max_position_embeddings
    assert longest["prompt"][0] + cfg.max_new_tokens <= model.config.max_position_embeddings
    # a max_length that is set and too small is an error naming the question, before any step
    with pytest.raises(stage_data.ContextError, match=r"question goqa-\d+: a training sequence "
                                                      r"has \d+ tokens, more than max_length 128"):
        sequence_length(cfg.replace(max_length=128), data, tok, max_context(model))
