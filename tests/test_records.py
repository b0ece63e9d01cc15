"""SFT/DPO/GDPO records and splits: properties on real data, statistics, leakage."""
from __future__ import annotations


import numpy as np
import pytest
from scipy import stats

from gdpolib.beliefs import parse_completion
from gdpolib.data import goqa
from gdpolib.data.goqa import load_goqa
from gdpolib.data.records import DataError, build_records, goqa_items
from gdpolib.data.splits import (LeakageError, assign_splits, check_leakage, heldout_style_ids,
                                 protocol_name, shared_span_shares, split_report)
from gdpolib.data.responses import OPTION_LAYOUTS, TemplateGenerator, format_prompt
from gdpolib.schemes import OptionsScheme, Stance6Scheme, load_option_map


@pytest.fixture(scope="module")
def data(goqa_csv):
    return load_goqa(goqa_csv)


def make_items(qbs, n_styles=3, seed=0, recast=()):
    styled, _ = TemplateGenerator(seed, recast=recast).generate(
        [(q.qid, q.question, q.options) for q in qbs], n_styles)
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
        # The prompt lists each belief with its digit, in the layout of the prompt's style.
        entry = OPTION_LAYOUTS[r["style"]]
        assert entry.format(k=r["b"], label=p.label) in r["prompt"].split("\n", 1)[1]


def test_each_style_lists_the_options_in_its_own_layout():
    labels, mask = ["Yes", "No", "Don't know"], [1, 1, 1]
    assert format_prompt("Tea?", labels, mask) == "<Q>Tea?\n0. Yes\n1. No\n2. Don't know\n<A>"
    assert format_prompt("Tea?", labels, mask, "formal") == (
        "<Q>Tea?\n0 = Yes\n1 = No\n2 = Don't know\n<A>")
    listings = {format_prompt("Tea?", labels, mask, s).split("\n", 1)[1] for s in OPTION_LAYOUTS}
    assert len(listings) == len(OPTION_LAYOUTS)              # no two styles share a layout


def test_shared_span_share_is_the_longest_common_run_of_words():
    train = ["<Q>Do you like tea?\n0. Yes\n1. No\n<A>", "<Q>Is it raining today?\n<A>"]
    shares = shared_span_shares(["Do you like tea?", "Is it snowing today?", "Cats."], train)
    # 5 tokens "Do you like tea ?" all shared; "Is it" (2 of 5); "Cats ." shares only "."
    np.testing.assert_allclose(shares, [1.0, 2 / 5, 1 / 2])


def test_overlap_report_catches_a_fixed_sentence_in_front_of_a_training_prompt():
    from gdpolib.data.records import PromptItem
    from gdpolib.data.splits import overlap_report

    def item(prompt, split):
        return PromptItem("q", "s", prompt, None, None, {}, split)

    train = "<Q>Do you like tea?\n0. Yes\n1. No\n<A>"                     # 17 word tokens
    items = [item(train, "train"), item("<Q>Is it raining?\n0. Yes\n<A>", "train"),
             item("Answer briefly. " + train, "test"),                    # 3 + 17 tokens
             item("<Q>Would you say tea is good?\n0 = Yes\n1 = No\n<A>", "test")]
    rep = overlap_report(items)
    assert rep["containing_a_training_prompt"] == 1 and rep["test_prompts"] == 2
    # the prefixed prompt shares all 17 of its 20 tokens; the reworded one (19 tokens) only
    # its tail "No < A >" (4)
    assert rep["longest_shared_span_max"] == round(17 / 20, 4)
    assert rep["longest_shared_span_mean"] == round((17 / 20 + 4 / 19) / 2, 4)


def test_held_out_test_prompts_do_not_repeat_a_training_prompt(data):
    qbs, _ = OptionsScheme().apply(data.questions, "S. Africa")
    items = make_items(qbs, recast=["formal"])
    assign_splits(items, "prompt", [0.8, 0.1, 0.1], seed=0, heldout_styles=["formal"])
    overlap = split_report(items, "prompt", [0.8, 0.1, 0.1], 0, ["formal"])["overlap"]
    assert overlap["containing_a_training_prompt"] == 0 and overlap["test_prompts"] == 62
    assert overlap["longest_shared_span_max"] < 0.7          # reworded question, other layout


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


def test_heldout_styles_split_seen_questions_in_unseen_phrasings(data):
    qbs, _ = OptionsScheme().apply(data.questions, "S. Africa")
    items = make_items(qbs)
    heldout = heldout_style_ids("prompt", 3, 1)
    assert heldout == ["formal"]                      # the last of plain, casual, formal
    a = assign_splits(items, "prompt", [0.8, 0.1, 0.1], 0, heldout)
    assert a == assign_splits(make_items(qbs), "prompt", [0.8, 0.1, 0.1], 0, heldout)   # seeded
    splits: dict[str, dict[str, set]] = {}
    for it in items:
        splits.setdefault(it.split, {}).setdefault(it.qid, set()).add(it.style)
        assert (it.split == "train") == (it.style != "formal")
    # every question is trained (in plain and casual) and asked once more, in the held-out style
    assert set(splits["train"]) == {q.qid for q in qbs}
    assert all(styles == {"plain", "casual"} for styles in splits["train"].values())
    assert not set(splits["eval"]) & set(splits["test"])          # eval and test share no question
    assert set(splits["eval"]) | set(splits["test"]) == {q.qid for q in qbs}
    assert abs(len(splits["eval"]) - len(splits["test"])) <= 2    # f_eval : f_test = 1 : 1
    rep = split_report(items, "prompt", [0.8, 0.1, 0.1], 0, heldout)
    assert rep["protocol"] == "seen_questions" == protocol_name("prompt", heldout)
    assert rep["styles"] == {"train": ["casual", "plain"], "eval": ["formal"], "test": ["formal"]}
    assert rep["prompts"]["test"] == rep["questions"]["test"] == len(splits["test"])
    assert rep["heldout_styles"] == ["formal"] and "no training prompt uses" in rep["held_out"]


def test_leakage_check_fails_when_a_test_style_was_trained_on(data):
    qbs, _ = OptionsScheme().apply(data.questions, "S. Africa")
    items = make_items(qbs[:30], n_styles=4)
    heldout = heldout_style_ids("prompt", 4, 2)
    assert heldout == ["formal", "curious"]
    assign_splits(items, "prompt", [0.8, 0.1, 0.1], 0, heldout)
    check_leakage(items, "prompt", heldout)                       # as built: clean
    train = next(it for it in items if it.split == "train")
    train.split = "test"                                          # a trained style at test time
    with pytest.raises(LeakageError, match=f"style {train.style!r}, which was trained on"):
        check_leakage(items, "prompt", heldout)
    train.split = "train"
    held = next(it for it in items if it.split == "test")
    held.split = "train"                                          # a held-out style trained on
    with pytest.raises(LeakageError, match="has the held-out style"):
        check_leakage(items, "prompt", heldout)
    held.split = "test"
    other = next(it for it in items if it.qid == held.qid and it.style != held.style
                 and it.style in heldout)
    other.split = "eval"                                          # one question in eval and test
    with pytest.raises(LeakageError, match=r"question \(eval/test\)"):
        check_leakage(items, "prompt", heldout)


def test_heldout_style_rules():
    assert heldout_style_ids("question", 3, 1) == [] and heldout_style_ids("prompt", 3, 0) == []
    with pytest.raises(DataError, match="leaves no training style"):
        heldout_style_ids("prompt", 2, 2)
    with pytest.raises(ValueError, match="need split_by 'prompt'"):
        assign_splits([], "question", [0.8, 0.1, 0.1], 0, ["formal"])
    assert protocol_name("question") == "unseen_questions"
    assert protocol_name("prompt", []) == "seen_prompts"


def test_records_are_deterministic(data):
    qbs, _ = OptionsScheme().apply(data.questions, "S. Africa")
    one = make_items(qbs[:10])
    two = make_items(qbs[:10])
    for its in (one, two):
        assign_splits(its, "prompt", [0.8, 0.1, 0.1], 0)
    assert build_records(one, 3, 3, 0)[0] == build_records(two, 3, 3, 0)[0]
    assert build_records(one, 3, 3, 0)[0]["dpo"] != build_records(one, 3, 3, 1)[0]["dpo"]


# ----------------------------------------------------------------------------- the stage


def test_plots_save_files(tmp_path, data):
    from gdpolib import plots

    qbs, _ = OptionsScheme().apply(data.questions, "S. Africa")
    items = make_items(qbs[:20], n_styles=1)
    for it in items:
        it.split = "train"
    rows, _ = build_records(items, 20, 1, 0)
    figs = {"counts": plots.plot_country_counts(goqa.to_survey(data).group_counts(),
                                                highlight=["S. Africa"]),
            "share": plots.plot_majority_share({"S. Africa": [q.p_star for q in qbs]}),
            "bars": plots.plot_p_star_bars(qbs, n=4),
            "draws": plots.plot_sampled_vs_target(rows["sft"], 10)}
    for name, fig in figs.items():
        path = plots.save(fig, tmp_path, name)
        assert path.exists() and path.stat().st_size > 5000
