"""The one survey format: GlobalOpinionQA and OpinionQA rows -> format (every file type) -> the
same p* (belief schemes) and the same GPO groups; malformed rows reported by row number."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gdpolib.schemes import OptionsScheme
from gdpolib.data import goqa, opinionqa
from gdpolib.data.survey import SurveyError
from gdpolib.data.survey_files import read_survey, write_survey
from gdpolib.gpo.groups import from_goqa, from_opinionqa, from_survey


@pytest.fixture(scope="module")
def gq(goqa_csv):
    return goqa.load_goqa(goqa_csv)


@pytest.fixture(scope="module")
def oqa(opinionqa_dir):
    return opinionqa.load_opinionqa(opinionqa_dir,
                                    ["Democrat", "Republican", "Female"])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_goqa_rows_round_trip_to_the_same_p_star(gq, tmp_path, suffix):
    sv = goqa.to_survey(gq)
    assert len(sv.rows) == sum(len(q.selections) for q in gq.questions)
    back = read_survey(write_survey(sv, tmp_path / f"goqa{suffix}"), bad_rows="error")
    assert back.name == "goqa" and not back.report.skipped and back.report.renormalised == 0
    assert [(r.group, r.qid, r.question, r.options, r.source) for r in back.rows] == \
        [(r.group, r.qid, r.question, r.options, r.source) for r in sv.rows]
    scheme = OptionsScheme(10)
    for country in ("S. Africa", "Pakistan", "United States"):
        before, _ = scheme.apply(gq.questions, country)
        after, _ = scheme.apply(back.questions(), country)
        assert [q.qid for q in after] == [q.qid for q in before] and len(before) > 100
        for a, b in zip(after, before):       # bit for bit: the float text round-trips exactly
            assert np.array_equal(a.p_star, b.p_star) and a.labels == b.labels


def test_opinionqa_rows_round_trip_with_their_ordinals(oqa, tmp_path):
    sv = opinionqa.to_survey(oqa)
    back = read_survey(write_survey(sv, tmp_path / "oqa.jsonl"), bad_rows="error")
    q = next(q for q in back.questions() if q.qid == "SAFECRIME_W26")
    assert q.options == ["Very safe", "Somewhat safe", "Not too safe", "Not at all safe"]
    np.testing.assert_array_equal(q.ordinal, [1, 2, 3, 4])
    # SEX_data.json, Female: 510, 1243, 289, 62 (the refusals are dropped by the loader)
    np.testing.assert_array_equal(q.selections["Female"], np.array([510, 1243, 289, 62]) / 2104)
    scheme = OptionsScheme(10)
    before, _ = scheme.apply(
        [goqa.GoqaQuestion(q.qid, q.question, q.options, q.wave, q.dists) for q in oqa.questions],
        "Republican")
    after, _ = scheme.apply(back.questions(), "Republican")
    assert len(after) == len(before) == 684
    assert all(np.array_equal(a.p_star, b.p_star) for a, b in zip(after, before))


def test_gpo_reads_the_format_as_it_reads_the_sources(gq, oqa):
    a, b = from_survey(goqa.to_survey(gq), 60), from_goqa(gq, 60)
    assert a.groups == b.groups and a.items.keys() == b.items.keys() and a.ordinals is None
    assert a.family == b.family and a.family["India (Non-national sample)"] == "India"
    for g in b.groups:
        assert a.dists[g].keys() == b.dists[g].keys()
        assert all(np.allclose(a.dists[g][q], b.dists[g][q], rtol=0, atol=1e-15)
                   for q in b.dists[g])
    a, b = from_survey(opinionqa.to_survey(oqa)), from_opinionqa(oqa)
    assert a.groups == b.groups and a.metric == b.metric == "wd"
    assert all(np.array_equal(a.ordinals[q], b.ordinals[q]) for q in b.ordinals)
    assert all(np.allclose(a.dists[g][q], b.dists[g][q], rtol=0, atol=1e-15)
               for g in b.groups for q in b.dists[g])


def test_groups_resolve_with_aliases_and_close_matches(gq, oqa):
    sv = opinionqa.to_survey(oqa)
    assert sv.resolve("POLPARTY_Democrat") == sv.resolve("democrat") == "Democrat"
    assert sv.resolve("POLPARTY: Republican") == "Republican"
    with pytest.raises(SurveyError, match=r"unknown group 'Democrt' in opinionqa .*closest: Democrat"):
        sv.resolve("Democrt")
    assert goqa.to_survey(gq).resolve("sa") == "S. Africa"      # the country rules
    with pytest.raises(ValueError, match="closest valid names"):
        goqa.to_survey(gq).resolve("Pakistn")


BAD_CSV = '''group,question,options,distribution,ordinal,qid
Night owls,Is coffee good?,"[""Yes"", ""No""]","[0.7, 0.3]",,c1
Early birds,Is coffee good?,"[""Yes"", ""No""]","[0.4, 0.5]",,c1
Night owls,Sleep?,"[""Yes"", ""No""",[0.5 0.5],,c2
,Sleep?,"[""Yes"", ""No""]","[0.5, 0.5]",,c3
Early birds,Sleep?,"[""Yes"", ""No"", ""Maybe""]","[0.5, 0.5]",,c4
Early birds,Tea?,"[""Yes"", ""No""]","[1.2, -0.2]",,c5
Early birds,Tea?,"[""Yes"", ""No""]","[0.5, 0.5]","[1, ""x""]",c6
Early birds,Coffee?,"[""Yes"", ""Never""]","[0.5, 0.5]",,c1
Night owls,Is coffee good?,"[""Yes"", ""No""]","[0.6, 0.4]",,c1
Early birds,Tea?,"[""Yes"", ""No""]","[0.51, 0.51]",,c7
'''


def test_malformed_rows_are_reported_with_their_row_number(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(BAD_CSV)
    sv = read_survey(path)                                      # bad_rows: skip
    skipped = dict(sv.report.skipped)
    assert list(skipped) == [f"row {i} (line {i + 1})" for i in (2, 3, 4, 5, 6, 7, 8, 9)]
    assert "sums to 0.9000" in skipped["row 2 (line 3)"]
    assert "options is not a JSON list" in skipped["row 3 (line 4)"]
    assert skipped["row 4 (line 5)"] == "group is empty"
    assert "distribution has 2 values for 3 options" in skipped["row 5 (line 6)"]
    assert "negative share" in skipped["row 6 (line 7)"]
    assert "ordinal holds a non-number" in skipped["row 7 (line 8)"]
    assert "question 'c1' has another question text than row 1 (line 2)" in skipped["row 8 (line 9)"]
    assert "answers question 'c1' again (first in row 1 (line 2))" in skipped["row 9 (line 10)"]
    # row 10 sums to 1.02: within the tolerance, renormalised
    assert [r.qid for r in sv.rows] == ["c1", "c7"] and sv.report.renormalised == 1
    np.testing.assert_allclose(sv.rows[1].distribution, [0.5, 0.5])
    with pytest.raises(SurveyError) as err:
        read_survey(path, bad_rows="error")
    msg = str(err.value)
    assert "\n" not in msg and "8 malformed row(s) of 10" in msg and "and 3 more" in msg
    assert msg.startswith(f"{path}: ") and "row 2 (line 3): distribution sums to 0.9000" in msg


def test_file_level_problems_name_the_file(tmp_path):
    (tmp_path / "s.xlsx").write_text("x")
    with pytest.raises(SurveyError, match=r"unknown format '\.xlsx' \(use \.csv, \.jsonl or \.parquet\)"):
        read_survey(tmp_path / "s.xlsx")
    with pytest.raises(SurveyError, match="does not exist"):
        read_survey(tmp_path / "missing.csv")
    cols = tmp_path / "cols.csv"
    cols.write_text('group,question,options,distrib,ordinals\nA,Q?,"[""a"",""b""]","[0.5,0.5]",\n')
    with pytest.raises(SurveyError, match=r"missing column\(s\) \['distribution'\]; unknown "
                                          r"column\(s\) \['distrib', 'ordinals'\] \('distrib' -> "
                                          r"'distribution'\?, 'ordinals' -> 'ordinal'\?\)"):
        read_survey(cols)
    lines = tmp_path / "s.jsonl"
    good = {"group": "A", "question": "Q?", "options": ["a", "b"], "distribution": [0.5, 0.5]}
    lines.write_text(json.dumps(good) + "\n\n[1, 2]\n{oops\n")
    sv = read_survey(lines)
    assert [w for w, _ in sv.report.skipped] == ["row 2 (line 3)", "row 3 (line 4)"]
    assert "not a JSON object but a list" in sv.report.skipped[0][1]
    assert sv.rows[0].qid.startswith("q-") and sv.only_group() == "A"
