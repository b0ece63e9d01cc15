"""Belief schemes (options, stance6 on real data), belief strings, parser, single-token check."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gdpolib.beliefs import (BeliefError, BeliefTokenError, belief_span, check_belief_tokens,
                             clean_label, format_completion, parse_completion)
from gdpolib.schemes import OptionsScheme, Stance6Scheme, check_distribution, load_option_map
from gdpolib.data.goqa import load_goqa

COUNTRIES = ("United States", "Pakistan", "S. Africa")


@pytest.fixture(scope="module")
def data(goqa_csv):
    return load_goqa(goqa_csv)


@pytest.fixture(scope="module")
def option_map(option_map_path):
    return load_option_map(option_map_path)


def test_options_scheme_on_real_data(data):
    scheme = OptionsScheme(max_options=10)
    used = {}
    for c in COUNTRIES:
        qbs, rep = scheme.apply(data.questions, c)
        used[c] = len(qbs)
        assert rep.n_used + len(rep.skipped) == rep.n_questions
        assert all("max_options=10" in why for _, why in rep.skipped)
        for qb in qbs:
            q = next(x for x in data.questions if x.qid == qb.qid)
            n = len(q.options)
            assert qb.mask.tolist() == [1] * n + [0] * (10 - n)
            np.testing.assert_allclose(qb.p_star[:n], q.selections[c])
            assert qb.labels[:n] == [clean_label(o) for o in q.options] and qb.labels[n:] == [""] * (10 - n)
            assert qb.majority == int(np.argmax(q.selections[c]))
    # The counts of the embedded data: SA 125, PK 296, US 342 questions with <= 10 options.
    assert used == {"United States": 342, "Pakistan": 296, "S. Africa": 125}
    few, rep = OptionsScheme(max_options=4).apply(data.questions, "S. Africa")
    assert all(len(q.options) <= 4 for q in few) and len(rep.skipped) == 125 - len(few)


def test_stance6_coverage_is_reported_on_real_data(data, option_map):
    scheme = Stance6Scheme(option_map)
    for c in COUNTRIES:
        qbs, rep = scheme.apply(data.questions, c)
        # Unmapped options are reported and their questions skipped, never put in class 0.
        assert rep.n_unmapped_occurrences > 0 and len(rep.unmapped) > 0
        assert rep.n_used + len(rep.skipped) == rep.n_questions
        skipped = {qid for qid, _ in rep.skipped}
        for q in (q for q in data.questions if c in q.selections):
            missing = [o for o in q.options if o not in option_map]
            assert (q.qid in skipped) == bool(missing)
        for qb in qbs:
            q = next(x for x in data.questions if x.qid == qb.qid)
            expected = np.zeros(6)
            for o, f in zip(q.options, q.selections[c]):
                expected[option_map[o]] += f
            np.testing.assert_allclose(qb.p_star, expected / expected.sum())
            assert qb.beliefs == sorted({option_map[o] for o in q.options})
            for k in qb.beliefs:
                assert qb.labels[k] == " / ".join(clean_label(o) for o in q.options if option_map[o] == k)
    sa, rep = scheme.apply(data.questions, "S. Africa")
    assert (rep.n_used, rep.n_questions, rep.n_unmapped_occurrences) == (91, 125, 91)


def test_stance6_unmapped_error_mode(data, option_map):
    with pytest.raises(BeliefError, match="not in the option map"):
        Stance6Scheme(option_map, unmapped="error").apply(data.questions, "United States")


def test_option_map_validation(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BeliefError, match="not valid JSON"):
        load_option_map(tmp_path / "bad.json")
    (tmp_path / "range.json").write_text(json.dumps({"Yes": 7}))
    with pytest.raises(BeliefError, match="0..5"):
        load_option_map(tmp_path / "range.json")
    with pytest.raises(BeliefError, match="does not exist"):
        load_option_map(tmp_path / "nope.json")


def test_check_distribution():
    mask = np.array([1, 1, 0, 1])
    np.testing.assert_allclose(check_distribution([2, 1, 0, 1], mask), [0.5, 0.25, 0, 0.25])
    np.testing.assert_allclose(check_distribution([1, 1, 2], mask), [0.25, 0.25, 0, 0.5])
    for bad in ([1, 1, 1, 1], [np.nan, 1, 0, 1], [-1, 1, 0, 1], [0, 0, 0, 0], [1, 1]):
        with pytest.raises(BeliefError):
            check_distribution(bad, mask)


def test_format_and_parse_roundtrip():
    s = format_completion(4, "Somewhat good job", "I believe it's fine > 3 <yes>")
    assert s == "4<Somewhat good job>I believe it's fine > 3 <yes>"
    p = parse_completion(s, labels=[""] * 4 + ["Somewhat good job"])
    assert (p.belief, p.label, p.response, p.valid, p.label_ok) == \
        (4, "Somewhat good job", "I believe it's fine > 3 <yes>", True, True)
    # A label ending in ')' (BPE merges ')>' into one token) is found by character offsets.
    s = format_completion(3, "Depends (VOL)", '"Quoted" reply')
    assert belief_span(s) == (0, len("3<Depends (VOL)>"))
    assert parse_completion(s).response == '"Quoted" reply'
    assert format_completion(1, "a<b>c", "x") == "1<a(b)c>x"     # labels never hold < or >


@pytest.mark.parametrize("text,reason", [
    ("", "empty"), (" 4<x>y", "does not start"), ("b4<x>", "does not start"),
    ("10<x>y", "more than one digit"), ("7<x>y", "out of range"), ("4x>y", "no '<label>'"),
    ("4<never closed", "unterminated"), ("2<x>y", "not in this question's belief set")])
def test_malformed_completions_are_invalid_never_class_0(text, reason):
    p = parse_completion(text, k_max=6, belief_mask=[1, 1, 0, 1, 1, 1])
    assert not p.valid and p.belief is None and reason in p.reason


def test_parse_without_label():
    p = parse_completion("5Great film", require_label=False)
    assert (p.belief, p.label, p.response, p.valid) == (5, None, "Great film", True)


def test_belief_tokens_single_for_byte_level_bpe(data):
    from gdpolib.models import train_bpe_tokenizer
    from gdpolib.data.responses import format_prompt

    qb = OptionsScheme().apply(data.questions, "S. Africa")[0][0]
    prompt = format_prompt(qb.question, qb.labels, qb.mask)
    texts = [prompt + format_completion(k, qb.labels[k], "I think so.") for k in qb.beliefs] * 5
    tok = train_bpe_tokenizer(texts, vocab_size=400)
    ids = check_belief_tokens(tok, 10, prompt=prompt, labels=[qb.labels[k] for k in qb.beliefs])
    assert len(ids) == len(set(ids)) == 10
    assert [tok.decode([i]) for i in ids] == [str(k) for k in range(10)]
    assert ids == [tok.convert_tokens_to_ids(str(k)) for k in range(10)]


def _char_bpe(merges, prefix_space=False):
    """A character-level BPE with the given merges (a tokenizer that can merge the digit)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set("".join(chr(c) for c in range(32, 127))) | {"\n", "▁"})
    vocab = {c: i for i, c in enumerate(chars)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    if prefix_space:   # SentencePiece style: every text gets a leading '▁'
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always",
                                                     split=False)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_belief_token_check_fails_for_merging_tokenizer():
    tok = _char_bpe([(">", "3")])             # '<A>' + '3<...' tokenises as ... '>3' ...
    with pytest.raises(BeliefTokenError, match="digit '3'.*merge with the completion"):
        check_belief_tokens(tok, 6)
    tok = _char_bpe([("2", "<")])             # the digit merges with the label bracket
    with pytest.raises(BeliefTokenError, match="digit '2' is not a single token"):
        check_belief_tokens(tok, 6)
    assert check_belief_tokens(_char_bpe([]), 6) == [
        _char_bpe([]).convert_tokens_to_ids(str(k)) for k in range(6)]


def test_belief_token_check_fails_for_prefix_space_tokenizer():
    tok = _char_bpe([("▁", "0"), ("▁", "<")], prefix_space=True)
    with pytest.raises(BeliefTokenError, match="digit '0'"):
        check_belief_tokens(tok, 3)


def test_belief_token_check_rejects_more_than_ten():
    with pytest.raises(BeliefTokenError, match="1..10"):
        check_belief_tokens(_char_bpe([]), 11)
