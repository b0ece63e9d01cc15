"""Typed run configuration: YAML files merged in papermill's order, validated at once.

Order of precedence (lowest first): `params/defaults.yaml` (the embedded demo) < each `-f` file in
the order given < `-p KEY VALUE` overrides. Every parameter is a flat name because papermill
injects parameters as notebook variables. A misspelled key, a wrong type, an unknown country or an
unknown model raises ConfigError naming the key and where it came from.
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

from gdpolib.countries import UnknownCountryError, country_slug, resolve_country

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
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


class ConfigError(ValueError):
    """A parameter that is unknown, of the wrong type or out of range; says which and where."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every parameter of a run. Defaults equal params/defaults.yaml (the embedded demo)."""

    # --- run ---
    run_name: str | None = None          # default: "<country slug>-<model slug>"
    update_run: bool = False             # reuse a run folder made with other parameters
    output_root: str = "outputs"
    seed: int = 0
    device: str = "auto"                 # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"                  # auto | float32 | bfloat16 | float16
    # --- data ---
    country: str = "sa"
    goqa_path: str | None = "../shared/data/globalopinionqa_partial/goqa_partial_hf_schema.csv"
    goqa_revision: str = "cb2880488749218abb81802a94c2c62ebfde2f35"
    bad_rows: str = "skip"               # skip | error
    option_map_path: str | None = "../shared/data/gdpo_option_map/option_map.json"
    belief_scheme: str = "options"       # options | stance6
    max_options: int = 10
    max_questions: int | None = None     # cap for quick runs (CI); None = all
    min_questions: int = 30              # fewer usable questions for the group is an error
    hub_dataset: str | None = None       # e.g. Binwei01/mmoqa_sa: the authors' data instead
    movies_path: str | None = None       # SNAP web-Movies text file: movie reviews instead
    responses: str = "template"          # template | hf | openai
    response_model: str | None = None    # for responses=hf (a hub id, path or smollm2-135m)
    api_base: str | None = None          # for responses=openai or judge=openai
    api_model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    n_styles: int = 3
    split_by: str = "prompt"             # prompt | question
    split_fractions: list[float] = dataclasses.field(default_factory=lambda: [0.8, 0.1, 0.1])
    sft_per_prompt: int = 10             # SFT targets drawn from p* per prompt
    pairs_per_prompt: int = 10           # DPO / GDPO pairs per prompt
    # --- model ---
    model: str = "tiny"                  # tiny | smollm2-135m | hub id | local path
    model_cache_dir: str | None = None   # default: ~/.cache/gdpo
    tiny_n_layer: int = 4
    tiny_n_embd: int = 64
    tiny_n_head: int = 4
    tiny_vocab_size: int = 1024
    max_length: int | None = None        # tokens of the longest training sequence; null = sized from the data
    # --- training ---
    batch_size: int = 16
    grad_accum: int = 1
    sft_steps: int = 600
    sft_lr: float = 2.0e-3
    dpo_steps: int = 150
    dpo_lr: float = 1.0e-4
    gdpo_steps: int = 150
    gdpo_lr: float = 1.0e-4
    warmup_steps: int = 10
    beta: float = 0.1
    label_smoothing: float = 0.0
    lambda_cal: float = 1.0
    lambda_nll: float = 1.0
    lambda_pref: float = 1.0
    calibration_form: str = "renorm"     # renorm | full
    ablations: list[str] = dataclasses.field(default_factory=list)  # cdpo, mft
    eval_every: int = 25
    eval_subset: int = 64
    precompute_ref_log_probs: bool = False
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    gradient_checkpointing: bool = False
    report_to: str = "none"              # none | tensorboard | wandb
    save_every: int = 200                # Trainer checkpoint (for resuming) every N steps
    select_by: str = "last"              # last | eval_jsd: which step a stage keeps (never the loss)
    # --- evaluation ---
    methods: list[str] = dataclasses.field(
        default_factory=lambda: ["sft", "dpo", "gdpo", "kshot", "icf"])
    n_samples: int = 8
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64
    eval_batch_size: int = 32
    kshot_k: int = 3
    judge: str = "embedding"             # embedding | openai
    embedder: str = "minilm"             # minilm (offline) | a sentence-transformers id
    judge_samples: int = 0               # samples per prompt the BPC judge scores (0 = all)
    # --- GPO ---
    gpo_embedder: str = "minilm"         # minilm | policy | smollm2-135m | hub id
    gpo_loss: str = "kl"                 # kl (per-question KL to y) | gaussian_nll (the paper)
    gpo_steps: int = 600                 # CPU-sized; the paper ran 200k
    gpo_lr: float = 3.0e-4
    gpo_k: int = 20
    gpo_k_values: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 5, 10, 20, 50])
    gpo_group_split: list[float] = dataclasses.field(default_factory=lambda: [0.6, 0.2, 0.2])
    gpo_min_questions: int = 60          # a GOQA country needs this many questions to be a group
    gpo_batch_groups: int = 8            # groups (episodes) per meta-training step
    gpo_ctx_range: list[int] = dataclasses.field(default_factory=lambda: [1, 30])  # questions
    gpo_tar_range: list[int] = dataclasses.field(default_factory=lambda: [10, 30])  # questions
    gpo_eval_every: int = 100            # steps between validation-group evaluations
    gpo_zero_shot_lm: str = "policy"     # LM baseline: policy (run's model) | smollm2-135m | none | hub id
    gpo_fewshot_gdpo: bool = True        # notebook 05 trains GDPO on GPO's predicted p*
    gpo_prior: str = "train_groups"      # train_groups (GPO over the meta-train groups' answers) | none (the paper)
    opinionqa_path: str | None = "../shared/data/opinionqa_tatsu/human_resp"
    opinionqa_groups: str = "all"        # all (every single-attribute group) | gpo (the paper's 22)

    # ---- derived values ----
    @property
    def country_name(self) -> str:
        """The dataset's spelling of `country` ('sa' -> 'S. Africa')."""
        return resolve_country(self.country)

    @property
    def model_slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.]+", "-", Path(self.model).name if self.is_local_path(self.model)
                      else self.model.split("/")[-1]).lower().strip("-")

    @property
    def run_dir_name(self) -> str:
        return self.run_name or f"{country_slug(self.country_name)}-{self.model_slug}"

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
        return name.startswith((".", "/", "~")) or resolve_path(name).exists()


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(RunConfig)}
_HINTS = typing.get_type_hints(RunConfig)
CHOICES: dict[str, tuple[str, ...]] = {
    "device": (), "dtype": ("auto", "float32", "bfloat16", "float16"),
    "bad_rows": ("skip", "error"), "belief_scheme": ("options", "stance6"),
    "responses": ("template", "hf", "openai"), "split_by": ("prompt", "question"),
    "calibration_form": ("renorm", "full"), "report_to": ("none", "tensorboard", "wandb"),
    "judge": ("embedding", "openai"), "gpo_loss": ("gaussian_nll", "kl"),
    "select_by": ("last", "eval_jsd"), "gpo_prior": ("none", "train_groups"),
    "opinionqa_groups": ("all", "gpo"),
}
LIST_CHOICES = {"ablations": ("cdpo", "mft"),
                "methods": ("sft", "dpo", "gdpo", "cdpo", "mft", "kshot", "icf")}


def resolve_path(path: str | Path) -> Path:
    """Params paths are relative to the project root (not to the notebook's folder)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (PROJECT_ROOT / p).resolve()


def _coerce(name: str, value: Any, hint: Any, origin: str) -> Any:
    """Check (and gently coerce: int -> float, papermill's strings) one value against its type."""
    def fail(expected: str) -> ConfigError:
        return ConfigError(f"parameter {name!r} from {origin}: expected {expected}, "
                           f"got {value!r} ({type(value).__name__})")

    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(name, value, inner, origin)
    if typing.get_origin(hint) is list:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else \
                [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise fail(f"a list of {args[0].__name__}")
        return [_coerce(f"{name}[{i}]", v, args[0], origin) for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise fail("true or false")
    if hint is int:
        if isinstance(value, bool):
            raise fail("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
        raise fail("an integer")
    if hint is float:
        if isinstance(value, bool):
            raise fail("a number")
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise fail("a number") from None
    if hint is str:
        if isinstance(value, str):
            return value
        raise fail("a string")
    return value


def _check_model(model: str, origin: str) -> None:
    if model in LOCAL_MODELS or model in KNOWN_HUB_MODELS or _HUB_ID.match(model):
        return
    if RunConfig.is_local_path(model):
        if not resolve_path(model).exists():
            raise ConfigError(f"parameter 'model' from {origin}: local path {model!r} does not exist")
        return
    close = difflib.get_close_matches(model, LOCAL_MODELS + KNOWN_HUB_MODELS, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"parameter 'model' from {origin}: unknown model {model!r}{hint} "
                      f"(use tiny, smollm2-135m, a hub id 'org/name' or a local path)")


def validate(values: Mapping[str, Any], origins: Mapping[str, str] | None = None) -> RunConfig:
    """Build a RunConfig from a flat dict; `origins[key]` names where each value came from."""
    origins = origins or {}
    clean: dict[str, Any] = {}
    for key, value in values.items():
        origin = origins.get(key, "defaults")
        if key not in FIELDS:
            close = difflib.get_close_matches(key, FIELDS, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"unknown parameter {key!r} in {origin}{hint}")
        clean[key] = _coerce(key, value, _HINTS[key], origin)
    cfg_values = {**{n: (f.default_factory() if f.default_factory is not dataclasses.MISSING
                         else f.default) for n, f in FIELDS.items()}, **clean}
    for key, choices in CHOICES.items():
        if choices and cfg_values[key] not in choices:
            raise ConfigError(f"parameter {key!r} from {origins.get(key, 'defaults')}: "
                              f"{cfg_values[key]!r} is not one of {', '.join(choices)}")
    for key, choices in LIST_CHOICES.items():
        bad = [v for v in cfg_values[key] if v not in choices]
        if bad:
            raise ConfigError(f"parameter {key!r} from {origins.get(key, 'defaults')}: "
                              f"{bad} not among {', '.join(choices)}")
    try:
        resolve_country(cfg_values["country"])
    except UnknownCountryError as err:
        raise ConfigError(f"parameter 'country' from {origins.get('country', 'defaults')}: "
                          f"{err}") from None
    _check_model(cfg_values["model"], origins.get("model", "defaults"))
    for key in ("split_fractions", "gpo_group_split"):
        fr = cfg_values[key]
        if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1) > 1e-6:
            raise ConfigError(f"parameter {key!r} from {origins.get(key, 'defaults')}: "
                              f"need three non-negative fractions summing to 1, got {fr}")
    if not 1 <= cfg_values["max_options"] <= 10:
        raise ConfigError("parameter 'max_options': belief tokens are single digits, so 1..10")
    return RunConfig(**cfg_values)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A params file as a flat dict; a clear error for anything that is not a mapping."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"params file {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"params file {str(path)!r} must hold a mapping of name: value")
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
    """defaults.yaml < files (in order) < overrides, validated into a RunConfig."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for path in [DEFAULTS_FILE, *files]:
        for key, value in read_yaml(path).items():
            values[key], origins[key] = value, f"params file {str(path)!r}"
    for key, value in (overrides or {}).items():
        values[key], origins[key] = value, "overrides (-p)"
    return validate(values, origins)


_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def from_notebook(namespace: Mapping[str, Any]) -> RunConfig:
    """The config of a notebook: defaults.yaml < the variables papermill injected.

    Call it right after the `parameters` cell, before any other variable is defined: every
    public, non-module, non-callable name in the namespace is taken as a parameter, so a
    misspelled `-p`/`-f` key is caught here.
    """
    injected = {k: v for k, v in namespace.items()
                if not k.startswith("_") and k not in _IPYTHON_NAMES
                and not isinstance(v, types.ModuleType) and not callable(v)}
    origins = {k: "the notebook parameters (papermill -f/-p)" for k in injected}
    values = {**read_yaml(DEFAULTS_FILE), **injected}
    return validate(values, {**{k: f"params file {str(DEFAULTS_FILE)!r}" for k in values}, **origins})
