"""Train / eval / test splits of a data stage's prompts, and the evaluation protocols they make.

- `seen_questions` (split_by prompt with held-out styles, the paper's setting): every question is
  trained in the other prompt styles and asked in the held-out style(s) at eval/test time; eval
  and test are split by question.
- `unseen_questions` (split_by question): whole questions held out.
- `seen_prompts` (split_by prompt, heldout_styles 0): prompt strings split at random.
A leakage check refuses a unit in two splits and, with held-out styles, a test prompt whose style
was trained on. `split_report` says what is held out (reports.json `split`, metrics.json
`data.protocol`).
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np

from gdpolib.data.records import SPLITS, DataError, PromptItem
from gdpolib.data.responses import styles_for
from gdpolib.seeds import stable_seed


class LeakageError(RuntimeError):
    """A question (split by question) or a prompt (split by prompt) in two splits, or a test
    prompt whose style was trained on (held-out styles)."""


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def split_key(item: PromptItem, split_by: str) -> str:
    """The unit that must not straddle splits: the question text (by question; duplicate
    question texts in GOQA travel together) or the prompt string (by prompt)."""
    if split_by == "question":
        return _norm(item.qb.question)
    if split_by == "prompt":
        return item.prompt
    raise ValueError(f"split_by must be 'question' or 'prompt', got {split_by!r}")


# The evaluation protocols, named (data stage reports, metrics.json `data.protocol`, tables).
PROTOCOLS = {
    "seen_questions": "seen questions, unseen phrasings: every question is trained in the other "
                      "prompt styles; eval and test prompts ask it in the held-out style(s), whose "
                      "wording and option layout no training prompt uses; eval and test share no "
                      "question",
    "unseen_questions": "unseen questions: whole questions (all their styles) are held out for "
                        "eval and test",
    "seen_prompts": "seen questions and seen styles: prompt strings split at random, so a test "
                    "prompt's question AND style were trained on (memorisation; heldout_styles 0)",
}


def protocol_name(split_by: str, heldout_styles: Sequence[str] = ()) -> str:
    """unseen_questions (split by question), seen_questions (by prompt, held-out styles) or
    seen_prompts (by prompt, no held-out style)."""
    if split_by == "question":
        return "unseen_questions"
    return "seen_questions" if heldout_styles else "seen_prompts"


def heldout_style_ids(split_by: str, n_styles: int, heldout_styles: int) -> list[str]:
    """The prompt styles reserved for eval/test under split_by prompt: the last
    `heldout_styles` of the first `n_styles` styles (none when splitting by question)."""
    if split_by != "prompt" or heldout_styles == 0:
        return []
    if heldout_styles >= n_styles:
        raise DataError(f"heldout_styles {heldout_styles} leaves no training style out of "
                        f"n_styles {n_styles}: raise n_styles or lower heldout_styles")
    return [s for s, _ in styles_for(n_styles)[-heldout_styles:]]


def _take(n: int, fractions: Sequence[float], min_units: int) -> tuple[int, int]:
    """(n_eval, n_test) of n units: round(f * n) each, at least 1 when its fraction is > 0 and
    n >= min_units."""
    n_eval, n_test = (int(round(f * n)) for f in fractions)
    if n >= min_units:
        n_eval = max(n_eval, 1 if fractions[0] > 0 else 0)
        n_test = max(n_test, 1 if fractions[1] > 0 else 0)
    return n_eval, n_test


def assign_splits(items: Sequence[PromptItem], split_by: str, fractions: Sequence[float],
                  seed: int, heldout_styles: Sequence[str] = ()) -> dict[str, str]:
    """Seeded split {unit key: split}; sets item.split; checks for leakage.

    - split_by question: questions (by text) split train / eval / test by `fractions`.
    - split_by prompt with `heldout_styles` (the paper's setting, seen questions): every prompt
      in another style is train; the held-out styles' prompts are eval or test, split BY
      QUESTION in the ratio f_eval : f_test (the train fraction is not used), so that model
      selection and the test never share a question. Keys are the prompt strings.
    - split_by prompt without held-out styles: prompt strings split by `fractions` (a test
      prompt's question and style are then trained on: the `seen_prompts` protocol).
    Unit counts: n_test = round(f_test * n) (at least 1 when f_test > 0 and n >= 3; with held-out
    styles n >= 2 and f_test / (f_eval + f_test) of the questions), n_eval likewise, the rest
    train (with held-out styles: the rest eval).
    """
    heldout = set(heldout_styles)
    if heldout and split_by != "prompt":
        raise ValueError(f"held-out styles {sorted(heldout)} need split_by 'prompt', not {split_by!r}")
    rng = np.random.default_rng(stable_seed("split", seed, split_by))
    if heldout:
        keys = sorted({_norm(it.qb.question) for it in items if it.style in heldout})
        order = [keys[i] for i in rng.permutation(len(keys))]
        share = sum(fractions[1:])
        if share <= 0:
            raise ValueError(f"split_fractions {list(fractions)} give eval and test nothing")
        _, n_test = _take(len(order), [f / share for f in fractions[1:]], 2)
        by_question = {k: "test" for k in order[:n_test]}
        by_question.update({k: "eval" for k in order[n_test:]})
        for it in items:
            it.split = by_question[_norm(it.qb.question)] if it.style in heldout else "train"
        assignment = {it.prompt: it.split for it in items}
    else:
        keys = sorted({split_key(it, split_by) for it in items})
        order = [keys[i] for i in rng.permutation(len(keys))]
        n_eval, n_test = _take(len(order), fractions[1:], 3)
        assignment = {k: "test" for k in order[:n_test]}
        assignment.update({k: "eval" for k in order[n_test:n_test + n_eval]})
        assignment.update({k: "train" for k in order[n_test + n_eval:]})
        for it in items:
            it.split = assignment[split_key(it, split_by)]
    check_leakage(items, split_by, heldout_styles)
    return assignment


def check_splits(assignment: Mapping[str, str], split_by: str) -> None:
    """Every split needs at least one unit (question or prompt): a run must train, select and
    test on something; otherwise DataError with the counts."""
    counts = {s: sum(v == s for v in assignment.values()) for s in SPLITS}
    empty = [s for s, n in counts.items() if n == 0]
    if empty:
        raise DataError(f"split by {split_by} leaves no {split_by} in {', '.join(empty)} "
                        f"(counts {counts}); use more questions (max_questions) or other "
                        f"split_fractions")


def check_leakage(items: Sequence[PromptItem], split_by: str,
                  heldout_styles: Sequence[str] = ()) -> None:
    """Raise LeakageError if a question (by question: qid or question text) or a prompt string
    (by prompt) appears in two splits; with held-out styles also if an eval/test prompt's
    style was trained on (any train prompt has that style), a train prompt has a held-out
    style, or eval and test share a question. Never silent."""
    seen: dict[str, str] = {}

    def claim(key: str, split: str, what: str) -> None:
        if seen.setdefault(key, split) != split:
            raise LeakageError(f"{what} {key[:80]!r} is in both {seen[key]!r} and {split!r} "
                               f"(split_by={split_by})")

    for it in items:
        if it.split not in SPLITS:
            raise LeakageError(f"prompt of {it.qid}/{it.style} has no split")
        if split_by == "question":
            claim("qid:" + it.qid, it.split, "question")
            claim("text:" + _norm(it.qb.question), it.split, "question text")
        else:
            claim(it.prompt, it.split, "prompt")
    if not heldout_styles:
        return
    trained = {it.style for it in items if it.split == "train"}
    for it in items:
        if it.split == "train" and it.style in heldout_styles:
            raise LeakageError(f"train prompt of {it.qid} has the held-out style {it.style!r}")
        if it.split != "train" and it.style in trained:
            raise LeakageError(f"{it.split} prompt of {it.qid} has style {it.style!r}, which was "
                               f"trained on (held-out styles: {list(heldout_styles)})")
        if it.split != "train":
            claim("eval/test question:" + _norm(it.qb.question), it.split, "question (eval/test)")


_TOKEN = re.compile(r"\w+|[^\w\s]")


def shared_span_shares(prompts: Sequence[str], others: Sequence[str]) -> np.ndarray:
    """For each prompt, the longest run of consecutive word tokens (words and punctuation
    marks, case kept) it shares with any of `others`, as a share of its own tokens: 1 = the
    whole prompt appears inside another one, 0 = not one token in common. [len(prompts)]."""
    words = [_TOKEN.findall(p) for p in prompts]
    pool = [_TOKEN.findall(o) for o in others]
    grams: dict[int, set[tuple[str, ...]]] = {}

    def shared(gram: tuple[str, ...]) -> bool:
        n = len(gram)
        if n not in grams:
            grams[n] = {tuple(w[i:i + n]) for w in pool for i in range(len(w) - n + 1)}
        return gram in grams[n]

    out = np.zeros(len(prompts))
    for j, w in enumerate(words):
        lo, hi = 0, len(w)              # binary search: a shared n-gram holds shared (n-1)-grams
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if any(shared(tuple(w[i:i + mid])) for i in range(len(w) - mid + 1)):
                lo = mid
            else:
                hi = mid - 1
        out[j] = lo / len(w) if w else 0.0
    return out


def overlap_report(items: Sequence[PromptItem]) -> dict[str, Any]:
    """How much the test prompts repeat training text: the longest word-token span each test
    prompt shares with any training prompt, as a share of the test prompt (mean, median, max,
    shared_span_shares), and the number of test prompts that contain a whole training prompt."""
    test = [it.prompt for it in items if it.split == "test"]
    train = [it.prompt for it in items if it.split == "train"]
    if not test or not train:
        return {}
    shares = shared_span_shares(test, train)
    inside = sum(any(t in p for t in train) for p in test)
    return {"longest_shared_span_mean": round(float(shares.mean()), 4),
            "longest_shared_span_median": round(float(np.median(shares)), 4),
            "longest_shared_span_max": round(float(shares.max()), 4),
            "containing_a_training_prompt": int(inside), "test_prompts": len(test)}


def split_report(items: Sequence[PromptItem], split_by: str, fractions: Sequence[float],
                 seed: int, heldout_styles: Sequence[str] = ()) -> dict[str, Any]:
    """What a split holds out, in words and counts (the data stage's reports.json `split`),
    and how much of the training prompts' text the test prompts repeat (`overlap`)."""
    name = protocol_name(split_by, heldout_styles)
    styles = {s: sorted({it.style for it in items if it.split == s}) for s in SPLITS}
    return {"split_by": split_by, "protocol": name, "held_out": PROTOCOLS[name],
            "heldout_styles": list(heldout_styles), "styles": styles,
            "fractions": list(fractions), "seed": seed,
            "prompts": {s: sum(it.split == s for it in items) for s in SPLITS},
            "questions": {s: len({it.qid for it in items if it.split == s}) for s in SPLITS},
            "overlap": overlap_report(items)}


def merge_split_reports(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The split report of a run conditioned on several groups: the groups share the protocol
    (same parameters); prompts and questions per split are summed over the groups, the styles
    of a split are those of any group, and the overlap is over all groups' test prompts (each
    against its own group's training prompts; no median)."""
    first = reports[0]
    parts = [r["overlap"] for r in reports if r.get("overlap")]
    n = sum(o["test_prompts"] for o in parts)
    overlap = {"longest_shared_span_mean": round(sum(o["longest_shared_span_mean"] *
                                                     o["test_prompts"] for o in parts) / n, 4),
               "longest_shared_span_max": max(o["longest_shared_span_max"] for o in parts),
               "containing_a_training_prompt": sum(o["containing_a_training_prompt"]
                                                   for o in parts),
               "test_prompts": n} if n else {}
    return {**first, "overlap": overlap,
            "styles": {s: sorted({st for r in reports for st in r["styles"][s]}) for s in SPLITS},
            "prompts": {s: sum(r["prompts"][s] for r in reports) for s in SPLITS},
            "questions": {s: sum(r["questions"][s] for r in reports) for s in SPLITS}}

