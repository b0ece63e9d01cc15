"""Reports: the paper's Table 2 beside ours only in the paper's setting; one findings()."""
from __future__ import annotations

import numpy as np
import pandas as pd

from gdpolib import report
from gdpolib.config import RunConfig


def test_table2_puts_paper_numbers_beside_ours_only_for_the_papers_setting():
    table = pd.DataFrame({"jsd": [0.3, 0.2], "cbc": [0.9, 0.95], "n_prompts": [10, 10]},
                         index=pd.Index(["dpo", "gdpo"], name="method"))
    mine = report.table2(table, RunConfig(country="sa", model="tiny"))
    assert list(mine.columns) == ["dpo", "gdpo"]
    paper = report.table2(table, RunConfig(country="sa", model="gpt2-large"))
    assert paper.loc["jsd", "paper:gdpo"] == 0.185 and paper.loc["cbc", "paper:dpo"] == 0.742
    md = report.markdown_table(paper)
    assert md.splitlines()[0].startswith("| metric | dpo | gdpo | paper:dpo")


def test_findings_state_each_claim_with_its_numbers_and_skip_missing_ones():
    table = pd.DataFrame({"jsd": [0.20, 0.26, 0.18], "belief_mass": [0.98, 0.80, 0.97],
                          "margin_majority": [np.nan, 0.41, 0.13],
                          "margin_minority": [np.nan, 0.09, 0.03]},
                         index=pd.Index(["sft", "dpo", "gdpo"], name="method"))
    lines = report.findings(table)
    assert lines[0] == ("DPO raises the test JSD over SFT: 0.200 -> 0.260; mass on belief tokens "
                        "0.98 -> 0.80.")
    assert "majority-chosen margins exceed" in lines[1] and "0.410 vs 0.090" in lines[1]
    assert lines[2] == "GDPO lowers the test JSD below DPO: 0.180 vs 0.260, SFT 0.200."
    assert "ratio 0.23 (DPO 0.22)" in lines[3]
    worse = table.assign(jsd=[0.20, 0.15, 0.30])
    text = " ".join(report.findings(worse))
    assert "does NOT raise" in text and "does NOT lower" in text
    assert report.findings(table.loc[["sft"]]) == []             # nothing to compare: no claim
