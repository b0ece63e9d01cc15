"""Tables over several runs (seeds): mean, sd and number of seeds of each metric (the metric
registry's seed metrics), and that table in Markdown. The findings over seeds are rendered by
gdpolib.report.claims.seed_findings."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from gdpolib.metrics import registry as metric_registry

SEED_METRICS = metric_registry.keys(table="seeds", intervals=False)


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
