"""Reports: the protocol line; ONE list of claims (the paper's claims with paired differences,
the context-free baseline, like-for-like margins, text metrics only where interpretable)
rendered for a run, over seeds and for the model card; mean ± sd over seeds."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gdpolib import methods
from gdpolib.report import claims, frames, seeds


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
            paired = {} if method == "uniform" else {"jsd_vs_context_free_ci_hi": jsd - 0.25}
            if method in ("dpo", "gdpo"):        # a paired interval of +-0.01 around the difference
                d = jsd - sft
                paired.update(jsd_vs_sft=d, jsd_vs_sft_ci_lo=d - 0.01, jsd_vs_sft_ci_hi=d + 0.01)
            rows.append({"protocol": "seen_questions", "country": "S. Africa", "seed": seed,
                         "method": method, "jsd": jsd, "margin_majority": maj,
                         "margin_minority": mino, **paired})
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
    md = seeds.seed_markdown(table, ["protocol", "country"], ("jsd", "margin_majority",
                                                                "margin_minority"))
    assert md.splitlines()[0] == ("| protocol | country | method | seeds | jsd | margin_majority | "
                                  "margin_minority |")
    assert "| seen_questions | S. Africa | gdpo | 2 | 0.215 ± 0.049 | 0.200 ± 0.000 | 0.150 ± 0.000 |" in md
    assert "| unseen_questions | S. Africa | sft | 1 | 0.310 |  |  |" in md


def test_seed_findings_count_the_seeds_a_finding_holds_in():
    lines = claims.seed_findings(_seed_runs(), ["protocol", "country"])
    assert ("seen_questions / S. Africa: GDPO lowers jsd below DPO: holds in 1 of 2 seeds "
            "(past its bar by +0.035 ± 0.064)") in lines
    assert any(x.startswith("seen_questions / S. Africa: DPO raises jsd over SFT: holds in 2 of 2")
               for x in lines)
    assert any("SFT is below uniform in jsd: holds in 2 of 2" in x for x in lines)
    # seed 0: GDPO - SFT = -0.02, interval [-0.03, -0.01] below 0; seed 1: +0.04
    assert any("GDPO lowers jsd below SFT, paired 95% interval below 0: holds in 1 of 2" in x
               for x in lines)
    # SFT - context-free: interval ends at -0.05 and -0.04 (both below 0)
    assert any("SFT is below the context-free baseline in jsd, paired 95% interval below 0: "
               "holds in 2 of 2" in x for x in lines)
    assert any("margin gap is smaller than DPO's (the same conflicting test pairs): holds in 2 "
               "of 2" in x for x in lines)
    # a cell with one method has no finding; a claim without numbers (jsd_digits) is left out
    assert not any(x.startswith("unseen_questions") for x in lines)
    assert not any("jsd_digits" in x for x in lines)


def test_the_demos_claims_count_over_seeds():
    lines = claims.seed_findings(_seed_runs(), ["protocol", "country"], demo=True)
    # paired DPO - SFT: seed 0 +0.06 >= 0.05, seed 1 +0.03 (difference to the bar: +0.010, -0.020)
    assert ("seen_questions / S. Africa: DPO raises JSD over SFT by >= 0.05: holds in 1 of 2 "
            "seeds (past its bar by -0.005 ± 0.021)") in lines
    assert any("DPO's majority-chosen margin is positive and >= 2x its minority-chosen one "
               "(conflicting test pairs): holds in 2 of 2" in x for x in lines)
    assert not any("well-formed" in x for x in lines)          # no CBC in these runs


def test_a_seed_with_negative_dpo_margins_does_not_count_for_the_2x_claim():
    runs = _seed_runs()
    dpo1 = (runs["method"] == "dpo") & (runs["seed"] == 1)
    runs.loc[dpo1, ["margin_majority", "margin_minority"]] = [-0.1, -0.2]   # -0.1 >= 2 * -0.2
    lines = claims.seed_findings(runs, ["protocol", "country"], demo=True)
    # seed 0: min(0.4, 0.4 - 0.2) = 0.2; seed 1: min(-0.1, -0.1 + 0.4) = -0.1
    assert ("seen_questions / S. Africa: DPO's majority-chosen margin is positive and >= 2x its "
            "minority-chosen one (conflicting test pairs): holds in 1 of 2 seeds (past its bar by "
            f"+0.050 ± {np.std([0.2, -0.1], ddof=1):.3f})") in lines


def _metrics(dpo_maj: float, dpo_min: float) -> dict:
    return {"methods": {"sft": {"jsd": 0.20, "jsd_vs_context_free": -0.03,
                                "jsd_vs_context_free_ci": [-0.05, -0.01]},
                        "dpo": {"jsd": 0.30, "jsd_vs_sft": 0.10, "jsd_vs_sft_ci": [0.08, 0.12]},
                        "gdpo": {"jsd": 0.18, "jsd_vs_sft": -0.02, "jsd_vs_sft_ci": [-0.03, 0.01],
                                 "jsd_vs_context_free": -0.05,
                                 "jsd_vs_context_free_ci": [-0.07, 0.002]},
                        "context_free": {"jsd": 0.23}},
            "skew": {"dpo": {"margin_majority": dpo_maj, "margin_minority": dpo_min},
                     "gdpo": {"margin_majority": 0.2, "margin_minority": 0.15,
                              "shared_margin_majority": 0.5, "shared_margin_minority": 0.45}}}


def test_the_2x_margin_claim_needs_a_positive_majority_margin():
    found = {c: ok for c, ok, _ in claims.paper_findings(_metrics(-0.1, -0.2))}
    claim = next(c for c in found if "2x" in c)
    assert found[claim] is False              # -0.1 >= 2 * -0.2, but the majority margin is < 0
    assert {c: ok for c, ok, _ in claims.paper_findings(_metrics(0.4, 0.1))}[claim] is True


def test_paper_findings_read_paired_intervals_and_like_for_like_margins():
    found = {c: (ok, n) for c, ok, n in claims.paper_findings(_metrics(0.4, 0.1))}
    assert found["DPO raises JSD over SFT by >= 0.05"] == (
        True, "SFT 0.200, DPO 0.300; DPO - SFT +0.100 [+0.080, +0.120]")
    assert found["GDPO's JSD is below SFT's"][0] is True
    below = [c for c in found if "context-free" in c]
    assert [found[c][0] for c in below] == [True, False]   # GDPO's interval reaches +0.002
    assert found[below[0]][1] == ("SFT - context-free -0.030 [-0.050, -0.010]; "
                                  "context-free 0.230")
    gap = next(c for c in found if "gap" in c)
    # the gaps on the SAME conflicting pairs (0.05 vs 0.3); the shared-belief ones are not used
    assert found[gap] == (True, "GDPO 0.200 - 0.150 = 0.050; DPO 0.400 - 0.100 = 0.300")


def test_findings_state_the_claims_baselines_and_what_is_not_interpretable():
    table = pd.DataFrame(
        {"jsd": [0.25, 0.23, 0.20, 0.30, 0.18],
         "jsd_vs_sft": [np.nan, np.nan, np.nan, 0.10, -0.02],
         "jsd_vs_sft_ci": [np.nan, np.nan, np.nan, [0.08, 0.12], [-0.03, -0.01]],
         "jsd_vs_context_free_ci": [np.nan, np.nan, "[-0.050, -0.010]", np.nan, [-0.07, -0.02]],
         "invalid_rate": [np.nan, np.nan, 0.01, 0.02, 0.53],
         "cbc": [np.nan, np.nan, 0.95, 0.93, 0.02], "bpc": [np.nan, np.nan, 0.5, 0.4, 0.6],
         "shared_margin_majority": [np.nan] * 4 + [0.5],
         "shared_margin_minority": [np.nan] * 4 + [0.4]},
        index=pd.Index(["uniform", "context_free", "sft", "dpo", "gdpo"], name="method"))
    lines = claims.findings(table)
    assert lines[0] == ("[yes] DPO raises JSD over SFT by >= 0.05: SFT 0.200, DPO 0.300; "
                        "DPO - SFT +0.100 [+0.080, +0.120]")
    assert "Baselines (test JSD): uniform 0.250, context-free 0.230. Below the context-free " \
           "baseline by a paired 95% interval: sft, gdpo." in lines
    assert any(x.startswith("GDPO on its own shared-belief pairs") for x in lines)
    text = " ".join(lines)
    assert "NOT interpretable for: gdpo (invalid 0.530, CBC 0.020)" in text
    assert "[NO ] GDPO writes well-formed outputs" in text
    assert "gdpo bpc" not in text                  # never compared with a malformed model
    assert claims.findings(table.loc[["sft"]]) == ["[yes] SFT writes well-formed outputs "
                                                   "(invalid <= 0.05, CBC >= 0.9): invalid "
                                                   "0.010, CBC 0.950"]


def test_flat_numbers_split_intervals_and_drop_what_is_not_a_number():
    flat = claims.flat_numbers({"jsd": 0.2, "jsd_ci": [0.1, 0.3], "tvd_ci": "[0.050, 0.150]",
                                "bpc": float("nan"), "judge": "EmbeddingJudge", "ok": True})
    assert flat == {"jsd": 0.2, "jsd_ci_lo": 0.1, "jsd_ci_hi": 0.3, "tvd_ci_lo": 0.05,
                    "tvd_ci_hi": 0.15}


def test_claims_are_one_list_and_cover_every_preference_baseline_of_the_registry():
    """One mechanism: the demo's bars are the CLAIMS marked demo; the claims about a
    preference baseline are made for every method of that role in the method registry."""
    assert claims.claims(demo=True) == tuple(c for c in claims.CLAIMS if c.demo)
    assert len(claims.claims(demo=True)) == 9 and len(claims.claims(demo=False)) > 9
    texts = [c.text for c in claims.CLAIMS]
    assert len(texts) == len(set(texts))
    for m in methods.names(lambda m: m.role == "preference baseline"):
        assert f"GDPO lowers jsd below {m.upper()}" in texts
        assert (f"{m.upper()}'s majority-chosen margins exceed its minority-chosen ones "
                "(conflicting test pairs)") in texts


def test_the_model_card_lines_are_the_claims_measured_on_the_run():
    metrics = {"methods": {"sft": {"jsd": 0.2}, "dpo": {"jsd": 0.3}, "gdpo": {"jsd": 0.1}}}
    lines = claims.card_lines(metrics)
    assert "- [yes] GDPO lowers jsd below DPO: GDPO 0.100, DPO 0.300" in lines
    assert "- [NO] DPO's JSD is below SFT's" not in lines
    assert not any("margin" in x for x in lines)                # not measured: left out
