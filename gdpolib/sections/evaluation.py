"""The evaluation section: which methods notebook 04 scores, how outputs are sampled and
judged, and the bootstrap behind every interval."""
from __future__ import annotations

import dataclasses

from gdpolib import methods as registry
from gdpolib.paramspec import param


def _check_methods(value: list[str]) -> str | None:
    return registry.unknown_problem(value, lambda m: m.role != "baseline",
                                    "registered methods (baselines are always scored)")


@dataclasses.dataclass(frozen=True)
class EvaluationSection:
    """What is scored, and how."""

    methods: list[str] = param(["sft", "dpo", "gdpo"],
                               "Methods notebook 04 scores (plus ablations and any trained "
                               "preference method).", check=_check_methods,
                               allowed="names of gdpolib/methods.py's methods other than the "
                                       "baselines (python -m gdpolib.methods lists them)")
    n_samples: int = param(8, "Completions sampled per test prompt (sampled JSD, CBC, BPC, RS).",
                           ge=1)
    temperature: float = param(1.0, "Sampling temperature of evaluated completions.", gt=0)
    top_k: int = param(0, "Sample from the k most likely tokens; 0 = no limit.", ge=0)
    top_p: float = param(1.0, "Nucleus sampling mass; 1 = no limit.", gt=0, le=1)
    response_top_p: float = param(1.0, "Nucleus sampling mass of the tokens after the belief "
                                       "digit (the digit stays a pure draw from p(b|x)); 1 = no "
                                       "limit, the paper's decoding.", gt=0, le=1)
    max_new_tokens: int = param(64, "Tokens generated per completion at most.", ge=1)
    eval_batch_size: int = param(32, "Prompts per forward pass in read-outs, evaluation and "
                                     "generation (sampling: divided by n_samples).", ge=1)
    kshot_k: int = param(3, "Demonstrations in k-shot and ICF prompts (as many as fit).", ge=0)
    judge: str = param("embedding", "BPC judge: embedding (offline) or openai (an LLM via the API).",
                       choices=("embedding", "openai"))
    embedder: str = param("minilm", "Sentence encoder of the embedding judge: minilm (offline) or "
                                    "a sentence-transformers id or folder.")
    judge_samples: int = param(0, "Samples per test prompt the BPC judge scores; 0 = all.", ge=0)
    ci_resamples: int = param(2000, "Bootstrap resamples (of test questions) behind every 95% "
                                    "interval of the evaluation tables.", ge=100)
