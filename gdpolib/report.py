"""Reports of a run: the paper's Table 2 beside ours (its JSD beside our `jsd_digits`, the
authors' convention), the protocol in words, the findings in sentences, tables and long frames
for the notebooks' figures; and over several runs (seeds): mean ± sd tables and each finding
with the number of seeds it holds in. Reads what the evaluation stages wrote; computes no metric
of a model."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from gdpolib import console, metrics
from gdpolib.scoring import EvalSet

# The GDPO paper's Table 2 (the poster's small sets). Keys: (country, model family).
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
    one_country = cfg.survey == "goqa" and not cfg.groups
    country = _COUNTRY_KEYS.get(cfg.country_name) if one_country else None
    return (country, family) if family and country else None


# Rows of the Table-2 layout, in order; `<distance>_ci` rows hold "[low, high]".
TABLE2_ROWS = ("jsd", "jsd_ci", "jsd_digits", "jsd_digits_ci", "tvd", "tvd_ci", "wasserstein",
               "wasserstein_ci", "entropy", "entropy_target", "belief_mass", "n_invalid",
               "jsd_sampled", "noise_floor", "cbc", "bpc", "rs", "invalid_rate", "majority_bias")
# The paper's JSD is the authors' convention (renormalised over all belief digits): our row
# `jsd_digits`. Its other metrics keep their names.
PAPER_ROW = {"jsd": "jsd_digits"}


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


def table2(table: pd.DataFrame, cfg) -> pd.DataFrame:
    """Table-2 layout: metrics as rows (TABLE2_ROWS present), methods as columns, intervals as
    "[low, high]" strings; the paper's numbers in columns `paper:<method>` beside ours when the
    run matches the paper's setting (paper_setting), its JSD in our row `jsd_digits` (the
    convention it was computed with)."""
    out = table[[c for c in TABLE2_ROWS if c in table]].T.astype(object)
    out = out.apply(lambda col: col.map(format_ci))
    setting = paper_setting(cfg)
    if setting:
        paper = PAPER_TABLE2[setting]
        ours = {PAPER_ROW.get(k, k): k for k in next(iter(paper.values()))}
        for m in table.index:
            if m in paper:
                out[f"paper:{m}"] = [paper[m].get(ours.get(r, ""), np.nan) for r in out.index]
    out.index.name = "metric"
    return out


def write_table2(table: pd.DataFrame, cfg, run, split: Mapping[str, Any] | None = None
                 ) -> tuple[Path, Path]:
    """Write the Table-2-style table as CSV and Markdown under `<run>/tables/`; `split` (the data
    stage's reports["split"]) names the protocol in the title."""
    t2 = table2(table, cfg)
    csv = run.path("tables", "table2.csv")
    t2.to_csv(csv, float_format="%.4f")
    md = run.path("tables", "table2.md")
    setting = paper_setting(cfg)
    name = (split or {}).get("protocol", "given splits")
    lines = [f"# Table 2 ({cfg.group_label}, model {cfg.model}, protocol {name}, "
             f"{len_prompts(table)} test prompts, n = {cfg.n_samples} samples per prompt)", "",
             protocol_line(split), "", markdown_table(t2), ""]
    if setting:
        lines.append(f"Columns `paper:*` are the GDPO paper's Table 2 ({setting[1]}, "
                     f"{setting[0].upper()}); its JSD sits in row `jsd_digits`, "
                     f"the convention it was computed with (renormalised over all belief digits), "
                     f"on its stance6 classes and its own data, under the seen-questions protocol.")
    else:
        lines.append("The paper's Table 2 used GPT-2 Large and Pythia-2.8B on its own synthetic "
                     "data; this run's model differs, so the paper's numbers are not set beside "
                     "ours (the paper's Table 2 has them).")
    lines += ["", "jsd: JS distance of the belief read-out renormalised over the question's "
              "belief set; jsd_digits: renormalised over all belief digits (the authors' "
              "convention: mass on digits outside the set counts); tvd: total variation; "
              "wasserstein: 1-D Wasserstein distance / its maximum over the ordinal beliefs "
              "(stance6 classes 1-5, class 0 'no stance' left out; empty when no belief is "
              "ordinal); *_ci: 95% bootstrap interval over test questions; entropy vs "
              "entropy_target: nats of the predicted vs the target distribution; n_invalid: "
              "prompts left out (no mass on the belief set). uniform: 1/|B| on each question's "
              "beliefs; zeroshot: the untrained base model on the plain prompts (both read-out "
              "only). jsd_sampled: from the n samples, to be read against noise_floor (a "
              "perfectly calibrated model's expected sampled JSD at the same n). BPC judge: "
              + cfg.judge + "."]
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


# ----------------------------------------------------------------------------- findings
def results_table(results: dict[str, dict]) -> pd.DataFrame:
    """Test read-out numbers per method (rows) as a DataFrame (notebooks 02 and 03); intervals
    as "[low, high]" strings."""
    cols = ["jsd", "jsd_ci", "jsd_digits", "tvd", "wasserstein", "entropy", "entropy_target",
            "belief_mass", "n_invalid", "margin_majority", "margin_minority",
            "accuracy_majority", "accuracy_minority"]
    cols = [c for c in cols if any(c in r for r in results.values())]
    return pd.DataFrame({m: {c: format_ci(r.get(c, np.nan)) for c in cols}
                         for m, r in results.items()}).T.infer_objects()


def findings(table: pd.DataFrame) -> list[str]:
    """What a run's numbers say about the paper's claims, in sentences with the numbers.

    table: one row per method (sft, dpo, gdpo, ablations, baselines), columns among jsd,
    belief_mass, margin_majority / margin_minority (+ accuracy_*), jsd_sampled, noise_floor,
    bpc, cbc; the baselines uniform / zeroshot give the last line. A claim whose numbers are
    missing is left out.
    """
    t = table

    def has(m: str, *cols: str) -> bool:
        return m in t.index and all(c in t and np.isfinite(float(t.loc[m, c])) for c in cols)

    def v(m: str, c: str) -> float:
        return float(t.loc[m, c])

    out = []
    if has("sft", "jsd") and has("dpo", "jsd"):
        verb = "raises" if v("dpo", "jsd") > v("sft", "jsd") else "does NOT raise"
        line = f"DPO {verb} the test JSD over SFT: {v('sft', 'jsd'):.3f} -> {v('dpo', 'jsd'):.3f}"
        if has("sft", "belief_mass") and has("dpo", "belief_mass"):
            line += (f"; mass on belief tokens {v('sft', 'belief_mass'):.2f} -> "
                     f"{v('dpo', 'belief_mass'):.2f}")
        out.append(line + ".")
    if has("dpo", "margin_majority", "margin_minority"):
        verb = "exceed" if v("dpo", "margin_majority") > v("dpo", "margin_minority") else "do NOT exceed"
        line = (f"DPO's majority-chosen margins {verb} its minority-chosen ones: "
                f"{v('dpo', 'margin_majority'):.3f} vs {v('dpo', 'margin_minority'):.3f}")
        if has("dpo", "accuracy_majority", "accuracy_minority"):
            line += (f" (pairwise accuracy {v('dpo', 'accuracy_majority'):.2f} vs "
                     f"{v('dpo', 'accuracy_minority'):.2f})")
        out.append(line + ".")
    if has("gdpo", "jsd") and has("dpo", "jsd"):
        verb = "lowers" if v("gdpo", "jsd") < v("dpo", "jsd") else "does NOT lower"
        ref = f", SFT {v('sft', 'jsd'):.3f}" if has("sft", "jsd") else ""
        out.append(f"GDPO {verb} the test JSD below DPO: {v('gdpo', 'jsd'):.3f} vs "
                   f"{v('dpo', 'jsd'):.3f}{ref}.")
    if has("gdpo", "margin_majority", "margin_minority"):
        line = (f"GDPO margins (shared-belief pairs): majority {v('gdpo', 'margin_majority'):.3f}, "
                f"minority {v('gdpo', 'margin_minority'):.3f}")
        if has("dpo", "margin_majority", "margin_minority") and v("dpo", "margin_majority") > 0 \
                and v("gdpo", "margin_majority") > 0:
            line += (f"; minority/majority ratio "
                     f"{v('gdpo', 'margin_minority') / v('gdpo', 'margin_majority'):.2f} "
                     f"(DPO {v('dpo', 'margin_minority') / v('dpo', 'margin_majority'):.2f})")
        out.append(line + ".")
    for m in ("cdpo", "mft"):
        if has(m, "jsd"):
            out.append(f"Ablation {m}: test JSD {v(m, 'jsd'):.3f}.")
    for metric in ("bpc", "cbc"):
        if has("gdpo", metric) and has("dpo", metric):
            better = v("gdpo", metric) > v("dpo", metric)
            out.append(f"gdpo {metric} {v('gdpo', metric):.3f} vs dpo {v('dpo', metric):.3f}: "
                       f"gdpo is {'better' if better else 'NOT better'}.")
    if "jsd_sampled" in t and "noise_floor" in t and t["noise_floor"].notna().any():
        floor = float(t["noise_floor"].dropna().iloc[0])     # the baselines sample nothing
        close = [m for m in t.index if float(t.loc[m, "jsd_sampled"]) < floor + 0.05]
        out.append(f"Sampled JSD within 0.05 of the noise floor ({floor:.3f}): "
                   f"{', '.join(close) or 'none'}.")
    if has("uniform", "jsd"):
        below = [m for m in t.index if m != "uniform" and has(m, "jsd")
                 and v(m, "jsd") < v("uniform", "jsd")]
        zero = f", zero-shot {v('zeroshot', 'jsd'):.3f}" if has("zeroshot", "jsd") else ""
        out.append(f"Baselines: uniform {v('uniform', 'jsd'):.3f}{zero}; methods below uniform: "
                   f"{', '.join(below) or 'none'}.")
    return out


# ----------------------------------------------------------------------------- several seeds
SEED_METRICS = ("jsd", "jsd_digits", "tvd", "wasserstein", "belief_mass", "entropy",
                "entropy_target", "margin_majority", "margin_minority")

# Each finding over seeds: (sentence, difference); the finding holds in a seed when the
# difference is > 0. `v(method, metric)` reads one run's number (KeyError when absent).
CLAIMS: tuple[tuple[str, Callable[[Callable[[str, str], float]], float]], ...] = (
    ("DPO raises jsd over SFT", lambda v: v("dpo", "jsd") - v("sft", "jsd")),
    ("DPO raises jsd_digits over SFT", lambda v: v("dpo", "jsd_digits") - v("sft", "jsd_digits")),
    ("GDPO lowers jsd below DPO", lambda v: v("dpo", "jsd") - v("gdpo", "jsd")),
    ("GDPO lowers jsd_digits below DPO", lambda v: v("dpo", "jsd_digits") - v("gdpo", "jsd_digits")),
    ("GDPO lowers jsd below SFT", lambda v: v("sft", "jsd") - v("gdpo", "jsd")),
    ("SFT is below uniform in jsd", lambda v: v("uniform", "jsd") - v("sft", "jsd")),
    ("GDPO is below uniform in jsd", lambda v: v("uniform", "jsd") - v("gdpo", "jsd")),
    ("SFT is below zero-shot in jsd", lambda v: v("zeroshot", "jsd") - v("sft", "jsd")),
    ("DPO lowers the belief-token mass below SFT",
     lambda v: v("sft", "belief_mass") - v("dpo", "belief_mass")),
    ("DPO's majority-chosen margins exceed its minority-chosen ones",
     lambda v: v("dpo", "margin_majority") - v("dpo", "margin_minority")),
    ("GDPO's majority-minority margin gap is smaller than DPO's",
     lambda v: (v("dpo", "margin_majority") - v("dpo", "margin_minority"))
     - (v("gdpo", "margin_majority") - v("gdpo", "margin_minority"))),
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
WELL_FORMED = {"invalid_rate": 0.05, "cbc": 0.9}   # a model that writes its outputs (item 2 bars)


def _ratio_gap(v: Callable[[str, str], float]) -> float:
    """|1 - DPO's minority/majority margin ratio| - |1 - GDPO's| (> 0: GDPO's is closer to 1)."""
    def ratio(m: str) -> float:
        return v(m, "margin_minority") / v(m, "margin_majority")
    return abs(ratio("dpo") - 1) - abs(ratio("gdpo") - 1)


def _well_formed(m: str) -> tuple[str, Callable, Callable, bool]:
    bars = WELL_FORMED
    return (f"{m.upper()} writes well-formed outputs (invalid <= {bars['invalid_rate']:.2f}, "
            f"CBC >= {bars['cbc']:.1f})",
            lambda v: min(bars["invalid_rate"] - v(m, "invalid_rate"), v(m, "cbc") - bars["cbc"]),
            lambda v: f"invalid {v(m, 'invalid_rate'):.3f}, CBC {v(m, 'cbc'):.3f}", True)


# The paper's findings as the demo checks them on one run (the demo's bars), in CLAIMS' form
# plus the numbers to show: (sentence, difference, numbers, inclusive). A claim holds when its
# difference is > 0 (>= 0 when inclusive: the bars written with >=).
PAPER_CLAIMS: tuple[tuple[str, Callable, Callable, bool], ...] = (
    ("DPO raises JSD over SFT by >= 0.05",
     lambda v: v("dpo", "jsd") - v("sft", "jsd") - 0.05,
     lambda v: f"SFT {v('sft', 'jsd'):.3f}, DPO {v('dpo', 'jsd'):.3f} "
               f"({v('dpo', 'jsd') - v('sft', 'jsd'):+.3f})", True),
    ("GDPO's JSD is below SFT's",
     lambda v: v("sft", "jsd") - v("gdpo", "jsd"),
     lambda v: f"GDPO {v('gdpo', 'jsd'):.3f} vs SFT {v('sft', 'jsd'):.3f} "
               f"({v('gdpo', 'jsd') - v('sft', 'jsd'):+.3f})", False),
    ("DPO's majority-chosen margin is >= 2x its minority-chosen one",
     lambda v: v("dpo", "margin_majority") - 2 * v("dpo", "margin_minority"),
     lambda v: f"{v('dpo', 'margin_majority'):.3f} vs {v('dpo', 'margin_minority'):.3f}", True),
    ("GDPO's minority/majority margin ratio is closer to 1 than DPO's", _ratio_gap,
     lambda v: "GDPO {:.2f}, DPO {:.2f}".format(
         *(v(m, "margin_minority") / v(m, "margin_majority") for m in ("gdpo", "dpo"))), False),
    *(_well_formed(m) for m in ("sft", "dpo", "gdpo")),
)


def metrics_reader(metrics: Mapping[str, Any]) -> Callable[[str, str], float]:
    """`v(method, metric)` over a run's metrics.json (methods.* and skew.*), the reader CLAIMS
    take; KeyError when the number is absent or not finite."""
    def v(method: str, metric: str) -> float:
        x = {**metrics.get("methods", {}).get(method, {}),
             **metrics.get("skew", {}).get(method, {})}.get(metric)
        if x is None or not np.isfinite(x):
            raise KeyError(f"{method}.{metric}")
        return float(x)
    return v


def paper_findings(metrics: dict) -> list[tuple[str, bool | None, str]]:
    """PAPER_CLAIMS checked on a run's metrics.json (test split): (claim, holds, the numbers);
    holds is None ("not measured") when the run lacks a number or a margin is zero."""
    v = metrics_reader(metrics)
    out: list[tuple[str, bool | None, str]] = []
    for claim, diff, numbers, inclusive in PAPER_CLAIMS:
        try:
            d = diff(v)
            out.append((claim, d >= 0 if inclusive else d > 0, numbers(v)))
        except (KeyError, ZeroDivisionError):
            out.append((claim, None, "not measured"))
    return out


def show_findings(run) -> list[str]:
    """Print the paper's findings on this run (paper_findings) and the run directory; in a
    pipeline run these are console lines. Returns the lines."""
    mark = {True: "yes", False: "NO ", None: " - "}
    lines = [f"findings ({run.cfg.group_label}, {run.cfg.model}, test split):"]
    lines += [f"  [{mark[ok]}] {claim}: {numbers}"
              for claim, ok, numbers in paper_findings(run.metrics())]
    lines.append(f"run directory: {run.root}")
    for line in lines:
        console.say(line)
    return lines
