"""The model section: the policy (a short name, a hub id or a folder) and how the tiny model
is built."""
from __future__ import annotations

import dataclasses
import difflib
import re

from gdpolib.paramspec import param, path_problem, resolve_path

# Short model names; anything else must be a hub id "org/name", a known bare hub id, or a path.
LOCAL_MODELS = ("tiny", "smollm2-135m")
KNOWN_HUB_MODELS = (
    "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2",
    "EleutherAI/pythia-160m", "EleutherAI/pythia-410m", "EleutherAI/pythia-1b",
    "EleutherAI/pythia-1.4b", "EleutherAI/pythia-2.8b", "EleutherAI/pythia-6.9b",
    "HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-360M-Instruct",
    "HuggingFaceTB/SmolLM2-1.7B-Instruct",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_local_path(name: str) -> bool:
    """A model name meant as a path: it starts with '.', '/' or '~', or exists."""
    return name.startswith((".", "/", "~")) or resolve_path(name).exists()


def _check_model(value: str) -> str | None:
    if value in LOCAL_MODELS:
        return None
    if is_local_path(value):     # from_pretrained reads a folder
        return path_problem(value, "folder")
    if value in KNOWN_HUB_MODELS or _HUB_ID.match(value):
        return None
    close = difflib.get_close_matches(value, LOCAL_MODELS + KNOWN_HUB_MODELS, n=3, cutoff=0.4)
    return f"unknown model {value!r}" + (f"; did you mean {', '.join(close)}?" if close else "")


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """The policy and the tiny model's shape."""

    model: str = param("tiny", "Policy: tiny (a small LM built from the run's text), "
                               "smollm2-135m (offline), a hub id or a local folder.",
                       check=_check_model,
                       allowed="tiny, smollm2-135m, a hub id 'org/name' or an existing folder")
    model_cache_dir: str | None = param(None, "Cache of converted checkpoints and embeddings; "
                                              "null = $GDPO_CACHE or ~/.cache/gdpo.")
    tiny_arch: str = param("llama", "tiny model: llama (rotary positions, RMSNorm, SwiGLU) or "
                                    "gpt2 (learned positions; the tiny model before 2026-11-30).",
                           choices=("llama", "gpt2"))
    tiny_n_layer: int = param(2, "tiny model: transformer layers.", ge=1)
    tiny_n_embd: int = param(128, "tiny model: hidden size (a multiple of tiny_n_head).", ge=1)
    tiny_n_head: int = param(4, "tiny model: attention heads.", ge=1)
    tiny_label_tokens: str = param(
        "plain", "tiny model: how its BPE reads the '<' before a response's option label: plain "
                 "(GPT-2's byte-level rules: the label's first word follows no space, so it is "
                 "other tokens than in the prompt's option list) or as_in_prompt ('<' is read as "
                 "'< ' and written back as '<', so the label is the prompt's tokens; "
                 "results/demo.md, 'The label's own tokens').",
        choices=("plain", "as_in_prompt"))
    tiny_vocab_size: int = param(1024, "tiny model: size of the BPE trained on the run's text.",
                                 ge=1)
    max_length: int | None = param(None, "Tokens of the longest training sequence (prompt + "
                                         "completion); null = sized from the run's data. Never "
                                         "truncates: a longer sequence is an error before "
                                         "training, naming its question.", ge=1)
