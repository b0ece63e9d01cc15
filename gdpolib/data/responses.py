"""Belief-conditioned responses: for each question, several prompt styles (paraphrases of the
question) and, per style, one response per OPTION that voices that option.

Generators work at the option level (as the paper's generation prompt does); `pairs.py` maps
options to beliefs (under `stance6` a class can hold several options, so a belief then has
several candidate responses).

- TemplateGenerator (offline default): fixed style wrappers and several sentence variants,
  chosen deterministically from (seed, qid, style, option); instant, so not cached.
- HFGenerator: a local Hugging Face causal LM (e.g. SmolLM2-135M-Instruct offline, or a hub
  model on a GPU); one short generation per (question, style) paraphrase and per (question,
  style, option) response, batched; malformed replies are retried, then the style is dropped
  and reported.
- OpenAIGenerator: an OpenAI-compatible chat endpoint, one call per question with the paper's
  generation prompt (paraphrased, §1.2 of the reference); strict parsing: a style block with
  a missing or mislabelled answer is rejected, never patched.

Generated text is cached on disk in a JSONL file keyed by (generator id, question, options,
style), so a re-run does not regenerate it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
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


class TemplateGenerator(ResponseGenerator):
    """Offline, deterministic responses from style templates (no LM). The option text appears
    in each response, so responses for different beliefs always differ."""

    id = "template-v1"
    cacheable = False

    def __init__(self, seed: int = 0, cache_path: str | Path | None = None):
        super().__init__(None)
        self.seed = seed

    def _generate_missing(self, todo):
        out = {}
        for qid, question, options, (style, _) in todo:
            q = _QUESTION_WRAP[style].format(q=question)
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
            from gdpolib.models import load_pretrained

            self._model, self._tok = load_pretrained(self.model_name, self.cfg)
            self._tok.padding_side = "left"     # decoder-only batched generation
            self._model.eval()
        return self._model, self._tok

    def _chat(self, prompts: list[str], sample: bool) -> list[str]:
        import torch
        from tqdm.auto import tqdm

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
        import requests

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
        from tqdm.auto import tqdm

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

    if cfg.responses == "template":
        return TemplateGenerator(seed=cfg.seed)
    if cfg.responses == "hf":
        name = cfg.response_model or "smollm2-135m"
        return HFGenerator(name, cfg, cache_path=cache(f"hf:{name}"), seed=cfg.seed,
                           batch_size=cfg.eval_batch_size)
    if cfg.responses == "openai":
        gen = OpenAIGenerator(cfg.api_base, cfg.api_model, cfg.api_key_env, cfg.country_name)
        gen.cache = ResponseCache(cache(gen.id))
        return gen
    raise ResponseError(f"unknown responses generator {cfg.responses!r} (template | hf | openai)")

