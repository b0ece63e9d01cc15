"""GlobalOpinionQA (`Anthropic/llm_global_opinions`) loader: a CSV in the hub file's schema.

The hub file has one row per survey question with four string columns:
  question   str
  selections str  "defaultdict(<class 'list'>, {'Country': [fraction per option, ...], ...})"
  options    str  a Python list repr, e.g. "['Yes', \"Don't know\"]"
  source     str  GAS | WVS
Both literals are parsed with `ast.literal_eval` on the extracted literal (never `eval`), so
options holding quotes or apostrophes survive (the authors' string-splitting parser broke them;
docs/deviations.md). Every row is validated; a bad row is reported (row index + reason) and
skipped, or the load fails naming the row (`bad_rows="error"`).
"""
from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gdpolib import sources
from gdpolib.countries import UnknownCountryError, resolve_country
from gdpolib.data.survey import Survey, SurveyReport, SurveyRow
from gdpolib.data.survey_files import read_csv_text

REQUIRED_COLUMNS = ("question", "selections", "options")
# A country's fractions must sum to 1 within this (WVS rows sum to 1.001-1.003, rounded Pew
# percentages to ~0.98-1.02); inside it we renormalise and count, outside it the row is bad.
SUM_TOLERANCE = 0.05

_DEFAULTDICT = re.compile(r"^\s*defaultdict\(\s*<class\s+'list'>\s*,\s*(\{.*\})\s*\)\s*$", re.S)


class GoqaError(ValueError):
    """A GlobalOpinionQA file or row that cannot be used; the message names the file/row."""


@dataclass
class GoqaQuestion:
    """One survey question with the answer distributions of every country that has one."""

    qid: str                               # "goqa-<row index in the source file>" (stable)
    question: str
    options: list[str]
    source: str
    selections: dict[str, np.ndarray]      # country -> float64[len(options)], sums to 1

    def p(self, country: str) -> np.ndarray:
        """The distribution over options for `country` (dataset spelling)."""
        return self.selections[country]


@dataclass
class LoadReport:
    """What the loader did to the rows: nothing is dropped silently."""

    origin: str = ""                                    # file path or "hub:<id>@<revision>"
    n_rows: int = 0                                     # data rows read
    skipped: list[tuple[int, str]] = field(default_factory=list)   # (row index, reason)
    renormalised: int = 0                               # rows with >= 1 country renormalised
    renormalised_entries: int = 0                       # (row, country) distributions renormalised
    dropped_countries: list[tuple[int, str, str]] = field(default_factory=list)  # (row, country, why)
    empty_rows: list[int] = field(default_factory=list)  # well-formed rows without any distribution

    def summary(self) -> str:
        return (f"{self.origin}: {self.n_rows} rows, {len(self.skipped)} skipped as malformed, "
                f"{len(self.empty_rows)} without any distribution, {self.renormalised} "
                f"renormalised, {len(self.dropped_countries)} empty country entries dropped")

    def reasons(self, top: int = 3) -> str:
        """The most common reasons rows were skipped, with their counts."""
        counts: dict[str, int] = {}
        for _, why in self.skipped:
            key = why.split(":")[0] if why.startswith(("options", "selections")) else why
            key = key if len(key) < 60 else key[:57] + "..."
            counts[key] = counts.get(key, 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return "; ".join(f"{n} x {why}" for why, n in ranked) or "none"


@dataclass
class GoqaData:
    questions: list[GoqaQuestion]
    countries: list[str]                  # every country key present, sorted
    report: LoadReport

    def resolve(self, country: str) -> str:
        """Dataset spelling of `country` among the loaded keys (aliases ok). A known country
        without any usable row here gets a GoqaError saying so (with the skip reasons); an
        unknown name gets the closest valid names."""
        try:
            return resolve_country(country, available=self.countries)
        except UnknownCountryError:
            try:
                known = resolve_country(country)
            except UnknownCountryError:
                raise
            dropped = sum(1 for _, c, _ in self.report.dropped_countries if c == known)
            raise GoqaError(
                f"0 usable questions for {known} in {self.report.origin}: {len(self.report.skipped)}"
                f" of {self.report.n_rows} rows skipped as malformed ({self.report.reasons()}), "
                f"{dropped} empty or all-zero {known} entries dropped") from None


# ----------------------------------------------------------------------------- parsing
class _FloatNames(ast.NodeTransformer):
    """Turn bare `nan`/`inf` names (as Python prints them) into float constants, so that a
    NaN is reported as "not finite" rather than as an unparseable string."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in ("nan", "inf"):
            return ast.copy_location(ast.Constant(float(node.id)), node)
        return node


def _literal(text: str) -> object:
    """`ast.literal_eval` of `text`, also accepting bare nan/inf; raises ValueError."""
    try:
        tree = _FloatNames().visit(ast.parse(text.strip(), mode="eval"))
        return ast.literal_eval(tree)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as err:
        raise ValueError(f"not a Python literal ({type(err).__name__}: {err})") from None


def parse_options(text: object) -> list[str]:
    """The options column (a Python list repr) as a list of non-empty strings."""
    if not isinstance(text, str):
        raise ValueError(f"options is {type(text).__name__}, not a string")
    value = _literal(text)
    if not isinstance(value, (list, tuple)):
        raise ValueError("options is not a list")
    # Some WVS scales list bare numbers between the end labels (['Not important at all', 1.0,
    # ..., 9.0, 'Very important']): keep them, written as the integers they are.
    value = [_option_text(o) for o in value]
    if len(value) < 2:
        raise ValueError(f"options has {len(value)} entries (need at least 2)")
    if any(not o.strip() for o in value):
        raise ValueError("options has an empty entry")
    return list(value)


def _option_text(o: object) -> str:
    if isinstance(o, str):
        return o
    if isinstance(o, (int, float)) and not isinstance(o, bool) and math.isfinite(o):
        return str(int(o)) if float(o).is_integer() else str(o)
    raise ValueError(f"option {o!r} is neither a string nor a number")


def parse_selections(text: object) -> dict[str, list[float]]:
    """The selections column ("defaultdict(<class 'list'>, {...})" or a plain dict repr)."""
    if not isinstance(text, str):
        raise ValueError(f"selections is {type(text).__name__}, not a string")
    m = _DEFAULTDICT.match(text)
    value = _literal(m.group(1) if m else text)
    if not isinstance(value, dict):
        raise ValueError("selections is not a dict of country -> list")
    out: dict[str, list[float]] = {}
    for country, values in value.items():
        if not isinstance(country, str) or not isinstance(values, (list, tuple)):
            raise ValueError(f"selections entry {country!r} is not 'country: [numbers]'")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"selections for {country!r} holds a non-number")
        out[country] = [float(v) for v in values]
    return out


def validate_row(idx: int, question: object, options_text: object, selections_text: object,
                 source: object, report: LoadReport) -> GoqaQuestion | None:
    """Parse and check one row; raises ValueError(reason) for a malformed row.

    Empty or all-zero country lists are dropped for that country (reported in
    `report.dropped_countries`); a well-formed row with no country left holds no data: it
    returns None (the caller counts it in `report.empty_rows`), also under bad_rows="error".
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError("empty question")
    try:
        options = parse_options(options_text)
    except ValueError as err:
        raise ValueError(f"options: {err}") from None
    try:
        raw = parse_selections(selections_text)
    except ValueError as err:
        raise ValueError(f"selections: {err}") from None
    selections: dict[str, np.ndarray] = {}
    renorm = 0
    for country, values in raw.items():
        if len(values) == 0 or (all(math.isfinite(v) for v in values) and sum(values) == 0):
            report.dropped_countries.append((idx, country, "empty" if not values else "all zero"))
            continue
        if len(values) != len(options):
            raise ValueError(f"length mismatch for {country!r}: {len(values)} values, "
                             f"{len(options)} options")
        arr = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"non-finite value (NaN/inf) for {country!r}: {values}")
        if np.any(arr < 0):
            raise ValueError(f"negative value for {country!r}: {values}")
        total = float(arr.sum())
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise ValueError(f"values for {country!r} sum to {total:.4f} (not within "
                             f"{SUM_TOLERANCE} of 1)")
        if abs(total - 1.0) > 1e-9:
            renorm += 1
        selections[country] = arr / total
    if not selections:
        return None
    if renorm:
        report.renormalised += 1
        report.renormalised_entries += renorm
    src = source if isinstance(source, str) else ""
    return GoqaQuestion(qid=f"goqa-{idx}", question=question.strip(), options=options,
                        source=src, selections=selections)


def parse_rows(rows: list[dict], origin: str, bad_rows: str = "skip") -> GoqaData:
    """Validate rows (dicts with the hub columns); row index = position in `rows`."""
    if bad_rows not in ("skip", "error"):
        raise ValueError(f"bad_rows must be 'skip' or 'error', got {bad_rows!r}")
    report = LoadReport(origin=origin, n_rows=len(rows))
    questions: list[GoqaQuestion] = []
    for idx, row in enumerate(rows):
        try:
            q = validate_row(idx, row.get("question"), row.get("options"), row.get("selections"),
                             row.get("source"), report)
            if q is None:
                report.empty_rows.append(idx)
            else:
                questions.append(q)
        except ValueError as err:
            if bad_rows == "error":
                raise GoqaError(f"{origin}: row {idx} (0-based data row): {err}") from None
            report.skipped.append((idx, str(err)))
    countries = sorted({c for q in questions for c in q.selections})
    return GoqaData(questions=questions, countries=countries, report=report)


# ----------------------------------------------------------------------------- sources
def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        raise GoqaError(f"GlobalOpinionQA file {str(path)!r} does not exist (goqa_path)")
    return read_csv_text(path, REQUIRED_COLUMNS, GoqaError,
                         f"GlobalOpinionQA file {str(path)!r} (the hub schema: "
                         f"{list(REQUIRED_COLUMNS) + ['source']})").to_dict("records")


def load_goqa(path: str | Path, *, origin: str | None = None,
              bad_rows: str = "skip") -> GoqaData:
    """Load GlobalOpinionQA from a local CSV in the hub file's schema (plain or .gz; the hub's
    own file arrives here too, downloaded by gdpolib.sources). `origin` names it in the report.

    Returns GoqaData with one GoqaQuestion per valid row (qid = "goqa-<row index>") and a
    LoadReport. bad_rows="error" raises GoqaError naming the first bad row and its reason.
    """
    return parse_rows(_read_csv(Path(path)), origin or str(path), bad_rows=bad_rows)


def load_for_run(cfg) -> GoqaData:
    """The run's GlobalOpinionQA: `goqa_path` as gdpolib.sources reads it (the embedded copy,
    a local CSV, or the hub's file at `goqa_revision`)."""
    return load_goqa(sources.for_run(cfg, "goqa_path"), origin=sources.origin(cfg, "goqa_path"),
                     bad_rows=cfg.bad_rows)


def to_survey(data: GoqaData) -> Survey:
    """GlobalOpinionQA in the survey format (gdpolib.data.survey): one row per (country,
    question), qid "goqa-<row>", each distribution the array this loader made (so every
    (country, question) keeps exactly its p*). Countries resolve as here (aliases, errors)."""
    rows = [SurveyRow(country, q.qid, q.question, list(q.options), p, None, q.source)
            for q in data.questions for country, p in q.selections.items()]
    r = data.report
    report = SurveyReport(origin=r.origin, n_rows=r.n_rows, skipped=list(r.skipped),
                          renormalised=r.renormalised, details={
                              "origin": r.origin, "rows": r.n_rows, "skipped": r.skipped,
                              "renormalised": r.renormalised,
                              "renormalised_entries": r.renormalised_entries,
                              "dropped_countries": r.dropped_countries})
    return Survey("goqa", rows, report, resolver=data.resolve)
