"""The belief-string format, the completion parser and the single-token check. (How a question's
options become beliefs is a belief scheme's: gdpolib.schemes.)

A question x has a belief set B ⊆ {0..K_MAX-1}; the group's target is p*(b|x); belief k is
written as the single digit token str(k).

Serialised completion (paper format): f"{k}<{label}>{response}", e.g.
`4<Somewhat good job>I believe ...`. Spans are found by character offsets (the digit is char 0,
the label ends at the first '>' after it; labels never contain '<' or '>'), never by searching
for a '>' token (docs/deviations.md: BPE merges `)>` or `>"` into one token).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

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

