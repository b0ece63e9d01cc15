"""Every run parameter, declared once: name, type, default, help and the rules it must obey.

Precedence (lowest first): the defaults declared in `RunConfig` < each `-f` params file in the
order given < `-p KEY VALUE` (in a notebook: the variables papermill injected). Names are flat
because papermill injects parameters as notebook variables. `validate` checks everything once,
up front, before a run writes anything: unknown names, types, choices, ranges, the country, the
model, and that input files and folders exist and are readable. Each failure is a ConfigError of
one line naming the key, where its value came from, the value, and what is allowed.

`params/defaults.yaml` and README.md's parameter table are GENERATED from `RunConfig` (`python -m
gdpolib.paramdocs --write`); runs never read defaults.yaml (it documents them; usable with -f).

Adding a parameter
------------------
1. Add one field to `RunConfig`, in its section, with `param(default, help, **rules)`:

       my_steps: int = param(100, "Optimizer steps of my stage.", ge=1)

   The annotation is the type: str, int, float, bool or a list of one of them, `| None` where
   null is allowed (checked; papermill's strings are coerced). A new section also needs its
   first parameter in SECTIONS. Rules, all optional:
   `choices=(...)` (for a list type: allowed items), bounds `ge=`, `gt=`, `le=`, `lt=` (for a
   list: of each item), `pattern=` (a regex for the whole value) or `check=` (a function value
   -> problem or None), `allowed=` (the text that errors and the docs show for a pattern or
   check). A data input (a file, folder, `hub`, URL...) is declared with `_data(name, ...)` and
   read with `gdpolib.sources.for_run(cfg, name)`, the one place that decides what it means.
2. Run `python -m gdpolib.paramdocs --write` (regenerates defaults.yaml and docs/parameters.md).
3. Read it as `cfg.my_steps`, and add it to the cache key of every stage whose output it changes.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from gdpolib import groupnames, sources
from gdpolib.countries import UnknownCountryError, resolve_country
from gdpolib.paramspec import (MAX_YAML_BYTES, PROJECT_ROOT, allowed_text, coerce, load_yaml,
                               name_problem, param, path_problem, resolve_path, rule_problem,
                               yaml_problem)
from gdpolib.scrub import take_back

DEFAULTS_FILE = PROJECT_ROOT / "params" / "defaults.yaml"

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
N_STYLES_MAX = 6          # len(gdpolib.data.responses.STYLES), not imported: config stays light
DEFAULT_ORIGIN = "the defaults (gdpolib/config.py)"
NOTEBOOK_ORIGIN = "the notebook parameters (papermill -f/-p)"


class ConfigError(ValueError):
    """A parameter that is unknown, of the wrong type or not allowed; says which, where, why."""


def is_local_path(name: str) -> bool:
    """A model name meant as a path: it starts with '.', '/' or '~', or exists."""
    return name.startswith((".", "/", "~")) or resolve_path(name).exists()


# ---------------------------------------------------------------- checks used by fields
def _data(name: str, default: str | None, help: str) -> Any:
    """A data input: its values mean what gdpolib.sources says (path, hub, github, URL, auto)."""
    return param(default, help, check=lambda value: sources.problem(name, value),
                 allowed=sources.accepted(name))


def _check_country(value: str) -> str | None:
    try:
        resolve_country(value)
    except UnknownCountryError as err:
        return str(err)
    return None


def _check_model(value: str) -> str | None:
    if value in LOCAL_MODELS:
        return None
    if is_local_path(value):     # from_pretrained reads a folder
        return path_problem(value, "folder")
    if value in KNOWN_HUB_MODELS or _HUB_ID.match(value):
        return None
    close = difflib.get_close_matches(value, LOCAL_MODELS + KNOWN_HUB_MODELS, n=3, cutoff=0.4)
    return f"unknown model {value!r}" + (f"; did you mean {', '.join(close)}?" if close else "")


FRACTIONS = "three non-negative numbers summing to 1"
MIN_MAX = "[min, max], 1 <= min <= max"


def _check_fractions(value: list[float]) -> str | None:
    if len(value) != 3 or any(f < 0 for f in value) or abs(sum(value) - 1) > 1e-6:
        return f"{value!r} are not three non-negative fractions summing to 1"
    return None


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


# ---------------------------------------------------------------- the parameters
@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every parameter of a run; the defaults are the embedded demo (offline, tiny model)."""

    # --- run ---
    run_name: str | None = param(None, 'Run folder under output_root; null = '
                                       '"<country slug>-<model slug>" (e.g. sa-tiny).',
                                 check=name_problem, allowed="a folder name (no path) or null")
    update_run: bool = param(False, "Reuse a run folder whose config.yaml holds other parameters "
                                    "(its metrics.json is cleared; unchanged stages are reused); "
                                    "false = refuse, so no run's record is ever rewritten.")
    output_root: str = param("outputs", "Folder of the run folders (anywhere; see Outputs).")
    seed: int = param(0, "Seed of every random draw (data, splits, training, sampling, GPO).",
                      ge=0, lt=2**32)
    device: str = param("auto", "Where models run; auto = CUDA if available, else MPS, else CPU.",
                        pattern=r"auto|cpu|mps|cuda(:\d+)?", allowed="auto, cpu, mps, cuda or cuda:N")
    dtype: str = param("auto", "Dtype of loaded weights; auto = bfloat16 on a CUDA device that has "
                               "it, else float32 (training: float32 weights, bf16 autocast on CUDA).",
                       choices=("auto", "float32", "bfloat16", "float16"))
    # --- data ---
    country: str = param("sa", "GlobalOpinionQA country whose opinions are the target: its "
                               "dataset name or an alias (sa, pk, us, 'south africa'); the "
                               "survey=goqa name of `group`.",
                         check=_check_country, allowed="a GlobalOpinionQA country or alias")
    survey: str = param("goqa", "Survey the group comes from: goqa (GlobalOpinionQA, goqa_path), "
                                "opinionqa (US groups, opinionqa_path) or file (survey_path).",
                        choices=("goqa", "opinionqa", "file"))
    survey_path: str | None = _data("survey_path", None, "survey=file (implied when only this "
                                    "is set): a CSV, JSONL or Parquet table, one row per (group, "
                                    "question): group, question, options, distribution[, ordinal, "
                                    "source, qid].")
    group: str | None = param(None, "Group to align to, as the survey names it (close matches "
                                    "suggested): goqa = country (group wins); opinionqa e.g. "
                                    "Democrat or POLPARTY_Democrat; file: null = its only group.")
    groups: list[str] = param([], "Several groups: ONE model conditioned on the group named in "
                                  "every prompt, p* per (group, question); [] = one group.")
    goqa_path: str | None = _data("goqa_path", "data/globalopinionqa/goqa_partial_hf_schema.csv.gz",
                                  "GlobalOpinionQA as a CSV in the hub file's schema (default: the "
                                  "embedded partial copy); hub or null = the full dataset, "
                                  "downloaded once at goqa_revision.")
    goqa_revision: str = param("cb2880488749218abb81802a94c2c62ebfde2f35",
                               "Commit of Anthropic/llm_global_opinions read from the hub.")
    bad_rows: str = param("skip", "A malformed data row: skip it (counted in the load report) or "
                                  "stop with an error naming it.", choices=("skip", "error"))
    option_map_path: str | None = _data("option_map_path", "data/gdpo_option_map/option_map.json",
                                        "JSON map option text -> stance class 0..5 (stance6); "
                                        "github downloads the authors' map at its pinned commit.")
    belief_scheme: str = param("options", "Beliefs of a question: options = its answer options, "
                                          "stance6 = the paper's six stance classes (option map).",
                               choices=("options", "stance6"))
    max_options: int = param(10, "options scheme: questions with more options are left out "
                                 "(beliefs are single digit tokens).", ge=1, le=10)
    max_questions: int | None = param(None, "Use the first N questions only (quick runs, CI); "
                                            "null = all.", ge=1)
    max_text_chars: int = param(2000, "Longest question or option (characters) a run accepts; "
                                      "a longer one is an error naming it.", ge=1)
    min_questions: int = param(30, "Fewest usable questions the group must have (counted before "
                                   "max_questions); fewer is an error naming the count.", ge=1)
    hub_dataset: str | None = param(None, "The authors' GDPO data from the hub instead "
                                          "(Binwei01/mmoqa_<country>, movie_review...).")
    movies_path: str | None = _data("movies_path", None, "SNAP web-Movies text file: movie "
                                    "reviews as the data instead (beliefs = star ratings).")
    responses: str = param("template", "Writer of the belief-conditioned responses: template "
                                       "(offline), hf (response_model) or openai (the API).",
                           choices=("template", "hf", "openai"))
    response_model: str | None = param(None, "LM for responses=hf: a hub id, a local folder or "
                                             "smollm2-135m; null = smollm2-135m.")
    api_base: str | None = param(None, "Base URL of an OpenAI-compatible API (responses=openai, "
                                       "judge=openai), e.g. http://localhost:8000/v1.")
    api_model: str | None = param(None, "Model name sent to that API.")
    api_key_env: str = param("OPENAI_API_KEY", "Environment variable that holds the API key.")
    n_styles: int = param(3, "Prompt styles (paraphrases) per question, each with its own "
                             "responses.", ge=1, le=N_STYLES_MAX)
    split_by: str = param("prompt", "Evaluation protocol: prompt = seen questions (the paper: "
                                    "test prompts ask training questions in held-out styles), "
                                    "question = unseen questions (whole questions held out).",
                          choices=("prompt", "question"))
    heldout_styles: int = param(1, "split_by prompt: the last N of the n_styles prompt styles are "
                                   "never trained on; every question is trained in the others and "
                                   "asked in these at eval/test time, eval and test split by "
                                   "question. 0 = split prompt strings at random (a test prompt's "
                                   "question and style are then trained on).", ge=0,
                                le=N_STYLES_MAX - 1)
    split_fractions: list[float] = param([0.8, 0.1, 0.1], "Train / eval / test fractions (split_by "
                                         "prompt with held-out styles: only eval : test is used).",
                                         check=_check_fractions, allowed=FRACTIONS)
    sft_per_prompt: int = param(10, "SFT examples per prompt, beliefs drawn from p*.", ge=1)
    pairs_per_prompt: int = param(10, "DPO and GDPO pairs per prompt, chosen belief drawn from "
                                      "p*.", ge=1)
    # --- model ---
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
    tiny_vocab_size: int = param(1024, "tiny model: size of the BPE trained on the run's text.",
                                 ge=1)
    max_length: int | None = param(None, "Tokens of the longest training sequence (prompt + "
                                         "completion); null = sized from the run's data. Never "
                                         "truncates: a longer sequence is an error before "
                                         "training, naming its question.", ge=1)
    # --- training --- (the defaults: the demo's schedule; params/quick.yaml: the 4 x 64 smoke one)
    batch_size: int = param(16, "SFT examples or DPO/GDPO pairs per device per step.", ge=1)
    grad_accum: int = param(1, "Gradient accumulation steps per optimizer step.", ge=1)
    sft_steps: int = param(3000, "SFT optimizer steps.", ge=1)
    sft_lr: float = param(5.0e-3, "SFT peak learning rate (linear warmup and decay).", gt=0)
    dpo_steps: int = param(100, "DPO optimizer steps.", ge=1)
    dpo_lr: float = param(2.0e-4, "DPO peak learning rate.", gt=0)
    gdpo_steps: int = param(100, "GDPO optimizer steps (also of its ablations).", ge=1)
    gdpo_lr: float = param(2.0e-4, "GDPO peak learning rate (also of its ablations).", gt=0)
    warmup_steps: int = param(10, "Linear warmup steps of each training stage (at most its "
                                  "steps - 1).", ge=0)
    beta: float = param(0.1, "DPO/GDPO beta: scale of the implicit reward (and the margins).", gt=0)
    label_smoothing: float = param(0.0, "GDPO's DPO term: assumed rate of flipped preferences "
                                        "(conservative DPO); the DPO baseline needs 0.", ge=0, lt=0.5)
    lambda_cal: float = param(1.0, "GDPO weight of the calibration KL(p* || p_theta(b|x)).", ge=0)
    lambda_nll: float = param(1.0, "GDPO weight of the belief NLL -log p_theta(b_c|x).", ge=0)
    lambda_pref: float = param(1.0, "GDPO weight of the DPO term on shared-belief pairs.", ge=0)
    calibration_form: str = param("renorm", "Calibration KL over the belief tokens renormalised "
                                            "or over the full vocabulary.",
                                  choices=("renorm", "full"))
    ablations: list[str] = param([], "GDPO ablations to train and evaluate too: cdpo (no "
                                     "calibration or NLL), mft (no preference term).",
                                 choices=("cdpo", "mft"))
    eval_every: int = param(25, "Steps between in-training evaluations (eval JSD, margins).", ge=1)
    eval_subset: int = param(64, "Eval prompts and pairs each in-training evaluation scores.", ge=1)
    precompute_ref_log_probs: bool = param(False, "Compute reference log-probs once before "
                                                  "training instead of keeping a reference model.")
    lora: bool = param(False, "Train LoRA adapters (PEFT, all linear layers) instead of all "
                              "weights; the frozen base is the reference.")
    lora_r: int = param(16, "LoRA rank r of the adapter matrices.", ge=1)
    lora_alpha: int = param(32, "LoRA alpha: adapter updates are scaled by alpha / r.", ge=1)
    gradient_checkpointing: bool = param(False, "Recompute activations in the backward pass to "
                                                "save memory (CUDA only).")
    report_to: str = param("none", "Experiment tracker for training curves, our eval JSD, belief "
                                   "mass and reward margins, and GPO's validation score: "
                                   "tensorboard (the run's logs/), trackio (local; project = "
                                   "the run's name) or wandb.",
                           choices=("none", "tensorboard", "trackio", "wandb"))
    push_to_hub: str | None = param(None, "Hugging Face hub repo id (org/name) that a trained "
                                          "model, its model card and the built datasets are "
                                          "published to; null = never publish.",
                                    pattern=r"[A-Za-z0-9][\w.-]*/[\w.-]+",
                                    allowed="a hub repo id org/name, or null")
    save_every: int = param(200, "Steps between Trainer checkpoints (to resume a stage).", ge=1)
    select_by: str = param("last", "Checkpoint a stage keeps: its last step, or the evaluated step "
                                   "with the lowest eval JSD (never the loss).",
                           choices=("last", "eval_jsd"))
    # --- evaluation ---
    methods: list[str] = param(["sft", "dpo", "gdpo"],
                               "Methods notebook 04 scores (plus ablations and any trained "
                               "preference method).",
                               choices=("sft", "dpo", "gdpo", "cdpo", "mft", "kshot", "icf"))
    n_samples: int = param(8, "Completions sampled per test prompt (sampled JSD, CBC, BPC, RS).",
                           ge=1)
    temperature: float = param(1.0, "Sampling temperature of evaluated completions.", gt=0)
    top_k: int = param(0, "Sample from the k most likely tokens; 0 = no limit.", ge=0)
    top_p: float = param(1.0, "Nucleus sampling mass; 1 = no limit.", gt=0, le=1)
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
    # --- GPO ---
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
                                         check=_check_fractions, allowed=FRACTIONS)
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
    opinionqa_path: str | None = _data("opinionqa_path", "auto", "OpinionQA human_resp folder "
                                       "(notebook 05's US groups); auto = $GDPO_DATA_DIR's copy "
                                       "when there; null or none found = skip them.")
    opinionqa_groups: str = param("all", "OpinionQA groups: all single-attribute ones, or gpo "
                                         "(the paper's 22; 17 in the local data, which has no "
                                         "religion file).", choices=("all", "gpo"))

    # ---- derived values ----
    @property
    def country_name(self) -> str:
        """The dataset's spelling of `country` ('sa' -> 'S. Africa')."""
        return resolve_country(self.country)

    @property
    def group_label(self) -> str:
        """The target group(s) for titles: 'S. Africa', 'Democrat', 'United States + Pakistan'."""
        return groupnames.label(self)

    @property
    def model_slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.]+", "-", Path(self.model).name if self.is_local_path(self.model)
                      else self.model.split("/")[-1]).lower().strip("-")

    @property
    def run_dir_name(self) -> str:
        return self.run_name or f"{groupnames.slug(self)}-{self.model_slug}"

    @property
    def run_dir(self) -> Path:
        return resolve_path(self.output_root) / self.run_dir_name

    def subset(self, *names: str) -> dict[str, Any]:
        """The named parameters as a dict (stage cache keys)."""
        return {n: getattr(self, n) for n in names}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "RunConfig":
        return validate({**self.to_dict(), **changes}, {k: "replace()" for k in changes})

    @staticmethod
    def is_local_path(name: str) -> bool:
        return is_local_path(name)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(RunConfig)}
HINTS: dict[str, Any] = typing.get_type_hints(RunConfig)
# Section title of the generated files -> its first parameter (fields keep declaration order).
SECTIONS: dict[str, str] = {"run": "run_name", "data": "country", "model": "model",
                            "training": "batch_size", "evaluation": "methods", "GPO": "gpo_embedder"}


def default_of(name: str) -> Any:
    f = FIELDS[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


# ---------------------------------------------------------------- validation
def _error(name: str, origin: str, problem: str) -> ConfigError:
    line = f"parameter {name!r} from {origin}: {problem}; allowed: {allowed_text(FIELDS[name].metadata, HINTS[name])}"
    return ConfigError(re.sub(r"\s*\n\s*", " ", line))     # one line, whatever the problem holds


def validate(values: Mapping[str, Any], origins: Mapping[str, str] | None = None) -> RunConfig:
    """A RunConfig from the dataclass defaults updated with `values` (a flat dict), every
    parameter checked; `origins[key]` says where each value came from (for the messages)."""
    origins = origins or {}
    merged = {name: default_of(name) for name in FIELDS}
    for key, value in values.items():
        origin = origins.get(key, DEFAULT_ORIGIN)
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), FIELDS, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"unknown parameter {key!r} in {origin}{hint}")
        try:
            merged[key] = coerce(value, HINTS[key])
        except ValueError as err:
            raise _error(key, origin, str(err)) from None
    for name in FIELDS:
        problem = rule_problem(FIELDS[name].metadata, merged[name])
        if problem:
            raise _error(name, origins.get(name, DEFAULT_ORIGIN), problem)
    if (problem := groupnames.survey_problem(merged, given=set(origins))):
        raise _error(problem[0], origins.get(problem[0], DEFAULT_ORIGIN), problem[1])
    for name in ("gpo_k", "gpo_k_values"):
        k = merged[name] if name == "gpo_k_values" else [merged[name]]
        if (problem := gpo_k_problem(k, merged["gpo_ctx_range"])):
            raise ConfigError(f"parameter {name!r} from {origins.get(name, DEFAULT_ORIGIN)}: "
                              f"{problem} (gpo_ctx_range from "
                              f"{origins.get('gpo_ctx_range', DEFAULT_ORIGIN)})")
    if merged["model"] == "tiny" and merged["tiny_n_embd"] % merged["tiny_n_head"]:
        raise ConfigError(f"parameter 'tiny_n_embd' from "
                          f"{origins.get('tiny_n_embd', DEFAULT_ORIGIN)}: {merged['tiny_n_embd']} "
                          f"is not a multiple of tiny_n_head ({merged['tiny_n_head']})")
    if (merged["split_by"] == "prompt" and merged["heldout_styles"]
            and merged["heldout_styles"] >= merged["n_styles"]):
        raise ConfigError(f"parameter 'heldout_styles' from "
                          f"{origins.get('heldout_styles', DEFAULT_ORIGIN)}: "
                          f"{merged['heldout_styles']} held-out style(s) leave no training style "
                          f"of n_styles {merged['n_styles']}; allowed: 0 .. n_styles - 1 (or "
                          f"split_by question)")
    return RunConfig(**merged)


# ---------------------------------------------------------------- sources of values
def read_yaml(path: str | Path) -> dict[str, Any]:
    """A params file as a flat dict; a one-line ConfigError naming the file otherwise."""
    path = Path(path)
    name = repr(str(path))
    if not path.exists():
        raise ConfigError(f"params file {name} does not exist")
    if not path.is_file():
        raise ConfigError(f"params file {name} is not a file")
    try:
        if (size := path.stat().st_size) > MAX_YAML_BYTES:
            raise ConfigError(f"params file {name} has {size} bytes, more than {MAX_YAML_BYTES}")
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"params file {name} cannot be read: {err.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"params file {name} is not UTF-8 text (byte 0x{raw[err.start]:02x} "
                          f"at offset {err.start})") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"params file {name} is not valid YAML: {yaml_problem(err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"params file {name} must hold a mapping of name: value, "
                          f"not a {type(data).__name__}")
    return data


def add_params_arguments(ap: argparse.ArgumentParser) -> None:
    """The -f PARAMS.yaml / -p KEY VALUE options every command line shares: they land in
    `args.files` and `args.params` (pairs), for load_config(args.files, dict(args.params))."""
    ap.add_argument("-f", "--parameters_file", dest="files", action="append", default=[],
                    metavar="PARAMS.yaml", help="a params file (repeatable; later files win)")
    ap.add_argument("-p", "--parameters", dest="params", action="append", nargs=2, default=[],
                    metavar=("KEY", "VALUE"), help="one parameter (repeatable; wins over files)")


def load_config(files: Iterable[str | Path] = (), overrides: Mapping[str, Any] | None = None,
                ) -> RunConfig:
    """The dataclass defaults < files (in order) < overrides (-p), validated into a RunConfig."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for path in files:
        for key, value in read_yaml(path).items():
            values[key], origins[key] = value, f"the params file {str(path)!r}"
    for key, value in (overrides or {}).items():
        values[key], origins[key] = value, "-p"
    return validate(values, origins)


_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def from_notebook(namespace: Mapping[str, Any]) -> RunConfig:
    """The config of a notebook: the dataclass defaults < the variables of its parameters cell
    and those papermill injected.

    Call it right after the `parameters` cell, before any other variable is defined: every
    public, non-module, non-callable name in the namespace is taken as a parameter, so a
    misspelled `-p`/`-f` key is caught here. Credentials come back from the environment (take_back).
    """
    injected = take_back({k: v for k, v in namespace.items()
                          if not k.startswith("_") and k not in _IPYTHON_NAMES
                          and not isinstance(v, types.ModuleType) and not callable(v)})
    return validate(injected, {k: NOTEBOOK_ORIGIN for k in injected})


