"""Metrics: JSD vs scipy, noise floor vs simulation, CBC / RS / majority-bias hand examples."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from gdpolib import methods
from gdpolib.metrics import distances as D
from gdpolib.metrics import sampled as S
from gdpolib.schemes import OptionsScheme, Stance6Scheme


def test_js_distance_equals_scipy_on_random_vectors():
    rng = np.random.default_rng(0)
    p, q = rng.random((50, 6)), rng.random((50, 6))   # unnormalised on purpose
    ours = D.js_distance(p, q)
    theirs = np.array([jensenshannon(a, b) for a, b in zip(p, q)])
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    assert D.js_distance(p[0], q[0]) == pytest.approx(jensenshannon(p[0], q[0]))
    assert D.mean_jsd(p, q) == pytest.approx(theirs.mean())


def test_js_distance_zero_for_identical_and_max_for_disjoint():
    p = np.random.default_rng(1).random((10, 4))
    np.testing.assert_allclose(D.js_distance(p, p), 0.0, atol=1e-7)
    np.testing.assert_allclose(D.js_distance(p, 3 * p), 0.0, atol=1e-7)   # renormalised
    assert D.js_distance([1, 0], [0, 1]) == pytest.approx(np.sqrt(np.log(2)))


def test_jsd_renormalises_over_the_belief_mask():
    # Full-vocabulary probabilities: 0.5 of the mass is off the belief tokens, and belief 3 is
    # outside the question's set; after renormalising over the set the model equals p*.
    probs = np.array([[0.1, 0.3, 0.1, 0.05]])
    p_star = np.array([[0.2, 0.6, 0.2, 0.0]])
    mask = np.array([[1, 1, 1, 0]])
    assert D.jsd_per_prompt(probs, p_star, mask)[0] == pytest.approx(0.0, abs=1e-7)
    by_q = D.jsd_by_question([0.1, 0.3, 0.5], ["a", "a", "b"])
    assert by_q == pytest.approx({"a": 0.2, "b": 0.5})


def test_noise_floor_matches_simulation():
    p = np.array([0.06, 0.56, 0.24, 0.08, 0.06])   # the poster's EU climate example
    exact = S.noise_floor_one(p, 8)
    rng = np.random.default_rng(0)
    hist = rng.multinomial(8, p, size=100_000).astype(float)
    sim = D.js_distance(hist, np.broadcast_to(p, hist.shape)).mean()
    assert exact == pytest.approx(sim, abs=0.003)
    assert exact == pytest.approx(0.27, abs=0.01)    # the GDPO authors' value for it
    # Monte Carlo path (forced) agrees with the exact sum
    assert S.noise_floor_one(p, 8, exact_limit=0, seed=1) == pytest.approx(exact, abs=0.005)
    # a calibrated sampler scores the floor on average with the same function used for models
    beliefs = rng.choice(5, p=p, size=(4000, 8))
    sampled = S.sampled_jsd_per_prompt(beliefs, np.tile(p, (4000, 1)), np.ones((4000, 5)))
    assert sampled.mean() == pytest.approx(exact, abs=0.005)
    assert S.noise_floor_one([1.0, 0, 0], 8) == 0.0
    floor = S.noise_floor(np.array([p, p, [0.5, 0.5, 0, 0, 0]]), np.ones((3, 5)), 8)
    assert floor[0] == floor[1] == pytest.approx(exact)


def test_invalid_samples_are_their_own_bucket_not_class_0():
    p_star = np.array([[0.5, 0.5, 0.0]])
    mask = np.array([[1, 1, 0]])
    counts, invalid = S.belief_counts([[0, 1, S.INVALID, 2]], mask)   # 2 is outside the set
    np.testing.assert_array_equal(counts, [[1, 1, 0]])
    assert invalid[0] == 2
    perfect = S.sampled_jsd_per_prompt([[0, 1, 0, 1]], p_star, mask)[0]
    broken = S.sampled_jsd_per_prompt([[0, 1, S.INVALID, S.INVALID]], p_star, mask)[0]
    assert perfect == pytest.approx(0.0, abs=1e-7)
    assert broken > 0.3


def test_majority_bias_hand_example():
    p_star = np.array([[0.5, 0.3, 0.2], [0.2, 0.8, 0.0]])
    mask = np.array([[1, 1, 1], [1, 1, 0]])
    beliefs = [[0, 0, 0, 1], [1, 1, 0, S.INVALID]]
    # prompt 0: share of belief 0 = 3/4 -> 1.5; prompt 1: share of belief 1 among the 3 valid
    # samples = 2/3 -> (2/3) / 0.8
    assert S.majority_bias(beliefs, p_star, mask) == pytest.approx((1.5 + (2 / 3) / 0.8) / 2)
    assert np.isnan(S.majority_bias([[S.INVALID]], p_star[:1], mask[:1]))


def test_cbc_hand_examples():
    """CBC is the belief scheme's check (gdpolib.schemes), averaged by metrics.sampled.cbc."""
    options, labels = OptionsScheme(), ["Very good job", "Somewhat good job", "Somewhat bad job", ""]
    assert options.consistent(1, "Somewhat good job", labels)
    assert options.consistent(1, " Somewhat  good job ", labels)
    assert not options.consistent(0, "Somewhat good job", labels)
    assert not options.consistent(3, "", labels)
    assert not options.consistent(S.INVALID, "Very good job", labels)
    assert not options.consistent(0, None, labels)
    stance6 = Stance6Scheme({"Very good job": 5, "Good": 4, "Better": 4})
    stance_labels = ["", "", "", "", "Good", "Very good job"]
    # stance6: any option the map sends to that class is consistent (the authors' definition)
    assert stance6.consistent(4, "Better", stance_labels)
    assert not stance6.consistent(5, "Better", stance_labels)
    assert not stance6.consistent(4, "Not in the map", stance_labels)
    assert stance6.consistent(4, "Good / Better", stance_labels)
    assert not stance6.consistent(4, "Good / Very good job", stance_labels)
    assert not stance6.consistent(S.INVALID, "Better", stance_labels)
    assert not options.consistent(4, "Better", stance_labels)     # the label only, no map
    assert S.cbc([[1, 0]], [["Somewhat good job", "Nope"]], [labels], options.consistent) == 0.5
    assert np.isnan(S.cbc([], [], [], options.consistent))


def test_rs_uses_the_reference_of_the_predicted_belief():
    vocab = {"I like it": [1, 0, 0], "ref good": [1, 0, 0], "ref bad": [0, 1, 0],
             "meh": [0.6, 0.8, 0]}
    embed = lambda texts: np.array([vocab[t] for t in texts], dtype=float)   # noqa: E731
    references = [["ref good", "ref bad", ""]]
    scores = S.reference_similarity([["I like it", "I like it", "meh", "I like it"]],
                                    [[0, 1, 0, S.INVALID]], references, embed)
    np.testing.assert_allclose(scores, [[1.0, 0.0, 0.6, 0.0]])
    # a belief without a reference scores 0
    assert S.reference_similarity([["I like it"]], [[2]], references, embed)[0, 0] == 0.0


# ---- both JSD conventions, TVD, Wasserstein, entropy, bootstrap ----
def test_jsd_conventions_on_the_issue_example():
    # Mass 0.35 and 0.05 on digits 3 and 5, outside the belief set {2, 4}.
    probs = np.array([[0, 0, 0.30, 0.35, 0.30, 0.05]])
    p_star = np.array([[0, 0, 0.5, 0, 0.5, 0]])
    mask = np.array([[0, 0, 1, 0, 1, 0]])
    assert D.jsd_per_prompt(probs, p_star, mask)[0] == pytest.approx(0.0, abs=1e-12)
    digits = D.jsd_digits_per_prompt(probs, p_star)[0]
    assert digits == pytest.approx(jensenshannon(probs[0], p_star[0]))
    assert round(digits, 3) == 0.405


def test_tvd_hand_values():
    probs = np.array([[0.1, 0.4, 0.5, 0.0], [0.2, 0.2, 0.0, 0.6]])   # row 1: 0.6 off the set
    p_star = np.array([[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    # row 0: renormalised (0.1, 0.4, 0.5) vs (0.5, 0.5, 0): (0.4 + 0.1 + 0.5) / 2 = 0.5
    np.testing.assert_allclose(D.tvd_per_prompt(probs, p_star, mask), [0.5, 0.0], atol=1e-12)


def test_wasserstein_matches_scipy_and_leaves_no_stance_out():
    from scipy.stats import wasserstein_distance
    nan = np.nan
    stance = np.array([nan, 1, 2, 3, 4, 5])
    probs = np.array([[0.5, 0.1, 0.1, 0.1, 0.1, 0.1],      # half its mass on "no stance"
                      [0.0, 0.0, 0.3, 0.0, 0.7, 0.0],
                      [0.9, 0.0, 0.0, 0.0, 0.1, 0.0]])
    p_star = np.array([[0.0, 0.2, 0.2, 0.2, 0.2, 0.2],
                       [0.0, 0.0, 0.5, 0.0, 0.5, 0.0],
                       [0.5, 0.0, 0.0, 0.0, 0.5, 0.0]])
    mask = np.array([[1, 1, 1, 1, 1, 1], [0, 0, 1, 0, 1, 0], [1, 0, 0, 0, 1, 0]])
    wd = D.wasserstein_per_prompt(probs, p_star, mask, np.tile(stance, (3, 1)))
    # row 0: classes 1..5 renormalised: uniform vs uniform -> 0, whatever class 0 holds
    assert wd[0] == pytest.approx(0.0, abs=1e-12)
    # row 1: support {2, 4}, range 2: scipy's distance / 2, which for two points is the TVD 0.2
    ref = wasserstein_distance([2, 4], [2, 4], [0.3, 0.7], [0.5, 0.5]) / 2
    assert wd[1] == pytest.approx(ref) and ref == pytest.approx(0.2)
    # row 2: one ordinal belief (4) and "no stance": no scale, undefined (the caller counts it)
    assert np.isnan(wd[2])
    # a nominal question (all NaN ordinals) is undefined too
    assert np.isnan(D.wasserstein_per_prompt(probs[:1], p_star[:1], mask[:1],
                                             np.full((1, 6), nan))[0])
    rng = np.random.default_rng(0)
    p, q = rng.random((20, 5)), rng.random((20, 5))
    o = np.array([1.0, 2.0, 3.0, 5.0, 8.0])
    ours = D.wasserstein_per_prompt(p, q, np.ones((20, 5)), np.tile(o, (20, 1)))
    theirs = [wasserstein_distance(o, o, a / a.sum(), b / b.sum()) / 7 for a, b in zip(p, q)]
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_entropy_matches_scipy_over_the_belief_set():
    from scipy.stats import entropy
    probs = np.array([[0.2, 0.2, 0.1, 0.5], [0.0, 1.0, 0.0, 0.0]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    np.testing.assert_allclose(D.entropy_per_prompt(probs, mask),
                               [entropy([0.2, 0.2, 0.1]), 0.0], atol=1e-12)


def test_bootstrap_resamples_questions_not_prompts():
    rng = np.random.default_rng(3)
    # 10 questions x 4 prompts; prompts of a question are alike (a question effect + noise)
    values = np.repeat(rng.random(10), 4) + 0.01 * rng.random(40)
    qids = [f"q{i // 4}" for i in range(40)]
    lo, hi = D.bootstrap_ci(values, qids, seed=1)
    assert lo < values.mean() < hi
    assert D.bootstrap_ci(values, qids, seed=1) == (lo, hi)          # seeded
    # A question counted twice as many times (every prompt duplicated) is still one question:
    # the interval does not narrow, as it would if prompts were resampled.
    doubled = D.bootstrap_ci(np.repeat(values, 2), np.repeat(qids, 2), seed=1)
    np.testing.assert_allclose(doubled, (lo, hi), atol=1e-12)
    prompt_level = D.bootstrap_ci(values, [f"p{i}" for i in range(40)], seed=1)
    assert prompt_level[1] - prompt_level[0] < hi - lo       # prompts of a question correlate
    assert D.bootstrap_ci([0.3, 0.3], ["a", "a"]) == pytest.approx((0.3, 0.3))
    with pytest.raises(ValueError, match="NaN"):
        D.bootstrap_ci([0.1, np.nan], ["a", "b"])
    with pytest.raises(ValueError, match="need"):
        D.bootstrap_ci([], [])


# ---- NaN, all-zero rows, empty samples: never scored ----
def test_nan_and_all_zero_rows_raise_instead_of_scoring_perfect():
    good = np.array([0.5, 0.5])
    with pytest.raises(ValueError, match="row 0 is not finite"):
        D.js_distance([np.nan, 1.0], good)
    with pytest.raises(ValueError, match="row 1 is all zeros"):
        D.js_distance([[0.5, 0.5], [0.0, 0.0]], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="negative"):
        D.js_distance([-0.1, 1.1], good)
    mask = np.array([[1, 1, 0]])
    with pytest.raises(ValueError, match="not finite"):
        D.renormalise([[np.nan, 0.5, 0.5]], mask)
    with pytest.raises(ValueError, match="no mass on its belief set"):
        D.renormalise([[0.0, 0.0, 1.0]], mask)          # all mass outside the set
    with pytest.raises(ValueError, match="empty belief set"):
        D.renormalise([[0.5, 0.5, 0.0]], [[0, 0, 0]])
    with pytest.raises(ValueError):
        D.jsd_per_prompt([[np.nan, 0.5, 0.5]], [[0.5, 0.5, 0]], mask)
    with pytest.raises(ValueError, match="NaN"):
        D.jsd_by_question([0.1, np.nan], ["a", "b"])
    assert list(D.has_mass([[0.0, 0.0, 1.0], [0.1, 0.0, 0.0]], [[1, 1, 0], [1, 1, 0]])) == [False, True]


def test_zero_samples_raise():
    p_star, mask = np.array([[0.5, 0.5]]), np.array([[1, 1]])
    with pytest.raises(ValueError, match="zero samples"):
        S.belief_counts(np.zeros((1, 0), dtype=int), mask)
    with pytest.raises(ValueError, match="zero samples"):
        S.sampled_jsd_per_prompt(np.zeros((1, 0), dtype=int), p_star, mask)
    with pytest.raises(ValueError, match="at least 1"):
        S.noise_floor_one([0.5, 0.5], 0)
    with pytest.raises(ValueError, match="not finite"):
        S.noise_floor_one([np.nan, 0.5], 8)


def _resolve(dotted: str):
    """The object a dotted path names (module, then attributes)."""
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_metric_registry_names_real_functions_and_every_key_a_run_writes():
    """Each metric's function exists; the data part, the margins and the read-out numbers a run
    writes are exactly the registry's keys (docs/metrics.md is generated from it)."""
    import datasets

    from gdpolib import scoring
    from gdpolib.data.records import metrics_part
    from gdpolib.evalset import EvalSet
    from gdpolib.margins import margin_summary
    from gdpolib.metrics import registry as R

    for m in R.METRICS:
        assert callable(f := _resolve(m.function)) or isinstance(f, property), m.function
        assert m.meaning and (m.direction in R.DIRECTIONS), m.key
    counts = {"questions": 3, "dpo": {"train": 5, "eval": 1, "test": 2}, "prompts": {"test": 4},
              "prompt_questions": {"test": 2}}
    data = metrics_part(counts, {"protocol": "seen_questions", "heldout_styles": ["formal"],
                                 "overlap": {"longest_shared_span_mean": 0.4}})
    assert set(data["data"]) == set(R.keys(part="data"))
    margins = margin_summary(np.array([0.1, -0.2, 0.3]), np.array([1, 0, 1]))
    # on the conflicting pairs, and (shared_*) on a method's own pairs
    assert set(R.keys(part="skew")) <= set(margins) | {f"shared_{k}" for k in margins}
    rows = [{"prompt": f"p{i}", "qid": f"q{i % 2}", "style": "plain",
             "p_star": [0.6, 0.4] + [0.0] * 8, "belief_mask": [1, 1] + [0] * 8,
             "labels": ["a", "b"] + [""] * 8, "references": [""] * 10,
             "ordinal": [1.0, 2.0] + [float("nan")] * 8} for i in range(4)]
    es = EvalSet.from_table(datasets.Dataset.from_list(rows))
    summary = scoring.readout_summary(scoring.score_probs(es.uniform(), es), es, n_boot=100)
    read_out = {k for k in R.keys(part="methods")
                if R.get(k).function.startswith(("gdpolib.metrics.distances",
                                                 "gdpolib.scoring.score_probs",
                                                 "gdpolib.scoring.readout_summary"))}
    assert read_out <= set(summary)
    paired = {f"jsd_vs_{ref}{end}" for ref in methods.paired_references()
              for end in ("", "_ci", "_questions")}         # stages.evaluate.paired_comparisons
    assert set(R.keys(part="methods")) - read_out - paired == {"jsd_sampled", "cbc", "bpc", "rs",
                                                               "invalid_rate"}
    assert set(R.well_formed_keys()) == {"jsd_sampled", "cbc", "bpc", "rs"}
    assert R.get("jsd_ci") is R.get("jsd") and R.get("jsd").ci
