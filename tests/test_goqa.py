"""GlobalOpinionQA loader: real partial data, safe parsing, malformed rows, countries, offline hub."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from gdpolib.countries import UnknownCountryError
from gdpolib.data import goqa
from gdpolib.data.goqa import GoqaError, load_goqa, parse_options, parse_selections


@pytest.fixture(scope="module")
def data(goqa_csv):
    return load_goqa(goqa_csv)


def write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["question", "selections", "options", "source"])
        w.writerows(rows)
    return path


def sel(d):
    return f"defaultdict(<class 'list'>, {d!r})"


def test_real_partial_counts_and_distributions(data):
    # PROVENANCE.md: 1,774 rows; United States 351, Pakistan 312, S. Africa 125.
    assert data.report.n_rows == 1774
    survey = goqa.to_survey(data)
    assert {c: len(survey.for_group(c)) for c in ("us", "pk", "sa")} == \
        {"us": 351, "pk": 312, "sa": 125}
    assert {c: survey.group_counts()[c] for c in ("United States", "Pakistan", "S. Africa")} == \
        {"United States": 351, "Pakistan": 312, "S. Africa": 125}
    assert len(data.countries) == 130
    # No malformed row; the one row whose every country list is all-zero holds no data.
    assert data.report.skipped == [] and data.report.empty_rows == [1393]
    assert len(data.report.dropped_countries) == 10
    assert data.report.renormalised > 0      # WVS rows sum to 1.001-1.003
    for q in data.questions:
        assert q.qid.startswith("goqa-")
        for p in q.selections.values():
            assert p.shape == (len(q.options),)
            assert abs(p.sum() - 1) < 1e-12 and np.all(p >= 0)


def test_qids_are_row_indices(goqa_csv, data):
    import pandas as pd
    df = pd.read_csv(goqa_csv, dtype=str, keep_default_na=False)
    q = data.questions[500]
    assert df.question[int(q.qid.split("-")[1])].strip() == q.question


def test_apostrophes_and_quotes_in_options_survive(tmp_path):
    options = ["Yes", "Don't know", 'He said "no"', "It's 'complicated'", "NA"]
    p = write_csv(tmp_path / "q.csv", [["Is it?", sel({"Spain": [0.2, 0.2, 0.2, 0.2, 0.2]}),
                                        repr(options), "GAS"]])
    d = load_goqa(p)
    assert d.questions[0].options == options
    assert parse_options("['Not important at all', 1.0, 2.0, 'Very important']") == \
        ["Not important at all", "1", "2", "Very important"]


def test_parsers_never_eval():
    with pytest.raises(ValueError):
        parse_selections("defaultdict(<class 'list'>, {'x': __import__('os').getcwd()})")
    with pytest.raises(ValueError):
        parse_options("[open('/etc/passwd').read()]")
    assert parse_selections("{'A': [0.5, 0.5]}") == {"A": [0.5, 0.5]}


def malformed_rows():
    good = ["Good?", sel({"Spain": [0.5, 0.5]}), "['Yes', 'No']", "GAS"]
    return [
        good,
        ["Broken?", "defaultdict(<class 'list'>, {'Spain': [0.5, 0.5]", "['Yes', 'No']", "GAS"],
        ["Mismatch?", sel({"Spain": [0.2, 0.3, 0.5]}), "['Yes', 'No']", "GAS"],
        ["NaN?", "defaultdict(<class 'list'>, {'Spain': [nan, 0.5]})", "['Yes', 'No']", "GAS"],
        ["Negative?", sel({"Spain": [-0.5, 1.5]}), "['Yes', 'No']", "GAS"],
        ["Sum?", sel({"Spain": [0.2, 0.3]}), "['Yes', 'No']", "GAS"],
        ["Options?", sel({"Spain": [0.5, 0.5]}), "['Yes', 'No'", "GAS"],
        ["Near one", sel({"Spain": [0.5, 0.502], "Italy": [], "Peru": [0.0, 0.0]}),
         "['Yes', 'No']", "WVS"],
    ]


def test_malformed_rows_are_skipped_and_reported(tmp_path):
    d = load_goqa(write_csv(tmp_path / "bad.csv", malformed_rows()))
    reasons = dict(d.report.skipped)
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6]
    assert "selections" in reasons[1]
    assert "length mismatch" in reasons[2] and "3 values, 2 options" in reasons[2]
    assert "non-finite" in reasons[3]
    assert "negative" in reasons[4]
    assert "sum to 0.5000" in reasons[5]
    assert reasons[6].startswith("options")
    assert [q.qid for q in d.questions] == ["goqa-0", "goqa-7"]
    # Near-1 sums are renormalised and counted; empty / all-zero lists dropped and reported.
    last = d.questions[1]
    assert list(last.selections) == ["Spain"]
    assert abs(last.selections["Spain"].sum() - 1) < 1e-12
    assert d.report.renormalised == 1
    assert sorted(d.report.dropped_countries) == [(7, "Italy", "empty"), (7, "Peru", "all zero")]


@pytest.mark.parametrize("row,reason", [(1, "selections"), (2, "length mismatch"),
                                         (3, "non-finite"), (4, "negative")])
def test_malformed_row_error_mode_names_row_and_reason(tmp_path, row, reason):
    rows = malformed_rows()
    p = write_csv(tmp_path / "bad.csv", [rows[0], rows[row]])
    with pytest.raises(GoqaError, match=rf"row 1 .*{reason}"):
        load_goqa(p, bad_rows="error")


def test_shipped_data_loads_with_bad_rows_error(goqa_csv):
    strict = load_goqa(goqa_csv, bad_rows="error")      # an empty row is not a malformed one
    assert strict.report.empty_rows == [1393] and len(strict.questions) == 1773


def test_a_known_country_without_usable_rows_says_so(tmp_path):
    rows = malformed_rows()
    bad_sa = [["Is it?", sel({"S. Africa": [0.5, 0.2]}), "['Yes', 'No']", "GAS"],
              ["Was it?", sel({"S. Africa": [0.0, 0.0], "Spain": [0.5, 0.5]}), "['Yes', 'No']", "GAS"]]
    d = load_goqa(write_csv(tmp_path / "sa.csv", [rows[0], *bad_sa]))
    with pytest.raises(GoqaError, match=r"0 usable questions for S\. Africa .*1 of 3 rows skipped "
                                        r"as malformed \(1 x values for 'S\. Africa' sum to "
                                        r"0\.7000.*1 empty or all-zero S\. Africa entries"):
        d.resolve("sa")
    with pytest.raises(UnknownCountryError, match="closest valid names"):
        d.resolve("Atlantis")


def test_file_errors(tmp_path):
    with pytest.raises(GoqaError, match="does not exist"):
        load_goqa(tmp_path / "missing.csv")
    (tmp_path / "cols.csv").write_text("question,options\nq,\"['a','b']\"\n")
    with pytest.raises(GoqaError, match=r"missing column\(s\) \[.selections.\]"):
        load_goqa(tmp_path / "cols.csv")


def test_country_aliases_and_unknown(data):
    survey = goqa.to_survey(data)        # GlobalOpinionQA's groups resolve by its country rules
    sa = [q.qid for q in survey.for_group("S. Africa")]
    assert sa == [q.qid for q in survey.for_group("sa")] == \
        [q.qid for q in survey.for_group("South Africa")]
    assert data.resolve("usa") == "United States"
    assert data.resolve("pakistan (non-national sample)") == "Pakistan (Non-national sample)"
    with pytest.raises(UnknownCountryError, match="S. Africa"):
        survey.for_group("South Afrika")
    # Works for any country in the data, not only the three of the paper.
    assert len(survey.for_group("Japan")) > 0
