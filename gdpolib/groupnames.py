"""The target group(s) of a run, from its parameters alone (no data is read): how the survey
parameters go together, the label titles show and the run folder's name.

Parameters (declared in gdpolib.config): `survey` (goqa | opinionqa | file), `survey_path`,
`group`, `groups`, and `country`, which stays GlobalOpinionQA's name for the group: for
survey=goqa, `group` is `country` under its general name, and wins when both are set (a
notebook's parameters cell always sets `country`). The data decides whether a name exists
(gdpolib.data.preflight.check_groups, before a run is written).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gdpolib import sources
from gdpolib.countries import UnknownCountryError, country_slug, resolve_country


def survey_problem(values: dict[str, Any], given: set[str]) -> tuple[str, str] | None:
    """(parameter, problem) for survey parameters that do not go together, else None; sets
    values in place: survey=file when survey_path is set and `survey` was not given (`given`:
    the names the user set), country=group for GlobalOpinionQA."""
    if values["survey_path"] and "survey" not in given:
        values["survey"] = "file"
    survey, group, groups = values["survey"], values["group"], values["groups"]
    key = "groups" if groups else "group"
    if group and groups:
        return "groups", "set group (one group) or groups (one model for several), not both"
    if len(set(groups)) != len(groups):
        return "groups", f"{groups!r} names a group twice"
    if survey == "goqa":
        for name in groups or ([group] if group else []):
            try:
                resolve_country(name)
            except UnknownCountryError as err:
                return key, str(err)
        if group:
            values["country"] = group
        if values["survey_path"]:
            return "survey_path", "is set but survey is goqa (survey: file reads it)"
    elif survey == "file" and not values["survey_path"]:
        return "survey_path", "survey=file needs survey_path (a CSV, JSONL or Parquet table)"
    elif survey == "opinionqa":
        found = sources.classify("opinionqa_path", values["opinionqa_path"])
        if found.kind == "none":
            return "opinionqa_path", (f"survey=opinionqa needs the OpinionQA human_resp folder "
                                      f"({found.why})")
        if not (group or groups):
            return "group", "survey=opinionqa needs a group, e.g. Democrat (or groups)"
    return None


def targets(cfg) -> list[str]:
    """The group names the run aligns to, as given (groups, else group, else for goqa the
    country); [] for a survey file left to its only group."""
    if cfg.groups:
        return list(cfg.groups)
    if cfg.survey == "goqa":
        return [cfg.country]
    return [cfg.group] if cfg.group else []


def label(cfg) -> str:
    """The target group(s) for titles: 'S. Africa', 'Democrat', 'United States + Pakistan'."""
    if cfg.survey == "goqa":
        return " + ".join(resolve_country(g) for g in targets(cfg))
    return " + ".join(targets(cfg)) or Path(cfg.survey_path or "").stem


def slug(cfg) -> str:
    """The run name's group part: sa (as before), us+pk+sa, oqa-democrat, my_survey-night-owls."""
    if cfg.survey == "goqa":
        return "+".join(country_slug(resolve_country(g)) for g in targets(cfg))
    names = "+".join(_slug(g) for g in targets(cfg))
    head = "oqa" if cfg.survey == "opinionqa" else _slug(Path(cfg.survey_path or "").stem)
    return f"{head}-{names}" if names else head


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-")

