"""THE registry of methods: every method the toolkit trains or scores is one `Method` entry here,
and every list of methods (the parameters' choices, the training and sweep command lines, the
stages, Table 2's columns, the findings, the published models and their cards) reads it.

Adding a method: add one `Method(...)` to METHODS, in the table order you want. A method trained
with a TRL trainer we already drive (`sft`, `dpo` = TRL's DPOTrainer, `gdpo` = GDPOTrainer) needs
nothing else: `trainer_args` are the arguments its TRL config takes beyond the training section
(e.g. `{"loss_type": "ipo"}`, or GDPO weights for an ablation), `schedule` names the training
section's `<schedule>_steps` / `<schedule>_lr` it trains with. `python -m gdpolib.methods` lists
the registry. Light on purpose (no torch): the parameters' checks read it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

TRAINERS = ("sft", "dpo", "gdpo")
# The predictors of the methods scored without a model (gdpolib.stages.evaluate.PREDICTORS).
PREDICTORS = ("uniform", "context_free")
# What a method is in the paper's story; the findings compare methods by role.
ROLES = ("baseline", "few-shot", "reference", "preference baseline", "ours", "ablation")


@dataclass(frozen=True)
class Method:
    """One method: what it is scored with, how it is trained and how the reports treat it."""

    name: str
    description: str              # one line (model cards, `python -m gdpolib.methods`)
    role: str                     # ROLES
    model: str                    # what is scored: "none" (no model: its `predictor`), "base" (the
                                  # untrained base model) or "trained" (its own checkpoints/<name>
                                  # stage)
    predictor: str | None = None  # PREDICTORS: the read-out of a method without a model
    trainer: str | None = None    # TRAINERS: the TRL trainer of a trained method
    start: str = "base"           # what training starts from: base (model) or sft (and the
                                  # SFT checkpoint is then the reference model)
    records: str | None = None    # the data stage's records it trains on: sft, dpo (conflicting
                                  # pairs), gdpo (shared-belief pairs) or icf (SFT records with a
                                  # few-shot context, built for it)
    schedule: str | None = None   # its steps and peak lr: <schedule>_steps, <schedule>_lr
    trainer_args: Mapping[str, Any] = field(default_factory=dict)   # its TRL config's own values
    fewshot: bool = False         # scored on test prompts with k solved examples in context
    margins: str | None = None    # the test pairs its reward margins vs the SFT reference are
                                  # read on (metrics.json skew.<name>): dpo, the conflicting pairs,
                                  # for every method alike; None = no margins
    shared_margins: str | None = None   # also on its own training pairs (gdpo: shared-belief
                                  # pairs, where the belief prefix cancels), keys shared_*
    reference: bool = False       # every method's JSD is compared with this one's, question by
                                  # question (methods.<m>.jsd_vs_<name>, a paired interval)
    sampled: bool = True          # its outputs are sampled and scored (CBC, BPC, RS, ...)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"method {self.name!r}: role {self.role!r} not in {ROLES}")
        if (self.predictor is None) != (self.model != "none") or \
                (self.predictor is not None and self.predictor not in PREDICTORS):
            raise ValueError(f"method {self.name!r}: a predictor in {PREDICTORS} exactly when "
                             f"model='none'")
        if (self.trainer is None) != (self.model != "trained"):
            raise ValueError(f"method {self.name!r}: a trainer exactly when model='trained'")
        if self.trainer is not None and (self.trainer not in TRAINERS or not self.records
                                         or not self.schedule):
            raise ValueError(f"method {self.name!r}: trainer in {TRAINERS}, with records and "
                             f"schedule")

    @property
    def trained(self) -> bool:
        """Trained by the toolkit (it has a checkpoints/<name> stage)."""
        return self.trainer is not None

    @property
    def preference(self) -> bool:
        """Trained on preference pairs from the SFT checkpoint (DPOTrainer or GDPOTrainer)."""
        return self.trainer in ("dpo", "gdpo")

    @property
    def label(self) -> str:
        """The method's name as the findings write it (DPO, GDPO, ...)."""
        return self.name.upper()


METHODS: tuple[Method, ...] = (
    Method("uniform", "1/|B| on each question's beliefs (no model)", "baseline", "none",
           predictor="uniform", sampled=False),
    Method("context_free", "the mean p* of the training questions with the same belief set: "
           "where answers tend to fall, whatever the question (no model)", "baseline", "none",
           predictor="context_free", sampled=False, reference=True),
    Method("zeroshot", "the untrained base model on the plain test prompts", "baseline", "base",
           sampled=False),
    Method("kshot", "the base model prompted with k solved examples", "few-shot", "base",
           fewshot=True),
    Method("icf", "SFT with a few-shot context block in every prompt (in-context fine-tuning)",
           "few-shot", "trained", trainer="sft", records="icf", schedule="sft", fewshot=True),
    Method("sft", "supervised fine-tuning on beliefs drawn from the group's distribution",
           "reference", "trained", trainer="sft", records="sft", schedule="sft", reference=True),
    Method("dpo", "DPO on conflicting pairs (the baseline that skews to the majority)",
           "preference baseline", "trained", trainer="dpo", start="sft", records="dpo",
           schedule="dpo", margins="dpo"),
    Method("ipo", "IPO (TRL's loss_type='ipo': squared loss on the log-ratio margin, beta its "
           "regulariser) on the conflicting pairs, a second preference baseline",
           "preference baseline", "trained", trainer="dpo", start="sft", records="dpo",
           schedule="dpo", trainer_args={"loss_type": "ipo"}, margins="dpo"),
    Method("gdpo", "GDPO: calibration to the group's belief distribution + belief-conditioned DPO",
           "ours", "trained", trainer="gdpo", start="sft", records="gdpo", schedule="gdpo",
           margins="dpo", shared_margins="gdpo"),
    Method("cdpo", "GDPO ablation without the calibration and belief terms (cdpo)", "ablation",
           "trained", trainer="gdpo", start="sft", records="gdpo", schedule="gdpo",
           trainer_args={"lambda_cal": 0.0, "lambda_nll": 0.0}, margins="dpo",
           shared_margins="gdpo"),
    Method("mft", "GDPO ablation without the preference term (mft)", "ablation", "trained",
           trainer="gdpo", start="sft", records="gdpo", schedule="gdpo",
           trainer_args={"lambda_pref": 0.0}, margins="dpo", shared_margins="gdpo"),
)
BY_NAME: dict[str, Method] = {m.name: m for m in METHODS}


def get(name: str) -> Method:
    """The registered method `name`; ValueError naming the registered ones otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(BY_NAME)}") from None


def names(keep: Callable[[Method], bool] = lambda m: True) -> list[str]:
    """The names of the registered methods `keep` accepts, in table order."""
    return [m.name for m in METHODS if keep(m)]


def in_order(chosen) -> list[str]:
    """The registered methods among `chosen`, in table order."""
    chosen = set(chosen)
    return [m.name for m in METHODS if m.name in chosen]


def baselines() -> list[str]:
    """The baselines every evaluation scores beside the methods (nothing trained, read out only)."""
    return names(lambda m: m.role == "baseline")


def paired_references() -> list[str]:
    """The methods every method's test JSD is compared with, question by question."""
    return names(lambda m: m.reference)


def unknown_problem(values, keep: Callable[[Method], bool], what: str) -> str | None:
    """Why `values` are not all registered methods that `keep` accepts, or None (a parameter's
    check: `methods`, `ablations`)."""
    allowed = names(keep)
    bad = [v for v in values if v not in allowed]
    return f"{bad} are not {what} ({', '.join(allowed)})" if bad else None


def main() -> int:
    """Print the registry as a table."""
    print("| method | role | scored with | trainer | trains on | description |")
    print("|---|---|---|---|---|---|")
    for m in METHODS:
        how = f"{m.trainer} {dict(m.trainer_args) or ''}".strip() if m.trainer else "–"
        print(f"| {m.name} | {m.role} | {m.model} | {how} | {m.records or '–'} | {m.description} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
