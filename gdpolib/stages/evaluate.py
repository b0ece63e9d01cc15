"""Stage of notebook 04 (and the test numbers of notebooks 02/03): every method scored by the
same code on the same test prompts.

Methods: those of the registry (gdpolib.methods), in its table order: the baselines `uniform`
(1/|B| on each question's beliefs, no model), `context_free` (the mean p* of the training
questions with the same belief set: where answers tend to fall, whatever the question; no model)
and `zeroshot` (the base model, untrained, plain test prompts), then the paper's Table 2 order:
kshot (the base model prompted with k solved examples), icf (SFT with a few-shot context block in
every prompt), sft, dpo, gdpo, and the ablations cdpo / mft. A method that has not been trained
yet is trained through gdpolib.stages.train (which reuses finished stages). Every method's JSD is
also compared with that of the registry's paired references (SFT, the context-free baseline)
question by question (paired_comparisons: a paired bootstrap interval).

Cached stages per method:
  stages/test/<method>/   the belief read-out on the test prompts (scoring.readout /
                          readout_summary): test.json (jsd, jsd_digits, tvd, wasserstein,
                          entropies, belief_mass, their bootstrap intervals over questions, the
                          prompts left out; for a method with `margins` the reward margins vs
                          the SFT reference, by majority / minority chosen belief, on the SAME
                          conflicting test pairs for every method (like for like), and for one
                          with `shared_margins` also on its own shared-belief pairs, `shared_*`),
                          probs.npy, readout.csv
  stages/eval/<method>/   sampled outputs (scoring.score_samples): summary.json (the read-out's
                          numbers and the sampled ones), per_prompt.csv, probs.npy, samples.jsonl;
                          not for the methods that are read out only (the baselines)
`record` is the one place that writes a method's numbers into metrics.json.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from gdpolib import beliefs, judges, margins, models, schemes
from gdpolib import methods as registry
from gdpolib.data.fewshot import demo_pool, fewshot_prompts, icf_dataset
from gdpolib.data.records import RunData
from gdpolib.generation import max_context
from gdpolib.evalset import EvalSet
from gdpolib.metrics import registry as metric_registry
from gdpolib.metrics import paired
from gdpolib.metrics.distances import jsd_by_question as _jsd_by_question
from gdpolib.scoring import PER_PROMPT, readout, readout_summary, score_probs, score_samples
from gdpolib.stages.data import base_model, sequence_length
from gdpolib.stages.train import data_hash, train_preference, train_sft

log = logging.getLogger("gdpolib.stages.evaluate")

EVAL_VERSION = "eval-v4"        # bump when scoring changes (invalidates eval stages)
READOUT_VERSION = "readout-v3"  # bump when the read-out numbers change (invalidates test stages)
# What metrics.json records of a method, and the columns of tables/methods.csv: the metric
# registry's (gdpolib/metrics/registry.py).
METRICS_JSON_KEYS = metric_registry.keys(part="methods")
SKEW_KEYS = metric_registry.keys(part="skew")


# ----------------------------------------------------------------------------- metrics.json
def record(run, method: str, numbers: dict[str, Any]) -> None:
    """THE writer of a method's numbers into metrics.json: methods.<m>.<key> for the keys of
    METRICS_JSON_KEYS present in `numbers`, and skew.<m> (the margins of SKEW_KEYS present) for
    a method with margins."""
    part: dict[str, Any] = {"methods": {method: {k: numbers[k] for k in METRICS_JSON_KEYS
                                                 if k in numbers}}}
    if all(k in numbers for k in ("margin_majority", "margin_minority")):
        part["skew"] = {method: {k: numbers[k] for k in SKEW_KEYS if k in numbers}}
    run.merge_metrics(part)


# ----------------------------------------------------------------------------- models
def method_model(cfg, run, data: RunData, method: str) -> tuple[Path | str, str]:
    """The checkpoint a method is scored with (training it if missing) and its identity.

    model "base" (zeroshot, kshot): the base model (untrained policy); "trained": its training
    stage (cached): SFT on its records (sft; icf on few-shot-context prompts) or a preference
    method. A method of model "none" (uniform, context_free) has none."""
    m = registry.get(method)
    if m.model == "base":
        return base_model(cfg, run, data)
    if m.preference:
        return train_preference(cfg, run, data, method), run.stage_hash(f"checkpoints/{method}")
    if m.trainer == "sft" and m.records == "icf":
        base = base_model(cfg, run, data)[0]
        tok = models.load_tokenizer(base, cfg)
        length = sequence_length(cfg, data, tok, models.context_window(base, cfg))
        path = train_sft(cfg, run, data, dataset=icf_dataset(cfg, data, tok, length), name=method)
        return path, run.stage_hash(f"checkpoints/{method}")
    if m.trainer == "sft":
        return train_sft(cfg, run, data), run.stage_hash("checkpoints/sft")
    raise ValueError(f"method {method!r} is scored without a model")


def _context_limit(model, tokenizer, cfg, data: RunData, method: str) -> int:
    """Prompt tokens a few-shot prompt may use: the model's window minus the tokens to generate;
    for ICF also within the run's sequence length, the cap its training sequences were built
    with."""
    window = max_context(model)
    length = sequence_length(cfg, data, tokenizer, window)
    limit = window - cfg.max_new_tokens if window else length - cfg.max_new_tokens
    return min(limit, length - cfg.max_new_tokens) if method == "icf" else limit


def test_prompts(cfg, data: RunData, method: str, model, tokenizer) -> EvalSet:
    """The test prompts a method is scored on: the data's test prompts (as they are for
    zeroshot), with a few-shot context for kshot and icf (demonstrations from the train split,
    cut to fit the model)."""
    es = EvalSet.from_table(data.prompts["test"])
    if registry.get(method).fewshot:
        es = es.with_prompts(fewshot_prompts(es.prompts, es.qids, demo_pool(data), tokenizer,
                                             cfg.kshot_k,
                                             _context_limit(model, tokenizer, cfg, data, method),
                                             cfg.seed, "test"))
    return es


# ----------------------------------------------------------------------------- read-out stage
# The predictors of the methods scored without a model (registry `predictor`): EvalSet of the
# test prompts, EvalSet of the training prompts -> [N, K] read-out.
PREDICTORS = {"uniform": lambda es, train: es.uniform(),
              "context_free": lambda es, train: es.context_free(train)}


def fixed_readout(data: RunData, m: registry.Method) -> tuple[EvalSet, np.ndarray]:
    """The test prompts and the [N, K] read-out of a method without a model (its registry
    `predictor`: `uniform` = 1/|B|, `context_free` = EvalSet.context_free over the train
    split)."""
    es = EvalSet.from_table(data.prompts["test"])
    return es, PREDICTORS[m.predictor](es, EvalSet.from_table(data.prompts["train"]))


def test_margins(cfg, run, data: RunData, m: registry.Method, model, tok) -> dict[str, float]:
    """Reward margins of a preference method vs the SFT reference on the test pairs, by
    majority / minority chosen belief (margins.margin_summary): on its registry `margins` pairs
    (the conflicting DPO pairs for every method, so that the skew is measured like for like),
    and on its `shared_margins` pairs when it has them (the GDPO family's own shared-belief
    pairs, where the belief prefix cancels; keys `shared_*`)."""
    length = sequence_length(cfg, data, tok, max_context(model))
    ref, _ = models.load_policy(run.stage_dir("checkpoints/sft"), cfg)
    out: dict[str, float] = {}
    sets = [("", m.margins)] + ([("shared_", m.shared_margins)] if m.shared_margins else [])
    for prefix, records in sets:
        pairs = getattr(data, records)["test"]
        enc = margins.encode_pairs(tok, pairs)
        pol = margins.pair_logps(model, tok, enc, cfg.eval_batch_size, length)
        rl = margins.pair_logps(ref, tok, enc, cfg.eval_batch_size, length)
        summary = margins.margin_summary(margins.reward_margins(pol, rl, cfg.beta),
                                         np.asarray(pairs["majority"]))
        out.update({prefix + k: v for k, v in summary.items()})
    return out


def test_readout(cfg, run, data: RunData, method: str,
                 checkpoint: tuple[Path | str, str] | None = None) -> dict[str, Any]:
    """The probability-based test numbers of a method (trained if missing): scoring's
    readout_summary over the test prompts (both JSD conventions, TVD, Wasserstein, entropies,
    belief mass, 95% bootstrap intervals over questions, prompts left out) and, for a method
    with `margins`, the reward margins vs the SFT reference (test_margins). A method of model
    "none" (fixed_readout) needs no model. Cached as `stages/test/<method>`; recorded in
    metrics.json. `checkpoint`: method_model's answer, when the caller has it."""
    m = registry.get(method)
    key = {"version": READOUT_VERSION, "method": method, "data": data_hash(run, data),
           **cfg.subset("seed", "ci_resamples")}
    model_path = None
    if m.model != "none":
        model_path, key["model"] = checkpoint or method_model(cfg, run, data, method)
        key["beta"] = cfg.beta
    if m.margins:
        key["ref"] = run.stage_hash("checkpoints/sft")
    if m.fewshot:
        key.update(cfg.subset("kshot_k", "max_length", "max_new_tokens"))

    def build(out: Path) -> None:
        if model_path is None:
            es, probs = fixed_readout(data, m)
            read = score_probs(probs, es)
        else:
            model, tok = models.load_policy(model_path, cfg)
            es = test_prompts(cfg, data, method, model, tok)
            read = readout(model, tok, es, beliefs.check_belief_tokens(tok, data.k_max),
                           cfg.eval_batch_size)
        res: dict[str, Any] = readout_summary(read, es, cfg.seed, cfg.ci_resamples)
        if m.margins:
            res.update(test_margins(cfg, run, data, m, model, tok))
        (out / "test.json").write_text(json.dumps(res, indent=2))
        np.save(out / "probs.npy", read["probs"])
        pd.DataFrame({"qid": es.qids, "style": es.styles, "valid": read["valid"],
                      **{("belief_mass" if k == "mass" else k): read[k] for k in PER_PROMPT}}
                     ).to_csv(out / "readout.csv", index=False)

    out = json.loads((run.stage(f"stages/test/{method}", key, build) / "test.json").read_text())
    record(run, method, out)
    return out


def jsd_by_question(cfg, run, data: RunData, method: str) -> dict[str, float]:
    """Mean test JSD per question of a trained method (its test read-out, per prompt; prompts
    left out of the read-out as invalid are left out here too)."""
    test_readout(cfg, run, data, method)
    per_prompt = pd.read_csv(run.stage_dir(f"stages/test/{method}") / "readout.csv",
                             dtype={"qid": str})
    per_prompt = per_prompt[per_prompt["valid"]]
    return _jsd_by_question(per_prompt["jsd"].to_numpy(), list(per_prompt["qid"]))


def paired_comparisons(cfg, run, data: RunData, methods: Sequence[str]) -> dict[str, dict]:
    """Each method's test JSD minus that of each paired reference of the registry
    (methods.paired_references: SFT, the context-free baseline) that is among `methods`,
    question by question (both read-outs' mean JSD per question, over the questions both
    scored), with a paired 95% bootstrap interval over those questions (paired.compare_by_question,
    `ci_resamples`, seeded): `jsd_vs_<ref>`, `jsd_vs_<ref>_ci`, `jsd_vs_<ref>_questions`.
    Recorded in metrics.json (methods.<m>); returns {method: numbers}."""
    per_q = {m: jsd_by_question(cfg, run, data, m) for m in methods}
    out: dict[str, dict] = {}
    for m in methods:
        numbers: dict[str, Any] = {}
        for ref in (r for r in registry.paired_references() if r in per_q and r != m):
            d = paired.compare_by_question(per_q[m], per_q[ref], cfg.ci_resamples, cfg.seed)
            numbers.update({f"jsd_vs_{ref}": d["difference"], f"jsd_vs_{ref}_ci": d["ci"],
                            f"jsd_vs_{ref}_questions": d["n"]})
        record(run, m, numbers)
        out[m] = numbers
    return out


# ----------------------------------------------------------------------------- sampling stage
def eval_key(cfg, run, method: str, model_hash: str) -> dict[str, Any]:
    """Everything a method's sampled scores depend on."""
    key = {"version": EVAL_VERSION, "method": method, "model": model_hash,
           "data": run.stage_hash("data"), "readout": run.stage_hash(f"stages/test/{method}"),
           **cfg.subset("seed", "n_samples", "temperature", "top_k", "top_p", "response_top_p",
                        "max_new_tokens", "eval_batch_size", "judge", "embedder",
                        "judge_samples", "device", "dtype")}
    if registry.get(method).fewshot:
        key.update(cfg.subset("kshot_k", "max_length"))
    if cfg.judge == "openai":
        key.update(cfg.subset("api_base", "api_model"))
    return key


class Judging:
    """The embedder and the BPC judge, loaded once per evaluate_methods call."""

    def __init__(self, cfg):
        self.cfg, self._embed, self._judge = cfg, None, None

    @property
    def embed(self):
        if self._embed is None:
            self._embed = judges.load_embedder(self.cfg.embedder, str(models.resolve_device(self.cfg)))
        return self._embed

    @property
    def judge(self):
        if self._judge is None:
            self._judge = judges.make_judge(self.cfg, self.embed)
        return self._judge


def evaluate_method(cfg, run, data: RunData, method: str, judging: Judging | None = None
                    ) -> dict[str, Any]:
    """All Table-2 numbers of a method: its test read-out (test_readout) and its sampled outputs,
    cached as `stages/eval/<method>`; returns the summary and records it in metrics.json.
    A method that is not `sampled` (the baselines) gets its read-out numbers only."""
    if not registry.get(method).sampled:
        return {"method": method, **test_readout(cfg, run, data, method)}
    judging = judging or Judging(cfg)
    model_path, model_hash = method_model(cfg, run, data, method)
    read = test_readout(cfg, run, data, method, (model_path, model_hash))
    test_dir = run.stage_dir(f"stages/test/{method}")

    def build(out: Path) -> None:
        log.info("scoring %s on %d test prompts", method, len(data.prompts["test"]))
        model, tok = models.load_policy(model_path, cfg)
        es = test_prompts(cfg, data, method, model, tok)
        res = score_samples(model, tok, es, cfg.evaluation, seed=cfg.seed,
                            scheme=schemes.for_data(data.scheme, data.k_max, cfg),
                            embed=judging.embed, judge=judging.judge)
        summary = {"method": method, **read, **res["summary"]}
        per_read = pd.read_csv(test_dir / "readout.csv", dtype={"qid": str})
        per_prompt = res["per_prompt"]
        for i, col in enumerate(c for c in per_read.columns if c not in ("qid", "style")):
            per_prompt.insert(2 + i, col, per_read[col].to_numpy())
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        per_prompt.to_csv(out / "per_prompt.csv", index=False)
        np.save(out / "probs.npy", np.load(test_dir / "probs.npy"))
        with open(out / "samples.jsonl", "w", encoding="utf-8") as fh:
            for row in res["samples"]:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    path = run.stage(f"stages/eval/{method}", eval_key(cfg, run, method, model_hash), build)
    summary = json.loads((path / "summary.json").read_text())
    record(run, method, summary)
    return summary


def methods_to_run(cfg, run) -> list[str]:
    """The baselines, cfg.methods, cfg.ablations and any preference method already trained in
    the run, in the registry's table order."""
    trained = registry.names(lambda m: m.preference and (
        run.stage_dir(f"checkpoints/{m.name}") / "stage.json").exists())
    return registry.in_order([*registry.baselines(), *cfg.methods, *cfg.ablations, *trained])


def evaluate_methods(cfg, run, data: RunData, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Score every method (training what is missing) and the baselines, and compare each with
    SFT and the context-free baseline (paired_comparisons); a methods x metrics table
    (intervals as [low, high]), also written to the run as `tables/methods.csv` (with the
    per-method stages under stages/eval/)."""
    judging = Judging(cfg)
    rows = {m: evaluate_method(cfg, run, data, m, judging) for m in methods or methods_to_run(cfg, run)}
    for m, numbers in paired_comparisons(cfg, run, data, list(rows)).items():
        rows[m].update(numbers)
    table = pd.DataFrame.from_dict(rows, orient="index")
    cols = [c for c in (*metric_registry.keys(table="table2"), *metric_registry.keys(table="details"))
            if c in table]
    table = table[cols]
    table.index.name = "method"
    table.to_csv(run.path("tables", "methods.csv"))
    return table


# ----------------------------------------------------------------------------- notebook helpers
def short(text: str, width: int = 70) -> str:
    """The start of a question for a figure title (one line, cut at a word with '...')."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width].rsplit(" ", 1)[0] + "..."


def compare_distributions(cfg, run, data: RunData, methods: Sequence[str], n: int = 4,
                          split: str = "test") -> dict[str, Any]:
    """Belief distributions of several trained methods on n prompts of `split` (those where the
    first two methods differ most in JSD), ready for plots.plot_belief_bars. Returns p_star,
    dists {METHOD: probs [n, K]}, mask, labels, titles, and the per-prompt JSDs."""
    ds = data.prompts[split]
    es = EvalSet.from_table(ds)
    reads = {}
    for m in methods:
        model, tok = models.load_policy(run.stage_dir(f"checkpoints/{m}"), cfg)
        reads[m] = readout(model, tok, es, beliefs.check_belief_tokens(tok, data.k_max),
                           cfg.eval_batch_size)
    first, second = methods[0], methods[-1]
    order = np.argsort(-(reads[second]["jsd"] - reads[first]["jsd"]))[:n]
    return {"p_star": es.p_star[order], "mask": es.mask[order],
            "dists": {m.upper(): reads[m]["probs"][order] for m in methods},
            "labels": [ds[int(i)]["labels"] for i in order],
            "titles": [f"{ds[int(i)]['qid']}: {short(ds[int(i)]['question'])}  (JSD " +
                       ", ".join(f"{m} {reads[m]['jsd'][i]:.3f}" for m in methods) + ")"
                       for i in order]}


def write_judge_report(cfg, run, data: RunData) -> dict[str, float]:
    """The embedding judge's accuracy on held-out reference responses (all splits' prompts:
    the references written for one prompt of a question are the candidates, those of its other
    prompts the queries), so a reader knows how far to trust its BPC; saved as
    `<run>/tables/judge_accuracy.json`."""
    judge = judges.EmbeddingJudge(Judging(cfg).embed)
    acc = judges.embedding_judge_accuracy(judge, [data.prompts[s] for s in ("train", "eval", "test")])
    run.path("tables", "judge_accuracy.json").write_text(json.dumps(acc, indent=2))
    return acc
