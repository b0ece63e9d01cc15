"""Belief-conditioned responses: for each question, several prompt styles (paraphrases of the
question) and, per style, one response per OPTION that voices that option.

Generators work at the option level (as the paper's generation prompt does); the records map
options to beliefs (gdpolib.data.records; under `stance6` a class can hold several options, so a belief then has
several candidate responses).

This module holds the shared types, the response cache and the TemplateGenerator (the offline
default: fixed style wrappers, a rule-based rewording of the question in the held-out styles
(recast), and several sentence variants, chosen deterministically from (seed, qid, style, option);
instant, so not cached). The LM-backed generators (a local HF model,
an OpenAI-compatible endpoint) and `make_generator` are in gdpolib.data.generators. Generated
text is cached on disk in a JSONL file keyed by (generator id, question, options, style), so a
re-run does not regenerate it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

log = logging.getLogger("gdpolib.data.responses")

# Style ids (record column `style`) and the words used to ask an LM for them.
STYLES: tuple[tuple[str, str], ...] = (
    ("plain", "plain and direct"),
    ("casual", "casual and friendly"),
    ("formal", "formal and polite"),
    ("curious", "curious and reflective"),
    ("concise", "short and to the point"),
    ("story", "personal, with a small anecdote"),
)
STYLE_IDS = tuple(s for s, _ in STYLES)


class ResponseError(RuntimeError):
    """A generator that cannot run (missing key, unreachable endpoint, bad n_styles)."""


@dataclass
class StyledQuestion:
    """One prompt style of a question: the paraphrased question and a response per option."""

    style: str                      # one of STYLE_IDS
    question: str                   # the question as asked in this style
    responses: list[str]            # responses[i] voices option i (len == number of options)


@dataclass
class GenerationReport:
    generator: str
    questions: int = 0
    styles_kept: int = 0
    cache_hits: int = 0
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # (qid, style, reason)

    def summary(self) -> str:
        return (f"{self.generator}: {self.questions} questions, {self.styles_kept} styles kept "
                f"({self.cache_hits} from cache), {len(self.rejected)} rejected")


def styles_for(n_styles: int) -> list[tuple[str, str]]:
    if not 1 <= n_styles <= len(STYLES):
        raise ResponseError(f"n_styles must be 1..{len(STYLES)}, got {n_styles}")
    return list(STYLES[:n_styles])


def _lower_first(text: str) -> str:
    """'Somewhat good job' -> 'somewhat good job'; keep 'U.S.', 'DK/Refused', 'AIDS'."""
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text


def _pick(options: Sequence[str], *key: object) -> str:
    """A deterministic choice from `options` keyed by `key` (no global RNG, no hash() salt)."""
    h = hashlib.sha256(json.dumps([str(k) for k in key]).encode()).digest()
    return options[int.from_bytes(h[:8], "little") % len(options)]


# How each prompt style lists the beliefs with their digits: one line per belief, in the order
# of the digits, the digit first, with the style's own marker, so that a prompt in a held-out
# style presents its options in a way no training prompt does. The tiny model could not read a
# list in reverse order or on one line, nor one whose lines start with a word ("Option 0 -
# Yes"): its CBC on such test prompts fell to 0.6-0.7. Trained on two of these layouts it read
# a third at CBC 0.72; trained on five (n_styles 6), the sixth at 0.89.
OPTION_LAYOUTS: dict[str, str] = {
    "plain": "{k}. {label}",
    "casual": "({k}) {label}",
    "formal": "{k} = {label}",
    "curious": "[{k}] {label}",
    "concise": "{k}: {label}",
    "story": "{k} - {label}",
}


def format_prompt(question: str, labels: Sequence[str], mask: Sequence[int],
                  style: str = "plain") -> str:
    """`<Q>{question}`, the beliefs of B with their digits in the style's layout
    (OPTION_LAYOUTS), then `<A>`: plain `<Q>...\\n0. Yes\\n1. No\\n<A>`, formal
    `<Q>...\\n0 = Yes\\n1 = No\\n<A>`."""
    entry = OPTION_LAYOUTS[style]
    listed = "\n".join(entry.format(k=k, label=labels[k]) for k in range(len(mask)) if mask[k])
    return f"<Q>{question}\n{listed}\n<A>"


# ----------------------------------------------------------------------------- cache
class ResponseCache:
    """A JSONL file of {"key", "style", "question", "responses"} lines, appended as we go."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.entries: dict[str, dict] = {}
        if self.path and self.path.exists():
            for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    self.entries[row["key"]] = row
                except (json.JSONDecodeError, KeyError):
                    # A half-written last line after a crash: ignore it, it will be regenerated.
                    log.warning("response cache %s: ignoring malformed line %d", self.path, n)

    @staticmethod
    def key(generator_id: str, question: str, options: Sequence[str], style: str) -> str:
        blob = json.dumps([generator_id, question, list(options), style], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> StyledQuestion | None:
        row = self.entries.get(key)
        return None if row is None else StyledQuestion(row["style"], row["question"],
                                                       list(row["responses"]))

    def put(self, key: str, sq: StyledQuestion) -> None:
        row = {"key": key, "style": sq.style, "question": sq.question, "responses": sq.responses}
        self.entries[key] = row
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------- base
class ResponseGenerator:
    """Base: `generate(items, n_styles)` with items = [(qid, question, options)].

    Subclasses implement `_generate_missing(todo)` for the (qid, question, options, style)
    tuples not found in the cache and return {(qid, style): StyledQuestion | reason str}.
    """

    id = "base"
    cacheable = True

    def __init__(self, cache_path: str | Path | None = None):
        self.cache = ResponseCache(cache_path if self.cacheable else None)

    def _generate_missing(self, todo: list[tuple[str, str, list[str], tuple[str, str]]],
                          ) -> dict[tuple[str, str], StyledQuestion | str]:
        raise NotImplementedError

    def generate(self, items: Iterable[tuple[str, str, list[str]]], n_styles: int,
                 ) -> tuple[dict[str, list[StyledQuestion]], GenerationReport]:
        """{qid: [StyledQuestion per kept style]} and a report of what was rejected."""
        styles = styles_for(n_styles)
        items = list(items)
        report = GenerationReport(self.id, questions=len(items))
        found: dict[tuple[str, str], StyledQuestion] = {}
        todo = []
        for qid, question, options in items:
            for style in styles:
                hit = self.cache.get(ResponseCache.key(self.id, question, options, style[0]))
                if hit is not None:
                    found[(qid, style[0])] = hit
                    report.cache_hits += 1
                else:
                    todo.append((qid, question, options, style))
        if todo:
            by_key = {(qid, st[0]): (question, options) for qid, question, options, st in todo}
            for (qid, style), res in self._generate_missing(todo).items():
                if isinstance(res, str):
                    report.rejected.append((qid, style, res))
                    continue
                question, options = by_key[(qid, style)]
                self.cache.put(ResponseCache.key(self.id, question, options, style), res)
                found[(qid, style)] = res
        out: dict[str, list[StyledQuestion]] = {}
        for qid, _, _ in items:
            kept = [found[(qid, s)] for s, _ in styles if (qid, s) in found]
            if kept:
                out[qid] = kept
        report.styles_kept = sum(len(v) for v in out.values())
        return out, report


# ----------------------------------------------------------------------------- template
_QUESTION_WRAP = {
    "plain": "{q}",
    "casual": "Hey, quick one for you: {q}",
    "formal": "We would appreciate your considered view on the following question. {q}",
    "curious": "I've been wondering what people think about this. {q}",
    "concise": "Your answer, briefly: {q}",
    "story": "A neighbour brought this up over dinner last night. {q}",
}
_OPENERS = {
    "plain": ["My answer is {o}.", "I would say {o}.", "I'd answer {o}."],
    "casual": ["Honestly? {O}.", "For me it's {o}, no question.", "I'd go with {o}, to be honest."],
    "formal": ["After careful consideration, my answer is {o}.",
               "I would respectfully answer {o}.", "My considered position is {o}."],
    "curious": ["Thinking it over, I land on {o}.", "The more I reflect, the more it's {o} for me.",
                "It's not simple, but I'd say {o}."],
    "concise": ["{O}.", "{O}, simply put.", "In short: {o}."],
    "story": ["When this came up at home, I said {o}.", "Something I saw last year left me at {o}.",
              "My family would tell you I've always said {o}."],
}
_CLOSERS = ["That is how I honestly see it.", "That reflects my own experience.",
            "Others may disagree, and that's fine.", "I have thought about this quite a bit.",
            "It matches what I see around me.", ""]


# Common question openers and a rewording of each (recast). Longest first where one is a
# prefix of another.
_REWORDINGS = (
    ("Generally speaking, do you", "In general, do you"), ("In general, do you", "Broadly, do you"),
    ("Overall, do you", "All in all, do you"), ("Do you personally", "Do you yourself"),
    ("Do you think of", "Do you see"), ("Do you think", "Would you say"),
    ("Would you say", "Do you think"),
    ("In your opinion,", "As you see it,"), ("In your view,", "As you see it,"),
    ("Please tell me", "Tell us"), ("Please tell us", "Tell us"),
    ("Which of these", "Which of the following"), ("Which one of", "Which of"),
    ("How important is it", "How much does it matter"), ("Some people say", "It is sometimes said"),
    ("Thinking about", "Considering"), ("How satisfied are", "How content are"),
    ("I'd like your opinion", "We would like to know your view"),
    ("Now I'm going to read you", "Here is"), ("Now I am going to read you", "Here is"),
    ("I am going to read you", "Here is"), ("Now I'm going to read", "Here is"),
    ("Now I am going to read", "Here is"), ("I am going to read", "Here is"),
    ("As I read", "Going through"),
)
# Where a survey item follows its shared stem: a blank line, an ellipsis, or "? a. " / ". e. ".
_ITEM = re.compile(r"\n\s*\n|\.{3}|\u2026|(?<=[?.:])\s+[a-h]\.\s+")
_SENTENCE = re.compile(r"(?<=[.?!])\s+(?=[A-Z(\u201c\"'])")


def recast(question: str) -> str:
    """The question reworded without an LM, so that a prompt in a recast style does not repeat
    another style's question text: a survey item after its stem (`stem...item`) comes first
    ("Regarding <item>: <stem>"); otherwise a question of several sentences asks its last
    sentence first; a common opener is reworded (_REWORDINGS). Deterministic."""
    text = " ".join(question.split()) if "\n" not in question else question.strip()
    parts = [p.strip(" .") for p in _ITEM.split(text, maxsplit=1)]
    if len(parts) == 2 and all(parts):
        stem, item = parts
        return f"Regarding \u201c{item}\u201d: {_reword(' '.join(stem.split()))}"
    text = " ".join(text.split())
    sentences = _SENTENCE.split(text)
    if len(sentences) > 1:
        sentences = [sentences[-1], *sentences[:-1]]
    return _reword(" ".join(sentences))


def _reword(text: str) -> str:
    """The first opener of _REWORDINGS found in `text` (case-sensitive, at a word start),
    reworded once."""
    for old, new in _REWORDINGS:
        m = re.search(rf"(?<![\w']){re.escape(old)}(?!\w)", text)
        if m:
            return text[:m.start()] + new + text[m.end():]
    return text


class TemplateGenerator(ResponseGenerator):
    """Offline, deterministic responses from style templates (no LM). The option text appears
    in each response, so responses for different beliefs always differ. The styles in `recast`
    (the run's held-out styles: make_generator) also reword the question itself, so that a
    test prompt words it in a way no training prompt does."""

    id = "template-v1"
    cacheable = False

    def __init__(self, seed: int = 0, cache_path: str | Path | None = None,
                 recast: Sequence[str] = ()):
        super().__init__(None)
        self.seed, self.recast = seed, tuple(recast)

    def _generate_missing(self, todo):
        out = {}
        for qid, question, options, (style, _) in todo:
            q = _QUESTION_WRAP[style].format(q=recast(question) if style in self.recast
                                             else question)
            responses = []
            for i, opt in enumerate(options):
                lo = _lower_first(opt)
                opener = _pick(_OPENERS[style], self.seed, qid, style, i, "open")
                closer = _pick(_CLOSERS, self.seed, qid, style, i, "close")
                text = opener.format(o=f"\u201c{lo}\u201d" if len(lo) > 40 else lo,
                                     O=opt[0].upper() + opt[1:])
                responses.append(f"{text} {closer}".strip())
            out[(qid, style)] = StyledQuestion(style, q, responses)
        return out


# ----------------------------------------------------------------------------- validation
_JUNK = re.compile(r"(<\||\|>|^\s*(Q|A\d+)\s*:|Style\s*\d+\s*:)", re.I | re.M)


def clean_reply(text: str, min_words: int = 3, max_words: int = 120) -> str | None:
    """A single generated answer or paraphrase, cleaned; None when malformed.

    Takes the first paragraph, strips quotes; rejects empty, too short/long, or replies holding
    format junk (special tokens, `Q:`/`A1:`/`Style 1:` lines).
    """
    text = text.strip().split("\n\n")[0].strip().strip('"').strip()
    if not text or _JUNK.search(text):
        return None
    n = len(text.split())
    if n < min_words or n > max_words:
        return None
    return " ".join(text.split())
