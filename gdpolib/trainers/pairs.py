"""Length-grouped batches of preference pairs for TRL's DPOTrainer (and so for GDPOTrainer).

TRL's collator pads every pair of a batch, both sides, to the batch's longest prompt +
completion; with pairs drawn at random that doubled the tokens a DPO or GDPO step computes (the
padding was 1.8-1.9x the real tokens). transformers' `train_sampling_strategy="group_by_length"`
would batch rows of similar length, as SFT does, but it measures a row by its `input_ids`, which
a tokenised preference dataset does not have. `LengthGroupedPairs` gives it the pairs' lengths;
it changes which pairs share a batch and nothing of the loss.

    class MyTrainer(LengthGroupedPairs, trl.DPOTrainer): ...
    args = DPOConfig(..., train_sampling_strategy="group_by_length")
"""
from __future__ import annotations

from datasets import Dataset
from transformers.trainer_pt_utils import LengthGroupedSampler
from trl import DPOTrainer as TRLDPOTrainer


def pair_lengths(dataset: Dataset) -> list[int]:
    """Tokens a tokenised pair is padded to at most: its prompt plus the longer of its two
    completions (TRL's prompt_ids / chosen_ids / rejected_ids). [len(dataset)]."""
    return [len(p) + max(len(c), len(r)) for p, c, r in
            zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"])]


class LengthGroupedPairs:
    """Mixin for a TRL DPOTrainer: under `train_sampling_strategy="group_by_length"` pairs of
    similar length (pair_lengths) share a batch, through transformers' LengthGroupedSampler
    (seeded by the Trainer's seed, as SFT's); any other strategy is the Trainer's own."""

    def _get_train_sampler(self, train_dataset=None):
        ds = train_dataset if train_dataset is not None else self.train_dataset
        if (self.args.train_sampling_strategy != "group_by_length" or not isinstance(ds, Dataset)
                or "prompt_ids" not in ds.column_names):
            return super()._get_train_sampler(train_dataset)
        return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                    lengths=pair_lengths(ds))


class DPOTrainer(LengthGroupedPairs, TRLDPOTrainer):
    """TRL's DPOTrainer, its loss unchanged, with length-grouped batches of pairs when asked
    (LengthGroupedPairs): the DPO baseline."""
