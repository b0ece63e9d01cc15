"""gdpolib.embeddings: masked mean pools of a causal LM and the sentence-encoder path, both
cached on disk (GPO's x)."""
from __future__ import annotations

import numpy as np

from gdpolib import embeddings
from gdpolib.embeddings import QuestionItem


def test_lm_embeddings_are_masked_mean_pools_and_cached(tmp_path, tiny_lm):
    model, tok = tiny_lm()
    items = [QuestionItem("q1", "Is the sky blue?", ["Yes", "No", "Maybe"]),
             QuestionItem("q2", "Is it raining today in the city?", ["Yes", "No"])]
    table = embeddings.embed_questions(items, "tiny-test", directory=tmp_path, model=model,
                                       tokenizer=tok, batch_size=5)
    assert table.vectors.shape == (5, 16) and table.index == {"q1": (0, 3), "q2": (3, 2)}
    # one text alone (no padding) = the same text in a padded batch (up to float16 storage)
    text = embeddings.option_prompt("Is the sky blue?", ["Yes", "No", "Maybe"], 1)
    alone = embeddings.mean_pooled_states(model, tok, [text])[0]
    np.testing.assert_allclose(table.rows("q1")[1], alone, atol=2e-3)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    again = embeddings.embed_questions(items, "tiny-test", directory=tmp_path, model=model,
                                       tokenizer=tok)
    assert again.key == table.key and len(list(tmp_path.glob("*.npy"))) == 1   # re-used
    items[1] = QuestionItem("q2", "Is it raining?", ["Yes", "No"])
    embeddings.embed_questions(items, "tiny-test", directory=tmp_path, model=model, tokenizer=tok)
    assert len(list(tmp_path.glob("*.npy"))) == 2                               # recomputed


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


def test_the_computing_call_and_a_cached_reload_return_identical_arrays(tmp_path):
    values = np.random.default_rng(0).normal(size=(5, 3)) / 3       # not float16-exact
    first, meta = embeddings.cached_array(tmp_path, "x", "k1", lambda: values)
    again, _ = embeddings.cached_array(tmp_path, "x", "k1", lambda: 1 / 0)   # never computed
    assert first.dtype == again.dtype == np.float32 and meta["shape"] == [5, 3]
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, values.astype(np.float16).astype(np.float32))
    assert not np.array_equal(first, values.astype(np.float32))     # rounded to the stored dtype
