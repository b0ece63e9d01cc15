"""The tables and the figure of a sweep: one row per run x method collected from the runs'
metrics.json, the country x method summary, the multi-seed results (mean ± sd, findings with the
seeds they hold in) and the JSD figure. Read-only over run folders; gdpolib.sweep writes them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from gdpolib import methods as registry
from gdpolib.report import claims, seeds


def collect(cells: Sequence, methods: dict[str, list[str]]) -> pd.DataFrame:
    """One row per run x method: grid labels, the run's protocol (metrics.json data.protocol),
    the run name and every test number (claims.flat_numbers: an interval `<x>_ci` as
    `<x>_ci_lo` and `<x>_ci_hi`). `cells`: gdpolib.sweep.Cell (name, run_dir, labels());
    `methods`: cell name -> the methods it was asked for; the registry's baselines a run
    recorded come too, so that every table has them beside the methods."""
    rows = []
    for cell in cells:
        path = cell.run_dir / "metrics.json"
        if not path.exists():
            continue
        metrics = json.loads(path.read_text())
        protocol = metrics.get("data", {}).get("protocol")
        recorded = metrics.get("methods", {})
        for m in dict.fromkeys([*(b for b in registry.baselines() if b in recorded),
                                  *methods[cell.name]]):
            numbers = claims.flat_numbers({**recorded.get(m, {}),
                                           **metrics.get("skew", {}).get(m, {})})
            if "jsd" in numbers:
                labels = {**cell.labels(), **({"protocol": protocol} if protocol else {})}
                rows.append({**labels, "method": m, "run": cell.name, **numbers})
    return pd.DataFrame(rows)


def write_results(runs: pd.DataFrame, path: Path, method_order: Sequence[str]) -> str:
    """results.md: the multi-seed table (report.seeds.seed_summary: mean ± sd per protocol x grid
    cell x country x method) and each claim with the seeds it holds in
    (report.claims.seed_findings)."""
    # Deferred: the data package loads datasets, and --help or a config error should not wait.
    from gdpolib.data.splits import PROTOCOLS

    keys = [c for c in runs.columns if c not in ("seed", "run", "method", "split_by", "country")
            and not pd.api.types.is_numeric_dtype(runs[c])
            and (c != "params" or runs[c].nunique() > 1 or runs[c].iloc[0] != "-")] + ["country"]
    if "protocol" in keys:     # protocol first: one block of rows per protocol
        keys = ["protocol"] + [k for k in keys if k != "protocol"]
    summary = seeds.seed_summary(runs, keys, [*registry.baselines(), *method_order])
    text = "\n".join([
        f"# Results over {runs['seed'].nunique()} seed(s): mean ± sd", "",
        "Read-out metrics on the test prompts (jsd: renormalised over the belief set; "
        "jsd_digits: over all belief digits, the authors' convention; tvd; wasserstein: "
        "normalised, ordinal beliefs only). Protocols: " + "; ".join(
            f"`{p}` = {PROTOCOLS.get(p, p)}" for p in dict.fromkeys(
                runs.get("protocol", pd.Series(dtype=str)).dropna())) + ".", "",
        seeds.seed_markdown(summary, keys), "", "## Findings, with the seeds they hold in", "",
        *(f"- {line}" for line in claims.seed_findings(runs, keys)), "",
        "## The paper's findings as the demo checks them, with the seeds they hold in", "",
        *(f"- {line}" for line in claims.seed_findings(runs, keys, demo=True)), ""])
    path.write_text(text)
    return text


def summarize(runs: pd.DataFrame, method_order: Sequence[str]) -> pd.DataFrame:
    """country (x params x grid values) x method: JSD mean, sd, n seeds, other metrics' means."""
    if runs.empty:
        return runs
    keys = [c for c in runs.columns if c not in ("seed", "run", "method")
            and not pd.api.types.is_numeric_dtype(runs[c])] + ["method"]
    keys = [k for k in keys if k != "params" or runs["params"].nunique() > 1 or runs["params"].iloc[0] != "-"]
    others = [c for c in runs.columns if c not in (*keys, "seed", "run", "jsd")
              and pd.api.types.is_numeric_dtype(runs[c])]
    grouped = runs.groupby(keys, sort=False)
    table = grouped["jsd"].agg(jsd_mean="mean", jsd_sd="std", n_seeds="count")
    if others:
        table = table.join(grouped[others].mean())
    table = table.reset_index()
    # rows in grid order (countries as given), methods in the requested order within each
    cells = [k for k in keys if k != "method"]
    first: dict[tuple, int] = {}
    for row in runs[cells].itertuples(index=False):
        first.setdefault(tuple(row), len(first))
    table["_cell"] = [first[tuple(r)] for r in table[cells].itertuples(index=False)]
    order = list(dict.fromkeys([*registry.baselines(), *method_order]))      # the baselines first
    table["_method"] = table["method"].map({m: i for i, m in enumerate(order)})
    return (table.sort_values(["_cell", "_method"]).drop(columns=["_cell", "_method"])
            .reset_index(drop=True))


def to_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub Markdown table (no extra dependency); NaN as a dash."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "–" if v != v else f"{v:.{digits}f}"
        return str(v)

    head = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def plot_jsd(runs: pd.DataFrame, path: Path, method_order: Sequence[str]) -> None:
    """Bars of the mean test JSD by country and method (error bars: sd over seeds, dots: seeds);
    one panel per params file when there are several."""
    # Deferred: matplotlib/seaborn take seconds to import and only the summary needs them.
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    order = [m for m in method_order if m in set(runs["method"])]
    col = "params" if runs["params"].nunique() > 1 else None
    g = sns.catplot(data=runs, kind="bar", x="country", y="jsd", hue="method", hue_order=order,
                    col=col, errorbar="sd", height=3.6, aspect=1.3, alpha=0.8)
    for ax in g.axes.flat:
        sub = runs if col is None else runs[runs["params"] == ax.get_title().split(" = ")[-1]]
        sns.stripplot(data=sub, x="country", y="jsd", hue="method", hue_order=order, dodge=True,
                      ax=ax, palette="dark:black", size=3, legend=False)
        ax.set_ylabel("test JSD (lower is better)")
    g.figure.suptitle(f"Test JSD by country and method ({runs['seed'].nunique()} seed(s))", y=1.02)
    g.figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(g.figure)
