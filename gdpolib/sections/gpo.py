"""The GPO section: the embedder, GPO's loss, initialisation and meta-training schedule, the
group split and the few-shot GDPO and OpinionQA parts of notebook 05."""
from __future__ import annotations

import dataclasses

from gdpolib.paramspec import FRACTIONS, fractions_problem, param
from gdpolib.sections.data import data_input

MIN_MAX = "[min, max], 1 <= min <= max"


def _check_min_max(value: list[int]) -> str | None:
    if len(value) != 2 or value[0] < 1 or value[0] > value[1]:
        return f"{value!r} is not [min, max] with 1 <= min <= max"
    return None


@dataclasses.dataclass(frozen=True)
class GPOSection:
    """GPO (notebook 05): few-shot prediction of a group's answers."""

    gpo_embedder: str = param("minilm", "Embedder of (question, option) pairs: minilm (offline), "
                                        "policy (the run's model), smollm2-135m or a hub id.")
    gpo_loss: str = param("gaussian_nll", "GPO loss: gaussian_nll (the paper's) or kl (ours: "
                                          "per-question KL to the group's answers).",
                          choices=("gaussian_nll", "kl"))
    gpo_init: str = param("answer", "GPO initialisation: answer (ours: He init, the answer weighted "
                                    "like all of x; leaves the mean from step 0) or torch (PyTorch's "
                                    "default, the official code's).", choices=("answer", "torch"))
    gpo_steps: int = param(80, "GPO meta-training steps (CPU-sized; the paper ran 200k).", ge=1)
    gpo_lr: float = param(3.0e-4, "GPO meta-training learning rate.", gt=0)
    gpo_k: int = param(20, "Answered context questions k of a new group (evaluation, model "
                           "selection, few-shot GDPO).", ge=1)
    gpo_k_values: list[int] = param([1, 5, 20], "Context sizes of the k curve.", ge=1)
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
    gpo_eval_every: int = param(50, "Steps between validation-group evaluations.", ge=1)
    gpo_zero_shot_lm: str = param("none", "LM of the zero-shot baseline: policy (the run's "
                                          "model), smollm2-135m, a hub id, or none (the demo: "
                                          "its untrained tiny policy says nothing).")
    gpo_fewshot_gdpo: bool = param(False, "Notebook 05 also trains GDPO on GPO's predicted p* "
                                         "(few-shot GDPO).")
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
