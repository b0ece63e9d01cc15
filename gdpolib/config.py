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
1. Add one field to its section's dataclass (gdpolib/sections/: run, data, model, training,
   evaluation, gpo) with `param(default, help, **rules)`:

       my_steps: int = param(100, "Optimizer steps of my stage.", ge=1)

   The annotation is the type: str, int, float, bool or a list of one of them, `| None` where
   null is allowed (checked; papermill's strings are coerced). Rules, all optional:
   `choices=(...)` (for a list type: allowed items), bounds `ge=`, `gt=`, `le=`, `lt=` (for a
   list: of each item), `pattern=` (a regex for the whole value) or `check=` (a function value
   -> problem or None), `allowed=` (the text that errors and the docs show for a pattern or
   check); a training field that is a TRL argument names it with `trl=`. A data input (a file,
   folder, `hub`, URL...) is declared with `data_input(name, ...)` and read with
   `gdpolib.sources.for_run(cfg, name)`, the one place that decides what it means.
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

from gdpolib import groupnames
from gdpolib.countries import resolve_country
from gdpolib.paramspec import (MAX_YAML_BYTES, PROJECT_ROOT, allowed_text, coerce, load_yaml,
                               resolve_path, rule_problem, yaml_problem)
from gdpolib.scrub import take_back
from gdpolib.sections.data import DataSection
from gdpolib.sections.evaluation import EvaluationSection
from gdpolib.sections.gpo import GPOSection, gpo_k_problem
from gdpolib.sections.model import ModelSection, is_local_path
from gdpolib.sections.run import RunSection
from gdpolib.sections.training import TrainingSection

DEFAULTS_FILE = PROJECT_ROOT / "params" / "defaults.yaml"
DEFAULT_ORIGIN = "the defaults (gdpolib/config.py)"
NOTEBOOK_ORIGIN = "the notebook parameters (papermill -f/-p)"


class ConfigError(ValueError):
    """A parameter that is unknown, of the wrong type or not allowed; says which, where, why."""


# ---------------------------------------------------------------- the parameters
@dataclasses.dataclass(frozen=True)
class RunConfig(GPOSection, EvaluationSection, TrainingSection, ModelSection, DataSection,
                RunSection):
    """Every parameter of a run, flat (papermill injects flat names), declared once in its
    section (gdpolib.sections; fields keep the order run, data, model, training, evaluation,
    GPO); the defaults are the embedded demo (offline, tiny model). A lower module takes only
    its section: `cfg.data`, `cfg.policy` (the model section: `model` names the model),
    `cfg.training`, `cfg.evaluation`, `cfg.gpo`."""

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

    # ---- the sections (views: frozen copies of the section's own fields) ----
    def _section(self, cls: type) -> Any:
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

    data = property(lambda self: self._section(DataSection), doc="The data section.")
    policy = property(lambda self: self._section(ModelSection),
                      doc="The model section (the policy trained and evaluated; `model` is its "
                          "name).")
    training = property(lambda self: self._section(TrainingSection), doc="The training section.")
    evaluation = property(lambda self: self._section(EvaluationSection),
                          doc="The evaluation section.")
    gpo = property(lambda self: self._section(GPOSection), doc="The GPO section.")


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(RunConfig)}
HINTS: dict[str, Any] = typing.get_type_hints(RunConfig)
# Section title of the generated files -> its declaration (fields keep declaration order).
SECTIONS: dict[str, type] = {"run": RunSection, "data": DataSection, "model": ModelSection,
                             "training": TrainingSection, "evaluation": EvaluationSection,
                             "GPO": GPOSection}


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


def parse_value(text: str) -> Any:
    """A `-p` value as a YAML scalar, as papermill parses it (`-p lr 1e-4`, `-p ablations
    [cdpo]`, `-p max_questions null`); text that is not YAML stays text."""
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text


def value_text(value: Any) -> str:
    """A parsed `-p` value as the text that parses back to it (a command line passing it on)."""
    if isinstance(value, str) and parse_value(value) == value:
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("...\n").strip()


class _Parameter(argparse.Action):
    """-p KEY VALUE: the pair (KEY, VALUE parsed by parse_value), appended to `args.params`."""

    def __call__(self, parser, namespace, values, option_string=None):
        key, text = values
        getattr(namespace, self.dest).append((key, parse_value(text)))


def add_params_arguments(ap: argparse.ArgumentParser) -> None:
    """THE -f PARAMS.yaml / -p KEY VALUE options of every command line, script and benchmark:
    they land in `args.files` and `args.params` (pairs, values parsed as YAML scalars by
    parse_value), for load_config(args.files, dict(args.params))."""
    ap.add_argument("-f", "--parameters_file", dest="files", action="append", default=[],
                    metavar="PARAMS.yaml", help="a params file (repeatable; later files win)")
    ap.add_argument("-p", "--parameters", dest="params", action=_Parameter, nargs=2, default=[],
                    metavar=("KEY", "VALUE"), help="one parameter, its value a YAML scalar "
                                                   "(repeatable; wins over files)")


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


