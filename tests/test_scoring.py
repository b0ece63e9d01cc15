"""Scoring one model: sample parsing (invalid outputs never become class 0), the read-out."""
from __future__ import annotations

import numpy as np

from gdpolib import metrics, scoring


def test_parse_samples_maps_invalid_to_the_invalid_id():
    mask = np.array([[1, 1, 0, 0, 0, 0, 0, 0, 0, 0]])
    es = scoring.EvalSet(["p"], ["question?"], ["q"], ["s"], np.array([[0.5, 0.5] + [0] * 8]), mask,
                         [["Yes", "No"] + [""] * 8], [["r0", "r1"] + [""] * 8])
    out = scoring.parse_samples([["1<No> nope", "Yes I do", "2<Maybe>x", "0 plain"]], es, 10)
    assert out["belief"] == [[1, metrics.INVALID, metrics.INVALID, 0]]
    assert out["label"][0][0] == "No" and out["label"][0][3] is None   # no label: CBC fails
    assert out["response"][0][0] == "nope"
