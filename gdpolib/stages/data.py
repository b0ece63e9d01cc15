"""Stage of notebook 01: the run's data (`prepare_data`) and the run's starting policy
(`base_model`), which every later stage builds on.

The data stage is `<run>/data/`: SFT records, DPO and GDPO pairs and the eval-prompt table per
split (gdpolib.data.records), built from one source: the authors' hub dataset (`hub_dataset`) >
SNAP movie reviews (`movies_path`) > GlobalOpinionQA (`goqa_path` or the hub) for `country`
under `belief_scheme`. It is cached: rebuilt only when `data_key(cfg)` changes.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from gdpolib import models
from gdpolib.beliefs import BeliefError, make_scheme
from gdpolib.config import resolve_path
from gdpolib.data import goqa
from gdpolib.data.hub import build_hub
from gdpolib.data.movies import build_movies
from gdpolib.data.records import (DATA_VERSION, DataError, RunData, apply_override,
                                  build_records, goqa_items, load_run_data, metrics_part,
                                  scheme_ordinals, write_stage)
from gdpolib.data.splits import assign_splits, check_splits, heldout_style_ids, split_report
from gdpolib.data.generators import make_generator
from gdpolib.runs import file_hash, stable_hash

log = logging.getLogger("gdpolib.stages.data")


def data_key(cfg, override: Mapping | None = None) -> dict[str, Any]:
    """Everything the data stage depends on: params, input file contents, the override."""
    key: dict[str, Any] = {"version": DATA_VERSION, **cfg.subset(
        "seed", "n_styles", "split_by", "heldout_styles", "split_fractions", "sft_per_prompt",
        "pairs_per_prompt",
        "responses", "response_model", "api_base", "api_model")}
    if cfg.hub_dataset:
        key["hub_dataset"] = cfg.hub_dataset
    elif cfg.movies_path:
        key["movies_sha"] = file_hash(resolve_path(cfg.movies_path))
    else:
        key.update(cfg.subset("country", "goqa_path", "goqa_revision", "bad_rows",
                              "belief_scheme", "max_options", "max_questions"))
        source = goqa.local_path(cfg.goqa_path)
        if source is not None:
            key["goqa_sha"] = file_hash(source)
        if cfg.belief_scheme == "stance6":
            key["option_map_path"] = cfg.option_map_path
            p = cfg.option_map_path
            if p and p != "github" and not p.startswith(("http://", "https://")):
                key["option_map_sha"] = file_hash(resolve_path(p))
    if override:
        key["override"] = stable_hash({q: [round(float(x), 12) for x in v]
                                       for q, v in sorted(override.items())})
    return key


def _response_cache_dir(cfg) -> Path | None:
    """Where generated (non-template) responses are cached across runs."""
    return None if cfg.responses == "template" else models.cache_root(cfg) / "responses"


def build_goqa(cfg, out: Path, override: Mapping | None = None) -> dict[str, Any]:
    """Build the GlobalOpinionQA data stage into `out`; returns the counts."""
    data = goqa.load_goqa(goqa.local_path(cfg.goqa_path), revision=cfg.goqa_revision,
                          bad_rows=cfg.bad_rows)
    log.info(data.report.summary())
    country = data.resolve(cfg.country)
    scheme = make_scheme(cfg)
    qbs, scheme_report = scheme.apply(data.questions, country)
    log.info(scheme_report.summary())
    if len(qbs) < cfg.min_questions:
        raise DataError(f"{country} has {len(qbs)} usable questions under belief_scheme "
                        f"{cfg.belief_scheme} ({len(scheme_report.skipped)} of "
                        f"{scheme_report.n_questions} skipped by the scheme); min_questions is "
                        f"{cfg.min_questions}: lower it to run on so few questions anyway")
    if cfg.max_questions is not None:
        qbs = qbs[:cfg.max_questions]
    targets = apply_override(qbs, override)
    gen = make_generator(cfg, _response_cache_dir(cfg))
    styled, gen_report = gen.generate([(q.qid, q.question, q.options) for q in qbs], cfg.n_styles)
    log.info(gen_report.summary())
    scale = scheme_ordinals(scheme.name, scheme.k_max)
    items = goqa_items(qbs, styled, targets,
                       ordinals={q.qid: scale for q in qbs} if scale else None)
    used = {it.qid for it in items}
    qbs = [q for q in qbs if q.qid in used]
    heldout = heldout_style_ids(cfg.split_by, cfg.n_styles, cfg.heldout_styles)
    assignment = assign_splits(items, cfg.split_by, cfg.split_fractions, cfg.seed, heldout)
    check_splits(assignment, cfg.split_by)
    rows, stats = build_records(items, cfg.sft_per_prompt, cfg.pairs_per_prompt, cfg.seed)
    reports = {
        "load": {"origin": data.report.origin, "rows": data.report.n_rows,
                 "skipped": data.report.skipped, "renormalised": data.report.renormalised,
                 "renormalised_entries": data.report.renormalised_entries,
                 "dropped_countries": data.report.dropped_countries},
        "scheme": {**scheme_report.to_dict(), "skipped_questions": scheme_report.skipped,
                   "unmapped_options": scheme_report.unmapped},
        "generation": {"generator": gen_report.generator, "styles_kept": gen_report.styles_kept,
                       "cache_hits": gen_report.cache_hits, "rejected": gen_report.rejected},
        "records": {**stats, "overridden": sorted(targets)},
        "split": split_report(items, cfg.split_by, cfg.split_fractions, cfg.seed, heldout),
    }
    (out / "splits.json").write_text(json.dumps(assignment, indent=1, ensure_ascii=False))
    return write_stage(out, rows, qbs, scheme.name, scheme.k_max, reports,
                       {"country": country})


def prepare_data(cfg, run, p_star_override: Mapping[str, Sequence[float]] | None = None,
                 name: str | None = None) -> RunData:
    """THE data stage of a run (notebook 01 builds it; later notebooks reuse it).

    Source: cfg.hub_dataset (the authors' Binwei01 data) > cfg.movies_path (SNAP movie reviews)
    > GlobalOpinionQA (cfg.goqa_path or the hub) for cfg.country under cfg.belief_scheme.
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
            build_goqa(cfg, out, p_star_override)

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
