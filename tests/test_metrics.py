"""Metrics: JSD vs scipy, noise floor vs simulation, CBC / RS / majority-bias hand examples."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from gdpolib import metrics as M


def test_js_distance_equals_scipy_on_random_vectors():
    rng = np.random.default_rng(0)
    p, q = rng.random((50, 6)), rng.random((50, 6))   # unnormalised on purpose
    ours = M.js_distance(p, q)
    theirs = np.array([jensenshannon(a, b) for a, b in zip(p, q)])
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    assert M.js_distance(p[0], q[0]) == pytest.approx(jensenshannon(p[0], q[0]))
    assert M.mean_jsd(p, q) == pytest.approx(theirs.mean())


def test_js_distance_zero_for_identical_and_max_for_disjoint():
    p = np.random.default_rng(1).random((10, 4))
    np.testing.assert_allclose(M.js_distance(p, p), 0.0, atol=1e-7)
    np.testing.assert_allclose(M.js_distance(p, 3 * p), 0.0, atol=1e-7)   # renormalised
    assert M.js_distance([1, 0], [0, 1]) == pytest.approx(np.sqrt(np.log(2)))


def test_jsd_renormalises_over_the_belief_mask():
    # Full-vocabulary probabilities: 0.5 of the mass is off the belief tokens, and belief 3 is
    # outside the question's set; after renormalising over the set the model equals p*.
    probs = np.array([[0.1, 0.3, 0.1, 0.05]])
    p_star = np.array([[0.2, 0.6, 0.2, 0.0]])
    mask = np.array([[1, 1, 1, 0]])
    assert M.jsd_per_prompt(probs, p_star, mask)[0] == pytest.approx(0.0, abs=1e-7)
    by_q = M.jsd_by_question([0.1, 0.3, 0.5], ["a", "a", "b"])
    assert by_q == pytest.approx({"a": 0.2, "b": 0.5})


def test_noise_floor_matches_simulation():
    p = np.array([0.06, 0.56, 0.24, 0.08, 0.06])   # the poster's EU climate example
    exact = M.noise_floor_one(p, 8)
    rng = np.random.default_rng(0)
    hist = rng.multinomial(8, p, size=100_000).astype(float)
    sim = M.js_distance(hist, np.broadcast_to(p, hist.shape)).mean()
    assert exact == pytest.approx(sim, abs=0.003)
    assert exact == pytest.approx(0.27, abs=0.01)    # reference §5.1
    # Monte Carlo path (forced) agrees with the exact sum
    assert M.noise_floor_one(p, 8, exact_limit=0, seed=1) == pytest.approx(exact, abs=0.005)
    # a calibrated sampler scores the floor on average with the same function used for models
    beliefs = rng.choice(5, p=p, size=(4000, 8))
    sampled = M.sampled_jsd_per_prompt(beliefs, np.tile(p, (4000, 1)), np.ones((4000, 5)))
    assert sampled.mean() == pytest.approx(exact, abs=0.005)
    assert M.noise_floor_one([1.0, 0, 0], 8) == 0.0
    floor = M.noise_floor(np.array([p, p, [0.5, 0.5, 0, 0, 0]]), np.ones((3, 5)), 8)
    assert floor[0] == floor[1] == pytest.approx(exact)


def test_invalid_samples_are_their_own_bucket_not_class_0():
    p_star = np.array([[0.5, 0.5, 0.0]])
    mask = np.array([[1, 1, 0]])
    counts, invalid = M.belief_counts([[0, 1, M.INVALID, 2]], mask)   # 2 is outside the set
    np.testing.assert_array_equal(counts, [[1, 1, 0]])
    assert invalid[0] == 2
    perfect = M.sampled_jsd_per_prompt([[0, 1, 0, 1]], p_star, mask)[0]
    broken = M.sampled_jsd_per_prompt([[0, 1, M.INVALID, M.INVALID]], p_star, mask)[0]
    assert perfect == pytest.approx(0.0, abs=1e-7)
    assert broken > 0.3


def test_majority_bias_hand_example():
    p_star = np.array([[0.5, 0.3, 0.2], [0.2, 0.8, 0.0]])
    mask = np.array([[1, 1, 1], [1, 1, 0]])
    beliefs = [[0, 0, 0, 1], [1, 1, 0, M.INVALID]]
    # prompt 0: share of belief 0 = 3/4 -> 1.5; prompt 1: share of belief 1 among the 3 valid
    # samples = 2/3 -> (2/3) / 0.8
    assert M.majority_bias(beliefs, p_star, mask) == pytest.approx((1.5 + (2 / 3) / 0.8) / 2)
    assert np.isnan(M.majority_bias([[M.INVALID]], p_star[:1], mask[:1]))


def test_cbc_hand_examples():
    labels = ["Very good job", "Somewhat good job", "Somewhat bad job", ""]
    assert M.class_belief_consistent(1, "Somewhat good job", labels, "options")
    assert M.class_belief_consistent(1, " Somewhat  good job ", labels, "options")
    assert not M.class_belief_consistent(0, "Somewhat good job", labels, "options")
    assert not M.class_belief_consistent(3, "", labels, "options")
    assert not M.class_belief_consistent(M.INVALID, "Very good job", labels, "options")
    assert not M.class_belief_consistent(0, None, labels, "options")
    omap = {"Very good job": 5, "Good": 4, "Better": 4}
    stance_labels = ["", "", "", "", "Good", "Very good job"]
    # stance6: any option the map sends to that class is consistent (the authors' definition)
    assert M.class_belief_consistent(4, "Better", stance_labels, "stance6", omap)
    assert not M.class_belief_consistent(5, "Better", stance_labels, "stance6", omap)
    assert not M.class_belief_consistent(4, "Not in the map", stance_labels, "stance6", omap)
    assert M.class_belief_consistent(4, "Good / Better", stance_labels, "stance6", omap)
    assert not M.class_belief_consistent(4, "Good / Very good job", stance_labels, "stance6", omap)
    assert M.cbc([[1, 0]], [["Somewhat good job", "Nope"]], [labels], "options") == 0.5


def test_rs_uses_the_reference_of_the_predicted_belief():
    vocab = {"I like it": [1, 0, 0], "ref good": [1, 0, 0], "ref bad": [0, 1, 0],
             "meh": [0.6, 0.8, 0]}
    embed = lambda texts: np.array([vocab[t] for t in texts], dtype=float)   # noqa: E731
    references = [["ref good", "ref bad", ""]]
    scores = M.reference_similarity([["I like it", "I like it", "meh", "I like it"]],
                                    [[0, 1, 0, M.INVALID]], references, embed)
    np.testing.assert_allclose(scores, [[1.0, 0.0, 0.6, 0.0]])
    # a belief without a reference scores 0
    assert M.reference_similarity([["I like it"]], [[2]], references, embed)[0, 0] == 0.0
