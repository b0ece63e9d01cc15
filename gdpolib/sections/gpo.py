"""The GPO section: the embedder, GPO's loss, initialisation and meta-training schedule, the
group split and the few-shot GDPO and OpinionQA parts of notebook 05."""
from __future__ import annotations

import dataclasses
from typing import Iterable

from gdpolib.paramspec import FRACTIONS, fractions_problem, param
from gdpolib.sections.data import data_input

MIN_MAX = "[min, max], 1 <= min <= max"


def _check_min_max(value: list[int]) -> str | None:
    if len(value) != 2 or value[0] < 1 or value[0] > value[1]:
        return f"{value!r} is not [min, max] with 1 <= min <= max"
    return None


def gpo_k_problem(k_values: Iterable[int], ctx_range: list[int]) -> str | None:
    """Why context sizes `k_values` cannot be scored for a GPO meta-trained on episodes of
    `ctx_range` context questions (a k outside it is out of distribution: at small k the model
    pays for the range, not for what the context says), or None."""
    lo, hi = ctx_range
    outside = [k for k in k_values if not lo <= k <= hi]
    if outside:
        return (f"k = {', '.join(map(str, outside))} outside the training context range "
                f"gpo_ctx_range {list(ctx_range)}; score k in [{lo}, {hi}] or widen gpo_ctx_range")
    return None


@dataclasses.dataclass(frozen=True)
class GPOSection:
    """GPO (notebook 05): few-shot prediction of a group's answers."""

    gpo_embedder: str = param("minilm", "Embedder of (question, option) pairs: minilm (offline), "
                                        "policy (the run's model), smollm2-135m or a hub id.")
    gpo_pooling: str = param("option", "Pooling of a causal-LM embedder's states: option (the "
                                       "answer's own tokens, conditioned on the question) or text "
                                       "(the whole prompt, the paper's); sentence encoders ignore "
                                       "it.", choices=("option", "text"))
    gpo_loss: str = param("gaussian_nll", "GPO loss: gaussian_nll (the paper's) or kl (ours: "
                                          "per-question KL to the group's answers).",
                          choices=("gaussian_nll", "kl"))
    gpo_init: str = param("answer", "GPO initialisation: answer (ours: He init, the answer weighted "
                                    "like all of x; leaves the mean from step 0) or torch (PyTorch's "
                                    "default, the official code's).", choices=("answer", "torch"))
    gpo_steps: int = param(80, "GPO meta-training steps (CPU-sized; the paper ran 200k).", ge=1)
    gpo_lr: float = param(3.0e-4, "GPO meta-training learning rate.", gt=0)
    gpo_k: int = param(20, "Answered context questions k of a new group (evaluation, model "
                           "selection, few-shot GDPO); within gpo_ctx_range.", ge=1)
    gpo_k_values: list[int] = param([1, 5, 20], "Context sizes of the k curve; each within "
                                                "gpo_ctx_range (GPO is never scored outside its "
                                                "training range).", ge=1)
    gpo_group_split: list[float] = param([0.6, 0.2, 0.2], "Meta-train / validation / test "
                                                          "fractions of the groups.",
                                         check=fractions_problem, allowed=FRACTIONS)
    gpo_min_questions: int = param(60, "Questions a GlobalOpinionQA country needs to be a group.",
                                   ge=1)
    gpo_batch_groups: int = param(8, "Groups (episodes) per meta-training step.", ge=1)
    gpo_ctx_range: list[int] = param([1, 30], "Context questions per training episode.",
                                     check=_check_min_max, allowed=MIN_MAX)
    gpo_tar_range: list[int] = param([10, 30], "Target questions per training episode.",
                                     check=_check_min_max, allowed=MIN_MAX)
    gpo_episodes: str = param("per_group", "Questions of a meta-training batch: per_group (each "
                                           "group its own draw) or shared (one draw for every "
                                           "group of the batch, as the official OpinionQA "
                                           "batches).", choices=("per_group", "shared"))
    gpo_eval_every: int = param(50, "Steps between validation-group evaluations.", ge=1)
    gpo_zero_shot_lm: str = param("none", "LM of the zero-shot baseline: policy (the run's "
                                          "model), smollm2-135m, a hub id, or none (the demo: "
                                          "its untrained tiny policy says nothing).")
    gpo_fewshot_gdpo: bool = param(False, "Notebook 05 also trains GDPO on the p* predicted from "
                                         "gpo_k answers by the predictor best on validation "
                                         "groups, and on the meta-train mean's (few-shot GDPO).")
    gpo_prior: str = param("none", "train_groups = also meta-train our group-prior GPO "
                                   "(method gpo_prior) beside the paper's (gpo); none = the "
                                   "paper's only (the demo).", choices=("train_groups", "none"))
    gpo_seeds: int = param(1, "Seeds of notebook 05's seed table (seed, seed+1, ...; each its own "
                              "group split and models); its cost grows linearly.", ge=1)
    opinionqa_path: str | None = data_input("opinionqa_path", "auto", "OpinionQA human_resp folder "
                                       "(notebook 05's US groups); auto = $GDPO_DATA_DIR's copy "
                                       "when there; null or none found = skip them.")
    opinionqa_groups: str = param("all", "OpinionQA groups: all single-attribute ones, or gpo "
                                         "(the paper's 22; 17 in the local data, which has no "
                                         "religion file).", choices=("all", "gpo"))
