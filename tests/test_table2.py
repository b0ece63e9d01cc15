"""Table 2: the paper's numbers beside ours only in the paper's setting (its JSD beside our
jsd_digits); the text metrics of a model that is not well-formed are marked, never shown as
plain numbers."""
from __future__ import annotations

import numpy as np
import pandas as pd

from gdpolib.report import table2
from gdpolib.config import RunConfig


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


def test_text_metrics_of_a_malformed_model_are_marked_not_interpretable():
    table = pd.DataFrame({"jsd": [0.19, 0.18], "invalid_rate": [0.02, 0.53], "cbc": [0.95, 0.016],
                          "bpc": [0.5, 0.6], "rs": [0.6, 0.4], "jsd_sampled": [0.3, 0.5]},
                         index=pd.Index(["sft", "gdpo"], name="method"))
    t2 = table2.table2(table, RunConfig(country="sa", model="tiny"))
    assert t2.loc["cbc", "sft"] == 0.95                      # well-formed: the number itself
    mark = table2.NOT_INTERPRETABLE
    assert [t2.loc[r, "gdpo"] for r in ("cbc", "bpc", "rs", "jsd_sampled")] == [
        f"0.016{mark}", f"0.600{mark}", f"0.400{mark}", f"0.500{mark}"]
    assert t2.loc["invalid_rate", "gdpo"] == 0.53 and t2.loc["jsd", "gdpo"] == 0.18
