"""Reports: the paper's Table 2 beside ours only in the paper's setting (its JSD beside our
jsd_digits); the protocol line; ONE list of claims rendered for a run, over seeds and for the
model card; mean ± sd over seeds."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gdpolib import methods
from gdpolib.config import RunConfig
from gdpolib.report import claims, frames, seeds, table2


def test_table2_puts_paper_numbers_beside_ours_only_for_the_papers_setting():
    table = pd.DataFrame({"jsd": [0.3, 0.2], "jsd_ci": [[0.25, 0.35], [0.15, 0.26]],
                          "jsd_digits": [0.5, 0.25], "cbc": [0.9, 0.95], "n_prompts": [10, 10]},
                         index=pd.Index(["dpo", "gdpo"], name="method"))
    mine = table2.table2(table, RunConfig(country="sa", model="tiny"))
    assert list(mine.columns) == ["dpo", "gdpo"]
    assert list(mine.index) == ["jsd", "jsd_ci", "jsd_digits", "cbc"]
    assert mine.loc["jsd_ci", "gdpo"] == "[0.150, 0.260]"
    paper = table2.table2(table, RunConfig(country="sa", model="gpt2-large"))
    # the paper's JSD is the authors' convention (all belief digits): beside our jsd_digits
    assert paper.loc["jsd_digits", "paper:gdpo"] == 0.185 and paper.loc["cbc", "paper:dpo"] == 0.742
    assert np.isnan(paper.loc["jsd", "paper:gdpo"])
    md = table2.markdown_table(paper)
    assert md.splitlines()[0].startswith("| metric | dpo | gdpo | paper:dpo")
    assert "| jsd_ci | [0.250, 0.350] | [0.150, 0.260] |" in md


def test_protocol_line_says_what_is_held_out():
    split = {"protocol": "seen_questions", "held_out": "every question is trained in the other "
             "styles", "heldout_styles": ["formal"], "prompts": {"test": 62},
             "questions": {"test": 62}}
    line = frames.protocol_line(split)
    assert line.startswith("Protocol `seen_questions` (every question") and "formal" in line
    assert "test: 62 prompts over 62 questions" in line
    assert "own splits" in frames.protocol_line(None)


def _seed_runs():
    rows = []
    for seed, (sft, dpo, gdpo) in enumerate([(0.20, 0.26, 0.18), (0.21, 0.24, 0.25)]):
        for method, jsd, maj, mino in (("uniform", 0.30, None, None), ("sft", sft, None, None),
                                       ("dpo", dpo, 0.4, 0.1), ("gdpo", gdpo, 0.2, 0.15)):
            rows.append({"protocol": "seen_questions", "country": "S. Africa", "seed": seed,
                         "method": method, "jsd": jsd, "margin_majority": maj,
                         "margin_minority": mino})
    rows.append({"protocol": "unseen_questions", "country": "S. Africa", "seed": 0,
                 "method": "sft", "jsd": 0.31})
    return pd.DataFrame(rows)


def test_seed_summary_mean_sd_and_markdown():
    runs = _seed_runs()
    table = seeds.seed_summary(runs, ["protocol", "country"], ["uniform", "sft", "dpo", "gdpo"])
    assert list(zip(table.protocol, table.method)) == [
        ("seen_questions", "uniform"), ("seen_questions", "sft"), ("seen_questions", "dpo"),
        ("seen_questions", "gdpo"), ("unseen_questions", "sft")]
    gdpo = table.iloc[3]
    assert gdpo.n_seeds == 2 and gdpo.jsd_mean == pytest.approx(0.215)
    assert gdpo.jsd_sd == pytest.approx(np.std([0.18, 0.25], ddof=1))
    md = seeds.seed_markdown(table, ["protocol", "country"])
    assert md.splitlines()[0] == ("| protocol | country | method | seeds | jsd | margin_majority | "
                                  "margin_minority |")
    assert "| seen_questions | S. Africa | gdpo | 2 | 0.215 ± 0.049 | 0.200 ± 0.000 | 0.150 ± 0.000 |" in md
    assert "| unseen_questions | S. Africa | sft | 1 | 0.310 |  |  |" in md


def test_seed_findings_count_the_seeds_a_finding_holds_in():
    lines = claims.seed_findings(_seed_runs(), ["protocol", "country"])
    assert ("seen_questions / S. Africa: GDPO lowers jsd below DPO: holds in 1 of 2 seeds "
            "(difference +0.035 ± 0.064)") in lines
    assert any(x.startswith("seen_questions / S. Africa: DPO raises jsd over SFT: holds in 2 of 2")
               for x in lines)
    assert any("SFT is below uniform in jsd: holds in 2 of 2" in x for x in lines)
    assert any("margin gap is smaller than DPO's: holds in 2 of 2" in x for x in lines)
    # a cell with one method has no finding; a claim without numbers (jsd_digits) is left out
    assert not any(x.startswith("unseen_questions") for x in lines)
    assert not any("jsd_digits" in x for x in lines)


def test_the_demos_claims_count_over_seeds_and_a_zero_margin_is_not_measured():
    lines = claims.seed_findings(_seed_runs(), ["protocol", "country"], demo=True)
    # seed 0: DPO - SFT = 0.06 >= 0.05; seed 1: 0.03 (difference to the bar: +0.010, -0.020)
    assert ("seen_questions / S. Africa: DPO raises JSD over SFT by >= 0.05: holds in 1 of 2 "
            "seeds (difference -0.005 ± 0.021)") in lines
    assert any("DPO's majority-chosen margin is >= 2x its minority-chosen one: holds in 2 of 2"
               in x for x in lines)
    assert not any("well-formed" in x for x in lines)          # no CBC in these runs
    metrics = {"methods": {"sft": {"jsd": 0.2}, "dpo": {"jsd": 0.3}, "gdpo": {"jsd": 0.1}},
               "skew": {"dpo": {"margin_majority": 0.0, "margin_minority": 0.1},
                        "gdpo": {"margin_majority": 0.2, "margin_minority": 0.1}}}
    found = {claim: ok for claim, ok, _ in claims.paper_findings(metrics)}
    assert found["GDPO's minority/majority margin ratio is closer to 1 than DPO's"] is None
    assert found["DPO raises JSD over SFT by >= 0.05"] is True


def test_findings_state_each_claim_with_its_numbers_and_skip_missing_ones():
    table = pd.DataFrame({"jsd": [0.20, 0.26, 0.18], "belief_mass": [0.98, 0.80, 0.97],
                          "margin_majority": [np.nan, 0.41, 0.13],
                          "margin_minority": [np.nan, 0.09, 0.03]},
                         index=pd.Index(["sft", "dpo", "gdpo"], name="method"))
    lines = claims.findings(table)
    assert lines[0] == "[yes] DPO raises jsd over SFT: DPO 0.260, SFT 0.200"
    assert "[yes] GDPO lowers jsd below DPO: GDPO 0.180, DPO 0.260" in lines
    assert "[yes] DPO lowers the belief-token mass below SFT: DPO 0.800, SFT 0.980" in lines
    assert "[yes] DPO's majority-chosen margins exceed its minority-chosen ones: DPO 0.410 vs " \
           "0.090" in lines
    assert "[yes] DPO's minority/majority margin ratio is closer to 1 than DPO's" not in lines
    assert not any("jsd_digits" in x or "uniform" in x for x in lines)  # no numbers: left out
    worse = table.assign(jsd=[0.20, 0.15, 0.30])
    assert "[NO ] DPO raises jsd over SFT: DPO 0.150, SFT 0.200" in claims.findings(worse)
    assert claims.findings(table.loc[["sft"]]) == []              # nothing to compare: no claim
    with_uniform = pd.concat([pd.DataFrame({"jsd": [0.22]}, index=["uniform"]), table])
    assert claims.findings(with_uniform)[-1] == ("Baselines: uniform 0.220; methods below "
                                                 "uniform: sft, gdpo.")


def test_claims_are_one_list_and_cover_every_preference_baseline_of_the_registry():
    """One mechanism: the demo's bars are the CLAIMS marked demo; the claims about a
    preference baseline are made for every method of that role in the method registry."""
    assert claims.claims(demo=True) == tuple(c for c in claims.CLAIMS if c.demo)
    assert len(claims.claims(demo=True)) == 7 and len(claims.claims(demo=False)) > 7
    texts = [c.text for c in claims.CLAIMS]
    assert len(texts) == len(set(texts))
    for m in methods.names(lambda m: m.role == "preference baseline"):
        assert f"GDPO lowers jsd below {m.upper()}" in texts
        assert f"{m.upper()}'s majority-chosen margins exceed its minority-chosen ones" in texts


def test_the_model_card_lines_are_the_claims_measured_on_the_run():
    metrics = {"methods": {"sft": {"jsd": 0.2}, "dpo": {"jsd": 0.3}, "gdpo": {"jsd": 0.1}}}
    lines = claims.card_lines(metrics)
    assert "- [yes] GDPO lowers jsd below DPO: GDPO 0.100, DPO 0.300" in lines
    assert "- [NO] DPO's JSD is below SFT's" not in lines
    assert not any("margin" in x for x in lines)                # not measured: left out
