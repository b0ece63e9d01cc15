"""Generation on a tiny random model (Llama-style and GPT-2: rotary and learned positions):
batched read-out equals one-at-a-time (left padding),
seeded samples are reproducible and independent, only the generated slice is decoded, and the
data engineer's parser puts malformed outputs in the invalid bucket (never class 0)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gdpolib import beliefs, generation, models
from gdpolib.config import RunConfig

TEXTS = [f"<Q>Question {i}: is the weather {w} today?\n0. Yes\n1. No\n<A>{d}<{l}>I think {w}."
         for i in range(30) for w, d, l in [("good", 0, "Yes"), ("bad", 1, "No")]]
PROMPTS = ["<Q>Question 1: is the weather good today?\n0. Yes\n1. No\n<A>",
           "<Q>Is it?\n<A>",
           "<Q>Question 22: is the weather bad today or tomorrow or later?\n0. Yes\n1. No\n<A>"]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny(request):
    cfg = RunConfig(tiny_arch=request.param, tiny_n_layer=2, tiny_n_embd=32, tiny_n_head=2,
                    tiny_vocab_size=300)
    model, tok = models.build_tiny(TEXTS, cfg)
    # a few random steps so that the output distribution is not flat
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return model.eval(), tok


def test_batched_belief_distributions_equal_one_at_a_time(tiny):
    model, tok = tiny
    ids = beliefs.check_belief_tokens(tok, 2)
    batched = generation.belief_distributions(model, tok, PROMPTS, ids, batch_size=3)
    single = np.concatenate([generation.belief_distributions(model, tok, [p], ids, batch_size=1)
                             for p in PROMPTS])
    assert batched.shape == (3, 2)
    np.testing.assert_allclose(batched, single, atol=1e-6)
    assert np.all(batched.sum(axis=1) <= 1 + 1e-9)          # full-vocabulary softmax
    assert tok.padding_side == "right"                      # restored after use


def test_samples_reproducible_and_independent(tiny):
    model, tok = tiny
    kw = dict(n=6, max_new_tokens=12, batch_size=2, seed=123)
    a = generation.sample_completions(model, tok, PROMPTS, **kw)
    b = generation.sample_completions(model, tok, PROMPTS, **kw)
    c = generation.sample_completions(model, tok, PROMPTS, **{**kw, "seed": 124})
    assert a == b
    assert a != c
    assert len(a) == 3 and all(len(row) == 6 for row in a)
    assert all(len(set(row)) > 1 for row in a)               # n draws, not copies
    # only the generated slice is decoded: no sample starts with its prompt
    assert not any(s.startswith("<Q>") for row in a for s in row)


def test_parser_puts_malformed_outputs_in_the_invalid_bucket():
    mask = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    good = beliefs.parse_completion("1<No>I think not.", 10, mask)
    assert good.valid and good.belief == 1 and good.label == "No" and good.response == "I think not."
    for text in ["", "Yes<1>", " 1<No>x", "12<x>y", "3<Maybe>z", "1<No unterminated"]:
        p = beliefs.parse_completion(text, 10, mask)
        assert not p.valid and p.belief is None, text          # never class 0 (docs/deviations.md)


def test_first_token_is_drawn_from_the_models_own_distribution(tiny):
    """Pure ancestral sampling (temperature 1, no top-k/top-p): first-token frequencies over
    many draws match the model's next-token softmax at the answer position."""
    model, tok = tiny
    prompt = PROMPTS[0]
    batch = generation.encode_left(tok, [prompt], "cpu")
    with torch.no_grad():
        p = torch.softmax(generation.last_token_logits(model, batch), -1)[0].double().numpy()
    n = 3000
    texts = generation.sample_completions(model, tok, [prompt], n=n, max_new_tokens=1, seed=5)[0]
    # several byte-level tokens decode to the same string (e.g. '\ufffd'): compare by string
    by_text: dict[str, float] = {}
    for t in range(len(p)):
        word = tok.decode([t], skip_special_tokens=True)
        by_text[word] = by_text.get(word, 0.0) + p[t]
    for word, q in sorted(by_text.items(), key=lambda kv: -kv[1])[:6]:
        freq = sum(s == word for s in texts) / n
        assert abs(freq - q) < 4 * np.sqrt(q * (1 - q) / n) + 1e-3, (word, freq, q)


def test_response_nucleus_leaves_the_belief_draw_alone_and_cuts_what_follows(tiny):
    """response_top_p cuts every token after the first: the first tokens are the same draws as
    with pure sampling (same seed), and a nucleus of ~0 makes the rest greedy, so samples with
    the same first token are the same text."""
    model, tok = tiny
    kw = dict(n=40, batch_size=3, seed=11)
    first = generation.sample_completions(model, tok, PROMPTS, max_new_tokens=1, **kw)
    pure = generation.sample_completions(model, tok, PROMPTS, max_new_tokens=8, **kw)
    cut = generation.sample_completions(model, tok, PROMPTS, max_new_tokens=8,
                                        response_top_p=1e-9, **kw)
    for f_row, p_row, c_row in zip(first, pure, cut):
        by_first: dict[str, set[str]] = {}
        for f, p, c in zip(f_row, p_row, c_row):
            if "\ufffd" in f:              # a partial byte: several tokens decode to it
                continue
            assert p.startswith(f) and c.startswith(f)
            by_first.setdefault(f, set()).add(c)
        assert by_first and all(len(texts) == 1 for texts in by_first.values())
    assert pure != cut                       # the pure draws do wander after the first token


def test_after_belief_warps_only_tokens_after_the_prompt():
    warper = generation.AfterBelief(generation.TopPLogitsWarper(0.5), prompt_len=4)
    scores = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    assert torch.equal(warper(torch.zeros(1, 4, dtype=torch.long), scores), scores)
    cut = warper(torch.zeros(1, 5, dtype=torch.long), scores)
    assert torch.isfinite(cut[0, 0]) and torch.isinf(cut[0, 1:]).all()
