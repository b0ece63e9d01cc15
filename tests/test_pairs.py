"""SFT/DPO/GDPO records and splits: properties on real data, statistics, leakage, the stage."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from gdpolib import config, runs
from gdpolib.beliefs import BeliefError, OptionsScheme, Stance6Scheme, load_option_map, parse_completion
from gdpolib.data.goqa import load_goqa
from gdpolib.data.pairs import (LeakageError, assign_splits, build_records, check_leakage,
                                goqa_items, prepare_data)
from gdpolib.data.responses import (OpenAIGenerator, ResponseError, ResponseGenerator,
                                    StyledQuestion, TemplateGenerator, parse_styled_reply)


@pytest.fixture(scope="module")
def data(goqa_csv):
    return load_goqa(goqa_csv)


def make_items(qbs, n_styles=3, seed=0):
    styled, _ = TemplateGenerator(seed).generate([(q.qid, q.question, q.options) for q in qbs],
                                                 n_styles)
    return goqa_items(qbs, styled)


@pytest.fixture(scope="module", params=["options", "stance6"])
def built(request, data, option_map_path):
    scheme = (OptionsScheme() if request.param == "options"
              else Stance6Scheme(load_option_map(option_map_path)))
    qbs, _ = scheme.apply(data.questions, "S. Africa")
    items = make_items(qbs)
    assign_splits(items, "question", [0.8, 0.1, 0.1], seed=0)
    rows, st = build_records(items, sft_per_prompt=4, pairs_per_prompt=4, seed=0)
    return scheme, items, rows


def test_record_vectors(built):
    scheme, items, rows = built
    for kind in ("sft", "dpo", "gdpo", "prompts"):
        assert rows[kind]
        for r in rows[kind]:
            p, m = np.array(r["p_star"]), np.array(r["belief_mask"])
            assert len(p) == len(m) == scheme.k_max
            assert abs(p.sum() - 1) < 1e-9 and np.all(p >= 0)
            assert np.all(p[m == 0] == 0)
    for r in rows["prompts"]:
        assert len(r["labels"]) == len(r["references"]) == scheme.k_max
        assert all(bool(lab) == bool(m) for lab, m in zip(r["labels"], r["belief_mask"]))


def test_formats(built):
    scheme, items, rows = built
    for r in rows["sft"]:
        assert r["prompt"].startswith("<Q>") and r["prompt"].endswith("\n<A>")
        p = parse_completion(r["completion"], scheme.k_max, r["belief_mask"])
        assert p.valid and p.belief == r["b"] and r["completion"][0] == str(r["b"])
        assert r["majority"] == (r["b"] == int(np.argmax(r["p_star"])))
        # The prompt lists each belief with its digit.
        assert f"\n{r['b']}. {p.label}\n" in r["prompt"]


def test_dpo_pairs_never_share_a_belief(built):
    scheme, _, rows = built
    for r in rows["dpo"]:
        c = parse_completion(r["chosen"], scheme.k_max, r["belief_mask"])
        j = parse_completion(r["rejected"], scheme.k_max, r["belief_mask"])
        assert c.valid and j.valid
        assert (c.belief, j.belief) == (r["b_c"], r["b_r"]) and c.belief != j.belief


def test_gdpo_pairs_always_share_the_chosen_belief(built):
    scheme, _, rows = built
    assert len(rows["gdpo"]) == len(rows["dpo"])
    for g, d in zip(rows["gdpo"], rows["dpo"]):
        c = parse_completion(g["chosen"], scheme.k_max, g["belief_mask"])
        j = parse_completion(g["rejected"], scheme.k_max, g["belief_mask"])
        assert c.belief == j.belief == g["b_c"] and c.label == j.label
        assert j.response != c.response
        # Same draws as DPO: the GDPO rejected text is the DPO rejected response under b_c.
        assert j.response == parse_completion(d["rejected"]).response
        assert g["chosen"] == d["chosen"]


def _freq_test(draws, p):
    support = np.flatnonzero(p > 0)
    counts = np.bincount(draws, minlength=len(p))
    assert counts[p == 0].sum() == 0
    return stats.chisquare(counts[support], p[support] * len(draws)).pvalue


def test_belief_frequencies_match_p_star(data):
    # One real question, many draws: b (SFT) and b_c (DPO) ~ p*, b_r uniform on B \ {b_c}.
    qb = next(q for q in OptionsScheme().apply(data.questions, "S. Africa")[0]
              if len(q.beliefs) >= 4)
    items = make_items([qb], n_styles=1)
    for it in items:
        it.split = "train"
    rows, _ = build_records(items, sft_per_prompt=4000, pairs_per_prompt=4000, seed=123)
    p = qb.p_star
    assert _freq_test(np.array([r["b"] for r in rows["sft"]]), p) > 0.001
    assert _freq_test(np.array([r["b_c"] for r in rows["dpo"]]), p) > 0.001
    b_c = np.array([r["b_c"] for r in rows["dpo"]])
    b_r = np.array([r["b_r"] for r in rows["dpo"]])
    maj = qb.majority
    others = np.full(len(p), 0.0)
    others[[k for k in qb.beliefs if k != maj]] = 1.0
    assert _freq_test(b_r[b_c == maj], others / others.sum()) > 0.001
    # Power check: the same test rejects a wrong target (uniform over B).
    uniform = qb.mask / qb.mask.sum()
    assert _freq_test(np.array([r["b"] for r in rows["sft"]]), uniform) < 1e-6


def test_split_by_question_has_no_leak(data):
    qbs, _ = OptionsScheme().apply(data.questions, "United States")
    items = make_items(qbs)
    assign_splits(items, "question", [0.8, 0.1, 0.1], seed=3)
    where: dict[str, set] = {}
    text: dict[str, set] = {}
    for it in items:
        where.setdefault(it.qid, set()).add(it.split)
        text.setdefault(" ".join(it.qb.question.lower().split()), set()).add(it.split)
    assert all(len(s) == 1 for s in where.values())
    assert all(len(s) == 1 for s in text.values())      # duplicate question texts travel together
    n = {s: sum(1 for v in where.values() if v == {s}) for s in ("train", "eval", "test")}
    assert n["eval"] > 0 and n["test"] > 0 and n["train"] > 5 * n["test"]


def test_split_by_prompt_and_leak_detection(data):
    qbs, _ = OptionsScheme().apply(data.questions, "S. Africa")
    items = make_items(qbs)
    a = assign_splits(items, "prompt", [0.8, 0.1, 0.1], seed=0)
    b = assign_splits(make_items(qbs), "prompt", [0.8, 0.1, 0.1], seed=0)
    assert a == b                                        # seeded
    assert a != assign_splits(make_items(qbs), "prompt", [0.8, 0.1, 0.1], seed=1)
    # by prompt, a question's styles may land in different splits ...
    spread = {}
    for it in items:
        spread.setdefault(it.qid, set()).add(it.split)
    assert any(len(s) > 1 for s in spread.values())
    # ... which by-question leakage checking refuses loudly.
    with pytest.raises(LeakageError, match="question"):
        check_leakage(items, "question")
    items[1].prompt = items[0].prompt
    items[1].split = "test" if items[0].split != "test" else "train"
    with pytest.raises(LeakageError, match="prompt"):
        check_leakage(items, "prompt")


def test_records_are_deterministic(data):
    qbs, _ = OptionsScheme().apply(data.questions, "S. Africa")
    one = make_items(qbs[:10])
    two = make_items(qbs[:10])
    for its in (one, two):
        assign_splits(its, "prompt", [0.8, 0.1, 0.1], 0)
    assert build_records(one, 3, 3, 0)[0] == build_records(two, 3, 3, 0)[0]
    assert build_records(one, 3, 3, 0)[0]["dpo"] != build_records(one, 3, 3, 1)[0]["dpo"]


# ----------------------------------------------------------------------------- the stage
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
    assert m == {"questions": 30, **{s: d.dpo[s].num_rows for s in ("train", "eval", "test")}}
    assert sum(m[s] for s in ("train", "eval", "test")) == 30 * 3 * 2
    assert json.loads((d.path / "reports.json").read_text())["split"]["split_by"] == "prompt"
    # Unchanged params: the stage is reused, not rebuilt.
    import gdpolib.data.pairs as pairs
    monkeypatch.setattr(pairs, "build_goqa", lambda *a, **k: pytest.fail("rebuilt"))
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


# ----------------------------------------------------------------------------- responses
class CountingGenerator(ResponseGenerator):
    id = "counting"

    def __init__(self, cache_path):
        super().__init__(cache_path)
        self.calls = 0

    def _generate_missing(self, todo):
        self.calls += len(todo)
        return {(qid, st[0]): StyledQuestion(st[0], q + "?", [f"{o}!" for o in opts])
                for qid, q, opts, st in todo}


def test_response_cache_avoids_regeneration(tmp_path):
    items = [("q1", "Tea", ["Yes", "No"]), ("q2", "Coffee", ["Yes", "No", "Maybe"])]
    g = CountingGenerator(tmp_path / "c.jsonl")
    out, rep = g.generate(items, 2)
    assert g.calls == 4 and rep.cache_hits == 0
    g2 = CountingGenerator(tmp_path / "c.jsonl")
    out2, rep2 = g2.generate(items, 3)
    assert g2.calls == 2 and rep2.cache_hits == 4           # only the new style is generated
    assert out2["q2"][0].responses == out["q2"][0].responses == ["Yes!", "No!", "Maybe!"]


def test_template_generator_varies_and_is_deterministic():
    items = [("q1", "Do you like tea?", ["Yes", "No", "Don't know"])]
    a, _ = TemplateGenerator(0).generate(items, 6)
    b, _ = TemplateGenerator(0).generate(items, 6)
    assert [s.__dict__ for s in a["q1"]] == [s.__dict__ for s in b["q1"]]
    assert len({s.question for s in a["q1"]}) == 6
    for s in a["q1"]:
        assert len(set(s.responses)) == 3


REPLY = """Style 1: Plain and direct
Q: Do you enjoy drinking tea?
A1: [Yes] I really do enjoy a cup every morning.
A2: [No] Not for me, I never liked the taste.

Style 2: Casual and friendly
Q: Tea, yay or nay?
A1: [yes] Totally, love the stuff!
A2: [Maybe] Can't stand it honestly.

Style 3: Formal and polite
Q: Would you say you like tea?
A1: [Yes] Indeed, I appreciate it greatly.
A2: [No] I must say it does not appeal to me.
Some junk line here
"""


def test_strict_parsing_of_api_replies():
    from gdpolib.data.responses import STYLES
    kept, rejected = parse_styled_reply(REPLY, ["Yes", "No"], STYLES[:3])
    assert list(kept) == ["plain"]
    assert kept["plain"].question == "Do you enjoy drinking tea?"
    assert kept["plain"].responses[1] == "Not for me, I never liked the taste."
    why = dict(rejected)
    assert "labelled [Maybe]" in why["casual"] and "unexpected line" in why["formal"]
    assert parse_styled_reply("Sure! Here you go.", ["Yes", "No"], STYLES[:1])[0] == {}


def test_openai_generator_needs_endpoint_and_key(monkeypatch):
    with pytest.raises(ResponseError, match="api_base"):
        OpenAIGenerator(None, None, "X_KEY", "S. Africa")
    g = OpenAIGenerator("http://127.0.0.1:9/v1", "m", "GDPO_TEST_NO_SUCH_KEY", "S. Africa")
    monkeypatch.delenv("GDPO_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(ResponseError, match="GDPO_TEST_NO_SUCH_KEY"):
        g.generate([("q", "Tea?", ["Yes", "No"])], 1)
    prompt = g.prompt_for("Tea?", ["Yes", "No"], [("plain", "plain and direct")])
    assert "S. Africa" in prompt and "A1: [Yes]" in prompt and "Choices: 1. Yes; 2. No" in prompt


def test_openai_generator_parses_fake_endpoint(monkeypatch, tmp_path):
    import gdpolib.data.responses as R
    monkeypatch.setenv("FAKE_KEY", "k")
    g = OpenAIGenerator("http://fake/v1", "m", "FAKE_KEY", "S. Africa",
                        cache_path=tmp_path / "api.jsonl", retries=0)
    calls = []
    monkeypatch.setattr(g, "_post", lambda prompt: calls.append(prompt) or REPLY)
    out, rep = g.generate([("q", "Tea?", ["Yes", "No"])], 3)
    assert [s.style for s in out["q"]] == ["plain"] and len(rep.rejected) == 2
    assert len(calls) == 1
    g2 = OpenAIGenerator("http://fake/v1", "m", "FAKE_KEY", "S. Africa",
                         cache_path=tmp_path / "api.jsonl", retries=0)
    monkeypatch.setattr(g2, "_post", lambda prompt: pytest.fail("should come from cache"))
    out2, _ = g2.generate([("q", "Tea?", ["Yes", "No"])], 1)
    assert out2["q"][0].responses == out["q"][0].responses
    assert R.clean_reply("A1: [x] junk") is None


def test_plots_save_files(tmp_path, data):
    from gdpolib import plots

    qbs, _ = OptionsScheme().apply(data.questions, "S. Africa")
    items = make_items(qbs[:20], n_styles=1)
    for it in items:
        it.split = "train"
    rows, _ = build_records(items, 20, 1, 0)
    figs = {"counts": plots.plot_country_counts(data.country_counts(), highlight=["S. Africa"]),
            "share": plots.plot_majority_share({"S. Africa": [q.p_star for q in qbs]}),
            "bars": plots.plot_p_star_bars(qbs, n=4),
            "draws": plots.plot_sampled_vs_target(rows["sft"], 10)}
    for name, fig in figs.items():
        path = plots.save(fig, tmp_path, name)
        assert path.exists() and path.stat().st_size > 5000


def test_hf_generator_rejects_malformed_replies(tmp_path, monkeypatch):
    from gdpolib.data.responses import HFGenerator

    g = HFGenerator("fake-model", cache_path=tmp_path / "hf.jsonl", retries=1)
    attempts = []

    def fake_chat(prompts, sample):
        attempts.append(sample)
        out = []
        for p in prompts:
            if p.startswith("Rewrite"):
                out.append("So, tea: nice or not, friend?" if sample else "Q: <|im_end|>")
            elif '"No"' in p:
                out.append("I really do not enjoy it at all." if sample else "No")   # too short
            elif '"Maybe"' in p:
                out.append("A1: [Maybe] junk")                                   # always junk
            else:
                out.append("Yes, I drink it every single day.")
        return out

    monkeypatch.setattr(g, "_chat", fake_chat)
    out, rep = g.generate([("q1", "Do you like tea?", ["Yes", "No"]),
                           ("q2", "Coffee?", ["Yes", "Maybe"])], 2)
    assert attempts == [False, True, False, True]      # paraphrases, answers: greedy + 1 retry
    assert [s.style for s in out["q1"]] == ["plain", "casual"]
    assert out["q1"][1].question == "So, tea: nice or not, friend?"
    assert out["q1"][0].responses == ["Yes, I drink it every single day.",
                                      "I really do not enjoy it at all."]
    assert "q2" not in out                              # junk is rejected, never kept
    assert {r[0] for r in rep.rejected} == {"q2"} and len(rep.rejected) == 2
    assert len((tmp_path / "hf.jsonl").read_text().splitlines()) == 2
