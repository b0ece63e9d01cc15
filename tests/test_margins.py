"""Reward margins split by majority / minority chosen belief."""
from __future__ import annotations

import numpy as np

from gdpolib.margins import margin_summary, reward_margins


def test_margin_summary_splits_majority_and_minority():
    s = margin_summary(np.array([1.0, 3.0, -1.0, 0.5]), np.array([1, 1, 0, 0]))
    assert s["margin_majority"] == 2.0 and s["margin_minority"] == -0.25
    assert s["accuracy"] == 0.75 and s["accuracy_minority"] == 0.5


def test_reward_margins_by_hand():
    pol = np.array([[-10.0, -12.0], [-5.0, -4.0]])
    ref = np.array([[-11.0, -11.0], [-5.0, -5.0]])
    np.testing.assert_allclose(reward_margins(pol, ref, 0.1), [0.1 * (1 - (-1)), 0.1 * (0 - 1)])
