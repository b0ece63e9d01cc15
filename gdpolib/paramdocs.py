"""The files generated from declarations: from the run parameters' (gdpolib.sections, joined in
gdpolib.config.RunConfig) params/defaults.yaml (every parameter, its default, help and rule) and
the README's parameter tables; from the metric registry (gdpolib.metrics.registry)
docs/metrics.md (every key of metrics.json: meaning, function, convention, direction).
`python -m gdpolib.paramdocs` checks them (exit 1 when stale); `--write` rewrites them.
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

from gdpolib.config import (DEFAULTS_FILE, FIELDS, HINTS, PROJECT_ROOT, SECTIONS, ConfigError,
                            default_of)
from gdpolib.metrics import registry as metric_registry
from gdpolib.paramspec import allowed_text, has_rule

README_FILE = PROJECT_ROOT / "README.md"
METRICS_FILE = PROJECT_ROOT / "docs" / "metrics.md"
README_START, README_END = "<!-- params:start -->", "<!-- params:end -->"
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


def render_readme_table() -> str:
    """The README's parameter tables (between the params markers), one per section."""
    def cell(text: str) -> str:     # plain text in a Markdown table cell (not a tag, no italics)
        text = text.replace("|", "\\|").replace("*", "\\*")
        return re.sub(r"<(?=[A-Za-z/!])", "&lt;", text)

    lines = [README_START,
             f"<!-- generated from gdpolib/sections/ by `{WRITE_COMMAND}`; do not edit -->"]
    for title, names in _sections():
        lines += ["", f"**{title}**", "", "| name | default | allowed | help |", "|---|---|---|---|"]
        lines += [f"| `{n}` | `{cell(_yaml_value(default_of(n)))}` | {cell(allowed_text(FIELDS[n].metadata, HINTS[n]))} | "
                  f"{cell(FIELDS[n].metadata['help'])} |" for n in names]
    return "\n".join(lines + ["", README_END])


def _with_table(readme: str, where: Path) -> str:
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ConfigError(f"{where}: no {README_START} ... {README_END} markers for the "
                          f"parameter table")
    return readme[:start] + render_readme_table() + readme[end + len(README_END):]


def sync_generated(write: bool = False, defaults_file: Path = DEFAULTS_FILE,
                   readme_file: Path = README_FILE, metrics_file: Path = METRICS_FILE
                   ) -> list[Path]:
    """The generated files that differ from their declarations (rewritten when `write`)."""
    wanted = {defaults_file: render_defaults_yaml(),
              readme_file: _with_table(readme_file.read_text(encoding="utf-8"), readme_file),
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
                                             ", the README parameter table and docs/metrics.md "
                                             "from their declarations.")
    ap.add_argument("--write", action="store_true", help="rewrite the stale files")
    args = ap.parse_args(argv)
    stale = sync_generated(write=args.write)
    names = ", ".join(str(p.relative_to(PROJECT_ROOT)) for p in stale)
    if args.write:
        print(f"rewrote {names}" if stale else "generated files already up to date")
        return 0
    if stale:
        print(f"stale: {names}; run `{WRITE_COMMAND}`", file=sys.stderr)
        return 1
    print("generated files up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
