"""The paper's findings as claims, in ONE list (CLAIMS), and the one mechanism that renders them:
for a run's table (the notebooks: `findings`), for its metrics.json (the demo's console lines:
`show_findings`; the model card: `card_lines`), and over several runs (the seed counts of the
sweep and of the README's tables: `seed_findings`).

A claim is a sentence and a difference of the run's numbers: it holds when the difference is
> 0 (>= 0 when `inclusive`: a bar written with >=); a number the run lacks leaves it "not
measured", never true or false. Claims about a preference baseline are made for every method of
role "preference baseline" in the method registry (DPO, and any added there). `demo` claims are
the paper's findings with the bars the demo is checked against.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from gdpolib import console
from gdpolib import methods as registry

Reader = Callable[[str, str], float]     # v(method, metric): one run's number; KeyError if absent


@dataclass(frozen=True)
class Claim:
    """One finding: its sentence, the difference that says whether it holds, the numbers shown
    beside it."""

    text: str
    difference: Callable[[Reader], float]
    numbers: Callable[[Reader], str]
    inclusive: bool = False
    demo: bool = False

    def check(self, v: Reader) -> tuple[bool | None, str]:
        """(holds, the numbers); (None, "not measured") when a number is missing or a margin
        ratio divides by zero."""
        try:
            d = self.difference(v)
            return (d >= 0 if self.inclusive else d > 0), self.numbers(v)
        except (KeyError, ZeroDivisionError):
            return None, "not measured"


def _label(m: str) -> str:
    return {"zeroshot": "zero-shot", "context_free": "context-free"}.get(
        m, m.upper() if m in registry.BY_NAME else m)


def _below(m: str, ref: str, metric: str, text: str) -> Claim:
    """`m` is below `ref` in `metric`."""
    return Claim(text, lambda v: v(ref, metric) - v(m, metric),
                 lambda v: f"{_label(m)} {v(m, metric):.3f}, {_label(ref)} {v(ref, metric):.3f}")


def _above(m: str, ref: str, metric: str, text: str) -> Claim:
    """`m` is above `ref` in `metric`."""
    return Claim(text, lambda v: v(m, metric) - v(ref, metric),
                 lambda v: f"{_label(m)} {v(m, metric):.3f}, {_label(ref)} {v(ref, metric):.3f}")


def _gap(m: str) -> Callable[[Reader], float]:
    """A method's majority - minority margin on the conflicting test pairs (its skew)."""
    return lambda v: v(m, "margin_majority") - v(m, "margin_minority")


def _margins(m: str, v: Reader) -> str:
    return f"{_label(m)} {v(m, 'margin_majority'):.3f} vs {v(m, 'margin_minority'):.3f}"


def _gaps(m: str, v: Reader) -> str:
    return (f"{_label(m)} {v(m, 'margin_majority'):.3f} - {v(m, 'margin_minority'):.3f} = "
            f"{_gap(m)(v):.3f}")


def _paired(m: str, ref: str, v: Reader) -> str:
    """"GDPO - SFT -0.020 [-0.031, -0.009]": a paired difference with its 95% interval."""
    return (f"{_label(m)} - {_label(ref)} {v(m, f'jsd_vs_{ref}'):+.3f} "
            f"[{v(m, f'jsd_vs_{ref}_ci_lo'):+.3f}, {v(m, f'jsd_vs_{ref}_ci_hi'):+.3f}]")


def _paired_below(m: str, ref: str, text: str) -> Claim:
    """`m`'s JSD is below `ref`'s by a paired 95% interval (question by question) below 0."""
    return Claim(text, lambda v: -v(m, f"jsd_vs_{ref}_ci_hi"), lambda v: _paired(m, ref, v))


def _preference_claims(b: str) -> tuple[list[Claim], list[Claim]]:
    """The claims about the preference baseline `b` (DPO in the paper): on JSD, then on the
    belief-token mass and the margins (on the same conflicting test pairs for every method)."""
    B = _label(b)
    jsd = [_above(b, "sft", "jsd", f"{B} raises jsd over SFT"),
           Claim(f"{B} raises jsd over SFT, paired 95% interval above 0",
                 lambda v: v(b, "jsd_vs_sft_ci_lo"), lambda v: _paired(b, "sft", v)),
           _above(b, "sft", "jsd_digits", f"{B} raises jsd_digits over SFT"),
           _below("gdpo", b, "jsd", f"GDPO lowers jsd below {B}"),
           _below("gdpo", b, "jsd_digits", f"GDPO lowers jsd_digits below {B}")]
    rest = [_below(b, "sft", "belief_mass", f"{B} lowers the belief-token mass below SFT"),
            Claim(f"{B}'s majority-chosen margins exceed its minority-chosen ones (conflicting "
                  f"test pairs)", _gap(b), lambda v: _margins(b, v)),
            Claim(f"GDPO's majority-minority margin gap is smaller than {B}'s (the same "
                  f"conflicting test pairs)", lambda v: _gap(b)(v) - _gap("gdpo")(v),
                  lambda v: f"{_gaps('gdpo', v)}; {_gaps(b, v)}")]
    return jsd, rest


# ----------------------------------------------------------------------------- the demo's bars
# A model writes well-formed outputs when at most 5% of its samples do not parse and at least
# 90% bind the digit to its own label (CBC); otherwise its sampled-text metrics measure the
# format, not its beliefs.
WELL_FORMED = {"invalid_rate": 0.05, "cbc": 0.9}


def well_formed(v: Reader, method: str) -> bool | None:
    """Does `method` write well-formed outputs (WELL_FORMED)? None when it was not sampled."""
    try:
        return (v(method, "invalid_rate") <= WELL_FORMED["invalid_rate"]
                and v(method, "cbc") >= WELL_FORMED["cbc"])
    except KeyError:
        return None


def _well_formed(m: str) -> Claim:
    bars = WELL_FORMED
    return Claim(f"{m.upper()} writes well-formed outputs (invalid <= {bars['invalid_rate']:.2f}, "
                 f"CBC >= {bars['cbc']:.1f})",
                 lambda v: min(bars["invalid_rate"] - v(m, "invalid_rate"), v(m, "cbc") - bars["cbc"]),
                 lambda v: f"invalid {v(m, 'invalid_rate'):.3f}, CBC {v(m, 'cbc'):.3f}", True, True)


def _demo(claim: Claim, inclusive: bool = False) -> Claim:
    return dataclasses.replace(claim, inclusive=inclusive, demo=True)


# The paper's findings with the bars the demo is checked against. JSD differences are the paired
# per-question ones with their 95% bootstrap interval; margins are on the same conflicting test
# pairs for DPO and GDPO, and the "2x" claim needs a positive majority margin.
DEMO_CLAIMS: tuple[Claim, ...] = (
    _demo(Claim("DPO raises JSD over SFT by >= 0.05", lambda v: v("dpo", "jsd_vs_sft") - 0.05,
                lambda v: f"SFT {v('sft', 'jsd'):.3f}, DPO {v('dpo', 'jsd'):.3f}; "
                          f"{_paired('dpo', 'sft', v)}"), inclusive=True),
    _demo(Claim("GDPO's JSD is below SFT's", lambda v: -v("gdpo", "jsd_vs_sft"),
                lambda v: f"GDPO {v('gdpo', 'jsd'):.3f}, SFT {v('sft', 'jsd'):.3f}; "
                          f"{_paired('gdpo', 'sft', v)}")),
    *(_demo(Claim(f"{m.upper()}'s JSD is below the context-free baseline's (paired 95% "
                  f"interval below 0)", lambda v, m=m: -v(m, "jsd_vs_context_free_ci_hi"),
                  lambda v, m=m: f"{_paired(m, 'context_free', v)}; context-free "
                                 f"{v('context_free', 'jsd'):.3f}"))
      for m in ("sft", "gdpo")),
    _demo(Claim("DPO's majority-chosen margin is positive and >= 2x its minority-chosen one "
                "(conflicting test pairs)",
                lambda v: min(v("dpo", "margin_majority"),
                              v("dpo", "margin_majority") - 2 * v("dpo", "margin_minority")),
                lambda v: f"{v('dpo', 'margin_majority'):.3f} vs "
                          f"{v('dpo', 'margin_minority'):.3f}")),
    _demo(Claim("GDPO's majority - minority margin gap is smaller than DPO's (the same "
                "conflicting test pairs)", lambda v: _gap("dpo")(v) - _gap("gdpo")(v),
                lambda v: f"{_gaps('gdpo', v)}; {_gaps('dpo', v)}")),
    *(_well_formed(m) for m in ("sft", "dpo", "gdpo")),
)


def _all_claims() -> tuple[Claim, ...]:
    parts = [_preference_claims(b) for b in registry.names(lambda m: m.role == "preference baseline")]
    return (*(c for jsd, _ in parts for c in jsd),
            _below("gdpo", "sft", "jsd", "GDPO lowers jsd below SFT"),
            _paired_below("gdpo", "sft", "GDPO lowers jsd below SFT, paired 95% interval below 0"),
            _below("sft", "uniform", "jsd", "SFT is below uniform in jsd"),
            *(_paired_below(m, "context_free", f"{_label(m)} is below the context-free baseline "
                                               f"in jsd, paired 95% interval below 0")
              for m in ("sft", "gdpo")),
            _below("sft", "zeroshot", "jsd", "SFT is below zero-shot in jsd"),
            *(c for _, rest in parts for c in rest),
            *DEMO_CLAIMS)


CLAIMS: tuple[Claim, ...] = _all_claims()


def claims(demo: bool | None = None) -> tuple[Claim, ...]:
    """CLAIMS: all (demo None), the demo's bars (True) or the others (False)."""
    return tuple(c for c in CLAIMS if demo is None or c.demo == demo)


# ----------------------------------------------------------------------------- readers
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


def reader(records: Mapping[str, Mapping[str, Any]]) -> Reader:
    """`v(method, metric)` over {method: numbers} (flat_numbers of each: an interval's ends are
    `<x>_ci_lo` / `<x>_ci_hi`); KeyError when a number is absent or not finite."""
    flat = {m: flat_numbers(r) for m, r in records.items()}

    def v(method: str, metric: str) -> float:
        try:
            return flat[method][metric]
        except KeyError:
            raise KeyError(f"{method}.{metric}") from None
    return v


def metrics_reader(metrics: Mapping[str, Any]) -> Reader:
    """reader() over a run's metrics.json: methods.<m> and skew.<m> of each method."""
    names = set(metrics.get("methods", {})) | set(metrics.get("skew", {}))
    return reader({m: {**metrics.get("methods", {}).get(m, {}), **metrics.get("skew", {}).get(m, {})}
                   for m in names})


def table_reader(table: pd.DataFrame) -> Reader:
    """reader() over a methods x metrics table (evaluate_methods, results_table)."""
    return reader({m: row.dropna().to_dict() for m, row in table.iterrows()})


MARK = {True: "yes", False: "NO ", None: " - "}


def check(v: Reader, which: Sequence[Claim] = CLAIMS) -> list[tuple[str, bool | None, str]]:
    """Each claim checked with the reader `v`: (claim, holds, the numbers)."""
    return [(c.text, *c.check(v)) for c in which]


# ----------------------------------------------------------------------------- one run
def findings(table: pd.DataFrame) -> list[str]:
    """What a run's numbers say, in sentences with the numbers (notebooks 02-04): each claim
    the table has the numbers for, "[yes]" or "[NO ]" (the demo's first), then what the claims
    do not say: the baselines, GDPO's margins on its own pairs, the ablations, which methods'
    text metrics are interpretable and how they compare, and the sampled JSD against its noise
    floor.

    table: one row per method (sft, dpo, gdpo, ablations, baselines), columns among those of
    evaluate_methods / results_table.
    """
    v = table_reader(table)
    out = [f"[{MARK[ok]}] {text}: {numbers}"
           for text, ok, numbers in check(v, claims(demo=True) + claims(demo=False))
           if ok is not None]

    def has(m: str, *cols: str) -> bool:
        try:
            return all(np.isfinite(v(m, c)) for c in cols)
        except KeyError:
            return False

    base = [f"{_label(m).lower()} {v(m, 'jsd'):.3f}" for m in registry.baselines() if has(m, "jsd")]
    if base:
        below = [m for m in table.index if m not in registry.baselines()
                 and has(m, "jsd_vs_context_free_ci_hi") and v(m, "jsd_vs_context_free_ci_hi") < 0]
        out.append(f"Baselines (test JSD): {', '.join(base)}. Below the context-free baseline by a "
                   f"paired 95% interval: {', '.join(below) or 'none'}.")
    if has("gdpo", "shared_margin_majority", "shared_margin_minority"):
        out.append(f"GDPO on its own shared-belief pairs (the paper's Finding 1; the belief prefix "
                   f"cancels there): margin majority {v('gdpo', 'shared_margin_majority'):.3f}, "
                   f"minority {v('gdpo', 'shared_margin_minority'):.3f}.")
    out += [f"Ablation {m}: test JSD {v(m, 'jsd'):.3f}."
            for m in registry.names(lambda x: x.role == "ablation") if has(m, "jsd")]
    sampled = [m for m in table.index if well_formed(v, m) is not None]
    good = [m for m in sampled if well_formed(v, m)]
    bad = [f"{m} (invalid {v(m, 'invalid_rate'):.3f}, CBC {v(m, 'cbc'):.3f})"
           for m in sampled if m not in good]
    if bad:
        out.append(f"Not well-formed, so CBC, BPC, RS and sampled JSD are NOT interpretable for: "
                   f"{', '.join(bad)}.")
    for b in registry.names(lambda x: x.role == "preference baseline"):
        for metric in ("bpc", "cbc"):
            if "gdpo" in good and b in good and has("gdpo", metric) and has(b, metric):
                better = v("gdpo", metric) > v(b, metric)
                out.append(f"gdpo {metric} {v('gdpo', metric):.3f} vs {b} {v(b, metric):.3f}: "
                           f"gdpo is {'better' if better else 'NOT better'}.")
    floors = [v(m, "noise_floor") for m in good if has(m, "noise_floor")]
    if floors:
        close = [m for m in good if v(m, "jsd_sampled") < floors[0] + 0.05]
        out.append(f"Sampled JSD within 0.05 of the noise floor ({floors[0]:.3f}), well-formed "
                   f"methods only: {', '.join(close) or 'none'}.")
    return out


def paper_findings(metrics: Mapping[str, Any]) -> list[tuple[str, bool | None, str]]:
    """The demo's claims checked on a run's metrics.json (test split): (claim, holds, numbers);
    holds is None ("not measured") when the run lacks a number or a margin is zero."""
    return check(metrics_reader(metrics), claims(demo=True))


def show_findings(run) -> list[str]:
    """Print the paper's findings on this run (paper_findings), which methods' text metrics are
    not interpretable, and the run directory; in a pipeline run these are console lines.
    Returns the lines."""
    metrics = run.metrics()
    lines = [f"findings ({run.cfg.group_label}, {run.cfg.model}, test split):"]
    lines += [f"  [{MARK[ok]}] {claim}: {numbers}"
              for claim, ok, numbers in paper_findings(metrics)]
    v = metrics_reader(metrics)
    bad = [m for m in metrics.get("methods", {}) if well_formed(v, m) is False]
    if bad:
        lines.append(f"  CBC, BPC, RS and sampled JSD are not interpretable for {', '.join(bad)} "
                     f"(outputs not well-formed)")
    lines.append(f"run directory: {run.root}")
    for line in lines:
        console.say(line)
    return lines


def card_lines(metrics: Mapping[str, Any]) -> list[str]:
    """Every claim measured on a run's metrics.json, as Markdown list items (the model card)."""
    return [f"- [{MARK[ok].strip()}] {text}: {numbers}"
            for text, ok, numbers in check(metrics_reader(metrics)) if ok is not None]


# ----------------------------------------------------------------------------- several seeds
def _order(values: Sequence[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def seed_findings(runs: pd.DataFrame, keys: Sequence[str], demo: bool = False) -> list[str]:
    """Each claim (the demo's bars when `demo`, else the others) per cell of `keys`, with the
    number of seeds it holds in and the mean ± sd of how far past its bar each seed is (negative:
    short of it): "S. Africa / seen_questions: GDPO lowers jsd below DPO: holds in 3 of 3 seeds
    (past its bar by +0.081 ± 0.012)". runs: one row per (run, method), columns `keys`, seed, method and the metrics. A
    claim whose numbers a seed lacks is not counted for that seed; one no seed has is left out."""
    out = []
    for cell in _order(list(runs[list(keys)].itertuples(index=False, name=None))):
        sub = runs[(runs[list(keys)] == pd.Series(cell, index=list(keys))).all(axis=1)]
        label = " / ".join(str(c) for c in cell)
        for claim in claims(demo=demo):
            values = []
            for _, one in sub.groupby("seed"):
                v = table_reader(one.set_index("method"))
                try:
                    values.append(claim.difference(v))
                except (KeyError, ZeroDivisionError):
                    continue
            if values:
                d = np.asarray(values)
                sd = f" ± {d.std(ddof=1):.3f}" if len(d) > 1 else ""
                held = int((d >= 0).sum() if claim.inclusive else (d > 0).sum())
                out.append(f"{label}: {claim.text}: holds in {held} of {len(d)} seeds "
                           f"(past its bar by {d.mean():+.3f}{sd})")
    return out
