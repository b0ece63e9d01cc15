"""Belief schemes: how a question's answer options become beliefs, as objects that own their
behaviour (nothing outside branches on a scheme's name): the belief set and p* of each question
(`apply`), K_MAX, the beliefs' ordinal values (`ordinals`, the Wasserstein distance's scale), the
class-belief consistency check behind CBC (`consistent`), where their inputs come from
(`from_config`: the option map through gdpolib.sources) and what the data stage's cache key
holds of them (`cache_key`).

Survey schemes (the `belief_scheme` parameter, SURVEY_SCHEMES):
- `options`: each question's own options are its beliefs (belief id = option index, K_MAX 10);
  any survey works without a hand-made map. Questions with more than `max_options` options
  are skipped and counted (belief tokens are single digits).
- `stance6`: the paper's six ordinal stance classes 0..5 via an option -> class JSON map
  (5 strong positive .. 1 strong negative, 0 no stance). p*(class) = sum of the fractions of
  the options in that class. Options missing from the map are REPORTED and the question is
  skipped (or the load fails), never silently put in class 0.
Data sources that bring their own beliefs: `movies` (star ratings 1..5, ordered) and the
authors' hub datasets (`hub-<kind>`, no labels). `for_data` gives the scheme a built data stage
was made with (its meta.json `scheme`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from gdpolib import sources
from gdpolib.beliefs import BeliefError, clean_label
from gdpolib.seeds import file_hash

if TYPE_CHECKING:  # pragma: no cover
    from gdpolib.data.goqa import GoqaQuestion


def _same_text(a: str | None, b: str | None) -> bool:
    return bool(b) and " ".join((a or "").split()) == " ".join((b or "").split())


@dataclass
class QuestionBeliefs:
    """One question seen through a scheme, for one country. Vectors have length K_MAX."""

    qid: str
    question: str
    options: list[str]
    p_star: np.ndarray             # float64[K_MAX], sums to 1, 0 outside the belief set
    mask: np.ndarray               # int64[K_MAX], 1 where the belief is in B
    labels: list[str]              # len K_MAX, the label of each belief ("" if unused)
    option_belief: list[int]       # belief id of each option (len(options))
    source: str = ""

    @property
    def beliefs(self) -> list[int]:
        """The belief set B (sorted ids)."""
        return [int(k) for k in np.flatnonzero(self.mask)]

    @property
    def majority(self) -> int:
        """argmax p* (ties: the lowest id)."""
        return int(np.argmax(self.p_star))

    def option_texts(self, k: int) -> list[str]:
        """The option text(s) that belief k stands for."""
        return [o for o, b in zip(self.options, self.option_belief) if b == k]

    def with_p_star(self, p: Sequence[float]) -> "QuestionBeliefs":
        """A copy with another target (e.g. GPO's prediction); validated and renormalised."""
        return replace(self, p_star=check_distribution(p, self.mask, self.qid))


def check_distribution(p: Sequence[float], mask: np.ndarray, name: str = "") -> np.ndarray:
    """A target over K_MAX beliefs: finite, >= 0, no mass outside the mask, renormalised.

    Accepts a vector of len K_MAX or of len |B| (then placed on the mask's beliefs).
    """
    arr = np.asarray(p, dtype=np.float64).ravel()
    k_max, beliefs = len(mask), np.flatnonzero(mask)
    if arr.shape[0] == len(beliefs) and arr.shape[0] != k_max:
        full = np.zeros(k_max)
        full[beliefs] = arr
        arr = full
    if arr.shape[0] != k_max:
        raise BeliefError(f"{name}: distribution has {arr.shape[0]} entries, expected {k_max} "
                          f"(or {len(beliefs)}, one per belief)")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise BeliefError(f"{name}: distribution must be finite and non-negative: {arr.tolist()}")
    if np.any(arr[np.asarray(mask) == 0] > 1e-9):
        raise BeliefError(f"{name}: mass on beliefs outside the question's set {beliefs.tolist()}")
    total = arr.sum()
    if total <= 0:
        raise BeliefError(f"{name}: distribution sums to 0")
    return arr / total


@dataclass
class SchemeReport:
    """What a scheme kept and why it skipped questions; unmapped options are listed."""

    scheme: str
    country: str
    n_questions: int = 0                     # questions for the country
    n_used: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (qid, reason)
    n_option_occurrences: int = 0            # options over all the country's questions
    unmapped: dict[str, int] = field(default_factory=dict)         # option text -> occurrences

    @property
    def n_unmapped_occurrences(self) -> int:
        return sum(self.unmapped.values())

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "country": self.country, "questions": self.n_questions,
                "used": self.n_used, "skipped": len(self.skipped),
                "options": self.n_option_occurrences,
                "unmapped_occurrences": self.n_unmapped_occurrences,
                "unmapped_distinct": len(self.unmapped)}

    def summary(self) -> str:
        s = (f"{self.scheme} / {self.country}: {self.n_used} of {self.n_questions} questions used, "
             f"{len(self.skipped)} skipped")
        if self.unmapped:
            s += (f"; {self.n_unmapped_occurrences} of {self.n_option_occurrences} options "
                  f"({len(self.unmapped)} distinct texts) not in the option map")
        return s


class SchemeSkip(ValueError):
    """A question the scheme cannot use (the reason is reported, not raised to the user)."""


class BeliefScheme:
    """What beliefs are: `name` (recorded in the data stage), `k_max` (belief ids 0..k_max-1)
    and the behaviour every scheme has; the survey schemes also map a question's options to
    beliefs (`apply`). Subclasses set name, k_max and, for surveys, _assign."""

    name = ""
    k_max = 10

    # ---- behaviour every scheme has ----
    def ordinals(self) -> list[float] | None:
        """The ordinal value of each belief id (len k_max), NaN for a belief off the scale;
        None when the beliefs have no order known to us."""
        return None

    def consistent(self, belief: int | None, description: str | None,
                   labels: Sequence[str]) -> bool:
        """CBC for one generated sample: does the class digit agree with the `<description>`
        written after it? belief: the parsed digit (metrics.sampled.INVALID = -1 when it did
        not parse); labels: [K] the prompt's belief labels ("" when unused). Here: the
        description is that belief's label (spaces aside). An invalid belief or a missing
        description is inconsistent."""
        if belief is None or belief < 0 or belief >= len(labels) or not description:
            return False
        return _same_text(description, labels[belief])

    def cache_key(self) -> dict[str, Any]:
        """What the data stage's key holds of this scheme beyond the parameters (an input
        file's content): {} unless the scheme reads one."""
        return {}

    # ---- survey schemes: a question's options -> beliefs ----
    def _assign(self, options: list[str]) -> list[int]:
        """Belief id per option; raise SchemeSkip (with the reason) to skip the question."""
        raise NotImplementedError(f"scheme {self.name!r} does not read survey questions")

    def unmapped(self, options: list[str]) -> list[str]:
        """Options the scheme has no belief for (reported; only stance6 has any)."""
        return []

    def beliefs_for(self, q: "GoqaQuestion", country: str) -> QuestionBeliefs:
        """The question's beliefs, labels and p* for `country`; raises SchemeSkip."""
        option_belief = self._assign(q.options)
        p = np.zeros(self.k_max)
        labels: list[list[str]] = [[] for _ in range(self.k_max)]
        for frac, b, opt in zip(q.selections[country], option_belief, q.options):
            p[b] += frac
            labels[b].append(clean_label(opt))
        mask = np.array([1 if labels[k] else 0 for k in range(self.k_max)], dtype=np.int64)
        return QuestionBeliefs(
            qid=q.qid, question=q.question, options=list(q.options),
            p_star=check_distribution(p, mask, q.qid), mask=mask,
            labels=[" / ".join(ls) for ls in labels], option_belief=option_belief, source=q.source)

    def apply(self, questions: Iterable["GoqaQuestion"], country: str,
              ) -> tuple[list[QuestionBeliefs], SchemeReport]:
        """QuestionBeliefs for every usable question of `country` (dataset key), plus a report."""
        report = SchemeReport(self.name, country)
        out = []
        for q in questions:
            if country not in q.selections:
                continue
            report.n_questions += 1
            report.n_option_occurrences += len(q.options)
            for o in self.unmapped(q.options):
                report.unmapped[o] = report.unmapped.get(o, 0) + 1
            try:
                out.append(self.beliefs_for(q, country))
            except SchemeSkip as err:
                report.skipped.append((q.qid, str(err)))
        report.n_used = len(out)
        return out, report


class OptionsScheme(BeliefScheme):
    """Each question's own options are its beliefs: belief id = option index (no known order)."""

    name = "options"
    k_max = 10

    def __init__(self, max_options: int = 10):
        if not 1 <= max_options <= self.k_max:
            raise BeliefError(f"max_options must be 1..{self.k_max} (single-digit belief tokens)")
        self.max_options = max_options

    @classmethod
    def from_config(cls, cfg) -> "OptionsScheme":
        return cls(cfg.max_options)

    def _assign(self, options: list[str]) -> list[int]:
        if len(options) > self.max_options:
            raise SchemeSkip(f"{len(options)} options > max_options={self.max_options}")
        return list(range(len(options)))


class Stance6Scheme(BeliefScheme):
    """The paper's six stance classes through an option -> class map: classes 1..5 (strong
    negative .. strong positive) are ordered, class 0 "no stance" is not (it is left out of the
    Wasserstein distance, which is then the distance among answers that take a stance)."""

    name = "stance6"
    k_max = 6

    def __init__(self, option_map: dict[str, int], unmapped: str = "skip",
                 source: tuple[str, str] | None = None):
        """source: (option_map_path as given, the map file's content hash), for the cache key."""
        if unmapped not in ("skip", "error"):
            raise BeliefError(f"unmapped must be 'skip' or 'error', got {unmapped!r}")
        self.option_map, self.unmapped_policy, self.source = option_map, unmapped, source

    @classmethod
    def from_config(cls, cfg) -> "Stance6Scheme":
        """The map `option_map_path` names (a local file, or downloaded: gdpolib.sources)."""
        path = sources.for_run(cfg, "option_map_path")
        if path is None:
            raise BeliefError("belief_scheme=stance6 needs option_map_path (a JSON map or 'github')")
        return cls(load_option_map(path), source=(cfg.option_map_path, file_hash(path)))

    def ordinals(self) -> list[float]:
        return [float("nan")] + [float(k) for k in range(1, self.k_max)]

    def consistent(self, belief, description, labels) -> bool:
        """The authors' definition: the class's own label, or an option that the map sends to
        that class (a label joining several options with " / ", as a class with more than one
        option is written, needs every part to map there)."""
        if super().consistent(belief, description, labels):
            return True
        if belief is None or belief < 0 or belief >= len(labels) or not description:
            return False
        parts = [p.strip() for p in " ".join(description.split()).split(" / ")]
        return all(self.option_map.get(p) == belief for p in parts)

    def cache_key(self) -> dict[str, Any]:
        if self.source is None:
            return {}
        return {"option_map_path": self.source[0], "option_map_sha": self.source[1]}

    def unmapped(self, options: list[str]) -> list[str]:
        return [o for o in options if o not in self.option_map]

    def _assign(self, options: list[str]) -> list[int]:
        missing = self.unmapped(options)
        if missing:
            msg = f"{len(missing)} option(s) not in the option map: {missing}"
            if self.unmapped_policy == "error":
                raise BeliefError(msg + " (extend the map, or use belief_scheme=options)")
            raise SchemeSkip(msg)
        return [self.option_map[o] for o in options]


class MoviesScheme(BeliefScheme):
    """Movie reviews: beliefs are the star ratings 1..5 (ids 0..4), ordered."""

    name = "movies"
    k_max = 5

    def ordinals(self) -> list[float]:
        return [float(k + 1) for k in range(self.k_max)]


@dataclass
class HubScheme(BeliefScheme):
    """The authors' hub datasets (`hub-<kind>`): their own belief ids, no labels (so no sample
    is class-belief consistent) and no order known to us."""

    name: str = "hub"
    k_max: int = 6


# The `belief_scheme` parameter's choices.
SURVEY_SCHEMES: dict[str, type[BeliefScheme]] = {"options": OptionsScheme,
                                                 "stance6": Stance6Scheme}


def for_config(cfg) -> BeliefScheme:
    """The survey scheme the run's `belief_scheme` names, built from its parameters."""
    return SURVEY_SCHEMES[cfg.belief_scheme].from_config(cfg)


def buildable(cfg) -> list[BeliefScheme]:
    """Every survey scheme the run's parameters can build (stance6 needs an option map), for
    comparing them (notebook 01's coverage table)."""
    out = []
    for cls in SURVEY_SCHEMES.values():
        try:
            out.append(cls.from_config(cfg))
        except BeliefError:
            continue
    return out


def for_data(name: str, k_max: int, cfg) -> BeliefScheme:
    """The scheme a built data stage was made with (its meta.json `scheme` and `k_max`)."""
    if name in SURVEY_SCHEMES:
        return SURVEY_SCHEMES[name].from_config(cfg)
    if name == MoviesScheme.name:
        return MoviesScheme()
    return HubScheme(name, k_max)


def coverage(questions: Iterable["GoqaQuestion"], countries: Sequence[str],
             schemes: Sequence[BeliefScheme]) -> list[dict[str, Any]]:
    """One row per (country, scheme): questions, used, skipped, options not in the map."""
    questions = list(questions)
    return [sch.apply(questions, c)[1].to_dict() for c in countries for sch in schemes]


def load_option_map(path: str | Path) -> dict[str, int]:
    """The option -> stance class JSON map (values 0..5) from a local file (a downloaded one
    too: gdpolib.sources turns `option_map_path: github` into the cached file)."""
    where = str(path)
    p = Path(path)
    if not p.exists():
        raise BeliefError(f"option map {where!r} does not exist (option_map_path)")
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise BeliefError(f"option map {where!r} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise BeliefError(f"option map {where!r} must be a JSON object {{option text: class}}")
    bad = {k: v for k, v in data.items()
           if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 5}
    if bad:
        raise BeliefError(f"option map {where!r}: classes must be integers 0..5, got "
                          f"{dict(list(bad.items())[:5])}")
    return data
