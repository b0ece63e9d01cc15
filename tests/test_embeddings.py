"""gdpolib.embeddings: masked mean pools of a causal LM and the sentence-encoder path, both
cached on disk (GPO's x)."""
from __future__ import annotations

import numpy as np
import pytest

from gdpolib import embeddings
from gdpolib.embeddings import QuestionItem


def test_lm_embeddings_are_masked_mean_pools_and_cached(tmp_path, tiny_lm):
    model, tok = tiny_lm()
    items = [QuestionItem("q1", "Is the sky blue?", ["Yes", "No", "Maybe"]),
             QuestionItem("q2", "Is it raining today in the city?", ["Yes", "No"])]
    table = embeddings.embed_questions(items, "tiny-test", directory=tmp_path, model=model,
                                       tokenizer=tok, batch_size=5, pooling="text")
    assert table.vectors.shape == (5, 16) and table.index == {"q1": (0, 3), "q2": (3, 2)}
    # one text alone (no padding) = the same text in a padded batch (up to float16 storage)
    text = embeddings.option_prompt("Is the sky blue?", ["Yes", "No", "Maybe"], 1)
    alone = embeddings.mean_pooled_states(model, tok, [text])[0]
    np.testing.assert_allclose(table.rows("q1")[1], alone, atol=2e-3)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    loads = []
    again = embeddings.embed_questions(items, "tiny-test", directory=tmp_path, pooling="text",
                                       load=lambda: loads.append(1) or (model, tok))
    assert again.key == table.key and len(list(tmp_path.glob("*.npy"))) == 1   # re-used
    assert loads == []                                    # a cached table needs no model
    items[1] = QuestionItem("q2", "Is it raining?", ["Yes", "No"])
    embeddings.embed_questions(items, "tiny-test", directory=tmp_path, pooling="text",
                               load=lambda: loads.append(1) or (model, tok))
    assert len(list(tmp_path.glob("*.npy"))) == 2 and loads == [1]             # recomputed
    option = embeddings.embed_questions(items, "tiny-test", directory=tmp_path, model=model,
                                        tokenizer=tok)                # the default: option pool
    assert option.key != again.key and len(list(tmp_path.glob("*.npy"))) == 3


def test_sentence_embeddings_cache_is_reused(tmp_path, monkeypatch):
    calls = []

    class FakeEncoder:
        def encode(self, texts, **kw):
            calls.append(len(texts))
            return np.stack([np.full(4, len(t), np.float32) for t in texts])

    monkeypatch.setattr(embeddings, "load_sentence_encoder", lambda name, device=None: FakeEncoder())
    items = [QuestionItem("q1", "Q one?", ["Yes", "No"]), QuestionItem("q2", "Q two?", ["Yes", "No"])]
    t = embeddings.embed_questions(items, "minilm", directory=tmp_path)
    assert t.dim == 8 and t.vectors.shape == (4, 8)
    assert calls == [4]            # 2 unique questions + 2 unique answers ("A. Yes", "B. No")
    embeddings.embed_questions(items, "minilm", directory=tmp_path)
    assert calls == [4]            # cached
    np.testing.assert_allclose(t.rows("q1")[:, 0], [6, 6])     # question part
    np.testing.assert_allclose(t.rows("q1")[:, 4], [6, 5])     # "A. Yes", "B. No"


def test_shared_prefix_states_equal_whole_text_states(tiny_lm, monkeypatch):
    """option_pooled_states runs each question's prefix once; the pools equal those of the whole
    texts, including a question whose text is too long for the shortcut (embedded whole)."""
    model, tok = tiny_lm()
    tok.padding_side, tok.truncation_side = "left", "right"     # the caller's settings
    items = [QuestionItem("q1", "Is the sky blue?", ["Yes", "No", "Maybe"]),
             QuestionItem("q2", "Is it raining today in the city?", ["Yes", "No, not at all"]),
             QuestionItem("q3", "Long? " * 60, ["Yes", "No"])]
    texts = [embeddings.option_prompt(it.question, it.options, k) for it in items
             for k in range(len(it.options))]
    whole = embeddings.mean_pooled_states(model, tok, texts)
    fallback = []
    plain = embeddings.mean_pooled_states
    monkeypatch.setattr(embeddings, "mean_pooled_states",
                        lambda m, t, x, **kw: fallback.append(len(x)) or plain(m, t, x, **kw))
    shared = embeddings.option_pooled_states(model, tok, items, max_length=128)
    monkeypatch.undo()
    assert (tok.padding_side, tok.truncation_side) == ("left", "right")   # restored
    assert fallback == [2]                  # only q3 (409 tokens > 128) was embedded whole
    assert shared.shape == whole.shape == (7, 16)
    np.testing.assert_allclose(shared[:5], whole[:5], atol=1e-5)
    np.testing.assert_allclose(shared[5:], embeddings.mean_pooled_states(model, tok, texts[5:],
                                                                         max_length=128), atol=1e-6)


def test_option_pools_average_the_answer_tokens_conditioned_on_the_question(tiny_lm):
    """pooling "option": the mean of the last hidden states over the tokens of " L. option"
    only, computed in the prompt (so conditioned on the question); the prefix shortcut and the
    whole-text path (a text too long for the shortcut) agree with a hand computation."""
    import torch

    model, tok = tiny_lm()
    items = [QuestionItem("q1", "Is the sky blue?", ["Yes", "No", "Maybe"]),
             QuestionItem("q3", "Long? " * 60, ["Yes", "No"])]
    pooled = embeddings.option_pooled_states(model, tok, items, max_length=128, pooling="option")
    by_hand = []
    tok.truncation_side = "left"           # a long prompt keeps its end (the answer)
    for it in items:
        prefix = embeddings.question_prompt(it.question, it.options)
        for k in range(len(it.options)):
            text = embeddings.option_prompt(it.question, it.options, k)
            enc = tok(text, return_offsets_mapping=True, truncation=True, max_length=128,
                      return_tensors="pt")
            ends = enc.pop("offset_mapping")[0, :, 1]
            with torch.no_grad():
                hidden = model(**enc, output_hidden_states=True).hidden_states[-1][0]
            by_hand.append(hidden[ends > len(prefix)].mean(0).numpy())
    np.testing.assert_allclose(pooled, np.stack(by_hand), atol=1e-5)
    text_pool = embeddings.option_pooled_states(model, tok, items[:1], pooling="text")
    spread = lambda v: np.linalg.norm(v - v.mean(0), axis=1).mean()       # noqa: E731
    assert spread(pooled[:3]) > 2 * spread(text_pool)     # options of a question apart
    with pytest.raises(ValueError, match="unknown pooling 'last'"):
        embeddings.option_pooled_states(model, tok, items, pooling="last")


def test_the_computing_call_and_a_cached_reload_return_identical_arrays(tmp_path):
    values = np.random.default_rng(0).normal(size=(5, 3)) / 3       # not float16-exact
    first, meta = embeddings.cached_array(tmp_path, "x", "k1", lambda: values)
    again, _ = embeddings.cached_array(tmp_path, "x", "k1", lambda: 1 / 0)   # never computed
    assert first.dtype == again.dtype == np.float32 and meta["shape"] == [5, 3]
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, values.astype(np.float16).astype(np.float32))
    assert not np.array_equal(first, values.astype(np.float32))     # rounded to the stored dtype
