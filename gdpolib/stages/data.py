"""Stage of notebook 01: the run's data (`prepare_data`) and the run's starting policy
(`base_model`), which every later stage builds on.

The data stage is `<run>/data/`: SFT records, DPO and GDPO pairs and the eval-prompt table per
split (gdpolib.data.records), built from one source: the authors' hub dataset (`hub_dataset`) >
SNAP movie reviews (`movies_path`) > a survey in the one survey format (gdpolib.data.survey:
`survey` = goqa, opinionqa or a file) for the run's group (`group`; GlobalOpinionQA: `country`)
or groups (`groups`: one model conditioned on the group) under `belief_scheme`. Later stages read
only the records, whatever the source. It is cached: rebuilt only when `data_key(cfg)` changes.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from gdpolib import groupnames, models, schemes, sources
from gdpolib.beliefs import BeliefError
from gdpolib.data import goqa, opinionqa
from gdpolib.data.hub import build_hub
from gdpolib.data.movies import build_movies
from gdpolib.data.records import (DATA_VERSION, DataError, RunData, apply_override,
                                  build_records, condition_on_group, goqa_items, group_qid,
                                  load_run_data, merge_groups, metrics_part, write_stage)
from gdpolib.data.splits import (assign_splits, check_splits, heldout_style_ids,
                                 merge_split_reports, split_report)
from gdpolib.data.generators import make_generator
from gdpolib.data.survey import Survey
from gdpolib.data.survey_files import read_survey
from gdpolib.seeds import file_hash, stable_hash

log = logging.getLogger("gdpolib.stages.data")


def data_key(cfg, override: Mapping | None = None) -> dict[str, Any]:
    """Everything the data stage depends on: params, input file contents, the override (a
    GlobalOpinionQA run of one country depends on the same parameters as before surveys)."""
    key: dict[str, Any] = {"version": DATA_VERSION, **cfg.subset(
        "seed", "n_styles", "split_by", "heldout_styles", "split_fractions", "sft_per_prompt",
        "pairs_per_prompt",
        "responses", "response_model", "api_base", "api_model")}
    if cfg.hub_dataset:
        key["hub_dataset"] = cfg.hub_dataset
    elif cfg.movies_path:
        key["movies_sha"] = file_hash(sources.for_run(cfg, "movies_path"))
    else:
        key.update(cfg.subset("bad_rows", "belief_scheme", "max_options", "max_questions"))
        if cfg.survey == "goqa":
            key.update(cfg.subset("country", "goqa_path", "goqa_revision"))
            key["goqa_sha"] = file_hash(sources.for_run(cfg, "goqa_path"))
        if cfg.survey != "goqa" or cfg.groups:
            key.update(cfg.subset("survey", "group", "groups", "min_questions"))
        if cfg.survey == "opinionqa":
            key["opinionqa_sha"] = folder_hash(sources.for_run(cfg, "opinionqa_path"))
        elif cfg.survey == "file":
            key["survey_sha"] = file_hash(sources.for_run(cfg, "survey_path"))
        key.update(schemes.for_config(cfg).cache_key())
    if override:
        key["override"] = stable_hash({q: [round(float(x), 12) for x in v]
                                       for q, v in sorted(override.items())})
    return key


def folder_hash(root: Path) -> str:
    """A content hash of a folder's data files (OpinionQA's csv/json files)."""
    files = sorted(p for p in root.rglob("*") if p.suffix in (".csv", ".json"))
    return stable_hash([[str(p.relative_to(root)), file_hash(p)] for p in files])


def _response_cache_dir(cfg) -> Path | None:
    """Where generated (non-template) responses are cached across runs."""
    return None if cfg.responses == "template" else models.cache_root(cfg) / "responses"


def load_survey(cfg) -> Survey:
    """The run's survey in the one survey format: GlobalOpinionQA (goqa_path or the hub),
    OpinionQA (every group of its single-attribute files, each with all its questions) or a
    survey file (survey_path); malformed rows skipped and reported, or an error (bad_rows)."""
    if cfg.survey == "goqa":
        return goqa.to_survey(goqa.load_for_run(cfg))
    if cfg.survey == "opinionqa":
        root = sources.for_run(cfg, "opinionqa_path")
        return opinionqa.to_survey(opinionqa.load_opinionqa(
            root, opinionqa.attribute_groups(root), require_all_groups=False,
            bad_rows=cfg.bad_rows))
    return read_survey(sources.for_run(cfg, "survey_path"), cfg.bad_rows)


def target_groups(cfg, survey: Survey) -> list[str]:
    """The survey's names of the run's group(s): `groups`, else `group` (GlobalOpinionQA:
    `country`), else a survey file's only group; an unknown name gets the closest ones."""
    return [survey.resolve(name) for name in groupnames.targets(cfg) or [survey.only_group()]]


def featured_groups(survey: Survey, targets: Sequence[str], n: int = 3) -> list[str]:
    """The groups notebook 01 compares: the run's, then the paper's three countries
    (GlobalOpinionQA) or the survey's n largest groups."""
    paper = ["United States", "Pakistan", "S. Africa"] if survey.name == "goqa" else []
    others = [g for g in paper if g in survey.groups] or list(survey.group_counts())[:n]
    return list(dict.fromkeys([*targets, *others]))


@dataclass
class GroupData:
    """One group's part of a data stage: its questions (true p*), records and split."""

    group: str
    questions: list[schemes.QuestionBeliefs]
    rows: dict[str, list[dict]]
    assignment: dict[str, str]           # split unit -> split
    reports: dict[str, Any]


def group_data(cfg, survey: Survey, group: str, scheme=None, generator=None,
               override: Mapping | None = None) -> GroupData:
    """The records of one group exactly as a run of that group alone builds them (questions
    under belief_scheme, min/max_questions, responses, split, draws): a conditioned run uses
    these per group, so its test prompts are those of each group's own run."""
    scheme = scheme or schemes.for_config(cfg)
    gen = generator or make_generator(cfg, _response_cache_dir(cfg))
    qbs, scheme_report = scheme.apply(survey.questions(), group)
    log.info(scheme_report.summary())
    if len(qbs) < cfg.min_questions:
        raise DataError(f"{group} has {len(qbs)} usable questions under belief_scheme "
                        f"{scheme.name} ({len(scheme_report.skipped)} of "
                        f"{scheme_report.n_questions} skipped by the scheme); min_questions is "
                        f"{cfg.min_questions}: lower it to run on so few questions anyway")
    if cfg.max_questions is not None:
        qbs = qbs[:cfg.max_questions]
    targets = apply_override(qbs, override)
    styled, gen_report = gen.generate([(q.qid, q.question, q.options) for q in qbs], cfg.n_styles)
    log.info(gen_report.summary())
    scale = scheme.ordinals()
    items = goqa_items(qbs, styled, targets,
                       ordinals={q.qid: scale for q in qbs} if scale else None, group=group)
    used = {it.qid for it in items}
    qbs = [q for q in qbs if q.qid in used]
    heldout = heldout_style_ids(cfg.split_by, cfg.n_styles, cfg.heldout_styles)
    assignment = assign_splits(items, cfg.split_by, cfg.split_fractions, cfg.seed, heldout)
    check_splits(assignment, cfg.split_by)
    rows, stats = build_records(items, cfg.sft_per_prompt, cfg.pairs_per_prompt, cfg.seed)
    reports = {
        "scheme": {**scheme_report.to_dict(), "skipped_questions": scheme_report.skipped,
                   "unmapped_options": scheme_report.unmapped},
        "generation": {"generator": gen_report.generator, "styles_kept": gen_report.styles_kept,
                       "cache_hits": gen_report.cache_hits, "rejected": gen_report.rejected},
        "records": {**stats, "overridden": sorted(targets)},
        "split": split_report(items, cfg.split_by, cfg.split_fractions, cfg.seed, heldout),
    }
    return GroupData(group, qbs, rows, assignment, reports)


def build_survey(cfg, out: Path, override: Mapping | None = None) -> dict[str, Any]:
    """Build the data stage of any survey into `out`; returns the counts. One group: its
    records as they are. Several (`groups`): each group's records as its own run builds them,
    conditioned on the group (records.condition_on_group) and merged into one training set."""
    survey = load_survey(cfg)
    # Skipped rows change what the run learns from: said on the console, not only in the log.
    log.info(survey.report.summary(), extra={"console": bool(survey.report.skipped)})
    survey.check_text_lengths(cfg.max_text_chars)
    groups = target_groups(cfg, survey)
    if override and cfg.groups:
        raise DataError("a p* override (few-shot GDPO) needs a run of one group, not groups")
    scheme, gen = schemes.for_config(cfg), make_generator(cfg, _response_cache_dir(cfg))
    parts = [group_data(cfg, survey, g, scheme, gen, override) for g in groups]
    load = survey.report.details or {"origin": survey.report.origin, "rows": survey.report.n_rows,
                                     "skipped": survey.report.skipped,
                                     "renormalised": survey.report.renormalised}
    meta = {"survey": survey.name, "groups": groups}
    if not cfg.groups:
        part = parts[0]
        (out / "splits.json").write_text(json.dumps(part.assignment, indent=1, ensure_ascii=False))
        if cfg.survey == "goqa":
            meta["country"] = part.group
        return write_stage(out, part.rows, part.questions, scheme.name, scheme.k_max,
                           {"load": load, **part.reports}, meta)
    rows = merge_groups([condition_on_group(p.rows, p.group) for p in parts], cfg.seed)
    questions = [replace(q, qid=group_qid(q.qid, p.group)) for p in parts for q in p.questions]
    (out / "splits.json").write_text(json.dumps({p.group: p.assignment for p in parts}, indent=1,
                                                ensure_ascii=False))
    return write_stage(out, rows, questions, scheme.name, scheme.k_max,
                       {"load": load, "groups": {p.group: p.reports for p in parts},
                        "split": merge_split_reports([p.reports["split"] for p in parts])}, meta)


def prepare_data(cfg, run, p_star_override: Mapping[str, Sequence[float]] | None = None,
                 name: str | None = None) -> RunData:
    """THE data stage of a run (notebook 01 builds it; later notebooks reuse it).

    Source: cfg.hub_dataset (the authors' Binwei01 data) > cfg.movies_path (SNAP movie reviews)
    > the survey (cfg.survey) for the run's group(s) under cfg.belief_scheme (build_survey).
    `p_star_override` {qid: distribution (len K_MAX or |B|)} replaces the TRAINING target of
    those questions (e.g. GPO's prediction for few-shot GDPO); the true p* stays in
    `p_star_true` and in the eval prompts' `p_star`. Such data goes to its own stage
    (`name`, default "data_override") and does not touch metrics.json.
    Cached: rebuilt only when data_key(cfg, override) changes.
    """
    name = name or ("data_override" if p_star_override else "data")
    key = data_key(cfg, p_star_override)

    def build(out: Path) -> None:
        if cfg.hub_dataset:
            if p_star_override:
                raise BeliefError("p_star_override is not supported for hub datasets")
            build_hub(cfg, out)
        elif cfg.movies_path:
            build_movies(cfg, out, p_star_override)
        else:
            build_survey(cfg, out, p_star_override)

    path = run.stage(name, key, build)
    data = load_run_data(path)
    if name == "data" and not p_star_override:
        run.merge_metrics(metrics_part(data.counts, data.reports.get("split")))
    return data


class ContextError(ValueError):
    """A sequence of the run that does not fit max_length or the model's window."""


def sequence_length(cfg, data: RunData, tokenizer, window: int | None) -> int:
    """TRL's max_length for this run, checked before any step so that nothing is ever cut:
    `max_length` when set, else the run's longest training sequence (prompt + completion +
    EOS, every split). Every training sequence must fit it, and it and every eval prompt plus
    `max_new_tokens` must fit the model's `window` (None = unbounded); otherwise ContextError
    names the question and the numbers."""
    key = (getattr(tokenizer, "name_or_path", ""), len(tokenizer))
    if key not in data.lengths:
        data.lengths[key] = data.longest(tokenizer)
    (seq, seq_q), (prompt, prompt_q) = data.lengths[key]["sequence"], data.lengths[key]["prompt"]
    length = cfg.max_length or seq
    if seq > length:
        raise ContextError(f"question {seq_q}: a training sequence has {seq} tokens, more than "
                           f"max_length {length}; raise max_length or set it to null (sized from "
                           f"the data)")
    if window is not None and length > window:
        raise ContextError(f"max_length {length} (question {seq_q}) is more than the {window} "
                           f"positions model {cfg.model} reads; use a model with a longer "
                           f"context or fewer/shorter questions")
    if window is not None and prompt + cfg.max_new_tokens > window:
        raise ContextError(f"question {prompt_q}: an eval prompt of {prompt} tokens plus "
                           f"max_new_tokens {cfg.max_new_tokens} is more than the {window} "
                           f"positions model {cfg.model} reads; lower max_new_tokens or use a "
                           f"model with a longer context")
    return length


def base_model(cfg, run, data: RunData | None = None) -> tuple[str | Path, str]:
    """The run's starting policy (before SFT) and its identity for stage keys.

    The tiny model is built from the run's own data (its BPE is trained on the data's text), so
    it needs the data stage: it is built (or reused) here, as the run stage `checkpoints/base`.
    Returns (folder, its stage hash) for `tiny`, else (cfg.model, cfg.model): a hub id, a local
    path or `smollm2-135m`, for models.load_pretrained / load_tokenizer.
    """
    return models.base_checkpoint(cfg, run, lambda: data or prepare_data(cfg, run))
