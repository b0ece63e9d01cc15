"""The files generated from declarations: from the run parameters' (gdpolib.sections, joined in
gdpolib.config.RunConfig) params/defaults.yaml (every parameter, its default, help and rule) and
docs/parameters.md (the same as tables, one per section); from the metric registry
(gdpolib.metrics.registry) docs/metrics.md (every key of metrics.json: meaning, function,
convention, direction). `python -m gdpolib.paramdocs` checks them (exit 1 when stale); `--write`
rewrites them.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import textwrap
from pathlib import Path
from typing import Any, Sequence

import yaml

from gdpolib.config import (DEFAULTS_FILE, FIELDS, HINTS, PROJECT_ROOT, SECTIONS,
                            default_of)
from gdpolib import generated
from gdpolib.metrics import registry as metric_registry
from gdpolib.paramspec import allowed_text, has_rule

PARAMETERS_FILE = PROJECT_ROOT / "docs" / "parameters.md"
METRICS_FILE = PROJECT_ROOT / "docs" / "metrics.md"
WRITE_COMMAND = "python -m gdpolib.paramdocs --write"


def _yaml_value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return text.removesuffix("...\n").strip()


def _sections() -> list[tuple[str, list[str]]]:
    return [(title, [f.name for f in dataclasses.fields(cls)]) for title, cls in SECTIONS.items()]


def render_defaults_yaml() -> str:
    """params/defaults.yaml: every parameter, its help and rule as a comment, by section."""
    lines = textwrap.wrap(
        f"GENERATED from gdpolib/sections/ by `{WRITE_COMMAND}`: edit the declaration there, not "
        "this file (runs start from the dataclass defaults; this file documents them and can be "
        "passed with -f). The defaults are the embedded demo: offline, the tiny model, the local "
        "partial GlobalOpinionQA. Paths are relative to the project root.",
        98, initial_indent="# ", subsequent_indent="# ")
    for title, names in _sections():
        lines += ["", f"# {'-' * 16} {title}"]
        for name in names:
            comment = FIELDS[name].metadata["help"]
            if has_rule(FIELDS[name].metadata):
                comment += f" Allowed: {allowed_text(FIELDS[name].metadata, HINTS[name])}."
            lines += textwrap.wrap(comment, 98, initial_indent="# ", subsequent_indent="# ")
            lines.append(f"{name}: {_yaml_value(default_of(name))}")
    return "\n".join(lines) + "\n"


PAGE_INTRO = f"""# Parameters

<!-- generated from gdpolib/sections/ by `{WRITE_COMMAND}`; do not edit -->

Every run parameter, its default, what it accepts and what it does, by section. Each is declared
once, in its section of `gdpolib/sections/` (`gdpolib/config.py`'s `RunConfig` joins them);
`{WRITE_COMMAND}` regenerates this page and `params/defaults.yaml` from them (a test fails when
they are stale).

Parameters merge in papermill's order: the defaults < each `-f` params file in order < `-p KEY
VALUE`. Values are checked before a run writes anything: a misspelled key, a wrong type, a value
outside its range or choices, or an input path that does not exist fails at once, in one line
naming the key, where it came from and what is allowed. Paths are relative to the project root.
A data parameter (`goqa_path`, `option_map_path`, `opinionqa_path`, `survey_path`, `movies_path`)
is a local path, the name of its pinned remote (`hub`, `github`), an http(s) URL, or `auto`:
[data.md](data.md) says how each is read.
"""


def render_parameters_page() -> str:
    """docs/parameters.md: an introduction, then one table per section."""
    def cell(text: str) -> str:     # plain text in a Markdown table cell (not a tag, no italics)
        text = text.replace("|", "\\|").replace("*", "\\*")
        return re.sub(r"<(?=[A-Za-z/!])", "&lt;", text)

    lines = [PAGE_INTRO.rstrip("\n")]
    for title, names in _sections():
        lines += ["", f"## {title}", "", "| name | default | allowed | help |", "|---|---|---|---|"]
        lines += [f"| `{n}` | `{cell(_yaml_value(default_of(n)))}` | {cell(allowed_text(FIELDS[n].metadata, HINTS[n]))} | "
                  f"{cell(FIELDS[n].metadata['help'])} |" for n in names]
    return "\n".join(lines) + "\n"


def sync_generated(write: bool = False, defaults_file: Path = DEFAULTS_FILE,
                   parameters_file: Path = PARAMETERS_FILE, metrics_file: Path = METRICS_FILE
                   ) -> list[Path]:
    """The generated files that differ from their declarations (rewritten when `write`)."""
    wanted = {defaults_file: render_defaults_yaml(), parameters_file: render_parameters_page(),
              metrics_file: metric_registry.render_docs()}
    stale = [p for p, text in wanted.items()
             if not p.exists() or p.read_text(encoding="utf-8") != text]
    if write:
        for p in stale:
            p.write_text(wanted[p], encoding="utf-8")
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gdpolib.paramdocs",
                                 description="Check (with --write: regenerate) params/defaults.yaml"
                                             ", docs/parameters.md and docs/metrics.md from "
                                             "their declarations.")
    ap.add_argument("--write", action="store_true", help="rewrite the stale files")
    args = ap.parse_args(argv)
    stale = sync_generated(write=args.write)
    return generated.finish([str(p.relative_to(PROJECT_ROOT)) for p in stale], args.write,
                            "generated files", WRITE_COMMAND)


if __name__ == "__main__":
    sys.exit(main())
