"""The survey checks of a run's preflight, before anything is written: can the survey be read,
does it hold the group(s) to align to, with min_questions usable under the belief scheme and no
text longer than max_text_chars? (a malformed file with bad_rows=error fails here)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from gdpolib import groupnames, sources
from gdpolib import schemes
from gdpolib.beliefs import BeliefError
from gdpolib.config import ConfigError, RunConfig
from gdpolib.sources import SourceError

if TYPE_CHECKING:
    from gdpolib.data.survey import Survey


def check_groups(cfg: RunConfig) -> None:
    """ConfigError (one line, close matches suggested) when the survey cannot be read or lacks
    a group to align to. GlobalOpinionQA countries are checked by the config already; OpinionQA
    reads only its group lists; a survey file is read and checked whole (so with bad_rows=error
    a malformed file fails here, before anything is written)."""
    if cfg.survey not in ("opinionqa", "file"):
        return
    # Deferred: the run folder's checks come first and must answer at once, before pandas loads.
    from gdpolib.data.opinionqa import attribute_groups, group_aliases
    from gdpolib.data.survey import SurveyError, resolve_group
    from gdpolib.data.survey_files import read_survey

    source = "opinionqa_path" if cfg.survey == "opinionqa" else "survey_path"
    try:
        if cfg.survey == "opinionqa":
            table = attribute_groups(sources.for_run(cfg, "opinionqa_path"))
            survey = None
        else:
            survey = read_survey(sources.for_run(cfg, "survey_path"), cfg.bad_rows)
    except (SurveyError, SourceError, OSError) as err:
        raise ConfigError(f"parameter {source!r}: {err}") from None
    try:
        if survey is None:
            for name in groupnames.targets(cfg):
                resolve_group(name, list(table), group_aliases(table), "OpinionQA")
            return
        groups = [survey.resolve(name) for name in groupnames.targets(cfg) or [survey.only_group()]]
    except SurveyError as err:
        raise ConfigError(f"parameter {'groups' if cfg.groups else 'group'!r}: {err}") from None
    try:
        survey.check_text_lengths(cfg.max_text_chars)
    except SurveyError as err:
        raise ConfigError(f"parameter 'max_text_chars': {err}") from None
    check_survey_size(cfg, survey, groups)


def check_survey_size(cfg: RunConfig, survey: Survey, groups: list[str]) -> None:
    """ConfigError when a group has fewer usable questions than min_questions, counted as the
    data stage counts them (under its belief scheme, whose option map check_data fetched)."""
    try:
        scheme = schemes.for_config(cfg)
    except (BeliefError, SourceError) as err:
        raise ConfigError(f"parameter 'belief_scheme': {err}") from None
    for group in groups:
        usable, report = scheme.apply(survey.questions(), group)
        if len(usable) < cfg.min_questions:
            raise ConfigError(
                f"parameter 'min_questions': group {group!r} of {survey.report.origin} has "
                f"{len(usable)} usable question(s) under belief_scheme {cfg.belief_scheme} "
                f"({report.n_questions} in the survey); min_questions is {cfg.min_questions}: "
                f"lower it to run on so few questions anyway")
