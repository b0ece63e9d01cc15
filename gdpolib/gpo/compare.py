"""Comparing GPO with the baselines over several seeds: the score of every (group, question)
pair, and the seed table (mean and sd over seeds, a bootstrap interval over test groups, the
paired gain over the meta-train mean, and the share of test groups on which a method beats it)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from gdpolib.gpo.groups import GroupOpinions
from gdpolib.metrics.alignment import alignment_pairs


def pair_scores(data: GroupOpinions, preds: dict) -> pd.DataFrame:
    """Alignment of every predicted (group, question) pair: columns group, qid, score (the pairs
    behind predict.score: JS for GOQA, WD for OpinionQA; WD pairs without a score are left out,
    a NaN prediction raises)."""
    rows, _, _ = alignment_pairs(preds, data.dists, data.ordinals)
    return pd.DataFrame(rows, columns=["group", "qid", "score"])


def summarise(pairs: pd.DataFrame, baseline: str = "train_mean", n_boot: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """The seed table of a seed_pairs frame (columns seed, k, method, group, qid, score), or
of per-group totals (columns seed, k, method, group, sum, count: the same table, smaller).

    One row per (k, method): `mean` and `sd` over seeds of the seed's score (micro mean over its
    test pairs); `ci_lo`, `ci_hi`: 95% bootstrap interval of that mean, resampling the test
    GROUPS of each seed (n_boot resamples; groups, not questions, are the unit GPO generalises
    over); `gain`, `gain_lo`, `gain_hi`: the same for the method's score minus the baseline's
    (paired: the same resampled groups); `beats`: share of (seed, test group) cells whose mean
    score is above the baseline's; `seeds`, `groups` (cells), `pairs`; `steps`: with a `step`
    column, the selected meta-training step of each seed ("300/250/300"; "" for a baseline).
    """
    keys = ["k", "method", "seed", "group"]
    totals = {"sum", "count"} <= set(pairs.columns)
    need = set(keys) | ({"sum", "count"} if totals else {"qid", "score"})
    if not need <= set(pairs.columns):
        raise ValueError(f"seed pairs need columns {sorted(need)}, got {list(pairs.columns)}")
    if baseline not in set(pairs.method):
        raise ValueError(f"baseline {baseline!r} is not among the methods {sorted(set(pairs.method))}")
    # per (k, method, seed, group): sum and count of pair scores
    cells = (pairs.groupby(keys)[["sum", "count"]].sum() if totals
             else pairs.groupby(keys).score.agg(["sum", "count"]))
    steps = {}             # (k, method) -> "300/250/300", the selected step of each seed
    if "step" in pairs.columns:
        chosen = pairs.dropna(subset=["step"]).groupby(["k", "method", "seed"]).step.first()
        steps = {km: "/".join(str(int(v)) for v in by_seed)
                 for km, by_seed in chosen.groupby(level=["k", "method"])}
    rng = np.random.default_rng(seed)
    draws: dict[tuple, np.ndarray] = {}          # (k, seed) -> [n_boot, n_groups] indices
    rows = []
    for (k, method), by_seed in cells.groupby(level=["k", "method"]):
        seed_means, boot, boot_gain, beats, n_cells = [], [], [], [], 0
        base = cells.loc[(k, baseline)]
        for s, g in by_seed.groupby(level="seed"):
            g = g.droplevel(["k", "method", "seed"])
            b = base.loc[s].reindex(g.index)
            if b["count"].isna().any():
                raise ValueError(f"seed {s}, k {k}: {baseline!r} lacks groups of {method!r}")
            seed_means.append(g["sum"].sum() / g["count"].sum())
            idx = draws.setdefault((k, s), rng.integers(0, len(g), size=(n_boot, len(g))))
            if idx.shape[1] != len(g):
                raise ValueError(f"seed {s}, k {k}: methods were scored on different groups")
            m_sum, m_cnt = g["sum"].to_numpy()[idx].sum(1), g["count"].to_numpy()[idx].sum(1)
            b_sum, b_cnt = b["sum"].to_numpy()[idx].sum(1), b["count"].to_numpy()[idx].sum(1)
            boot.append(m_sum / m_cnt)
            boot_gain.append(m_sum / m_cnt - b_sum / b_cnt)
            beats.extend(g["sum"] / g["count"] > b["sum"] / b["count"])
            n_cells += len(g)
        boot_mean, gain_mean = np.mean(boot, axis=0), np.mean(boot_gain, axis=0)
        base_means = [base.loc[s]["sum"].sum() / base.loc[s]["count"].sum()
                      for s in by_seed.index.get_level_values("seed").unique()]
        rows.append({"k": k, "method": method, "mean": float(np.mean(seed_means)),
                     "sd": float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else np.nan,
                     "ci_lo": float(np.percentile(boot_mean, 2.5)),
                     "ci_hi": float(np.percentile(boot_mean, 97.5)),
                     "gain": float(np.mean(seed_means) - np.mean(base_means)),
                     "gain_lo": float(np.percentile(gain_mean, 2.5)),
                     "gain_hi": float(np.percentile(gain_mean, 97.5)),
                     "beats": float(np.mean(beats)), "seeds": len(seed_means), "groups": n_cells,
                     "pairs": int(by_seed["count"].sum()),
                     "steps": steps.get((k, method), "")})
    return pd.DataFrame(rows)


def seed_table_text(summary: pd.DataFrame, methods=None, digits: int = 3) -> pd.DataFrame:
    """The seed table for reading: one row per method, one column per k, cells
    "mean ± sd [ci_lo, ci_hi]" (and the share of groups beating the baseline for GPO rows, and
    a GPO method's selected steps)."""
    methods = methods or list(dict.fromkeys(summary.method))
    out = {}
    for k, by_k in summary.groupby("k"):
        col = {}
        for r in by_k.itertuples():
            sd = "" if np.isnan(r.sd) else f" ± {r.sd:.{digits}f}"
            cell = f"{r.mean:.{digits}f}{sd} [{r.ci_lo:.{digits}f}, {r.ci_hi:.{digits}f}]"
            if r.method.startswith("gpo") or r.method in ("ridge", "knn"):
                cell += f" beats mean {r.beats:.0%}"
            if getattr(r, "steps", ""):
                cell += f", step {r.steps}"
            col[r.method] = cell
        out[f"k={k}"] = col
    return pd.DataFrame(out).reindex([m for m in methods if m in set(summary.method)])
