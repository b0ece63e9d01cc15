"""One survey format for every data source: a table with one row per (group, question).

    group         str          who answered: a country, a demographic group, ...
    question      str          the question text
    options       list[str]    the answer options, in order (at least 2)
    distribution  list[float]  the group's share of each option: one per option, sums to 1
    ordinal       list[float]  optional: a number per option (ordinal questions; GPO's WD score)
    source        str          optional: where the row comes from (a wave, a survey name)
    qid           str          optional: a stable question id; default "q-" + a hash of the
                               question text and options. Rows of one qid share question,
                               options and ordinal.

CSV (list cells as JSON text, e.g. ["Yes", "No"]), JSONL (one object per line) and Parquet hold
the same table and read the same way (gdpolib.data.survey_files: `read_survey`; `write_survey`
writes any of them). Every row is checked (`parse_records`, here); a malformed row is reported with its row number and reason and skipped
(bad_rows="skip", listed in the report) or the load fails naming every malformed row
(bad_rows="error"). Reading writes nothing.

GlobalOpinionQA (`gdpolib.data.goqa.to_survey`) and OpinionQA (`gdpolib.data.opinionqa.to_survey`)
are converted to this format after their own parsing, so that the belief schemes, the data stage and GPO read one format.
`Survey.questions()` is the per-question view the belief schemes read: the fields of a
GlobalOpinionQA question, with `selections` = {group: distribution}.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np


REQUIRED = ("group", "question", "options", "distribution")
OPTIONAL = ("ordinal", "source", "qid")
# As for GlobalOpinionQA: shares within this of 1 are renormalised, further off is an error.
SUM_TOLERANCE = 0.05


class SurveyError(ValueError):
    """A survey file or row that cannot be used, or an unknown group; one line naming it."""


@dataclass
class SurveyRow:
    """One (group, question) row, checked. distribution and ordinal are float64[len(options)]."""

    group: str
    qid: str
    question: str
    options: list[str]
    distribution: np.ndarray
    ordinal: np.ndarray | None = None
    source: str = ""

    def to_record(self) -> dict[str, Any]:
        """The row as plain Python values (lists, not arrays), in the format's column order."""
        return {"group": self.group, "question": self.question, "options": list(self.options),
                "distribution": [float(x) for x in self.distribution],
                "ordinal": None if self.ordinal is None else [float(x) for x in self.ordinal],
                "source": self.source, "qid": self.qid}


@dataclass
class SurveyQuestion:
    """A question with every group's distribution: what a belief scheme reads (the fields of
    gdpolib.data.goqa.GoqaQuestion, plus the ordinal values)."""

    qid: str
    question: str
    options: list[str]
    source: str
    selections: dict[str, np.ndarray]          # group -> float64[len(options)], sums to 1
    ordinal: np.ndarray | None = None


@dataclass
class SurveyReport:
    """What reading did: rows read, rows skipped (row number or id, reason), renormalised."""

    origin: str
    n_rows: int = 0
    skipped: list[tuple[Any, str]] = field(default_factory=list)
    renormalised: int = 0
    details: dict[str, Any] = field(default_factory=dict)    # the source loader's own report

    def summary(self) -> str:
        first = (f" (first: {self.skipped[0][0]}: {self.skipped[0][1]}; bad_rows=error stops "
                 f"instead)" if self.skipped else "")
        return (f"{self.origin}: {self.n_rows} rows read, {len(self.skipped)} skipped as "
                f"malformed{first}, {self.renormalised} renormalised")


@dataclass
class Survey:
    """Checked (group, question) rows of one survey and how to name its groups.

    name: goqa | opinionqa | the file's stem. aliases: other spellings -> group (casefolded
    keys). resolver: a source's own group resolver (GlobalOpinionQA's country rules)."""

    name: str
    rows: list[SurveyRow]
    report: SurveyReport
    aliases: dict[str, str] = field(default_factory=dict)
    resolver: Callable[[str], str] | None = field(default=None, repr=False)

    @functools.cached_property
    def groups(self) -> list[str]:
        return sorted({r.group for r in self.rows})

    @functools.cached_property
    def _questions(self) -> list[SurveyQuestion]:
        by_qid: dict[str, SurveyQuestion] = {}
        for r in self.rows:
            q = by_qid.get(r.qid)
            if q is None:
                q = by_qid[r.qid] = SurveyQuestion(r.qid, r.question, list(r.options), r.source,
                                                   {}, r.ordinal)
            q.selections[r.group] = r.distribution
        return list(by_qid.values())

    def questions(self) -> list[SurveyQuestion]:
        """One SurveyQuestion per qid, in the order of their first row."""
        return self._questions

    def for_group(self, group: str) -> list[SurveyQuestion]:
        """The questions `group` (any accepted spelling) answered."""
        key = self.resolve(group)
        return [q for q in self._questions if key in q.selections]

    def group_counts(self) -> dict[str, int]:
        """Questions per group, most first."""
        counts: dict[str, int] = {}
        for r in self.rows:
            counts[r.group] = counts.get(r.group, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def only_group(self) -> str:
        """The survey's one group (a run that names none); SurveyError when it has several."""
        if len(self.groups) != 1:
            raise SurveyError(f"{self.name} has {len(self.groups)} groups ("
                              f"{', '.join(self.groups[:8])}{' ...' if len(self.groups) > 8 else ''}"
                              f"): name one with group, or several with groups")
        return self.groups[0]

    def check_text_lengths(self, max_chars: int) -> None:
        """SurveyError naming the first question or option over `max_chars` characters: one such
        row makes every batch of a run as long (the run many times slower), so it is refused."""
        for q in self._questions:
            for what, text in [("question", q.question), *(("an option", o) for o in q.options)]:
                if len(text) > max_chars:
                    raise SurveyError(f"{self.report.origin}: question {q.qid!r} ({q.question[:40]!r}"
                                      f"...): {what} has {len(text):,} characters, more than "
                                      f"max_text_chars {max_chars:,}; shorten it or raise the bound")

    def resolve(self, name: str) -> str:
        """The survey's spelling of a group: exact, then ignoring case, then an alias; an
        unknown name raises SurveyError with the closest names (GlobalOpinionQA: its country
        rules and errors)."""
        if self.resolver is not None:
            return self.resolver(name)
        return resolve_group(name, self.groups, self.aliases, self.name)


def resolve_group(name: str, groups: Sequence[str], aliases: dict[str, str] | None = None,
                  where: str = "the survey") -> str:
    """`name` as one of `groups` (exact, case-insensitive, or an alias); SurveyError otherwise,
    listing the closest group names."""
    if name in groups:
        return name
    key = str(name).strip().casefold()
    lowered = {g.casefold(): g for g in groups}
    aliases = aliases or {}
    if key in lowered:
        return lowered[key]
    if key in aliases:
        return aliases[key]
    close = difflib.get_close_matches(str(name), list(groups), n=5, cutoff=0.5)
    close += [aliases[a] for a in difflib.get_close_matches(key, list(aliases), n=3, cutoff=0.6)]
    hint = f"; closest: {', '.join(dict.fromkeys(close))}" if close else \
        f"; groups: {', '.join(list(groups)[:8])}{' ...' if len(groups) > 8 else ''}"
    raise SurveyError(f"unknown group {name!r} in {where} ({len(groups)} groups){hint}")


# ----------------------------------------------------------------------------- row checks
def _text(value: Any, what: str, required: bool = True, strip: bool = True) -> str:
    """A text cell; numbers become their text (an option 1.0 is "1"). Options keep their
    spaces (as GlobalOpinionQA's loader keeps them), other cells are stripped."""
    if _missing(value):
        if required:
            raise ValueError(f"{what} is empty")
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and what != "question":
        value = str(int(value)) if float(value).is_integer() else str(value)
    if not isinstance(value, str):
        raise ValueError(f"{what} is {type(value).__name__}, not text")
    if required and not value.strip():
        raise ValueError(f"{what} is empty")
    return value.strip() if strip else value


def _missing(value: Any) -> bool:
    """An empty cell: None, NaN or "" (CSV)."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _as_list(value: Any, what: str) -> list:
    """A list cell: a list (JSONL), an array (Parquet) or JSON text (CSV)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"{what} is not a JSON list ({err.msg} at character {err.pos})") from None
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{what} is not a list")
    return list(value)


def _numbers(value: Any, what: str, n: int) -> np.ndarray:
    """A list of n finite numbers as float64[n]."""
    values = _as_list(value, what)
    if len(values) != n:
        raise ValueError(f"{what} has {len(values)} values for {n} options")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{what} holds a non-number: {values}")
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} holds a non-finite value (NaN/inf): {values}")
    return arr


def check_row(record: dict[str, Any]) -> tuple[SurveyRow, bool]:
    """Check one raw row (a dict of the format's columns); returns (row, renormalised) or
    raises ValueError(reason). A distribution within SUM_TOLERANCE of 1 is renormalised
    (when off by more than 1e-9); further off, negative or all zero is an error."""
    group = _text(record.get("group"), "group")
    question = _text(record.get("question"), "question")
    options = [_text(o, "an option", strip=False) for o in _as_list(record.get("options"), "options")]
    if len(options) < 2:
        raise ValueError(f"options has {len(options)} entries (need at least 2)")
    dist = _numbers(record.get("distribution"), "distribution", len(options))
    if np.any(dist < 0):
        raise ValueError(f"distribution has a negative share: {dist.tolist()}")
    total = float(dist.sum())
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ValueError(f"distribution sums to {total:.4f}, not 1 (within {SUM_TOLERANCE})")
    renorm = abs(total - 1.0) > 1e-9
    if renorm:
        dist = dist / total
    ordinal = None if _missing(record.get("ordinal")) else \
        _numbers(record.get("ordinal"), "ordinal", len(options))
    source = _text(record.get("source"), "source", required=False)
    qid = _text(record.get("qid"), "qid", required=False) or default_qid(question, options)
    return SurveyRow(group, qid, question, options, dist, ordinal, source), renorm


def default_qid(question: str, options: Sequence[str]) -> str:
    """A stable id from the question text and its options (rows without a qid)."""
    blob = json.dumps([question, list(options)], ensure_ascii=False).encode()
    return "q-" + hashlib.sha256(blob).hexdigest()[:10]


def _conflict(row: SurveyRow, first: SurveyRow) -> str | None:
    """Why `row` cannot share its qid with `first` (None when it can)."""
    if row.question != first.question:
        return "another question text"
    if row.options != first.options:
        return f"other options ({row.options} vs {first.options})"
    a, b = row.ordinal, first.ordinal
    if (a is None) != (b is None) or (a is not None and not np.array_equal(a, b)):
        return "other ordinal values"
    return None


def parse_records(records: Iterable[tuple[str, dict[str, Any] | str]], origin: str, name: str,
                  bad_rows: str = "skip") -> Survey:
    """Check raw rows ((where, dict) pairs: `where` names the row, e.g. "row 3 (line 4)"; a
    string instead of the dict is why the row could not even be read) into a Survey. Rows must agree with the earlier rows of their qid, and a (group, qid) appears
    once. bad_rows="error" raises one SurveyError naming every malformed row (the first 5)."""
    if bad_rows not in ("skip", "error"):
        raise ValueError(f"bad_rows must be 'skip' or 'error', got {bad_rows!r}")
    report = SurveyReport(origin=origin)
    rows: list[SurveyRow] = []
    first_of: dict[str, tuple[str, SurveyRow]] = {}
    seen: dict[tuple[str, str], str] = {}
    for where, record in records:
        report.n_rows += 1
        try:
            if isinstance(record, str):
                raise ValueError(record)
            row, renorm = check_row(record)
            if row.qid in first_of and (why := _conflict(row, first_of[row.qid][1])):
                raise ValueError(f"question {row.qid!r} has {why} than {first_of[row.qid][0]}")
            if (row.group, row.qid) in seen:
                raise ValueError(f"group {row.group!r} answers question {row.qid!r} again "
                                 f"(first in {seen[row.group, row.qid]})")
        except ValueError as err:
            report.skipped.append((where, str(err)))
            continue
        first_of.setdefault(row.qid, (where, row))
        seen[row.group, row.qid] = where
        report.renormalised += renorm
        rows.append(row)
    if report.skipped and bad_rows == "error":
        shown = "; ".join(f"{w}: {why}" for w, why in report.skipped[:5])
        more = f"; and {len(report.skipped) - 5} more" if len(report.skipped) > 5 else ""
        raise SurveyError(f"{origin}: {len(report.skipped)} malformed row(s) of {report.n_rows}: "
                          f"{shown}{more}")
    if not rows:
        why = f"; first: {report.skipped[0][0]}: {report.skipped[0][1]}" if report.skipped else ""
        raise SurveyError(f"{origin}: no usable row ({report.n_rows} read, "
                          f"{len(report.skipped)} malformed{why})")
    return Survey(name, rows, report)
