"""gdpolib.gpo.groups: country families and group splits on the real GlobalOpinionQA file, the
per-country question filter, the group-prior table."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gdpolib.embeddings import EmbeddingTable, QuestionItem
from gdpolib.gpo.groups import (GroupOpinions, country_family, from_goqa, split_groups,
                                with_group_prior)


# ---------------------------------------------------------------------------- groups and splits
def test_country_family_keeps_twins_together():
    assert country_family("S. Africa (Non-national sample)") == "S. Africa"
    assert country_family("India (Old national sample)") == "India"
    assert country_family("India (Current national sample)") == "India"
    assert country_family("Great Britain") == country_family("Britain")


@pytest.fixture(scope="module")
def goqa_groups(goqa_csv):
    from gdpolib.data.goqa import load_goqa

    return from_goqa(load_goqa(goqa_csv), min_questions=20)


def test_twin_countries_are_never_split_apart(goqa_groups):
    data = goqa_groups
    twins = [g for g in data.groups if "(" in g]
    assert len(twins) >= 5                          # real twins exist at this threshold
    for seed in range(10):
        split = split_groups(data, [0.6, 0.2, 0.2], seed, holdout=["S. Africa"])
        where = {g: s for s, gs in split.items() for g in gs}
        assert sorted(where) == data.groups
        for g in data.groups:
            same = [h for h in data.groups if data.family[h] == data.family[g]]
            assert {where[h] for h in same} == {where[g]}, (seed, g)
        assert where["S. Africa"] == "test"
        assert where["S. Africa (Non-national sample)"] == "test"
        assert split["train"] and split["val"]
    assert split_groups(data, [0.6, 0.2, 0.2], 1) != split_groups(data, [0.6, 0.2, 0.2], 2)


def test_from_goqa_filters_per_country():
    from gdpolib.data.goqa import GoqaData, GoqaQuestion, LoadReport

    qs = [GoqaQuestion(f"goqa-{i}", f"q{i}", ["a", "b"], "GAS",
                       {"X": np.array([0.3, 0.7]), "Y": np.array([0.0, 0.0]),
                        **({"Z": np.array([1.0, 0.0])} if i < 2 else {})}) for i in range(3)]
    qs.append(GoqaQuestion("goqa-9", "q9", ["a", "b", "c"], "GAS", {"X": np.array([1.0, 0.0])}))
    data = from_goqa(GoqaData(qs, ["X", "Y", "Z"], LoadReport()), min_questions=2)
    assert data.groups == ["X", "Z"]                 # Y all-zero everywhere; Z has 2
    assert sorted(data.dists["X"]) == ["goqa-0", "goqa-1", "goqa-2"]   # bad length dropped
    assert sorted(data.items) == ["goqa-0", "goqa-1", "goqa-2"]


# ---------------------------------------------------------------------------- group prior
def test_group_prior_table_holds_the_train_groups_profile_and_mean():
    items = {q: QuestionItem(q, q, ["a", "b"]) for q in ("q1", "q2")}
    dists = {"g1": {"q1": np.array([0.2, 0.8]), "q2": np.array([1.0, 0.0])},
             "g2": {"q1": np.array([0.6, 0.4])},
             "test": {"q1": np.array([0.9, 0.1]), "q2": np.array([0.5, 0.5])}}
    data = GroupOpinions("t", items, dists, {g: g for g in dists})
    emb = EmbeddingTable(np.arange(8, dtype=np.float32).reshape(4, 2),
                         {"q1": (0, 2), "q2": (2, 2)}, "toy", 2, key="k")
    t = with_group_prior(emb, data, ["g1", "g2"])
    # columns: x (2), g1 and g2 deviation from the mean, the mean
    np.testing.assert_allclose(t.vectors, [[0, 1, -0.2, 0.2, 0.4], [2, 3, 0.2, -0.2, 0.6],
                                           [4, 5, 0.0, 0.0, 1.0], [6, 7, 0.0, 0.0, 0.0]], atol=1e-6)
    assert t.dim == 5 and t.index == emb.index and t.key != emb.key
    # std of the answered deviations (g2 did not answer q2): 0.2 (q1) and 0 (q2 for g1)
    answered = [-0.2, 0.2, 0.2, -0.2, 0.0, 0.0]
    assert math.isclose(t.deviation_scale, 1 / np.std(answered), rel_tol=1e-5)
    dists["test"]["q1"] = np.array([0.1, 0.9])    # a held-out group's answers are never read
    np.testing.assert_array_equal(with_group_prior(emb, data, ["g1", "g2"]).vectors, t.vectors)
