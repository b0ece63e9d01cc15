"""The paper's Table 2 beside ours: the layout (metrics as rows in the metric registry's order,
methods as columns in the method registry's), the paper's numbers for its own setting (its JSD
beside our `jsd_digits`, the authors' convention), written as CSV and Markdown."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from gdpolib import methods as registry
from gdpolib.metrics import registry as metric_registry
from gdpolib.report.claims import WELL_FORMED, table_reader, well_formed
from gdpolib.report.frames import format_ci, protocol_line

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


# Rows of the Table-2 layout, in order (the metric registry's); `<x>_ci` rows hold "[low, high]".
TABLE2_ROWS = metric_registry.keys(table="table2")
# The sampled-text metrics, which mean nothing for a model whose outputs do not parse.
TEXT_METRICS = metric_registry.well_formed_keys()
NOT_INTERPRETABLE = "\u2020"     # marks a text metric of a model that is not well-formed
# The paper's JSD is the authors' convention (renormalised over all belief digits): our row
# `jsd_digits`. Its other metrics keep their names.
PAPER_ROW = {"jsd": "jsd_digits"}


def table2(table: pd.DataFrame, cfg) -> pd.DataFrame:
    """Table-2 layout: metrics as rows (TABLE2_ROWS present), methods as columns, intervals as
    "[low, high]" strings, the TEXT_METRICS of a method that is not well-formed as
    "0.016\u2020" (not interpretable); the paper's numbers in columns `paper:<method>` beside
    ours when the run matches the paper's setting (paper_setting), its JSD in our row
    `jsd_digits` (the convention it was computed with)."""
    out = table[[c for c in TABLE2_ROWS if c in table]].T.astype(object)
    out = out.apply(lambda col: col.map(format_ci)).astype(object)
    v = table_reader(table)
    for m in table.index:
        if well_formed(v, m) is False:     # its text metrics measure the format, not beliefs
            for r in (r for r in TEXT_METRICS if r in out.index and pd.notna(out.loc[r, m])):
                out.loc[r, m] = f"{float(out.loc[r, m]):.3f}{NOT_INTERPRETABLE}"
    setting = paper_setting(cfg)
    if setting:
        paper = PAPER_TABLE2[setting]
        ours = {PAPER_ROW.get(k, k): k for k in next(iter(paper.values()))}
        for m in table.index:
            if m in paper:
                out[f"paper:{m}"] = [paper[m].get(ours.get(r, ""), np.nan) for r in out.index]
    out.index.name = "metric"
    return out


def notes(rows, methods) -> list[str]:
    """What the rows and columns of a Table 2 mean, from the metric and method registries."""
    shown = [r for r in rows if not r.endswith("_ci")]
    text = "; ".join(f"{r}: {metric_registry.get(r).meaning}" for r in shown)
    cols = "; ".join(f"{m}: {registry.get(m).description}" for m in methods
                     if m in registry.BY_NAME)
    return [f"Rows. {text}. *_ci: {metric_registry.CI}.", "", f"Columns. {cols}."]


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
    lines += ["", *notes(t2.index, table.index), "", f"BPC judge: {cfg.judge}.", "",
              f"{NOT_INTERPRETABLE} not interpretable: the method's outputs are not well-formed "
              f"(invalid_rate > {WELL_FORMED['invalid_rate']:.2f} or cbc < "
              f"{WELL_FORMED['cbc']:.1f}), so its sampled-text metrics ({', '.join(TEXT_METRICS)}) "
              f"measure the format, not its beliefs; compare them only between well-formed "
              f"methods."]
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
