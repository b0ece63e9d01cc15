"""The evaluation stage: every method scored by the same code on the same test prompts.

Methods (paper Table 2 order): kshot (the base model prompted with k solved examples), icf (SFT
with a few-shot context block in every prompt), sft, dpo, gdpo, and the ablations cdpo / mft.
A method that has not been trained yet is trained through the training stage functions (which
reuse finished stages).

For each method, one cached stage `stages/eval/<method>/` holds
    summary.json     the method's numbers (below)
    per_prompt.csv   one row per test prompt: jsd, jsd_sampled, noise_floor, belief_mass, ...
    probs.npy        [N, K_MAX] full-vocabulary probabilities of the belief digits
    samples.jsonl    every sample: text, parsed belief/label/response, cbc, rs, bpc verdict
Numbers (GUIDE.md section 6 for the metrics.json part):
    jsd            mean JS distance of the renormalised belief distribution vs p* (probabilities)
    jsd_sampled    the same from the n sampled beliefs (invalid samples are their own bucket)
    noise_floor    the sampled JSD a perfectly calibrated model gets with the same n
    cbc, bpc, rs   reference §5 (bugs B13-B15 fixed); bpc from the judge chosen by `judge`
    invalid_rate   share of samples that do not parse into a belief of the question's set
    majority_bias  share of the majority belief among valid samples / its p* share (1 = calibrated)
    belief_mass    probability mass on the question's belief tokens (DPO moves mass off them)
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from gdpolib import beliefs, metrics

log = logging.getLogger("gdpolib.evaluate")

EVAL_VERSION = "eval-v2"   # bump when scoring changes (invalidates eval stages)
METHOD_ORDER = ("kshot", "icf", "sft", "dpo", "gdpo", "cdpo", "mft")
PREFERENCE = ("dpo", "gdpo", "cdpo", "mft")
METRICS_JSON_KEYS = ("jsd", "jsd_sampled", "cbc", "bpc", "rs", "invalid_rate")
TABLE_COLUMNS = ("jsd", "jsd_sampled", "noise_floor", "cbc", "bpc", "rs", "invalid_rate",
                 "majority_bias", "belief_mass")
DEMO_SEPARATOR = "\n\n"

# Reference §7.1 (the poster's Table 2, small sets). Keys: (country, model family).
_T2_METHODS = ("kshot", "icf", "sft", "dpo", "gdpo")
_T2 = {
    ("us", "gpt2-large"): {"jsd": (0.513, 0.269, 0.261, 0.385, 0.188),
                           "cbc": (0.242, 0.829, 0.854, 0.773, 0.860),
                           "bpc": (0.162, 0.389, 0.404, 0.441, 0.627),
                           "rs": (0.208, 0.420, 0.426, 0.467, 0.479)},
    ("pk", "gpt2-large"): {"jsd": (0.530, 0.307, 0.263, 0.370, 0.187),
                           "cbc": (0.274, 0.771, 0.869, 0.609, 0.904),
                           "bpc": (0.146, 0.346, 0.395, 0.390, 0.465),
                           "rs": (0.213, 0.400, 0.450, 0.465, 0.469)},
    ("sa", "gpt2-large"): {"jsd": (0.523, 0.318, 0.295, 0.482, 0.185),
                           "cbc": (0.248, 0.700, 0.836, 0.742, 0.905),
                           "bpc": (0.127, 0.332, 0.350, 0.362, 0.537),
                           "rs": (0.206, 0.394, 0.417, 0.402, 0.465)},
    ("us", "pythia-2.8b"): {"jsd": (0.477, 0.134, 0.122, 0.352, 0.068),
                            "cbc": (0.248, 0.973, 0.987, 0.899, 0.989),
                            "bpc": (0.058, 0.342, 0.471, 0.469, 0.582),
                            "rs": (0.098, 0.504, 0.520, 0.527, 0.554)},
    ("pk", "pythia-2.8b"): {"jsd": (0.480, 0.140, 0.126, 0.328, 0.083),
                            "cbc": (0.255, 0.959, 0.990, 0.950, 0.991),
                            "bpc": (0.066, 0.403, 0.435, 0.387, 0.571),
                            "rs": (0.111, 0.542, 0.539, 0.540, 0.582)},
    ("sa", "pythia-2.8b"): {"jsd": (0.499, 0.211, 0.137, 0.386, 0.087),
                            "cbc": (0.261, 0.982, 0.987, 0.930, 0.990),
                            "bpc": (0.056, 0.374, 0.439, 0.469, 0.588),
                            "rs": (0.104, 0.549, 0.524, 0.511, 0.536)},
}
PAPER_TABLE2: dict[tuple[str, str], dict[str, dict[str, float]]] = {
    key: {m: {metric: vals[i] for metric, vals in cols.items()} for i, m in enumerate(_T2_METHODS)}
    for key, cols in _T2.items()}
_COUNTRY_KEYS = {"United States": "us", "Pakistan": "pk", "S. Africa": "sa"}


def paper_setting(cfg) -> tuple[str, str] | None:
    """(country, family) of the paper's Table 2 that this run matches, or None.

    Matches only the paper's own models on the paper's three countries; a tiny or SmolLM2 run
    answers the same question at another scale, so its numbers are not put beside the paper's.
    """
    family = {"gpt2-large": "gpt2-large", "EleutherAI/pythia-2.8b": "pythia-2.8b"}.get(cfg.model)
    country = _COUNTRY_KEYS.get(cfg.country_name)
    return (country, family) if family and country else None


# ----------------------------------------------------------------------------- test prompts
@dataclasses.dataclass
class EvalSet:
    """The test prompts of a run with what the metrics need. Lists/arrays have N rows;
    per-belief vectors have K_MAX columns."""

    prompts: list[str]            # what the model sees (few-shot context + prompt)
    questions: list[str]          # the question text (what the chat judge is shown)
    qids: list[str]
    styles: list[str]
    p_star: np.ndarray            # [N, K] the group's TRUE p*
    mask: np.ndarray              # [N, K] 0/1
    labels: list[list[str]]       # [N][K]
    references: list[list[str]]   # [N][K] a reference response per belief ("" = none)

    @classmethod
    def from_table(cls, table) -> "EvalSet":
        """From an eval-prompt table (datasets.Dataset) of the data stage."""
        prompts = list(table["prompt"])
        questions = list(table["question"]) if "question" in table.column_names else prompts
        return cls(prompts=prompts, questions=questions, qids=[str(q) for q in table["qid"]],
                   styles=[str(s) for s in table["style"]],
                   p_star=np.asarray(table["p_star"], dtype=np.float64),
                   mask=np.asarray(table["belief_mask"], dtype=np.int64),
                   labels=[list(x) for x in table["labels"]],
                   references=[list(x) for x in table["references"]])

    def with_prompts(self, prompts: Sequence[str]) -> "EvalSet":
        return dataclasses.replace(self, prompts=list(prompts))

    def __len__(self) -> int:
        return len(self.prompts)


# ----------------------------------------------------------------------------- few-shot prompts
def _demo_pool(data) -> tuple[list[str], list[str]]:
    """Solved examples `prompt + k<desc>response` from the TRAIN split (SFT records), with their
    question ids (a prompt never gets a demonstration from its own question: that would hand it
    samples of its own p*)."""
    train = data.sft["train"]
    demos = [p + c for p, c in zip(train["prompt"], train["completion"])]
    return demos, [str(q) for q in train["qid"]]


def fewshot_prompts(prompts: Sequence[str], qids: Sequence[str], pool: tuple[list[str], list[str]],
                    tokenizer, k: int, max_tokens: int | Sequence[int], seed: int, salt: str
                    ) -> list[str]:
    """Each prompt preceded by up to k demonstrations (random, seeded, from other questions),
    separated by blank lines, keeping only as many as fit in `max_tokens` (one budget, or one
    per prompt) together with the prompt.

    Returns N strings `demo_1 \\n\\n ... demo_j \\n\\n prompt` (j <= k).
    """
    from gdpolib.data.pairs import _int_seed

    demos, demo_qids = pool
    demo_len = np.array([len(x) for x in tokenizer(demos, add_special_tokens=False)["input_ids"]]) \
        if demos else np.zeros(0, int)
    prompt_len = [len(x) for x in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    sep = len(tokenizer(DEMO_SEPARATOR, add_special_tokens=False)["input_ids"])
    budgets = [max_tokens] * len(prompt_len) if isinstance(max_tokens, (int, np.integer)) \
        else list(max_tokens)
    out = []
    for i, (prompt, qid) in enumerate(zip(prompts, qids)):
        rng = np.random.default_rng(_int_seed("fewshot", salt, seed, i, prompt))
        chosen, used = [], prompt_len[i]
        for j in rng.permutation(len(demos)):
            if len(chosen) == k:
                break
            if demo_qids[j] == qid or used + demo_len[j] + sep > budgets[i]:
                continue
            chosen.append(demos[j])
            used += demo_len[j] + sep
        out.append("".join(d + DEMO_SEPARATOR for d in chosen) + prompt)
    return out


def icf_dataset(cfg, data, tokenizer):
    """ICF training set: every SFT train record with a few-shot context block before its prompt
    (reference §6: SFT on `context + <Q>...<A>`). The context holds as many of kshot_k
    demonstrations as fit in max_length together with the prompt and its completion (+ EOS), so
    that SFT never truncates the completion (the authors raised their limits to 1024 for ICF)."""
    from datasets import Dataset

    train = data.sft["train"]
    completion_len = [len(x) for x in tokenizer(list(train["completion"]),
                                                add_special_tokens=False)["input_ids"]]
    budgets = [cfg.max_length - n - 2 for n in completion_len]
    prompts = fewshot_prompts(train["prompt"], train["qid"], _demo_pool(data), tokenizer,
                              cfg.kshot_k, budgets, cfg.seed, "icf-train")
    return Dataset.from_dict({"prompt": prompts, "completion": list(train["completion"])})


# ----------------------------------------------------------------------------- scoring
def parse_samples(samples: Sequence[Sequence[str]], es: EvalSet, k_max: int) -> dict[str, list]:
    """Parse [N][n] texts with the data engineer's parser (invalid -> metrics.INVALID, never 0).

    Returns {"belief": [N][n] ints, "label": [N][n] str|None, "response": [N][n] str,
    "valid": [N][n] bool, "reason": [N][n] str}. A digit outside the question's belief set is
    invalid; a valid digit without `<label>` keeps its belief (CBC then fails on it).
    """
    out: dict[str, list] = {k: [] for k in ("belief", "label", "response", "valid", "reason")}
    for i, row in enumerate(samples):
        parsed = [beliefs.parse_completion(t, k_max, es.mask[i], require_label=False) for t in row]
        out["belief"].append([p.belief if p.valid else metrics.INVALID for p in parsed])
        out["label"].append([p.label for p in parsed])
        out["response"].append([p.response.strip() for p in parsed])
        out["valid"].append([p.valid for p in parsed])
        out["reason"].append([p.reason for p in parsed])
    return out


def judge_samples(judge, parsed: dict[str, list], es: EvalSet, per_prompt: int):
    """BPC verdicts for the first `per_prompt` samples of each prompt (0 = all).
    Returns (JudgeResult, [(i, j)] the samples judged, in order)."""
    where = [(i, j) for i, row in enumerate(parsed["belief"])
             for j in range(len(row) if per_prompt <= 0 else min(per_prompt, len(row)))]
    res = judge.judge([parsed["belief"][i][j] for i, j in where],
                      [parsed["response"][i][j] for i, j in where],
                      [es.references[i] for i, _ in where],
                      questions=[es.questions[i] for i, _ in where],
                      descriptions=[parsed["label"][i][j] for i, j in where])
    return res, where


def score_model(model, tokenizer, es: EvalSet, cfg, *, k_max: int, scheme: str, embed, judge,
                option_map: dict[str, int] | None = None) -> dict[str, Any]:
    """Score one model on the test prompts. Returns {"summary": dict, "per_prompt": DataFrame,
    "probs": [N, K], "samples": list of per-sample dicts}."""
    from gdpolib import generation

    start = time.time()
    ids = beliefs.check_belief_tokens(tokenizer, k_max)
    probs = generation.belief_distributions(model, tokenizer, es.prompts, ids, cfg.eval_batch_size)
    jsd = metrics.jsd_per_prompt(probs, es.p_star, es.mask)
    mass = (probs * es.mask).sum(axis=1)
    texts = generation.sample_completions(
        model, tokenizer, es.prompts, cfg.n_samples, temperature=cfg.temperature, top_k=cfg.top_k,
        top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
        batch_size=max(1, cfg.eval_batch_size // max(cfg.n_samples, 1)), seed=cfg.seed,
        progress=True)
    parsed = parse_samples(texts, es, k_max)
    b = np.asarray(parsed["belief"], dtype=np.int64)
    jsd_s = metrics.sampled_jsd_per_prompt(b, es.p_star, es.mask)
    floor = metrics.noise_floor(es.p_star, es.mask, cfg.n_samples, seed=cfg.seed)
    _, invalid = metrics.belief_counts(b, es.mask)
    cbc_flags = [[metrics.class_belief_consistent(bb, d, es.labels[i], scheme, option_map)
                  for bb, d in zip(b[i], parsed["label"][i])] for i in range(len(es))]
    rs = metrics.reference_similarity(parsed["response"], b, es.references, embed)
    bpc_res, judged = judge_samples(judge, parsed, es, cfg.judge_samples)
    bpc = {ij: v for ij, v in zip(judged, bpc_res.verdicts)}

    n_total = b.size
    summary = {
        "jsd": float(jsd.mean()), "jsd_sampled": float(jsd_s.mean()),
        "noise_floor": float(floor.mean()), "cbc": float(np.mean(cbc_flags)),
        "bpc": bpc_res.bpc, "rs": float(rs.mean()), "invalid_rate": float(invalid.sum() / n_total),
        "majority_bias": metrics.majority_bias(b, es.p_star, es.mask),
        "belief_mass": float(mass.mean()), "n_prompts": len(es), "n_samples": cfg.n_samples,
        "bpc_judged": bpc_res.judged, "bpc_api_errors": bpc_res.api_errors,
        "bpc_unparseable": bpc_res.unparseable, "judge": type(judge).__name__,
        "seconds": round(time.time() - start, 2)}
    per_prompt = pd.DataFrame({
        "qid": es.qids, "style": es.styles, "jsd": jsd, "jsd_sampled": jsd_s, "noise_floor": floor,
        "belief_mass": mass, "invalid_rate": invalid / b.shape[1],
        "cbc": np.mean(cbc_flags, axis=1), "rs": rs.mean(axis=1),
        "majority": es.p_star.argmax(axis=1)})
    samples = []
    for i in range(len(es)):
        for j in range(b.shape[1]):
            samples.append({
                "i": i, "qid": es.qids[i], "style": es.styles[i], "sample": j,
                "text": texts[i][j], "belief": int(b[i, j]) if b[i, j] >= 0 else None,
                "label": parsed["label"][i][j], "response": parsed["response"][i][j],
                "valid": parsed["valid"][i][j], "reason": parsed["reason"][i][j],
                "cbc": bool(cbc_flags[i][j]), "rs": float(rs[i, j]), "bpc": bpc.get((i, j))})
    return {"summary": summary, "per_prompt": per_prompt, "probs": probs, "samples": samples}


# ----------------------------------------------------------------------------- methods
def _load_option_map(cfg, scheme: str):
    if scheme != "stance6" or not cfg.option_map_path:
        return None
    from gdpolib.config import resolve_path

    p = cfg.option_map_path
    return beliefs.load_option_map(p if p == "github" or p.startswith("http")
                                   else str(resolve_path(p)))


def method_model(cfg, run, data, method: str) -> tuple[Path | str, str]:
    """The checkpoint a method is scored with (training it if missing) and its hash.

    kshot: the base model (untrained policy); icf: SFT on few-shot-context prompts; sft; and the
    preference methods, from the training stage functions (cached)."""
    from gdpolib import models, trainers

    if method == "kshot":
        if cfg.model == "tiny":
            models.load_base_model(cfg, run, data.texts())   # builds/reuses checkpoints/base
            return run.stage_dir("checkpoints/base"), run.stage_hash("checkpoints/base")
        return cfg.model, str(cfg.model)
    if method == "icf":
        tok = _base_tokenizer(cfg, run, data)
        path = trainers.train_sft(cfg, run, data, dataset=icf_dataset(cfg, data, tok), name="icf")
        return path, run.stage_hash("checkpoints/icf")
    if method == "sft":
        path = trainers.train_sft(cfg, run, data)
        return path, run.stage_hash("checkpoints/sft")
    if method in PREFERENCE:
        path = trainers.train_preference(cfg, run, data, method)
        return path, run.stage_hash(f"checkpoints/{method}")
    raise ValueError(f"unknown method {method!r} (one of {', '.join(METHOD_ORDER)})")


def _base_tokenizer(cfg, run, data):
    """The base model's tokenizer (without loading its weights): ICF demos are cut to fit it."""
    from transformers import AutoTokenizer

    from gdpolib import models

    if cfg.model == "tiny":
        models.load_base_model(cfg, run, data.texts())       # builds/reuses checkpoints/base
        return AutoTokenizer.from_pretrained(run.stage_dir("checkpoints/base"))
    if cfg.model == "smollm2-135m":
        return AutoTokenizer.from_pretrained(models.convert_smollm2(models.cache_root(cfg)))
    from gdpolib.config import RunConfig, resolve_path

    return AutoTokenizer.from_pretrained(str(resolve_path(cfg.model)) if RunConfig.is_local_path(
        cfg.model) else cfg.model)


def eval_key(cfg, run, method: str, model_hash: str) -> dict[str, Any]:
    """Everything a method's scores depend on."""
    key = {"version": EVAL_VERSION, "method": method, "model": model_hash,
           "data": run.stage_hash("data"),
           **cfg.subset("seed", "n_samples", "temperature", "top_k", "top_p", "max_new_tokens",
                        "eval_batch_size", "judge", "embedder", "judge_samples", "device",
                        "dtype")}
    if method in ("kshot", "icf"):
        key.update(cfg.subset("kshot_k", "max_length"))
    if cfg.judge == "openai":
        key.update(cfg.subset("api_base", "api_model"))
    return key


class _Shared:
    """Embedder and judge loaded once per evaluate_methods call."""

    def __init__(self, cfg):
        self.cfg, self._embed, self._judge = cfg, None, None

    @property
    def embed(self):
        if self._embed is None:
            from gdpolib import judges, models

            device = models.resolve_device(self.cfg)
            self._embed = judges.load_embedder(self.cfg.embedder, str(device))
        return self._embed

    @property
    def judge(self):
        if self._judge is None:
            from gdpolib import judges

            self._judge = judges.make_judge(self.cfg, self.embed)
        return self._judge


def evaluate_method(cfg, run, data, method: str, shared: _Shared | None = None) -> dict[str, Any]:
    """The cached stage `stages/eval/<method>`: train the method if needed, score it, and return
    its summary (also merged into metrics.json as methods.<method>)."""
    from gdpolib import models

    shared = shared or _Shared(cfg)
    model_path, model_hash = method_model(cfg, run, data, method)
    stage_name = f"stages/eval/{method}"

    def build(out: Path) -> None:
        log.info("scoring %s on %d test prompts", method, len(data.prompts["test"]))
        model, tok = models.load_pretrained(model_path, cfg)
        es = EvalSet.from_table(data.prompts["test"])
        if method in ("kshot", "icf"):
            limit = _context_limit(model, cfg, method)
            es = es.with_prompts(fewshot_prompts(es.prompts, es.qids, _demo_pool(data), tok,
                                                 cfg.kshot_k, limit, cfg.seed, "test"))
        res = score_model(model, tok, es, cfg, k_max=data.k_max, scheme=data.scheme,
                          embed=shared.embed, judge=shared.judge,
                          option_map=_load_option_map(cfg, data.scheme))
        res["summary"]["method"] = method
        (out / "summary.json").write_text(json.dumps(res["summary"], indent=2))
        res["per_prompt"].to_csv(out / "per_prompt.csv", index=False)
        np.save(out / "probs.npy", res["probs"])
        with open(out / "samples.jsonl", "w", encoding="utf-8") as fh:
            for row in res["samples"]:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    path = run.stage(stage_name, eval_key(cfg, run, method, model_hash), build)
    summary = json.loads((path / "summary.json").read_text())
    run.merge_metrics({"methods": {method: {k: summary[k] for k in METRICS_JSON_KEYS}}})
    return summary


def _context_limit(model, cfg, method: str) -> int:
    """Prompt tokens a few-shot prompt may use: the model's window minus the tokens to generate;
    for ICF also within max_length, the cap its training sequences were built with."""
    from gdpolib.generation import max_context

    limit = max_context(model, cfg.max_new_tokens) or (cfg.max_length - cfg.max_new_tokens)
    return min(limit, cfg.max_length - cfg.max_new_tokens) if method == "icf" else limit


def methods_to_run(cfg, run) -> list[str]:
    """cfg.methods, plus cfg.ablations, plus any preference method already trained in the run,
    in the paper's order."""
    wanted = set(cfg.methods) | set(cfg.ablations)
    wanted |= {m for m in PREFERENCE if (run.stage_dir(f"checkpoints/{m}") / "stage.json").exists()}
    return [m for m in METHOD_ORDER if m in wanted]


def evaluate_methods(cfg, run, data, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Score every method (training what is missing); a methods x metrics table, also written
    to the run as `tables/methods.csv` (with the per-method stages under stages/eval/)."""
    shared = _Shared(cfg)
    rows = {}
    for m in methods or methods_to_run(cfg, run):
        rows[m] = evaluate_method(cfg, run, data, m, shared)
    table = pd.DataFrame.from_dict(rows, orient="index")
    cols = [c for c in TABLE_COLUMNS if c in table] + \
        [c for c in ("bpc_judged", "bpc_api_errors", "bpc_unparseable", "n_prompts", "n_samples",
                     "seconds") if c in table]
    table = table[cols]
    table.index.name = "method"
    table.to_csv(run.path("tables", "methods.csv"))
    return table


# ----------------------------------------------------------------------------- reporting
def table2(table: pd.DataFrame, cfg) -> pd.DataFrame:
    """Table-2 layout: metrics as rows, methods as columns; the paper's numbers in columns
    `paper:<method>` beside ours when the run matches the paper's setting (paper_setting)."""
    metrics_rows = ["jsd", "jsd_sampled", "noise_floor", "cbc", "bpc", "rs", "invalid_rate",
                    "majority_bias", "belief_mass"]
    out = table[[c for c in metrics_rows if c in table]].T
    setting = paper_setting(cfg)
    if setting:
        paper = PAPER_TABLE2[setting]
        for m in table.index:
            if m in paper:
                out[f"paper:{m}"] = [paper[m].get(r, np.nan) for r in out.index]
    out.index.name = "metric"
    return out


def write_table2(table: pd.DataFrame, cfg, run) -> tuple[Path, Path]:
    """Write the Table-2-style table as CSV and Markdown under `<run>/tables/`."""
    t2 = table2(table, cfg)
    csv = run.path("tables", "table2.csv")
    t2.to_csv(csv, float_format="%.4f")
    md = run.path("tables", "table2.md")
    setting = paper_setting(cfg)
    lines = [f"# Table 2 ({cfg.country_name}, model {cfg.model}, {len_prompts(table)} test "
             f"prompts, n = {cfg.n_samples} samples per prompt)", "",
             markdown_table(t2), ""]
    if setting:
        lines.append(f"Columns `paper:*` are the GDPO paper's Table 2 ({setting[1]}, "
                     f"{setting[0].upper()}; reference §7.1).")
    else:
        lines.append("The paper's Table 2 used GPT-2 Large and Pythia-2.8B on its own synthetic "
                     "data; this run's model differs, so the paper's numbers are not set beside "
                     "ours (see reference §7.1 for them).")
    lines += ["", "jsd: from probabilities (renormalised over the belief set); jsd_sampled: from "
              "the n samples, to be read against noise_floor (a perfectly calibrated model's "
              "expected sampled JSD at the same n). BPC judge: " + cfg.judge + "."]
    md.write_text("\n".join(lines) + "\n")
    return csv, md


def markdown_table(df: pd.DataFrame, fmt: str = "{:.3f}") -> str:
    """A pipe table (pandas' to_markdown needs the optional `tabulate`)."""
    def cell(v) -> str:
        return fmt.format(v) if isinstance(v, (float, np.floating)) and np.isfinite(v) else \
            ("" if isinstance(v, (float, np.floating)) else str(v))

    head = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([str(i)] + [cell(v) for v in row]) + " |"
              for i, row in zip(df.index, df.itertuples(index=False))]
    return "\n".join(lines)


def len_prompts(table: pd.DataFrame) -> int:
    return int(table["n_prompts"].iloc[0]) if "n_prompts" in table and len(table) else 0


def load_eval(run, method: str) -> dict[str, Any]:
    """A finished eval stage: summary, per_prompt (DataFrame), probs [N, K], samples (DataFrame)."""
    d = run.stage_dir(f"stages/eval/{method}")
    if not (d / "stage.json").exists():
        raise FileNotFoundError(f"method {method!r} has not been evaluated in {run.root} "
                                f"(run evaluate.evaluate_methods / notebook 04 first)")
    samples = [json.loads(line) for line in
               (d / "samples.jsonl").read_text(encoding="utf-8").splitlines() if line]
    samples = pd.DataFrame(samples)
    samples["belief"] = samples["belief"].astype("Int64")   # None (invalid) stays missing
    return {"summary": json.loads((d / "summary.json").read_text()),
            "per_prompt": pd.read_csv(d / "per_prompt.csv"), "probs": np.load(d / "probs.npy"),
            "samples": samples}


def distributions_frame(run, data, methods: Sequence[str], qids: Sequence[str]) -> pd.DataFrame:
    """Long table for plotting predicted vs target belief distributions of some questions:
    columns qid, label, belief, source (target | method), prob. The model's distribution is the
    renormalised read-out, averaged over the question's test prompts."""
    es = EvalSet.from_table(data.prompts["test"])
    rows = []
    for q in qids:
        idx = [i for i, x in enumerate(es.qids) if x == q]
        if not idx:
            continue
        mask, labels = es.mask[idx[0]], es.labels[idx[0]]
        sources = {"target (p*)": es.p_star[idx[0]]}
        for m in methods:
            probs = load_eval(run, m)["probs"][idx]
            sources[m] = metrics.renormalise(probs, es.mask[idx]).mean(axis=0)
        for src, p in sources.items():
            for k in np.flatnonzero(mask):
                rows.append({"qid": q, "belief": int(k), "label": f"{k}. {labels[k][:28]}",
                             "source": src, "prob": float(p[k])})
    return pd.DataFrame(rows)


def pick_questions(data, n: int = 3, seed: int = 0) -> list[str]:
    """A few test questions with a clear minority (the majority holds < 60% of p*), seeded."""
    es = EvalSet.from_table(data.prompts["test"])
    maj = {q: float(p.max()) for q, p in zip(es.qids, es.p_star)}
    pool = sorted(q for q, m in maj.items() if m < 0.6) or sorted(maj)
    rng = np.random.default_rng(seed)
    return [pool[i] for i in sorted(rng.choice(len(pool), size=min(n, len(pool)), replace=False))]


def sample_outputs(run, methods: Sequence[str], qid: str, per_method: int = 2) -> pd.DataFrame:
    """The paper's Finding 4 as a table: a few sampled outputs per method for one question."""
    rows = []
    for m in methods:
        s = load_eval(run, m)["samples"]
        s = s[s["qid"] == qid].head(per_method)
        for _, r in s.iterrows():
            rows.append({"method": m, "belief": r["belief"], "label": r["label"],
                         "response": (r["response"] or "")[:160], "valid": r["valid"],
                         "cbc": r["cbc"], "bpc": r["bpc"]})
    return pd.DataFrame(rows)


def judge_report(cfg, data, shared: _Shared | None = None) -> dict[str, float]:
    """The embedding judge's accuracy on held-out reference responses (all splits' prompts:
    the references written for one prompt of a question are the candidates, those of its other
    prompts the queries), so a reader knows how far to trust its BPC."""
    from gdpolib import judges

    shared = shared or _Shared(cfg)
    judge = judges.EmbeddingJudge(shared.embed)
    return judges.embedding_judge_accuracy(judge, [data.prompts[s] for s in ("train", "eval",
                                                                             "test")])


def write_judge_report(cfg, run, data) -> dict[str, float]:
    """judge_report, saved as `<run>/tables/judge_accuracy.json`."""
    acc = judge_report(cfg, data)
    run.path("tables", "judge_accuracy.json").write_text(json.dumps(acc, indent=2))
    return acc


def findings(table: pd.DataFrame) -> list[str]:
    """Plain-language comparisons the paper makes, checked on this run's numbers."""
    out = []
    t = table

    def cmp(a: str, b: str, metric: str, lower_better: bool) -> None:
        if a in t.index and b in t.index and metric in t:
            x, y = float(t.loc[a, metric]), float(t.loc[b, metric])
            better = x < y if lower_better else x > y
            out.append(f"{a} {metric} {x:.3f} vs {b} {y:.3f}: {a} is "
                       f"{'better' if better else 'NOT better'}")

    cmp("gdpo", "dpo", "jsd", True)
    cmp("dpo", "sft", "jsd", True)
    cmp("gdpo", "sft", "jsd", True)
    cmp("gdpo", "dpo", "bpc", False)
    cmp("gdpo", "dpo", "cbc", False)
    if "jsd_sampled" in t and "noise_floor" in t:
        floor = float(t["noise_floor"].iloc[0])
        close = [m for m in t.index if float(t.loc[m, "jsd_sampled"]) < floor + 0.05]
        out.append(f"sampled JSD within 0.05 of the noise floor ({floor:.3f}): "
                   f"{', '.join(close) or 'none'}")
    return out
