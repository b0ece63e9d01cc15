"""OpinionQA loader on the real opinions_qa files, and clear errors for malformed ones."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from gdpolib.data.opinionqa import GPO_GROUPS, OpinionQAError, load_opinionqa


@pytest.fixture(scope="module")
def tatsu(opinionqa_dir):
    return opinionqa_dir


@pytest.fixture(scope="module")
def oqa(tatsu):
    return load_opinionqa(tatsu)


def test_real_files_load_the_17_available_gpo_groups(oqa):
    assert len(oqa.groups) == 17                     # GPO's 22 minus the 5 RELIG groups
    assert set(oqa.groups) == {g for g, a in GPO_GROUPS.items() if a != "RELIG"}
    assert len(oqa.questions) == 684                 # every question with counts, all groups
    assert not oqa.skipped
    for q in oqa.questions:
        assert len(q.options) == len(q.ordinals) >= 2
        assert "Refused" not in q.options
        for g in oqa.groups:
            assert q.dists[g].shape == (len(q.options),)
            assert abs(q.dists[g].sum() - 1) < 1e-12


def test_counts_are_renormalised_without_refusals(oqa):
    q = next(q for q in oqa.questions if q.qid == "SAFECRIME_W26")
    assert q.options == ["Very safe", "Somewhat safe", "Not too safe", "Not at all safe"]
    np.testing.assert_array_equal(q.ordinals, [1, 2, 3, 4])
    # SEX_data.json, Female: Very safe 510, Somewhat safe 1243, Not too safe 289,
    # Not at all safe 62, Refused 6 (dropped)
    np.testing.assert_allclose(q.dists["Female"], np.array([510, 1243, 289, 62]) / 2104)


def test_option_labels_come_from_info_csv_not_the_comma_split_mc_options(oqa):
    q = next(q for q in oqa.questions if q.qid == "GUN_W26")
    assert q.options == ["Yes, I own a gun", "No, I don't own any guns"]
    assert q.counts["Male"].tolist() == [892.0, 1138.0]


def test_non_monotone_ordinals_and_non_ordinal_options(oqa):
    q = next(q for q in oqa.questions if q.qid == "WORLDDANGER_W26")
    np.testing.assert_array_equal(q.ordinals, [1.0, 2.0, 1.5])
    q = next(q for q in oqa.questions if q.qid == "WANTMOVE_W32")
    assert q.options == ["Would want to move", "Would not want to move"]   # "Not sure" dropped


def test_case_only_label_mismatch_is_matched(oqa):
    q = next(q for q in oqa.questions if q.qid == "POLICY3_W42")
    assert all(q.counts[g][2] > 0 for g in oqa.groups)   # "noR worse" counted as "nor worse"


def test_single_wave_and_the_disagreement_files(tatsu, shared_data):
    one = load_opinionqa(tatsu / "American_Trends_Panel_W26", ["Democrat", "Republican"])
    assert one.groups == ["Democrat", "Republican"] and len(one.questions) == 22
    dis = load_opinionqa(shared_data / "opinionqa_meister_disagreement"
                         / "Pew_American_Trends_Panel_disagreement_500")
    assert set(dis.groups) == {"Female", "Male", "Democrat", "Republican", "Asian", "Black",
                               "Hispanic", "White"}
    assert len(dis.questions) > 400


def _wave(tmp_path, tatsu):
    w = tmp_path / "American_Trends_Panel_W26"
    w.mkdir()
    shutil.copy(tatsu / "American_Trends_Panel_W26" / "info.csv", w / "info.csv")
    shutil.copy(tatsu / "American_Trends_Panel_W26" / "SEX_data.json", w / "SEX_data.json")
    return w


def test_malformed_files_give_clear_errors(tmp_path, tatsu):
    with pytest.raises(OpinionQAError, match="does not exist"):
        load_opinionqa(tmp_path / "nowhere")
    with pytest.raises(OpinionQAError, match="no wave folder"):
        load_opinionqa(tmp_path)
    w = _wave(tmp_path, tatsu)
    (w / "SEX_data.json").write_text("{not json")
    with pytest.raises(OpinionQAError, match="SEX_data.json: not valid JSON"):
        load_opinionqa(tmp_path, ["Male", "Female"])
    (w / "SEX_data.json").write_text("[1, 2]")
    with pytest.raises(OpinionQAError, match="expected an object"):
        load_opinionqa(tmp_path, ["Male", "Female"])
    with pytest.raises(OpinionQAError, match="no attribute known"):
        load_opinionqa(tmp_path, ["Martians"])
    with pytest.raises(OpinionQAError, match="RELIG_data.json"):
        load_opinionqa(tmp_path, ["Hindu"])


def test_bad_entries_are_skipped_or_raised(tmp_path, tatsu):
    w = _wave(tmp_path, tatsu)
    data = json.loads((w / "SEX_data.json").read_text())
    data["SAFECRIME_W26"]["Male"]["Totally safe"] = 3.0          # not an option of the question
    data["WORRYG_W26"]["Female"]["Worry a lot"] = -1.0           # negative count
    (w / "SEX_data.json").write_text(json.dumps(data))
    with pytest.raises(OpinionQAError, match="SAFECRIME_W26.*'Totally safe'"):
        load_opinionqa(tmp_path, ["Male", "Female"], bad_rows="error")
    out = load_opinionqa(tmp_path, ["Male", "Female"])
    assert {q for q, _ in out.skipped} == {"SAFECRIME_W26", "WORRYG_W26"}
    assert len(out.questions) == 20
    info = (w / "info.csv").read_text().replace("option_ordinal", "ordinal")
    (w / "info.csv").write_text(info)
    with pytest.raises(OpinionQAError, match="info.csv: missing column"):
        load_opinionqa(tmp_path, ["Male", "Female"])


def test_attribute_groups_lists_every_single_attribute_group(tatsu):
    from gdpolib.data.opinionqa import attribute_groups

    groups = attribute_groups(tatsu)
    assert len(groups) == 34                      # 8 attribute files; no RELIG in this copy
    assert not {"Refused", "Other", "nan"} & set(groups)
    assert groups["Very conservative"] == "POLIDEOLOGY" and groups["65+"] == "AGE"
    # the paper's groups that have a file are among them, with the same attribute
    assert all(groups[g] == a for g, a in GPO_GROUPS.items() if a != "RELIG")
    data = load_opinionqa(tatsu, groups)
    assert data.groups == list(groups) and len(data.questions) == 624
    assert all(set(q.dists) == set(groups) for q in data.questions)
