"""SNAP movie reviews (real sample) and the authors' hub datasets (normaliser; offline error)."""
from __future__ import annotations

import numpy as np
import pytest

from gdpolib import config, runs
from gdpolib.beliefs import parse_completion
from gdpolib.data import hub
from gdpolib.data.movies import MovieFormatError, load_movies, movie_beliefs, parse_snap
from gdpolib.stages.data import prepare_data


def test_real_sample_histograms(movies_txt):
    d = load_movies(movies_txt)
    assert len(d.reviews) == 100 and d.skipped == []
    qbs, resp = movie_beliefs(d)
    hist = {q.qid: (np.round(q.p_star * sum(len(v) for v in resp[q.qid].values())).astype(int)
                    .tolist()) for q in qbs}
    # PROVENANCE.md: per-movie star counts (1..5 stars -> belief ids 0..4).
    assert hist == {"movie-B00004CK40": [0, 0, 0, 4, 7], "movie-B00004CK47": [4, 2, 7, 5, 8],
                    "movie-B000BI1YVU": [0, 1, 4, 3, 8], "movie-B0002IQNAG": [0, 0, 3, 12, 32]}
    q = next(q for q in qbs if q.qid == "movie-B00004CK40")
    assert q.beliefs == [3, 4] and q.labels[4] == "5 stars"
    assert all("<br" not in t and "&quot;" not in t for v in resp.values() for ts in v.values()
               for t in ts)


def test_malformed_lines(tmp_path):
    good = ("product/productId: B1\treview/userId: u\treview/profileName: p\t"
            "review/helpfulness: 0/0\treview/score: 5.0\treview/time: 1\treview/summary: s\t"
            "review/text: Great\tfun.")
    bad_score = good.replace("5.0", "7.0")
    text = "\n".join([good, good.replace("B1", "B2"), bad_score, "garbage line\twith tab"])
    with pytest.raises(MovieFormatError, match=r"line 3: review/score 7.0 is not 1..5"):
        parse_snap(text, "x.txt")
    d = parse_snap(text, "x.txt", bad_rows="skip")
    assert [r.line for r in d.reviews] == [1, 2] and [n for n, _ in d.skipped] == [3, 4]
    assert d.reviews[0].text == "Great fun."   # a tab inside the text is not a field break


def test_block_format():
    text = ("product/productId: B1\nreview/score: 4.0\nreview/summary: ok\n"
            "review/text: Fine &amp; dandy<br />really\n\n"
            "product/productId: B1\nreview/score: 2.0\nreview/text: Meh\n")
    d = parse_snap(text)
    assert [(r.score, r.text) for r in d.reviews] == [(4, "Fine & dandy really"), (2, "Meh")]
    with pytest.raises(MovieFormatError, match="line 7"):
        parse_snap(text.replace("review/score: 2.0", "no colon here"))


def test_movies_stage_uses_real_reviews(tmp_path, movies_txt):
    cfg = config.load_config(overrides={"output_root": str(tmp_path), "run_name": "m",
                                        "movies_path": str(movies_txt), "split_by": "question",
                                        "split_fractions": [0.5, 0.25, 0.25]})
    d = prepare_data(cfg, runs.Run.open(cfg))
    assert d.scheme == "movies" and d.k_max == 5 and len(d.questions) == 4
    reviews = {r.text for r in load_movies(movies_txt).reviews}
    for r in d.dpo["train"]:
        c, j = parse_completion(r["chosen"], 5), parse_completion(r["rejected"], 5)
        assert c.response in reviews and j.response in reviews
        assert c.belief == r["b_c"] != j.belief == r["b_r"]
        assert c.label == f"{r['b_c'] + 1} star" + ("s" if r["b_c"] else "")


# ----------------------------------------------------------------------------- hub
def mmoqa_row(**kw):
    row = {"prompt": "How is the EU doing on climate change?", "question": "EU climate?",
           "style": "Style 1: Casual", "options": ["Very good job", "Somewhat good job"],
           "accept_choice_id": 4, "accept_choice": "Somewhat good job",
           "accept_response": "They're doing alright.", "reject_choice_id": 2,
           "reject_choice": "Somewhat bad job", "reject_response": "They could do more.",
           "probabilities": [0.06, 0.08, 0.24, 0.0, 0.56, 0.06]}
    return {**row, **kw}


def test_mmoqa_normaliser():
    rows = {"train": [mmoqa_row(), mmoqa_row(accept_choice_id=2, accept_choice="Somewhat bad job",
                                             reject_choice_id=2, reject_response="Hmm.")],
            "eval": [mmoqa_row(context="Q: x A: y\n")],
            "test": [mmoqa_row(probabilities=[0.1, 0.1, 0.2, 0.0, 0.5, 0.1])]}
    out, rep, k = hub.hub_records(rows, "mmoqa")
    assert k == 6 and rep["rows"] == 4
    assert len(out["sft"]) == 4 and len(out["gdpo"]) == 4
    assert len(out["dpo"]) == 3 and rep["dpo_same_belief_skipped"] == 1
    d = out["dpo"][0]
    assert d["prompt"] == "<Q>How is the EU doing on climate change?<A>"
    assert d["chosen"] == "4<Somewhat good job>They're doing alright."
    assert d["rejected"] == "2<Somewhat bad job>They could do more."
    assert out["gdpo"][0]["rejected"] == "4<Somewhat good job>They could do more."
    assert d["majority"] is True and d["belief_mask"] == [1, 1, 1, 0, 1, 1]
    assert abs(sum(d["p_star"]) - 1) < 1e-12
    assert out["sft"][2]["prompt"].startswith("Q: x A: y\n<Q>")
    # One eval-prompt row per (split, prompt); rows per prompt are NOT merged into one record.
    assert len(out["prompts"]) == 3
    assert out["prompts"][0]["labels"][2] == "Somewhat bad job"


def test_prompt_probability_disagreement_is_reported():
    rows = {"train": [mmoqa_row(), mmoqa_row(probabilities=[0.5, 0.5, 0, 0, 0, 0])]}
    _, rep, _ = hub.hub_records(rows, "mmoqa")
    assert rep["prompt_p_star_disagreements"] == 1


def test_movie_normaliser():
    rows = {"train": [{"prompt": "Review the movie", "accept_choice_id": 4,
                       "accept_response": "Loved it", "reject_choice_id": 0,
                       "reject_response": "Awful", "probabilities": [0.1, 0, 0.2, 0.2, 0.5]}]}
    out, _, k = hub.hub_records(rows, "movie")
    assert k == 5
    assert out["dpo"][0]["chosen"] == "4<rating 4>Loved it"
    assert out["dpo"][0]["rejected"] == "0<rating 0>Awful"
    assert out["gdpo"][0]["rejected"] == "4<rating 4>Awful"


def test_bad_hub_row():
    with pytest.raises(hub.HubDataError, match="train row 0"):
        hub.hub_records({"train": [mmoqa_row(accept_choice_id=9)]}, "mmoqa")


def test_dataset_names():
    assert hub.kind_of("Binwei01/movie_review_large") == "movie"    # not 'movie_reviews' (B7)
    assert hub.kind_of("Binwei01/mmoqa_sa") == "mmoqa"
    with pytest.raises(hub.HubDataError, match="known"):
        hub.kind_of("Binwei01/other")


def test_hub_offline_error(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'Binwei01/mmoqa_sa' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(hub.HubDataError, match="Offline"):
        hub.load_hub_rows("Binwei01/mmoqa_sa")


def test_hub_stage_with_fake_hub(monkeypatch, tmp_path):
    import datasets

    calls = []

    def fake(name, split, revision=None):
        calls.append((name, split))
        return [mmoqa_row(prompt=f"{split} prompt {i}") for i in range(3)]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    cfg = config.load_config(overrides={"output_root": str(tmp_path), "run_name": "h",
                                        "hub_dataset": "Binwei01/mmoqa_sa"})
    d = prepare_data(cfg, runs.Run.open(cfg))
    assert calls == [("Binwei01/mmoqa_sa", s) for s in ("train", "eval", "test")]
    assert d.k_max == 6 and d.gdpo["test"].num_rows == 3 and d.prompts["eval"].num_rows == 3
