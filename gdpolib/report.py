"""Reports of a run: the protocol in words, the findings in sentences (the paper's claims, checked
with their numbers; which text metrics are interpretable), tables and long frames for the
notebooks' figures; and over several runs (seeds): mean ± sd tables and each finding with the
number of seeds it holds in. The Table-2 layout is gdpolib.table2. Reads what the evaluation
stages wrote; computes no metric of a model."""
from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from gdpolib import console, metrics
from gdpolib.scoring import EvalSet

def format_ci(v: Any, digits: int = 3) -> Any:
    """[low, high] -> "[0.123, 0.145]"; anything else unchanged."""
    if isinstance(v, (list, tuple, np.ndarray)) and len(v) == 2:
        return f"[{float(v[0]):.{digits}f}, {float(v[1]):.{digits}f}]"
    return v


def protocol_line(split: Mapping[str, Any] | None) -> str:
    """The evaluation protocol of a data stage (its reports.json `split`) in one line: name,
    what is held out, test prompts and questions."""
    if not split or "protocol" not in split:
        return "Protocol: the dataset's own splits (no protocol of ours)."
    styles = split.get("heldout_styles") or []
    held = f"; held-out style(s): {', '.join(styles)}" if styles else ""
    n_p, n_q = split.get("prompts", {}).get("test"), split.get("questions", {}).get("test")
    return (f"Protocol `{split['protocol']}` ({split['held_out']}{held}); test: {n_p} prompts "
            f"over {n_q} questions.")


def load_eval(run, method: str) -> dict[str, Any]:
    """A finished eval stage: summary, per_prompt (DataFrame), probs [N, K], samples (DataFrame)."""
    d = run.stage_dir(f"stages/eval/{method}")
    if not (d / "stage.json").exists():
        raise FileNotFoundError(f"method {method!r} has not been evaluated in {run.root} "
                                f"(run stages.evaluate.evaluate_methods / notebook 04 first)")
    samples = [json.loads(line) for line in
               (d / "samples.jsonl").read_text(encoding="utf-8").splitlines() if line]
    samples = pd.DataFrame(samples)
    samples["belief"] = samples["belief"].astype("Int64")   # None (invalid) stays missing
    return {"summary": json.loads((d / "summary.json").read_text()),
            "per_prompt": pd.read_csv(d / "per_prompt.csv"), "probs": np.load(d / "probs.npy"),
            "samples": samples}


def distributions_frame(run, data, methods: Sequence[str], qids: Sequence[str]) -> pd.DataFrame:
    """Long table for plotting predicted vs target belief distributions of some questions:
    columns qid, question, label, belief, source (target | method), prob. A method's
    distribution is its test read-out (stages/test/<method>: any method or baseline that was
    read out), renormalised and averaged over the question's test prompts."""
    es = EvalSet.from_table(data.prompts["test"])
    rows = []
    for q in qids:
        idx = [i for i, x in enumerate(es.qids) if x == q]
        if not idx:
            continue
        mask, labels = es.mask[idx[0]], es.labels[idx[0]]
        sources = {"target (p*)": es.p_star[idx[0]]}
        for m in methods:
            probs = np.load(run.stage_dir(f"stages/test/{m}") / "probs.npy")[idx]
            sources[m] = metrics.renormalise(probs, es.mask[idx]).mean(axis=0)
        for src, p in sources.items():
            for k in np.flatnonzero(mask):
                rows.append({"qid": q, "question": es.questions[idx[0]], "belief": int(k),
                             "label": f"{k}. {labels[k][:28]}", "source": src,
                             "prob": float(p[k])})
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


# ----------------------------------------------------------------------------- findings
def results_table(results: dict[str, dict]) -> pd.DataFrame:
    """Test read-out numbers per method (rows) as a DataFrame (notebooks 02 and 03); intervals
    as "[low, high]" strings. Margins are on the conflicting test pairs (every method),
    `shared_*` on the GDPO family's own shared-belief pairs."""
    cols = ["jsd", "jsd_ci", "jsd_vs_sft", "jsd_vs_sft_ci", "jsd_vs_context_free",
            "jsd_vs_context_free_ci", "jsd_digits", "tvd", "wasserstein", "entropy",
            "entropy_target", "belief_mass", "n_invalid", "margin_majority", "margin_minority",
            "accuracy_majority", "accuracy_minority", "shared_margin_majority",
            "shared_margin_minority"]
    cols = [c for c in cols if any(c in r for r in results.values())]
    return pd.DataFrame({m: {c: format_ci(r.get(c, np.nan)) for c in cols}
                         for m, r in results.items()}).T.infer_objects()


def flat_numbers(numbers: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a method's record, with each interval `<x>_ci` ([low, high], or its
    "[low, high]" text from format_ci) as `<x>_ci_lo` and `<x>_ci_hi`: what claims read."""
    out: dict[str, float] = {}
    for key, x in numbers.items():
        if isinstance(x, str) and x.startswith("[") and key.endswith("_ci"):
            x = [float(p) for p in x.strip("[]").split(",")]
        if isinstance(x, (list, tuple, np.ndarray)) and len(x) == 2 and key.endswith("_ci"):
            out[f"{key}_lo"], out[f"{key}_hi"] = float(x[0]), float(x[1])
        elif isinstance(x, (int, float, np.number)) and not isinstance(x, bool) \
                and np.isfinite(x):
            out[key] = float(x)
    return out


def reader(records: Mapping[str, Mapping[str, Any]]) -> Callable[[str, str], float]:
    """`v(method, metric)` over {method: numbers} (flat_numbers of each), the reader claims
    take; KeyError when the number is absent or not finite."""
    flat = {m: flat_numbers(r) for m, r in records.items()}

    def v(method: str, metric: str) -> float:
        try:
            return flat[method][metric]
        except KeyError:
            raise KeyError(f"{method}.{metric}") from None
    return v


def table_reader(table: pd.DataFrame) -> Callable[[str, str], float]:
    """reader() over a methods x metrics table (evaluate_methods, results_table)."""
    return reader({m: row.dropna().to_dict() for m, row in table.iterrows()})


def metrics_reader(metrics: Mapping[str, Any]) -> Callable[[str, str], float]:
    """reader() over a run's metrics.json: methods.<m> and skew.<m> of each method."""
    methods = set(metrics.get("methods", {})) | set(metrics.get("skew", {}))
    return reader({m: {**metrics.get("methods", {}).get(m, {}),
                       **metrics.get("skew", {}).get(m, {})} for m in methods})


# A model writes well-formed outputs when at most 5 % of its samples do not parse and at least
# 90 % bind the digit to its own label (CBC). Otherwise its sampled-text metrics measure the
# format, not its beliefs: they are not interpretable and are never compared.
WELL_FORMED = {"invalid_rate": 0.05, "cbc": 0.9}
TEXT_METRICS = ("jsd_sampled", "cbc", "bpc", "rs")


def well_formed(v: Callable[[str, str], float], method: str) -> bool | None:
    """Does `method` write well-formed outputs (WELL_FORMED)? None when it was not sampled."""
    try:
        return (v(method, "invalid_rate") <= WELL_FORMED["invalid_rate"]
                and v(method, "cbc") >= WELL_FORMED["cbc"])
    except KeyError:
        return None


def findings(table: pd.DataFrame) -> list[str]:
    """What a run's numbers say about the paper's claims, in sentences with the numbers.

    table: one row per method (sft, dpo, gdpo, ablations, baselines), columns among those of
    evaluate_methods / results_table. Each claim of PAPER_CLAIMS whose numbers the table has
    ("[yes]" / "[NO ]"), then what the claims do not say: the baselines, GDPO's margins on its
    own pairs, the ablations, which methods' text metrics are interpretable and how they
    compare, and the sampled JSD against its noise floor.
    """
    v = table_reader(table)
    out = [f"[{'yes' if ok else 'NO '}] {claim}: {numbers}"
           for claim, ok, numbers in check_claims(v) if ok is not None]

    def has(m: str, *cols: str) -> bool:
        try:
            return all(v(m, c) is not None for c in cols)
        except KeyError:
            return False

    base = [f"{name} {v(m, 'jsd'):.3f}" for m, name in (("uniform", "uniform"),
            ("context_free", "context-free"), ("zeroshot", "zero-shot")) if has(m, "jsd")]
    if base:
        below = [m for m in table.index if m not in BASELINE_NAMES and has(m, "jsd_vs_context_free_ci_hi")
                 and v(m, "jsd_vs_context_free_ci_hi") < 0]
        out.append(f"Baselines (test JSD): {', '.join(base)}. Below the context-free baseline by a "
                   f"paired 95% interval: {', '.join(below) or 'none'}.")
    if has("gdpo", "shared_margin_majority", "shared_margin_minority"):
        out.append(f"GDPO on its own shared-belief pairs (the paper's Finding 1; the belief prefix "
                   f"cancels there): margin majority {v('gdpo', 'shared_margin_majority'):.3f}, "
                   f"minority {v('gdpo', 'shared_margin_minority'):.3f}.")
    out += [f"Ablation {m}: test JSD {v(m, 'jsd'):.3f}." for m in ("cdpo", "mft") if has(m, "jsd")]
    sampled = [m for m in table.index if well_formed(v, m) is not None]
    good = [m for m in sampled if well_formed(v, m)]
    bad = [f"{m} (invalid {v(m, 'invalid_rate'):.3f}, CBC {v(m, 'cbc'):.3f})"
           for m in sampled if m not in good]
    if bad:
        out.append(f"Not well-formed, so CBC, BPC, RS and sampled JSD are NOT interpretable for: "
                   f"{', '.join(bad)}.")
    for metric in ("bpc", "cbc"):
        if "gdpo" in good and "dpo" in good and has("gdpo", metric) and has("dpo", metric):
            better = v("gdpo", metric) > v("dpo", metric)
            out.append(f"gdpo {metric} {v('gdpo', metric):.3f} vs dpo {v('dpo', metric):.3f}: "
                       f"gdpo is {'better' if better else 'NOT better'}.")
    floors = [v(m, "noise_floor") for m in good if has(m, "noise_floor")]
    if floors:
        close = [m for m in good if v(m, "jsd_sampled") < floors[0] + 0.05]
        out.append(f"Sampled JSD within 0.05 of the noise floor ({floors[0]:.3f}), well-formed "
                   f"methods only: {', '.join(close) or 'none'}.")
    return out


# ----------------------------------------------------------------------------- several seeds
SEED_METRICS = ("jsd", "jsd_vs_sft", "jsd_vs_context_free", "jsd_digits", "tvd", "wasserstein",
                "belief_mass", "entropy", "entropy_target", "margin_majority", "margin_minority",
                "shared_margin_majority", "shared_margin_minority", "invalid_rate", "cbc")
BASELINE_NAMES = ("uniform", "context_free", "zeroshot")


def _gap(m: str) -> Callable[[Callable[[str, str], float]], float]:
    """A method's majority - minority margin on the conflicting test pairs (its skew)."""
    return lambda v: v(m, "margin_majority") - v(m, "margin_minority")


# Each finding over seeds: (sentence, difference); the finding holds in a seed when the
# difference is > 0. `v(method, metric)` reads one run's number (KeyError when absent);
# `<x>_ci_lo` / `<x>_ci_hi` are the ends of an interval. Margins are on the SAME conflicting
# test pairs for every method; `jsd_vs_<ref>` are paired per-question differences.
CLAIMS: tuple[tuple[str, Callable[[Callable[[str, str], float]], float]], ...] = (
    ("DPO raises jsd over SFT", lambda v: v("dpo", "jsd") - v("sft", "jsd")),
    ("DPO raises jsd over SFT, paired 95% interval above 0",
     lambda v: v("dpo", "jsd_vs_sft_ci_lo")),
    ("DPO raises jsd_digits over SFT", lambda v: v("dpo", "jsd_digits") - v("sft", "jsd_digits")),
    ("GDPO lowers jsd below DPO", lambda v: v("dpo", "jsd") - v("gdpo", "jsd")),
    ("GDPO lowers jsd_digits below DPO", lambda v: v("dpo", "jsd_digits") - v("gdpo", "jsd_digits")),
    ("GDPO lowers jsd below SFT", lambda v: v("sft", "jsd") - v("gdpo", "jsd")),
    ("GDPO lowers jsd below SFT, paired 95% interval below 0",
     lambda v: -v("gdpo", "jsd_vs_sft_ci_hi")),
    ("SFT is below uniform in jsd", lambda v: v("uniform", "jsd") - v("sft", "jsd")),
    ("SFT is below the context-free baseline in jsd, paired 95% interval below 0",
     lambda v: -v("sft", "jsd_vs_context_free_ci_hi")),
    ("GDPO is below the context-free baseline in jsd, paired 95% interval below 0",
     lambda v: -v("gdpo", "jsd_vs_context_free_ci_hi")),
    ("SFT is below zero-shot in jsd", lambda v: v("zeroshot", "jsd") - v("sft", "jsd")),
    ("DPO lowers the belief-token mass below SFT",
     lambda v: v("sft", "belief_mass") - v("dpo", "belief_mass")),
    ("DPO's majority-chosen margins exceed its minority-chosen ones (conflicting test pairs)",
     _gap("dpo")),
    ("GDPO's majority-minority margin gap is smaller than DPO's (the same conflicting test pairs)",
     lambda v: _gap("dpo")(v) - _gap("gdpo")(v)),
)


def _order(values: Sequence[Any], preferred: Sequence[Any] = ()) -> list[Any]:
    """Distinct values: those in `preferred` first in its order, then the rest as first seen."""
    seen = list(dict.fromkeys(values))
    return [v for v in preferred if v in seen] + [v for v in seen if v not in preferred]


def seed_summary(runs: pd.DataFrame, keys: Sequence[str], method_order: Sequence[str] = (),
                 metrics_: Sequence[str] = SEED_METRICS) -> pd.DataFrame:
    """Mean, sd (sample, ddof 1; NaN for one seed) and number of seeds of each metric.

    runs: one row per (run, method): columns `keys` (e.g. protocol, country), method, seed and
    the metrics. Returns one row per keys x method (cells in first-seen order, methods in
    `method_order`), columns keys, method, n_seeds, `<metric>_mean`, `<metric>_sd`.
    """
    present = [m for m in metrics_ if m in runs]
    rows = []
    cells = _order(list(runs[list(keys)].itertuples(index=False, name=None)))
    for cell in cells:
        sub = runs[(runs[list(keys)] == pd.Series(cell, index=list(keys))).all(axis=1)]
        for method in _order(list(sub["method"]), method_order):
            one = sub[sub["method"] == method]
            row = {**dict(zip(keys, cell)), "method": method, "n_seeds": int(one["seed"].nunique())}
            for m in present:
                vals = one[m].dropna().astype(float)
                row[f"{m}_mean"] = float(vals.mean()) if len(vals) else np.nan
                row[f"{m}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def seed_markdown(summary: pd.DataFrame, keys: Sequence[str],
                  metrics_: Sequence[str] = SEED_METRICS, digits: int = 3) -> str:
    """A pipe table of seed_summary with "mean ± sd" cells (the mean alone for one seed, empty
    when the metric is missing)."""
    present = [m for m in metrics_ if f"{m}_mean" in summary and summary[f"{m}_mean"].notna().any()]

    def cell(r, m: str) -> str:
        mean, sd = r[f"{m}_mean"], r[f"{m}_sd"]
        if not np.isfinite(mean):
            return ""
        return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if np.isfinite(sd) else "")

    head = [*keys, "method", "seeds", *present]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in summary.iterrows():
        lines.append("| " + " | ".join([*(str(r[k]) for k in keys), str(r["method"]),
                                        str(r["n_seeds"]), *(cell(r, m) for m in present)]) + " |")
    return "\n".join(lines)


def seed_findings(runs: pd.DataFrame, keys: Sequence[str], claims: Sequence = CLAIMS) -> list[str]:
    """Each finding of CLAIMS per cell of `keys`, with the number of seeds it holds in and the
    mean ± sd of its difference: "S. Africa / seen_questions: GDPO lowers jsd below DPO: holds
    in 3 of 3 seeds (difference 0.081 ± 0.012)". A claim whose numbers a seed lacks is not
    counted for that seed; one no seed has is left out."""
    out = []
    for cell in _order(list(runs[list(keys)].itertuples(index=False, name=None))):
        sub = runs[(runs[list(keys)] == pd.Series(cell, index=list(keys))).all(axis=1)]
        label = " / ".join(str(c) for c in cell)
        for text, diff, *rest in claims:   # CLAIMS, or PAPER_CLAIMS (the demo's bars)
            inclusive = bool(rest and rest[-1])
            values = []
            for _, one in sub.groupby("seed"):
                table = one.set_index("method")

                def v(method: str, metric: str) -> float:
                    x = float(table.loc[method, metric])
                    if not np.isfinite(x):
                        raise KeyError(metric)
                    return x
                try:
                    values.append(diff(v))
                except (KeyError, ZeroDivisionError):
                    continue
            if values:
                d = np.asarray(values)
                sd = f" ± {d.std(ddof=1):.3f}" if len(d) > 1 else ""
                held = int((d >= 0).sum() if inclusive else (d > 0).sum())
                out.append(f"{label}: {text}: holds in {held} of {len(d)} seeds "
                           f"(difference {d.mean():+.3f}{sd})")
    return out


# ----------------------------------------------------------------------------- tracking
def load_tracks(run, methods: Sequence[str]) -> pd.DataFrame:
    """The tracking records (tracking.jsonl) of the trained stages among `methods`, as one
    DataFrame (columns method, step, seconds, jsd, belief_mass, margins ...)."""
    frames = [pd.read_json(p, lines=True) for m in methods
              if (p := run.stage_dir(f"checkpoints/{m}") / "tracking.jsonl").exists()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ----------------------------------------------------------------------------- the demo's findings
def _paired(m: str, ref: str, v: Callable[[str, str], float]) -> str:
    """"GDPO - SFT -0.020 [-0.031, -0.009]": a paired difference with its 95% interval."""
    name = {"context_free": "context-free"}.get(ref, ref.upper())
    return (f"{m.upper()} - {name} {v(m, f'jsd_vs_{ref}'):+.3f} "
            f"[{v(m, f'jsd_vs_{ref}_ci_lo'):+.3f}, {v(m, f'jsd_vs_{ref}_ci_hi'):+.3f}]")


def _below_context_free(m: str) -> tuple[str, Callable, Callable, bool]:
    return (f"{m.upper()}'s JSD is below the context-free baseline's (paired 95% interval "
            f"below 0)", lambda v: -v(m, "jsd_vs_context_free_ci_hi"),
            lambda v: f"{_paired(m, 'context_free', v)}; context-free "
                      f"{v('context_free', 'jsd'):.3f}", False)


def _well_formed(m: str) -> tuple[str, Callable, Callable, bool]:
    bars = WELL_FORMED
    return (f"{m.upper()} writes well-formed outputs (invalid <= {bars['invalid_rate']:.2f}, "
            f"CBC >= {bars['cbc']:.1f})",
            lambda v: min(bars["invalid_rate"] - v(m, "invalid_rate"), v(m, "cbc") - bars["cbc"]),
            lambda v: f"invalid {v(m, 'invalid_rate'):.3f}, CBC {v(m, 'cbc'):.3f}", True)


def _margins(m: str, v: Callable[[str, str], float]) -> str:
    return (f"{m.upper()} {v(m, 'margin_majority'):.3f} - {v(m, 'margin_minority'):.3f} = "
            f"{_gap(m)(v):.3f}")


# The paper's findings as the demo checks them on one run, in CLAIMS' form plus the numbers to
# show: (sentence, difference, numbers, inclusive). A claim holds when its difference is > 0
# (>= 0 when inclusive: the bars written with >=). JSD differences are the paired per-question
# ones with their 95% bootstrap interval; margins are on the same conflicting test pairs for
# DPO and GDPO, and the "2x" claim needs a positive majority margin.
PAPER_CLAIMS: tuple[tuple[str, Callable, Callable, bool], ...] = (
    ("DPO raises JSD over SFT by >= 0.05",
     lambda v: v("dpo", "jsd_vs_sft") - 0.05,
     lambda v: f"SFT {v('sft', 'jsd'):.3f}, DPO {v('dpo', 'jsd'):.3f}; {_paired('dpo', 'sft', v)}",
     True),
    ("GDPO's JSD is below SFT's",
     lambda v: -v("gdpo", "jsd_vs_sft"),
     lambda v: f"GDPO {v('gdpo', 'jsd'):.3f}, SFT {v('sft', 'jsd'):.3f}; "
               f"{_paired('gdpo', 'sft', v)}", False),
    *(_below_context_free(m) for m in ("sft", "gdpo")),
    ("DPO's majority-chosen margin is positive and >= 2x its minority-chosen one "
     "(conflicting test pairs)",
     lambda v: min(v("dpo", "margin_majority"),
                   v("dpo", "margin_majority") - 2 * v("dpo", "margin_minority")),
     lambda v: f"{v('dpo', 'margin_majority'):.3f} vs {v('dpo', 'margin_minority'):.3f}", False),
    ("GDPO's majority - minority margin gap is smaller than DPO's (the same conflicting test "
     "pairs)", lambda v: _gap("dpo")(v) - _gap("gdpo")(v),
     lambda v: f"{_margins('gdpo', v)}; {_margins('dpo', v)}", False),
    *(_well_formed(m) for m in ("sft", "dpo", "gdpo")),
)


def check_claims(v: Callable[[str, str], float], claims: Sequence = PAPER_CLAIMS
                 ) -> list[tuple[str, bool | None, str]]:
    """Each claim checked with the reader `v`: (claim, holds, the numbers); holds is None
    ("not measured") when a number is missing or a margin ratio divides by zero."""
    out: list[tuple[str, bool | None, str]] = []
    for claim, diff, numbers, inclusive in claims:
        try:
            d = diff(v)
            out.append((claim, d >= 0 if inclusive else d > 0, numbers(v)))
        except (KeyError, ZeroDivisionError):
            out.append((claim, None, "not measured"))
    return out


def paper_findings(metrics: dict) -> list[tuple[str, bool | None, str]]:
    """PAPER_CLAIMS checked on a run's metrics.json (test split): (claim, holds, the numbers);
    holds is None ("not measured") when the run lacks a number."""
    return check_claims(metrics_reader(metrics))


def show_findings(run) -> list[str]:
    """Print the paper's findings on this run (paper_findings), which methods' text metrics are
    not interpretable, and the run directory; in a pipeline run these are console lines.
    Returns the lines."""
    mark = {True: "yes", False: "NO ", None: " - "}
    metrics = run.metrics()
    lines = [f"findings ({run.cfg.group_label}, {run.cfg.model}, test split):"]
    lines += [f"  [{mark[ok]}] {claim}: {numbers}" for claim, ok, numbers in paper_findings(metrics)]
    v = metrics_reader(metrics)
    bad = [m for m in metrics.get("methods", {}) if well_formed(v, m) is False]
    if bad:
        lines.append(f"  CBC, BPC, RS and sampled JSD are not interpretable for {', '.join(bad)} "
                     f"(outputs not well-formed)")
    lines.append(f"run directory: {run.root}")
    for line in lines:
        console.say(line)
    return lines
