"""SNAP web-Movies reviews (McAuley & Leskovec 2013) as belief data: beliefs are star ratings.

A movie is a "question"; its beliefs are the star ratings 1..5 (belief id = stars - 1, label
"1 star" .. "5 stars"); p* is the movie's rating histogram; the responses for a belief are the
real review texts with that rating. The belief set B of a movie is the ratings that have at
least one review (a DPO rejected side needs a real review of that rating).

Formats read (`product/productId: ...` etc.):
- one review per line, the 8 `key: value` fields tab-separated (the shared sample);
- SNAP's original: one `key: value` per line, reviews separated by a blank line.
A malformed line raises MovieFormatError naming the line (or is skipped and reported with
bad_rows="skip").
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from gdpolib.schemes import MoviesScheme, QuestionBeliefs
from gdpolib import sources
from gdpolib.data.records import (PromptItem, apply_override, build_records,
                                  write_stage)
from gdpolib.data.splits import assign_splits, check_splits, heldout_style_ids, split_report
from gdpolib.data.responses import format_prompt, styles_for

K_MOVIES = MoviesScheme.k_max
STAR_LABELS = ["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]
FIELDS = ("product/productId", "review/userId", "review/profileName", "review/helpfulness",
          "review/score", "review/time", "review/summary", "review/text")
MOVIE_PROMPTS = {   # style -> the "question" about a movie (no titles exist in SNAP)
    "plain": "What do you think of the movie {pid}?",
    "casual": "Seen the movie {pid}? What did you make of it?",
    "formal": "Please give your assessment of the film {pid}.",
    "curious": "I'm curious how the movie {pid} struck you.",
    "concise": "Your verdict on the movie {pid}, briefly.",
    "story": "A friend recommended the movie {pid} to me. How was it for you?",
}


class MovieFormatError(ValueError):
    """A malformed SNAP line/record; the message names the file and line."""


@dataclass
class Review:
    product_id: str
    score: int            # 1..5
    summary: str
    text: str
    line: int             # 1-based line where the review starts


@dataclass
class MovieData:
    reviews: list[Review]
    skipped: list[tuple[int, str]] = field(default_factory=list)   # (line, reason)

    def movies(self) -> list[str]:
        return sorted({r.product_id for r in self.reviews})


def clean_review(text: str) -> str:
    """HTML entities decoded, `<br />` -> space, whitespace collapsed."""
    text = re.sub(r"<br\s*/?>", " ", text, flags=re.I)
    return " ".join(html.unescape(text).split())


def _review(fields: dict[str, str], line: int) -> Review:
    missing = [f for f in ("product/productId", "review/score", "review/text") if f not in fields]
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    try:
        score = float(fields["review/score"])
    except ValueError:
        raise ValueError(f"review/score {fields['review/score']!r} is not a number") from None
    if score not in (1.0, 2.0, 3.0, 4.0, 5.0):
        raise ValueError(f"review/score {score} is not 1..5")
    if not fields["product/productId"].strip():
        raise ValueError("empty product/productId")
    text = clean_review(fields["review/text"])
    if not text:
        raise ValueError("empty review/text")
    return Review(fields["product/productId"].strip(), int(score),
                  clean_review(fields.get("review/summary", "")), text, line)


def _split_kv(part: str) -> tuple[str, str]:
    key, sep, value = part.partition(": ")
    if not sep:
        key, sep, value = part.partition(":")
    if not sep or "/" not in key:
        raise ValueError(f"{part[:40]!r} is not a 'key: value' field")
    return key.strip(), value.strip()


def parse_snap(text: str, origin: str = "<text>", bad_rows: str = "error") -> MovieData:
    """Parse either SNAP layout. bad_rows: "error" (MovieFormatError) or "skip" (reported)."""
    data = MovieData([])

    def fail(line: int, reason: str) -> None:
        if bad_rows == "error":
            raise MovieFormatError(f"{origin}: line {line}: {reason}")
        data.skipped.append((line, reason))

    lines = text.splitlines()
    one_per_line = any("\t" in ln for ln in lines[:5])
    if one_per_line:
        for n, ln in enumerate(lines, 1):
            if not ln.strip():
                continue
            try:
                # Split only at a tab that starts the next known field: a review text may
                # itself hold a tab.
                parts = re.split(r"\t(?=(?:product|review)/\w+:)", ln)
                fields = dict(_split_kv(p) for p in parts if p.strip())
                data.reviews.append(_review(fields, n))
            except ValueError as err:
                fail(n, str(err))
        return data
    fields: dict[str, str] = {}
    start = 1
    for n, ln in enumerate(lines + [""], 1):
        if not ln.strip():
            if fields:
                try:
                    data.reviews.append(_review(fields, start))
                except ValueError as err:
                    fail(start, str(err))
            fields, start = {}, n + 1
            continue
        try:
            k, v = _split_kv(ln)
            fields[k] = v
        except ValueError as err:
            fail(n, str(err))
    return data


def load_movies(path: str | Path, bad_rows: str = "error") -> MovieData:
    path = Path(path)
    if not path.exists():
        raise MovieFormatError(f"movie reviews file {str(path)!r} does not exist (movies_path)")
    data = parse_snap(path.read_text(encoding="utf-8", errors="replace"), str(path), bad_rows)
    if not data.reviews:
        raise MovieFormatError(f"{path}: no reviews found")
    return data


def movie_beliefs(data: MovieData, min_reviews: int = 2
                  ) -> tuple[list[QuestionBeliefs], dict[str, dict[int, list[str]]]]:
    """Per movie: QuestionBeliefs (p* = rating histogram over K_MOVIES) and the reviews per
    belief id. Movies with fewer than `min_reviews` reviews are dropped (p* would be a point)."""
    by_movie: dict[str, list[Review]] = {}
    for r in data.reviews:
        by_movie.setdefault(r.product_id, []).append(r)
    qbs, responses = [], {}
    for pid, rs in sorted(by_movie.items()):
        if len(rs) < min_reviews:
            continue
        counts = np.bincount([r.score - 1 for r in rs], minlength=K_MOVIES).astype(np.float64)
        mask = (counts > 0).astype(np.int64)
        qid = f"movie-{pid}"
        qbs.append(QuestionBeliefs(
            qid=qid, question=MOVIE_PROMPTS["plain"].format(pid=pid), options=list(STAR_LABELS),
            p_star=counts / counts.sum(), mask=mask,
            labels=[STAR_LABELS[k] if mask[k] else "" for k in range(K_MOVIES)],
            option_belief=list(range(K_MOVIES)), source="snap-movies"))
        responses[qid] = {k: [r.text for r in rs if r.score - 1 == k]
                          for k in range(K_MOVIES) if mask[k]}
    return qbs, responses


def movie_items(qbs: Sequence[QuestionBeliefs], responses: Mapping[str, dict[int, list[str]]],
                n_styles: int, targets: Mapping[str, np.ndarray] | None = None):
    """PromptItems: each movie in n_styles prompt styles, candidates = the real reviews."""
    items = []
    for qb in qbs:
        pid = qb.qid.removeprefix("movie-")
        for style, _ in styles_for(n_styles):
            target = (targets or {}).get(qb.qid, qb.p_star)
            items.append(PromptItem(qb.qid, style, format_prompt(
                MOVIE_PROMPTS[style].format(pid=pid), qb.labels, qb.mask, style), qb,
                np.asarray(target, dtype=np.float64), responses[qb.qid],
                ordinal=MoviesScheme().ordinals()))
    return items


def build_movies(cfg, out: Path, override: Mapping | None = None) -> dict:
    """The data stage for cfg.movies_path (same record schema as GOQA, K_MAX = 5)."""
    data = load_movies(sources.for_run(cfg, "movies_path"), bad_rows=cfg.bad_rows)
    qbs, responses = movie_beliefs(data)
    if cfg.max_questions is not None:
        qbs = qbs[:cfg.max_questions]
    targets = apply_override(qbs, override)
    items = movie_items(qbs, responses, cfg.n_styles, targets)
    heldout = heldout_style_ids(cfg.split_by, cfg.n_styles, cfg.heldout_styles)
    assignment = assign_splits(items, cfg.split_by, cfg.split_fractions, cfg.seed, heldout)
    check_splits(assignment, cfg.split_by)
    rows, stats = build_records(items, cfg.sft_per_prompt, cfg.pairs_per_prompt, cfg.seed)
    (out / "splits.json").write_text(json.dumps(assignment, indent=1))
    reports = {"load": {"origin": sources.origin(cfg, "movies_path"), "reviews": len(data.reviews),
                        "skipped": data.skipped, "movies": len(data.movies())},
               "records": {**stats, "overridden": sorted(targets)},
               "split": split_report(items, cfg.split_by, cfg.split_fractions, cfg.seed, heldout)}
    return write_stage(out, rows, qbs, MoviesScheme.name, K_MOVIES, reports)
