"""Belief schemes, the belief-string format, the single-token check and the completion parser.

A question x has a belief set B ⊆ {0..K_MAX-1}; the group's target is p*(b|x). Two schemes:
- `options`: each question's own options are its beliefs (belief id = option index, K_MAX 10);
  any survey works without a hand-made map. Questions with more than `max_options` options
  are skipped and counted (belief tokens are single digits).
- `stance6`: the paper's six ordinal stance classes 0..5 via an option -> class JSON map
  (5 strong positive .. 1 strong negative, 0 no stance). p*(class) = sum of the fractions of
  the options in that class. Options missing from the map are REPORTED and the question is
  skipped (or the load fails), never silently put in class 0.

Serialised completion (paper format): f"{k}<{label}>{response}", e.g.
`4<Somewhat good job>I believe ...`. Spans are found by character offsets (the digit is char 0,
the label ends at the first '>' after it; labels never contain '<' or '>'), never by searching
for a '>' token (docs/deviations.md: BPE merges `)>` or `>"` into one token).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from gdpolib import sources

if TYPE_CHECKING:  # pragma: no cover
    from gdpolib.data.goqa import GoqaQuestion

K_MAX = {"options": 10, "stance6": 6}
STANCE6_NAMES = ("no stance", "strong negative", "mild negative", "neutral", "mild positive",
                 "strong positive")
# A prompt to probe tokenizers with when the caller does not give a real one.
PROBE_PROMPT = "<Q>Do you agree?\n0. Yes\n1. No\n<A>"


class BeliefError(ValueError):
    """Bad scheme input (map file, unmapped options with unmapped='error')."""


class BeliefTokenError(ValueError):
    """A belief digit that is not exactly one token for the tokenizer in use."""


# ----------------------------------------------------------------------------- format
def clean_label(text: str) -> str:
    """A label safe inside `<...>`: one line, no angle brackets (they delimit the label)."""
    return " ".join(text.replace("<", "(").replace(">", ")").split())


def belief_prefix(k: int, label: str) -> str:
    """`"4<Somewhat good job>"`: the belief digit and its label."""
    if not 0 <= k <= 9:
        raise BeliefError(f"belief id {k} is not a single digit 0..9")
    return f"{k}<{clean_label(label)}>"


def format_completion(k: int, label: str, response: str) -> str:
    """The serialised completion `f"{k}<{label}>{response}"` (no leading space)."""
    return belief_prefix(k, label) + response


def belief_span(completion: str) -> tuple[int, int]:
    """Character span [start, end) of the belief prefix `k<label>` in a well-formed completion.

    The digit is [0, 1); the prefix ends after the first '>' (labels contain none). Map it to
    tokens with the tokenizer's offset mapping, never by looking for a '>' token.
    """
    p = parse_completion(completion)
    if not p.valid or p.label is None:
        raise BeliefError(f"not a well-formed belief completion ({p.reason}): {completion[:60]!r}")
    return 0, len(p.label) + 3


@dataclass
class Parsed:
    """A parsed completion. `valid` means a belief id could be read; it never defaults to 0."""

    belief: int | None
    label: str | None
    response: str
    valid: bool
    reason: str = ""            # why invalid ("" when valid)
    label_ok: bool | None = None  # label equals the question's label for that belief (if given)


def parse_completion(text: str, k_max: int = 10, belief_mask: Sequence[int] | None = None,
                     labels: Sequence[str] | None = None, require_label: bool = True) -> Parsed:
    """Parse a generated completion `k<label>response` by character offsets.

    Invalid (belief None): empty text, first char not a digit, two digits ("10"), digit
    >= k_max, a belief outside `belief_mask`, a missing/unterminated `<label>` (when
    require_label). Leading whitespace is NOT skipped: the belief token must come first.
    """
    def bad(reason: str) -> Parsed:
        return Parsed(None, None, text, False, reason)

    if not text:
        return bad("empty completion")
    if not ("0" <= text[0] <= "9"):
        return bad(f"does not start with a belief digit (starts with {text[0]!r})")
    if len(text) > 1 and "0" <= text[1] <= "9":
        return bad("starts with more than one digit")
    k = int(text[0])
    if k >= k_max:
        return bad(f"belief {k} out of range (K={k_max})")
    if belief_mask is not None and not belief_mask[k]:
        return bad(f"belief {k} is not in this question's belief set")
    if text[1:2] != "<":
        if require_label:
            return bad("no '<label>' after the belief digit")
        return Parsed(k, None, text[1:], True)
    end = text.find(">", 2)
    if end < 0:
        return bad("unterminated '<label' (no '>')")
    label = text[2:end]
    label_ok = None if labels is None else (label == clean_label(labels[k]))
    return Parsed(k, label, text[end + 1:], True, "", label_ok)


# ----------------------------------------------------------------------------- schemes
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
        if self.scheme == "stance6":
            s += (f"; {self.n_unmapped_occurrences} of {self.n_option_occurrences} options "
                  f"({len(self.unmapped)} distinct texts) not in the option map")
        return s


class SchemeSkip(ValueError):
    """A question the scheme cannot use (the reason is reported, not raised to the user)."""


class BeliefScheme:
    """Maps a GoqaQuestion + country to QuestionBeliefs. Subclasses set name, k_max, _assign."""

    name = ""
    k_max = 10

    def _assign(self, options: list[str]) -> list[int]:
        """Belief id per option; raise SchemeSkip (with the reason) to skip the question."""
        raise NotImplementedError

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
    """Each question's own options are its beliefs: belief id = option index."""

    name = "options"
    k_max = K_MAX["options"]

    def __init__(self, max_options: int = 10):
        if not 1 <= max_options <= self.k_max:
            raise BeliefError(f"max_options must be 1..{self.k_max} (single-digit belief tokens)")
        self.max_options = max_options

    def _assign(self, options: list[str]) -> list[int]:
        if len(options) > self.max_options:
            raise SchemeSkip(f"{len(options)} options > max_options={self.max_options}")
        return list(range(len(options)))


class Stance6Scheme(BeliefScheme):
    """The paper's six ordinal stance classes through an option -> class map."""

    name = "stance6"
    k_max = K_MAX["stance6"]

    def __init__(self, option_map: dict[str, int], unmapped: str = "skip"):
        if unmapped not in ("skip", "error"):
            raise BeliefError(f"unmapped must be 'skip' or 'error', got {unmapped!r}")
        self.option_map, self.unmapped_policy = option_map, unmapped

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


def make_scheme(cfg) -> BeliefScheme:
    """The scheme named by cfg.belief_scheme (options | stance6)."""
    if cfg.belief_scheme == "options":
        return OptionsScheme(cfg.max_options)
    if cfg.belief_scheme == "stance6":
        path = sources.for_run(cfg, "option_map_path")
        if path is None:
            raise BeliefError("belief_scheme=stance6 needs option_map_path (a JSON map or 'github')")
        return Stance6Scheme(load_option_map(path))
    raise BeliefError(f"unknown belief_scheme {cfg.belief_scheme!r} (options | stance6)")


# ----------------------------------------------------------------------------- tokens
def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids as TRL gets them (`tokenizer(text)`, special tokens included)."""
    if hasattr(tokenizer, "encode") and not callable(getattr(tokenizer, "__call__", None)):
        return list(tokenizer.encode(text).ids)          # a bare `tokenizers.Tokenizer`
    out = tokenizer(text)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out.ids)


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids)


def check_belief_tokens(tokenizer: Any, k: int, prompt: str = PROBE_PROMPT,
                        labels: Sequence[str] = ("Yes", "Somewhat good job", "Don't know")
                        ) -> list[int]:
    """Check that each belief digit "0".."k-1" is exactly ONE token after the prompt; return ids.

    For every digit and probe label, the completion `d<label>response` is tokenised the way
    TRL 1.16 does: `tokenizer(prompt)` and `tokenizer(prompt + completion)`; the prompt's ids
    must be a prefix of the joint ids (no merge across the prompt end) and the next token must
    decode to exactly the digit, with the same id every time. The completion alone must also
    start with that id (generation and read-out look at the first generated token).
    Raises BeliefTokenError naming the digit and what the tokenizer did.
    """
    if not 1 <= k <= 10:
        raise BeliefTokenError(f"k={k}: single-digit belief tokens allow 1..10 beliefs")
    prompt_ids = _encode(tokenizer, prompt)
    ids: list[int] = []
    for d in range(k):
        found: set[int] = set()
        for label in labels:
            completion = format_completion(d, label, " I think so.")
            joint = _encode(tokenizer, prompt + completion)
            if joint[:len(prompt_ids)] != prompt_ids:
                raise BeliefTokenError(
                    f"belief digit '{d}': the prompt's last token(s) merge with the completion "
                    f"({_decode(tokenizer, prompt_ids[-2:])!r} vs "
                    f"{_decode(tokenizer, joint[len(prompt_ids) - 2:len(prompt_ids) + 1])!r}); "
                    f"end the prompt on a token boundary or use another tokenizer")
            tid = joint[len(prompt_ids)] if len(joint) > len(prompt_ids) else None
            text = None if tid is None else _decode(tokenizer, [tid])
            if text != str(d):
                raise BeliefTokenError(
                    f"belief digit '{d}' is not a single token after the prompt: the first "
                    f"completion token decodes to {text!r} (completion {completion[:25]!r}); "
                    f"this tokenizer splits or merges the digit")
            alone = _encode(tokenizer, completion)
            # A BOS the tokenizer adds to every text is allowed before the digit.
            first = [t for t in alone if t not in set(getattr(tokenizer, "all_special_ids", []))]
            if not first or first[0] != tid:
                raise BeliefTokenError(
                    f"belief digit '{d}': tokenised alone, the completion {completion[:25]!r} does "
                    f"not start with the digit's token {tid} (got {first[:3]})")
            found.add(tid)
        if len(found) != 1:
            raise BeliefTokenError(f"belief digit '{d}' maps to several token ids {sorted(found)}")
        ids.append(found.pop())
    if len(set(ids)) != len(ids):
        raise BeliefTokenError(f"belief digits share token ids: {ids}")
    return ids

