"""Reports of a run: the paper's Table 2 beside ours, the findings in sentences, tables and long
frames for the notebooks' figures. Reads what the evaluation stages wrote; computes no metric."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from gdpolib import console, metrics
from gdpolib.scoring import EvalSet

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
    """Test numbers per method (rows) as a DataFrame (notebooks 02 and 03)."""
    cols = ["jsd", "belief_mass", "margin_majority", "margin_minority", "accuracy_majority",
            "accuracy_minority"]
    return pd.DataFrame({m: {c: r.get(c, np.nan) for c in cols} for m, r in results.items()}).T


def findings(table: pd.DataFrame) -> list[str]:
    """What a run's numbers say about the paper's claims, in sentences with the numbers.

    table: one row per method (sft, dpo, gdpo, ablations, baselines), columns among jsd,
    belief_mass, margin_majority / margin_minority (+ accuracy_*), jsd_sampled, noise_floor,
    bpc, cbc. A claim whose numbers are missing is left out.
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
    if "jsd_sampled" in t and "noise_floor" in t and len(t):
        floor = float(t["noise_floor"].iloc[0])
        close = [m for m in t.index if float(t.loc[m, "jsd_sampled"]) < floor + 0.05]
        out.append(f"Sampled JSD within 0.05 of the noise floor ({floor:.3f}): "
                   f"{', '.join(close) or 'none'}.")
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


def paper_findings(metrics: dict) -> list[tuple[str, bool | None, str]]:
    """The paper's findings checked on a run's metrics.json (test split): a list of
    (claim, holds, the numbers); holds is None when the run lacks the numbers.

    - DPO skews: JSD(DPO) - JSD(SFT) >= 0.05; its mean reward margin on majority-chosen pairs is
      at least twice the one on minority-chosen pairs.
    - GDPO calibrates: JSD(GDPO) < JSD(SFT); its minority/majority margin ratio is closer to 1
      than DPO's.
    - The model writes its outputs (so CBC, BPC and RS mean something): invalid rate <= 0.05 and
      CBC >= 0.9 for SFT, DPO and GDPO.
    """
    meth, skew = metrics.get("methods", {}), metrics.get("skew", {})

    def get(part: dict, m: str, k: str) -> float | None:
        v = part.get(m, {}).get(k)
        return None if v is None or not np.isfinite(v) else float(v)

    out: list[tuple[str, bool | None, str]] = []
    sft, dpo, gdpo = (get(meth, m, "jsd") for m in ("sft", "dpo", "gdpo"))
    if sft is None or dpo is None:
        out.append(("DPO raises JSD over SFT by >= 0.05", None, "not measured"))
    else:
        out.append(("DPO raises JSD over SFT by >= 0.05", dpo - sft >= 0.05,
                    f"SFT {sft:.3f}, DPO {dpo:.3f} ({dpo - sft:+.3f})"))
    if sft is None or gdpo is None:
        out.append(("GDPO's JSD is below SFT's", None, "not measured"))
    else:
        out.append(("GDPO's JSD is below SFT's", gdpo < sft,
                    f"GDPO {gdpo:.3f} vs SFT {sft:.3f} ({gdpo - sft:+.3f})"))
    maj = {m: get(skew, m, "margin_majority") for m in ("dpo", "gdpo")}
    mino = {m: get(skew, m, "margin_minority") for m in ("dpo", "gdpo")}
    claim = "DPO's majority-chosen margin is >= 2x its minority-chosen one"
    if maj["dpo"] is None or mino["dpo"] is None:
        out.append((claim, None, "not measured"))
    else:
        out.append((claim, maj["dpo"] >= 2 * mino["dpo"],
                    f"{maj['dpo']:.3f} vs {mino['dpo']:.3f}"))
    claim = "GDPO's minority/majority margin ratio is closer to 1 than DPO's"
    if any(v is None for v in (*maj.values(), *mino.values())) or not all(maj.values()):
        out.append((claim, None, "not measured"))
    else:
        ratio = {m: mino[m] / maj[m] for m in ("dpo", "gdpo")}
        out.append((claim, abs(ratio["gdpo"] - 1) < abs(ratio["dpo"] - 1),
                    f"GDPO {ratio['gdpo']:.2f}, DPO {ratio['dpo']:.2f}"))
    for m in ("sft", "dpo", "gdpo"):
        inv, cbc_ = get(meth, m, "invalid_rate"), get(meth, m, "cbc")
        claim = (f"{m.upper()} writes well-formed outputs (invalid <= "
                 f"{WELL_FORMED['invalid_rate']:.2f}, CBC >= {WELL_FORMED['cbc']:.1f})")
        if inv is None or cbc_ is None:
            out.append((claim, None, "not measured"))
        else:
            out.append((claim, inv <= WELL_FORMED["invalid_rate"] and cbc_ >= WELL_FORMED["cbc"],
                        f"invalid {inv:.3f}, CBC {cbc_:.3f}"))
    return out


def show_findings(run) -> list[str]:
    """Print the paper's findings on this run (paper_findings) and the run directory; in a
    pipeline run these are console lines. Returns the lines."""
    mark = {True: "yes", False: "NO ", None: " - "}
    lines = [f"findings ({run.cfg.country_name}, {run.cfg.model}, test split):"]
    lines += [f"  [{mark[ok]}] {claim}: {numbers}"
              for claim, ok, numbers in paper_findings(run.metrics())]
    lines.append(f"run directory: {run.root}")
    for line in lines:
        console.say(line)
    return lines
