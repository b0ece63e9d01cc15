"""Seaborn figures, saved under the run's figures/ folder. Each function returns the Figure.

Other modules append their plot functions below the data block.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from gdpolib.metrics.distances import renormalise


def _start(text: str, width: int) -> str:
    """A title's first `width` characters, cut at a word, with "..." when cut: the start of a
    question says what it asks; its last characters often do not."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width].rsplit(" ", 1)[0] + "..."


def save(fig, run_or_dir, name: str) -> Path:
    """Save `fig` as figures/<name>.png of a Run (or into a folder); returns the path."""
    folder = run_or_dir.path("figures", "x").parent if hasattr(run_or_dir, "path") \
        else Path(run_or_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


# =============================================================================== data (notebook 01)
def plot_country_counts(counts: Mapping[str, int], highlight: Sequence[str] = (), top: int = 30,
                        survey: str = "GlobalOpinionQA", unit: str = "country"):
    """Bar chart of questions per country or group (the `top` largest, plus the highlighted)."""
    items = sorted(counts.items(), key=lambda kv: -kv[1])
    keep = dict(items[:top])
    keep.update({c: counts[c] for c in highlight if c in counts})
    names = sorted(keep, key=lambda c: -keep[c])
    fig, ax = plt.subplots(figsize=(7, max(3, 0.22 * len(names))))
    colors = ["#d62728" if c in highlight else "#7f7f7f" for c in names]
    sns.barplot(x=[keep[c] for c in names], y=names, hue=names, palette=colors, legend=False,
                ax=ax)
    ax.set_xlabel("questions with a distribution")
    ax.set_ylabel("")
    ax.set_title(f"{survey} questions per {unit} (top {top}; highlighted in red)")
    return fig


def plot_majority_share(p_stars: Mapping[str, Sequence[np.ndarray]]):
    """Distribution over questions of the majority belief's share max_b p*(b|x), per group."""
    df = pd.DataFrame([{"group": g, "majority share": float(np.max(p))}
                       for g, ps in p_stars.items() for p in ps])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.histplot(df, x="majority share", hue="group", bins=20, binrange=(0, 1),
                 element="step", stat="density", common_norm=False, ax=ax)
    ax.set_title("How dominant is the majority belief? (1.0 = everyone agrees)")
    return fig


def plot_p_star_bars(questions, n: int = 6, width: int = 38):
    """Several questions' p* as bars, one panel per question (QuestionBeliefs list)."""
    qs = list(questions)[:n]
    cols = min(3, len(qs))
    rows = int(np.ceil(len(qs) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows), squeeze=False)
    for ax, q in zip(axes.ravel(), qs):
        ks = q.beliefs
        labels = [f"{k}. {q.labels[k][:22]}" for k in ks]
        sns.barplot(x=[q.p_star[k] for k in ks], y=labels, ax=ax, color="#1f77b4")
        ax.set_xlim(0, 1)
        ax.set_xlabel("p*(b|x)")
        ax.set_title(_start(q.question, width), fontsize=8)
    for ax in axes.ravel()[len(qs):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_sampled_vs_target(records, k_max: int, column: str = "b"):
    """Empirical frequency of the drawn belief (per question) against p*: the points should lie
    on the diagonal, up to sampling noise. records: rows with qid, p_star and `column`."""
    by_q: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for r in records:
        counts, p = by_q.setdefault(r["qid"], (np.zeros(k_max), np.asarray(r["p_star"])))
        counts[r[column]] += 1
    df = pd.DataFrame([{"p*": p[k], "drawn frequency": c[k] / c.sum()}
                       for c, p in by_q.values() for k in range(k_max) if p[k] > 0])
    fig, ax = plt.subplots(figsize=(4, 4))
    sns.scatterplot(df, x="p*", y="drawn frequency", alpha=0.4, s=14, ax=ax)
    ax.plot([0, 1], [0, 1], color="k", lw=0.8)
    ax.set_title(f"Beliefs drawn for '{column}' vs p*")
    return fig
# =============================================================================== end of data block


# ---- evaluation ----
READOUT_METRICS = ("jsd", "jsd_digits", "tvd")                           # lower is better
SAMPLED_METRICS = ("jsd_sampled", "invalid_rate", "cbc", "bpc", "rs")


def plot_eval_metrics(table, interpretable: Mapping[str, bool] | None = None):
    """The Table-2 numbers as two panels of bars, one bar per method: the belief distribution
    read at the answer position (every method and baseline; lower is better) and the sampled
    outputs (methods that generate). table: DataFrame indexed by method
    (evaluate.evaluate_methods). `interpretable`: method -> whether its outputs are well-formed
    (report.claims.well_formed); a method that is not has its CBC, BPC, RS and sampled-JSD bars
    hatched and named in the title, as not interpretable. The dashed line is the sampled JSD's noise
    floor (a calibrated model's value at the same number of samples)."""
    read_cols = [c for c in READOUT_METRICS if c in table.columns]
    samp_cols = [c for c in SAMPLED_METRICS if c in table.columns and table[c].notna().any()]
    sampled = [m for m in table.index if samp_cols and table.loc[m, samp_cols].notna().any()]
    bad = [m for m in sampled if (interpretable or {}).get(m) is False]
    widths = [max(len(read_cols), 1), max(len(samp_cols), 1)] if samp_cols else [1]
    fig, axes = plt.subplots(1, len(widths), figsize=(3 + 1.7 * sum(widths), 4), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    palette = dict(zip(table.index, sns.color_palette(n_colors=len(table.index))))

    def bars(ax, cols, methods):
        long = table.loc[methods, cols].rename_axis("method").reset_index().melt(
            id_vars="method", var_name="metric", value_name="value")
        sns.barplot(data=long, x="metric", y="value", hue="method", palette=palette, ax=ax)
        ax.set(xlabel="", ylabel="")
        return long

    bars(axes[0, 0], read_cols, list(table.index))
    axes[0, 0].set_title("Belief distribution vs p* (read-out; lower is better)", fontsize=10)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    if samp_cols:
        ax = axes[0, 1]
        long = bars(ax, samp_cols, sampled)
        # one bar container per method (seaborn's hue), its bars in the metrics' order
        for container, method in zip(ax.containers, dict.fromkeys(long["method"])):
            if method not in bad:
                continue
            for patch, metric in zip(container, samp_cols):
                if metric != "invalid_rate":
                    patch.set_hatch("///")
                    patch.set_alpha(0.45)
        handles, labels = ax.get_legend_handles_labels()
        if "noise_floor" in table and "jsd_sampled" in samp_cols and table["noise_floor"].notna().any():
            x = samp_cols.index("jsd_sampled")
            handles.append(ax.hlines(float(table["noise_floor"].dropna().iloc[0]), x - 0.45,
                                     x + 0.45, colors="k", linestyles="--", zorder=5))
            labels.append("noise floor")
        ax.legend(handles, labels, fontsize=7, loc="upper right")
        note = (f"\nhatched: not interpretable ({', '.join(bad)} not well-formed)" if bad
                else "\nall sampled methods well-formed")
        ax.set_title("Sampled outputs (invalid_rate, jsd_sampled: lower is better)" + note,
                     fontsize=10)
    fig.tight_layout()
    return fig


def plot_eval_distributions(frame):
    """Predicted vs target belief distributions, one panel per question, a bar per belief and
    source (target p* or a method). frame: evaluate.distributions_frame(...)."""
    qids = list(dict.fromkeys(frame["qid"]))
    fig, axes = plt.subplots(len(qids), 1, figsize=(10, 3.2 * len(qids)), squeeze=False)
    for ax, q in zip(axes[:, 0], qids):
        sns.barplot(data=frame[frame["qid"] == q], x="label", y="prob", hue="source", ax=ax)
        sub = frame[frame["qid"] == q]
        title = f"{q}: {sub['question'].iloc[0]}" if "question" in sub else f"question {q}"
        ax.set(title=_start(title, 110), xlabel="", ylabel="p(belief)")
        ax.tick_params(axis="x", labelsize=7, rotation=15)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    return fig


# ---- training ----
def plot_margins(tracks, methods: Sequence[str] = ("dpo", "gdpo")):
    """Mean reward margin on the fixed eval pairs over training steps, majority-chosen (solid) vs
    minority-chosen (dashed) pairs: one panel per method on the SAME conflicting pairs (the
    skew, like for like), and for GDPO one more on its own shared-belief pairs, where the belief
    prefix cancels (the paper's Finding 1). tracks: DataFrame of tracking records
    (report.frames.load_tracks) with method, step, margin_* and, for the GDPO family,
    shared_margin_*."""
    present = set(tracks["method"])
    panels = [(m, "margin_", "conflicting eval pairs") for m in methods if m in present]
    panels += [(m, "shared_margin_", "its own shared-belief eval pairs")
               for m in methods if m in present and "shared_margin_majority" in tracks
               and tracks.loc[tracks["method"] == m, "shared_margin_majority"].notna().any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False,
                             sharey=True)
    for ax, (m, prefix, what) in zip(axes[0], panels):
        t = tracks[tracks["method"] == m]
        long = pd.concat([pd.DataFrame({"step": t["step"], "margin": t[f"{prefix}{g}"],
                                        "chosen belief": g}) for g in ("majority", "minority")])
        sns.lineplot(data=long, x="step", y="margin", hue="chosen belief", style="chosen belief",
                     markers=True, ax=ax, palette={"majority": "#d62728", "minority": "#1f77b4"})
        ax.axhline(0, color="k", lw=0.6)
        ax.set(ylabel="beta * log-ratio margin vs SFT")
        ax.set_title(f"{m.upper()}: reward margin on {what}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_jsd_over_steps(tracks, sft_steps: int | None = None):
    """Eval JSD (left) and belief-token mass (right) over training steps for every method on one
    figure. Preference methods start where SFT ended: their steps are shifted by `sft_steps`
    (default: the last SFT step in tracks), so the curves read as one training timeline."""
    t = tracks.copy()
    if sft_steps is None:
        sft_steps = int(t.loc[t["method"] == "sft", "step"].max()) if (t["method"] == "sft").any() else 0
    t["training step"] = t["step"] + np.where(t["method"] == "sft", 0, sft_steps)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, col, label in ((axes[0], "jsd", "eval JSD vs p* (lower is better)"),
                           (axes[1], "belief_mass", "mass on belief tokens")):
        sns.lineplot(data=t, x="training step", y=col, hue="method", marker="o", ax=ax)
        if sft_steps:
            ax.axvline(sft_steps, color="k", lw=0.6, ls=":")
        ax.set(title=label, ylabel="")
    fig.tight_layout()
    return fig


def plot_belief_bars(p_star, dists: Mapping[str, np.ndarray], mask, labels: Sequence[Sequence[str]],
                     titles: Sequence[str], width: int = 120):
    """Belief distributions on several prompts: p* against each model's renormalised
    distribution (e.g. {"SFT": probs, "DPO": probs}), one panel per prompt.
    p_star, mask: [N, K]; dists: name -> [N, K] probabilities; labels: N lists of K labels."""
    rows = []
    for i in range(len(titles)):
        ks = [k for k in range(len(mask[i])) if mask[i][k]]
        sources = {"p* (target)": renormalise(p_star[i:i + 1], mask[i:i + 1])[0]}
        sources.update({n: renormalise(d[i:i + 1], mask[i:i + 1])[0] for n, d in dists.items()})
        for name, p in sources.items():
            rows += [{"prompt": i, "belief": f"{k}. {labels[i][k][:18]}", "p": p[k], "source": name}
                     for k in ks]
    df = pd.DataFrame(rows)
    n = len(titles)
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.8 * n), squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        sns.barplot(data=df[df["prompt"] == i], x="belief", y="p", hue="source", ax=ax)
        ax.set(title=_start(titles[i], width), xlabel="", ylabel="p(belief)")
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    return fig


# ---- GPO ----
def plot_gpo_embeddings(emb, data, n_questions: int = 12, seed: int = 0):
    """2-D PCA of the (question, option) embeddings: every option of `n_questions` random
    questions, one colour per question (options of a question should sit together)."""
    rng = np.random.default_rng(seed)
    qids = sorted(emb.index)
    pick = [qids[i] for i in rng.choice(len(qids), min(n_questions, len(qids)), replace=False)]
    x = emb.vectors - emb.vectors.mean(0)
    _, _, vt = np.linalg.svd(x[rng.choice(len(x), min(2000, len(x)), replace=False)],
                             full_matrices=False)
    rows = []
    for q in pick:
        for o, v in enumerate(emb.rows(q) - emb.vectors.mean(0)):
            rows.append({"pc1": float(v @ vt[0]), "pc2": float(v @ vt[1]),
                         "question": data.items[q].question[:40] + "...",
                         "option": data.items[q].options[o]})
    fig, ax = plt.subplots(figsize=(8, 5))
    sns.scatterplot(pd.DataFrame(rows), x="pc1", y="pc2", hue="question", ax=ax, s=40)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1, 0.5))
    ax.set_title(f"{emb.model} embeddings of (question, option), PCA ({emb.dim} dims)")
    return fig


def plot_gpo_training(history):
    """Meta-training loss per step (smoothed) and the validation groups' alignment score."""
    df = pd.DataFrame(history)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    axes[0].plot(df["step"], df["loss"], alpha=0.3, color="#7f7f7f")
    axes[0].plot(df["step"], df["loss"].rolling(25, min_periods=1).mean(), color="#1f77b4")
    axes[0].set(xlabel="step", ylabel="loss", title="GPO meta-training loss")
    if "val_score" in df:
        val = df.dropna(subset=["val_score"])
        sns.lineplot(val, x="step", y="val_score", marker="o", ax=axes[1])
        axes[1].set(ylabel="alignment", title="validation groups (model selection)")
    return fig


def plot_gpo_alignment(table):
    """Alignment score per method and test group (bars), from stages.gpo.alignment_table."""
    per = table[table.group != "ALL"]
    order = per.groupby("group")["score"].mean().sort_values().index
    fig, ax = plt.subplots(figsize=(max(7, 0.6 * len(order)), 4))
    sns.barplot(per, x="group", y="score", hue="method", order=order, ax=ax)
    lo = max(0.0, per["score"].min() - 0.05)
    ax.set(ylim=(lo, 1.0), xlabel="", ylabel="alignment (1 - distance)")
    plt.setp(ax.get_xticklabels(), rotation=50, ha="right", rotation_mode="anchor")
    ax.legend(fontsize=8, ncol=len(per["method"].unique()))
    ax.set_title("Alignment on held-out groups")
    return fig


def plot_gpo_k_curve(curve, paper: Mapping[str, float] | None = None):
    """Alignment vs the number of context questions k, per method (stages.gpo.k_curve); `paper`
    draws reference lines (e.g. {"GPO (paper, GOQA)": 0.82})."""
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(curve, x="k", y="score", hue="method", marker="o", ax=ax)
    for label, value in (paper or {}).items():
        ax.axhline(value, ls=":", color="#7f7f7f")
        ax.text(curve["k"].min(), value, label, fontsize=8, va="bottom")
    ax.set(xscale="log", xlabel="context questions k", ylabel="alignment")
    ax.set_title("Few-shot scaling (same target questions for every k)")
    return fig


def plot_gpo_predictions(frame, width: int = 45):
    """Predicted vs true distributions for a few questions (stages.gpo.predicted_vs_true)."""
    qids = list(dict.fromkeys(frame["qid"]))
    cols = min(2, len(qids))
    rows = int(np.ceil(len(qids) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.2 * rows), squeeze=False)
    for ax, q in zip(axes.ravel(), qids):
        sub = frame[frame.qid == q]
        sns.barplot(sub, y="option", x="p", hue="source", ax=ax, orient="h")
        text = sub["question"].iloc[0]
        ax.set_title(text[:width] + ("..." if len(text) > width else ""), fontsize=9)
        ax.set(ylabel="", xlim=(0, 1))
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(qids):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_gpo_fewshot_gdpo(frame):
    """JSD to the TRUE p* (lower is better) of GPO's prediction, GDPO trained on it, and GDPO
    trained on the true p* (stages.fewshot_gdpo.few_shot_gdpo)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    sns.barplot(frame, x="method", y="jsd", hue="method", ax=ax, legend=False)
    for i, v in enumerate(frame["jsd"]):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=9)
    ax.set(xlabel="", ylabel="JS distance to true p*")
    ax.set_title("Few-shot GDPO: predicted vs measured target")
    return fig
