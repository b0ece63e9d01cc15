"""The demo's comparisons on the embedded S. Africa data, checked by hand and with scipy: the
context-free baseline, paired per-question differences, DPO and GDPO margins on the same
conflicting pairs, and length-grouped batches of real preference pairs."""
from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import bootstrap
from torch.utils.data import RandomSampler

from gdpolib import config, runs
from gdpolib.evalset import EvalSet
from gdpolib.scoring import score_probs
from gdpolib.stages import evaluate
from gdpolib.stages.data import prepare_data
from gdpolib.trainers.pairs import LengthGroupedPairs, pair_lengths


@pytest.fixture(scope="module")
def demo(tmp_path_factory, goqa_csv):
    """The demo's data stage (S. Africa, seen questions, 6 styles, 1 held out) on the embedded
    GlobalOpinionQA rows, with 2 responses / pairs per prompt to stay small."""
    cfg = config.load_config(overrides={
        "output_root": str(tmp_path_factory.mktemp("lfl")), "run_name": "lfl",
        "goqa_path": str(goqa_csv), "sft_per_prompt": 2, "pairs_per_prompt": 2,
        "ci_resamples": 500})
    run = runs.Run.open(cfg)
    return cfg, run, prepare_data(cfg, run)


def test_context_free_baseline_is_the_mean_training_target_per_options_count(demo):
    _, _, data = demo
    train = data.prompts["train"].to_pandas().drop_duplicates("qid")     # each question once
    by_set = {tuple(m): np.mean(np.stack(g["p_star"].to_list()), axis=0)
              for m, g in train.groupby(train["belief_mask"].map(tuple))}
    test = EvalSet.from_table(data.prompts["test"])
    cf = test.context_free(EvalSet.from_table(data.prompts["train"]))
    assert cf.shape == test.p_star.shape
    for i, mask in enumerate(test.mask):
        np.testing.assert_allclose(cf[i], by_set[tuple(mask)], atol=1e-12)
    # it ignores the question: two test prompts with the same options count read out the same
    fours = [i for i, m in enumerate(test.mask) if m.sum() == 4]
    assert len(fours) >= 2 and np.allclose(cf[fours[0]], cf[fours[1]])
    # its JSD is scipy's on the belief set
    read = score_probs(cf, test)
    i = fours[0]
    on = test.mask[i].astype(bool)
    assert read["jsd"][i] == pytest.approx(jensenshannon(cf[i][on], test.p_star[i][on]))
    assert read["valid"].all()


def test_paired_differences_of_two_baselines_match_scipy(demo):
    cfg, run, data = demo
    numbers = evaluate.paired_comparisons(cfg, run, data, ["uniform", "context_free"])
    # by hand: each prompt's JSD with scipy, the mean per question, uniform minus context-free
    test = EvalSet.from_table(data.prompts["test"])
    cf = test.context_free(EvalSet.from_table(data.prompts["train"]))
    rows = []
    for i, (qid, mask) in enumerate(zip(test.qids, test.mask.astype(bool))):
        uniform = np.where(mask, 1.0 / mask.sum(), 0.0)
        rows.append({"qid": qid, "u": jensenshannon(uniform[mask], test.p_star[i][mask]),
                     "cf": jensenshannon(cf[i][mask], test.p_star[i][mask])})
    per_q = pd.DataFrame(rows).groupby("qid").mean().sort_index()
    d = per_q["u"].to_numpy() - per_q["cf"].to_numpy()
    got = numbers["uniform"]
    assert got["jsd_vs_context_free"] == pytest.approx(d.mean())
    assert got["jsd_vs_context_free_questions"] == len(per_q) == 62
    ref = bootstrap((per_q["u"].to_numpy(), per_q["cf"].to_numpy()),
                    lambda a, b, axis=-1: np.mean(a - b, axis=axis), paired=True,
                    vectorized=True, n_resamples=cfg.ci_resamples, method="percentile",
                    rng=np.random.default_rng(cfg.seed)).confidence_interval
    assert got["jsd_vs_context_free_ci"] == [pytest.approx(ref.low), pytest.approx(ref.high)]
    assert "jsd_vs_context_free" not in numbers["context_free"]      # not against itself
    assert run.metrics()["methods"]["uniform"]["jsd_vs_context_free"] == got["jsd_vs_context_free"]


def test_dpo_and_gdpo_test_pairs_are_the_same_draws(demo):
    """Margins are compared like for like on data.dpo's conflicting pairs; GDPO's shared-belief
    pair i is DPO's pair i with the chosen belief prefix on both sides."""
    _, _, data = demo
    dpo, gdpo = data.dpo["test"].to_pandas(), data.gdpo["test"].to_pandas()
    assert len(dpo) == len(gdpo) == 124
    same = ["prompt", "chosen", "b_c", "b_r", "majority", "qid", "style"]
    pd.testing.assert_frame_equal(dpo[same], gdpo[same])
    assert (dpo["b_c"] != dpo["b_r"]).all()                          # conflicting beliefs
    assert all(r.startswith(str(b)) for r, b in zip(dpo["rejected"], dpo["b_r"]))
    prefix = gdpo["chosen"].str.extract(r"^(\d<[^>]*>)")[0]
    assert prefix.notna().all()
    assert all(r.startswith(p) for r, p in zip(gdpo["rejected"], prefix))   # shared belief
    assert 0 < dpo["majority"].mean() < 1                            # both groups are measured


class _Base:
    def _get_train_sampler(self, train_dataset=None):
        return RandomSampler(self.train_dataset)


class _Trainer(LengthGroupedPairs, _Base):
    def __init__(self, ds, strategy):
        self.train_dataset = ds
        self.args = types.SimpleNamespace(train_sampling_strategy=strategy, train_batch_size=16,
                                          gradient_accumulation_steps=1)


def _padding(sampler, lengths, batch: int = 16) -> float:
    order = list(sampler)
    batches = [[lengths[i] for i in order[j:j + batch]] for j in range(0, len(order), batch)]
    return sum(max(b) * len(b) for b in batches) / sum(sum(b) for b in batches)


def test_length_grouped_batches_of_real_pairs_pad_less(demo):
    import torch
    from datasets import Dataset

    _, _, data = demo
    pairs = data.dpo["train"]
    # token counts of a character-level tokeniser: enough to order real pairs by length
    ds = Dataset.from_dict({"prompt_ids": [list(p) for p in pairs["prompt"]],
                            "chosen_ids": [list(c) for c in pairs["chosen"]],
                            "rejected_ids": [list(r) for r in pairs["rejected"]]})
    lengths = pair_lengths(ds)
    r0 = pairs[0]
    assert lengths[0] == len(r0["prompt"]) + max(len(r0["chosen"]), len(r0["rejected"]))
    torch.manual_seed(0)
    grouped = _Trainer(ds, "group_by_length")._get_train_sampler()
    torch.manual_seed(0)
    plain = _Trainer(ds, "random")._get_train_sampler()
    assert isinstance(plain, RandomSampler) and sorted(grouped) == list(range(len(ds)))
    torch.manual_seed(0)
    grouped_pad = _padding(grouped, lengths)
    torch.manual_seed(0)
    random_pad = _padding(plain, lengths)
    # the padding beyond the real tokens at least halves (measured: 26 % vs 77 %; the first
    # batch holds the longest pair, a few of which are twice the length of the rest)
    assert grouped_pad - 1 < (random_pad - 1) / 2
