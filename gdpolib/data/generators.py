"""LM-backed response generators and the factory for the `responses` parameter.

- HFGenerator: a local Hugging Face causal LM (e.g. SmolLM2-135M-Instruct offline, or a hub
  model on a GPU); one short generation per (question, style) paraphrase and per (question,
  style, option) response, batched; malformed replies are retried, then the style is dropped
  and reported.
- OpenAIGenerator: an OpenAI-compatible chat endpoint, one call per question with the paper's
  generation prompt (paraphrased from the GDPO authors'); strict parsing: a style block with
  a missing or mislabelled answer is rejected, never patched.
- make_generator(cfg): the generator named by `responses` (template | hf | openai).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import requests
import torch
from tqdm.auto import tqdm

from gdpolib.data.responses import (STYLE_IDS, STYLES, ResponseCache, ResponseError,
                                    ResponseGenerator, StyledQuestion, TemplateGenerator,
                                    clean_reply)
from gdpolib.data.splits import heldout_style_ids
from gdpolib.models import load_pretrained


# ----------------------------------------------------------------------------- local HF LM
class HFGenerator(ResponseGenerator):
    """A local causal LM writes the paraphrases and the responses (batched, greedy first try,
    sampled retries). Works with chat models (uses the chat template when there is one)."""

    def __init__(self, model_name: str, cfg=None, cache_path: str | Path | None = None,
                 batch_size: int = 16, max_new_tokens: int = 80, retries: int = 2, seed: int = 0):
        super().__init__(cache_path)
        self.model_name, self.cfg = model_name, cfg
        self.id = f"hf:{model_name}"
        self.batch_size, self.max_new_tokens, self.retries, self.seed = (
            batch_size, max_new_tokens, retries, seed)
        self._model = self._tok = None

    def _load(self):
        if self._model is None:
            self._model, self._tok = load_pretrained(self.model_name, self.cfg)
            self._tok.padding_side = "left"     # decoder-only batched generation
            self._model.eval()
        return self._model, self._tok

    def _chat(self, prompts: list[str], sample: bool) -> list[str]:
        model, tok = self._load()
        outs: list[str] = []
        torch.manual_seed(self.seed)
        for i in tqdm(range(0, len(prompts), self.batch_size), desc="hf responses",
                      disable=len(prompts) <= self.batch_size):
            batch = prompts[i:i + self.batch_size]
            if getattr(tok, "chat_template", None):
                batch = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in batch]
            enc = tok(batch, return_tensors="pt", padding=True).to(model.device)
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=sample,
                                     temperature=0.8 if sample else None,
                                     top_p=0.95 if sample else None,
                                     pad_token_id=tok.pad_token_id)
            # Decode only the generated slice (never strip the prompt by string replace: B16).
            outs += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return outs

    def _run(self, asks: dict, check) -> dict:
        """asks: key -> prompt. Returns key -> cleaned text (missing when all tries failed)."""
        done, pending = {}, dict(asks)
        for attempt in range(1 + self.retries):
            if not pending:
                break
            keys = list(pending)
            for k, reply in zip(keys, self._chat([pending[k] for k in keys], sample=attempt > 0)):
                text = check(reply)
                if text is not None:
                    done[k] = text
                    del pending[k]
        return done

    def _generate_missing(self, todo):
        para = {(qid, st[0]): (f"Rewrite this survey question in a {st[1]} tone. Reply with the "
                               f"rewritten question only.\nQuestion: {question}")
                for qid, question, options, st in todo if st[0] != "plain"}
        answers = {}
        for qid, question, options, (style, words) in todo:
            for i, opt in enumerate(options):
                answers[(qid, style, i)] = (
                    f"Question: {question}\nYour answer to it is: \"{opt}\".\nIn one or two "
                    f"sentences, in a {words} tone, say what you think and why, in your own words "
                    f"(do not just repeat the answer). Reply with those sentences only.")
        paraphrases = self._run(para, lambda r: (lambda t: t if t and t.endswith("?") else None)(
            clean_reply(r)))
        replies = self._run(answers, clean_reply)
        out: dict = {}
        for qid, question, options, (style, _) in todo:
            q = question if style == "plain" else paraphrases.get((qid, style))
            resp = [replies.get((qid, style, i)) for i in range(len(options))]
            if q is None:
                out[(qid, style)] = "no valid paraphrase"
            elif any(r is None for r in resp):
                out[(qid, style)] = f"no valid response for option(s) " \
                                    f"{[options[i] for i, r in enumerate(resp) if r is None]}"
            else:
                out[(qid, style)] = StyledQuestion(style, q, resp)
        return out


# ----------------------------------------------------------------------------- OpenAI API
GENERATION_PROMPT = """Imagine the conversation takes place in {country}.
Write {n} different styles of a one-turn small talk about the Question and Choices below.
The styles are, in this order: {style_list}.
For each style:
(1) first write a line with the style's number and name, for example "Style 1: {first}";
(2) then write the question, reworded in that style, on one line starting with "Q: ";
(3) then write {k} answers, one line each, named A1 to A{k}; answer Ai reflects choice i;
(4) each answer line starts with the choice it reflects in square brackets, for example
"A1: [{opt1}] ...";
(5) do not copy the choice's exact words in the answer text itself, and avoid uncommon words;
(6) leave one blank line between styles and no blank line inside a style.

Question: {question}
Choices: {choices}"""


def parse_styled_reply(text: str, options: Sequence[str], styles: Sequence[tuple[str, str]],
                       ) -> tuple[dict[str, StyledQuestion], list[tuple[str, str]]]:
    """Strictly parse a reply to GENERATION_PROMPT.

    A style block is kept only when it has one `Style i:` line (i in 1..n), one `Q:` line and
    exactly the lines A1..Ak, each `Aj: [choice j] text` with the right choice (case and
    whitespace-insensitive) and a non-empty text. Returns ({style id: StyledQuestion},
    [(style id or "?", reason)]) for the blocks rejected.
    """
    norm = lambda s: " ".join(s.lower().split()).strip(" .\"'")  # noqa: E731
    k = len(options)
    kept: dict[str, StyledQuestion] = {}
    rejected: list[tuple[str, str]] = []
    blocks = re.split(r"(?im)^\s*\**\s*style\s+(\d+)\s*[:.\-]\s*.*$", text)
    # re.split with one group: [preamble, num1, body1, num2, body2, ...]
    for num, body in zip(blocks[1::2], blocks[2::2]):
        idx = int(num) - 1
        sid = styles[idx][0] if 0 <= idx < len(styles) else "?"
        if sid == "?":
            rejected.append((f"style {num}", "style number out of range"))
            continue
        if sid in kept:
            rejected.append((sid, "style repeated"))
            continue
        lines = [ln.strip() for ln in body.strip().splitlines() if ln.strip()]
        q_lines = [ln for ln in lines if re.match(r"^Q\s*:", ln)]
        a_lines = {}
        problem = None
        for ln in lines:
            m = re.match(r"^A(\d+)\s*:\s*\[([^\]]*)\]\s*(.*)$", ln)
            if ln in q_lines:
                continue
            if not m:
                problem = f"unexpected line {ln[:60]!r}"
                break
            j = int(m.group(1))
            if j in a_lines:
                problem = f"answer A{j} repeated"
                break
            a_lines[j] = (m.group(2), m.group(3).strip())
        if problem is None and len(q_lines) != 1:
            problem = f"{len(q_lines)} 'Q:' lines"
        if problem is None and sorted(a_lines) != list(range(1, k + 1)):
            problem = f"answers {sorted(a_lines)} instead of A1..A{k}"
        if problem is None:
            for j in range(1, k + 1):
                choice, answer = a_lines[j]
                if norm(choice) != norm(options[j - 1]):
                    problem = f"A{j} is labelled [{choice}], expected [{options[j - 1]}]"
                    break
                if clean_reply(answer, min_words=2) is None:
                    problem = f"A{j} text is empty or malformed"
                    break
        question = re.sub(r"^Q\s*:\s*", "", q_lines[0]).strip() if problem is None else ""
        if problem is None and not question:
            problem = "empty question"
        if problem:
            rejected.append((sid, problem))
            continue
        kept[sid] = StyledQuestion(sid, question,
                                   [" ".join(a_lines[j][1].split()) for j in range(1, k + 1)])
    if not blocks[1::2]:
        rejected.append(("?", "no 'Style i:' block found"))
    return kept, rejected


class OpenAIGenerator(ResponseGenerator):
    """An OpenAI-compatible `/chat/completions` endpoint (OpenAI, Azure-compatible proxies, vLLM,
    llama.cpp server ...). Endpoint and model from params `api_base`/`api_model`, the key from
    the environment variable named by `api_key_env`."""

    def __init__(self, api_base: str | None, api_model: str | None, api_key_env: str,
                 country: str, cache_path: str | Path | None = None, timeout: float = 120.0,
                 temperature: float = 0.7, retries: int = 1):
        super().__init__(cache_path)
        if not api_base or not api_model:
            raise ResponseError("responses=openai needs params api_base (e.g. "
                                "https://api.openai.com/v1) and api_model (e.g. gpt-4o-mini)")
        self.api_base, self.api_model, self.api_key_env = api_base.rstrip("/"), api_model, api_key_env
        self.country, self.timeout, self.temperature, self.retries = (
            country, timeout, temperature, retries)
        self.id = f"openai:{api_model}@{self.api_base}:{country}"

    def _post(self, prompt: str) -> str:
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ResponseError(f"responses=openai: set the environment variable "
                                f"{self.api_key_env} to the API key (param api_key_env)")
        try:
            r = requests.post(f"{self.api_base}/chat/completions", timeout=self.timeout,
                              headers={"Authorization": f"Bearer {key}"},
                              json={"model": self.api_model, "temperature": self.temperature,
                                    "messages": [{"role": "system",
                                                  "content": "You are a helpful assistant."},
                                                 {"role": "user", "content": prompt}]})
            r.raise_for_status()
            return r.json()["choices"][0]["message"]["content"] or ""
        except requests.RequestException as err:
            raise ResponseError(f"chat endpoint {self.api_base} failed: {err}") from None
        except (KeyError, IndexError, ValueError) as err:
            raise ResponseError(f"chat endpoint {self.api_base} sent an unexpected body: "
                                f"{err}") from None

    def prompt_for(self, question: str, options: Sequence[str],
                   styles: Sequence[tuple[str, str]]) -> str:
        return GENERATION_PROMPT.format(
            country=self.country, n=len(styles), first=styles[0][1].capitalize(),
            style_list="; ".join(f"{i + 1}. {w}" for i, (_, w) in enumerate(styles)),
            k=len(options), opt1=options[0], question=question,
            choices="; ".join(f"{i + 1}. {o}" for i, o in enumerate(options)))

    def _generate_missing(self, todo):
        by_q: dict[str, tuple[str, list[str], list[tuple[str, str]]]] = {}
        for qid, question, options, st in todo:
            by_q.setdefault(qid, (question, options, []))[2].append(st)
        out: dict = {}
        all_styles = list(STYLES)
        for qid, (question, options, wanted) in tqdm(by_q.items(), desc="api responses"):
            styles = all_styles[:max(STYLE_IDS.index(s) for s, _ in wanted) + 1]
            missing = {s for s, _ in wanted}
            reasons: dict[str, str] = {}
            for _ in range(1 + self.retries):
                kept, rejected = parse_styled_reply(self._post(self.prompt_for(
                    question, options, styles)), options, styles)
                for sid, sq in kept.items():
                    if sid in missing:
                        out[(qid, sid)] = sq
                        missing.discard(sid)
                reasons.update({sid: why for sid, why in rejected})
                if not missing:
                    break
            for sid in missing:
                out[(qid, sid)] = reasons.get(sid, "style missing from the reply")
        return out


# ----------------------------------------------------------------------------- factory
def make_generator(cfg, cache_dir: str | Path | None = None) -> ResponseGenerator:
    """The generator named by cfg.responses; HF/API text is cached in `cache_dir`."""
    def cache(gen_id: str) -> Path | None:
        if cache_dir is None:
            return None
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", gen_id).strip("-")[:80]
        return Path(cache_dir) / f"responses-{slug}.jsonl"

    if cfg.responses == "template":     # held-out styles word the question their own way
        return TemplateGenerator(seed=cfg.seed, recast=heldout_style_ids(
            cfg.split_by, cfg.n_styles, cfg.heldout_styles))
    if cfg.responses == "hf":
        name = cfg.response_model or "smollm2-135m"
        return HFGenerator(name, cfg, cache_path=cache(f"hf:{name}"), seed=cfg.seed,
                           batch_size=cfg.eval_batch_size)
    if cfg.responses == "openai":
        gen = OpenAIGenerator(cfg.api_base, cfg.api_model, cfg.api_key_env, cfg.country_name)
        gen.cache = ResponseCache(cache(gen.id))
        return gen
    raise ResponseError(f"unknown responses generator {cfg.responses!r} (template | hf | openai)")

