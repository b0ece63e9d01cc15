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
    return {"zeroshot": "zero-shot"}.get(m, m.upper() if m in registry.BY_NAME else m)


def _below(m: str, ref: str, metric: str, text: str) -> Claim:
    """`m` is below `ref` in `metric`."""
    return Claim(text, lambda v: v(ref, metric) - v(m, metric),
                 lambda v: f"{_label(m)} {v(m, metric):.3f}, {_label(ref)} {v(ref, metric):.3f}")


def _above(m: str, ref: str, metric: str, text: str) -> Claim:
    """`m` is above `ref` in `metric`."""
    return Claim(text, lambda v: v(m, metric) - v(ref, metric),
                 lambda v: f"{_label(m)} {v(m, metric):.3f}, {_label(ref)} {v(ref, metric):.3f}")


def _gap(m: str) -> Callable[[Reader], float]:
    """A method's majority - minority margin on its test pairs (its skew)."""
    return lambda v: v(m, "margin_majority") - v(m, "margin_minority")


def _margins(m: str, v: Reader) -> str:
    return f"{_label(m)} {v(m, 'margin_majority'):.3f} vs {v(m, 'margin_minority'):.3f}"


def _preference_claims(b: str) -> tuple[list[Claim], list[Claim]]:
    """The claims about the preference baseline `b` (DPO in the paper): on JSD, then on the
    belief-token mass, the margins and the sampled text."""
    B = _label(b)
    jsd = [_above(b, "sft", "jsd", f"{B} raises jsd over SFT"),
           _above(b, "sft", "jsd_digits", f"{B} raises jsd_digits over SFT"),
           _below("gdpo", b, "jsd", f"GDPO lowers jsd below {B}"),
           _below("gdpo", b, "jsd_digits", f"GDPO lowers jsd_digits below {B}")]
    rest = [_below(b, "sft", "belief_mass", f"{B} lowers the belief-token mass below SFT"),
            Claim(f"{B}'s majority-chosen margins exceed its minority-chosen ones", _gap(b),
                  lambda v: _margins(b, v)),
            Claim(f"GDPO's majority-minority margin gap is smaller than {B}'s",
                  lambda v: _gap(b)(v) - _gap("gdpo")(v),
                  lambda v: f"{_margins('gdpo', v)}; {_margins(b, v)}"),
            _above("gdpo", b, "bpc", f"GDPO's BPC is above {B}'s"),
            _above("gdpo", b, "cbc", f"GDPO's CBC is above {B}'s")]
    return jsd, rest


# ----------------------------------------------------------------------------- the demo's bars
# A model writes well-formed outputs when at most 5% of its samples do not parse and at least
# 90% bind the digit to its own label (CBC); otherwise its sampled-text metrics measure the
# format, not its beliefs.
WELL_FORMED = {"invalid_rate": 0.05, "cbc": 0.9}


def _ratio_gap(v: Reader) -> float:
    """|1 - DPO's minority/majority margin ratio| - |1 - GDPO's| (> 0: GDPO's is closer to 1)."""
    def ratio(m: str) -> float:
        return v(m, "margin_minority") / v(m, "margin_majority")
    return abs(ratio("dpo") - 1) - abs(ratio("gdpo") - 1)


def _well_formed(m: str) -> Claim:
    bars = WELL_FORMED
    return Claim(f"{m.upper()} writes well-formed outputs (invalid <= {bars['invalid_rate']:.2f}, "
                 f"CBC >= {bars['cbc']:.1f})",
                 lambda v: min(bars["invalid_rate"] - v(m, "invalid_rate"), v(m, "cbc") - bars["cbc"]),
                 lambda v: f"invalid {v(m, 'invalid_rate'):.3f}, CBC {v(m, 'cbc'):.3f}", True, True)


DEMO_CLAIMS: tuple[Claim, ...] = (
    Claim("DPO raises JSD over SFT by >= 0.05",
          lambda v: v("dpo", "jsd") - v("sft", "jsd") - 0.05,
          lambda v: f"SFT {v('sft', 'jsd'):.3f}, DPO {v('dpo', 'jsd'):.3f} "
                    f"({v('dpo', 'jsd') - v('sft', 'jsd'):+.3f})", True, True),
    Claim("GDPO's JSD is below SFT's",
          lambda v: v("sft", "jsd") - v("gdpo", "jsd"),
          lambda v: f"GDPO {v('gdpo', 'jsd'):.3f} vs SFT {v('sft', 'jsd'):.3f} "
                    f"({v('gdpo', 'jsd') - v('sft', 'jsd'):+.3f})", demo=True),
    Claim("DPO's majority-chosen margin is >= 2x its minority-chosen one",
          lambda v: v("dpo", "margin_majority") - 2 * v("dpo", "margin_minority"),
          lambda v: f"{v('dpo', 'margin_majority'):.3f} vs {v('dpo', 'margin_minority'):.3f}",
          True, True),
    Claim("GDPO's minority/majority margin ratio is closer to 1 than DPO's", _ratio_gap,
          lambda v: "GDPO {:.2f}, DPO {:.2f}".format(
              *(v(m, "margin_minority") / v(m, "margin_majority") for m in ("gdpo", "dpo"))),
          demo=True),
    *(_well_formed(m) for m in ("sft", "dpo", "gdpo")),
)


def _all_claims() -> tuple[Claim, ...]:
    parts = [_preference_claims(b) for b in registry.names(lambda m: m.role == "preference baseline")]
    return (*(c for jsd, _ in parts for c in jsd),
            _below("gdpo", "sft", "jsd", "GDPO lowers jsd below SFT"),
            _below("sft", "uniform", "jsd", "SFT is below uniform in jsd"),
            _below("gdpo", "uniform", "jsd", "GDPO is below uniform in jsd"),
            _below("sft", "zeroshot", "jsd", "SFT is below zero-shot in jsd"),
            *(c for _, rest in parts for c in rest),
            *DEMO_CLAIMS)


CLAIMS: tuple[Claim, ...] = _all_claims()


def claims(demo: bool | None = None) -> tuple[Claim, ...]:
    """CLAIMS: all (demo None), the demo's bars (True) or the others (False)."""
    return tuple(c for c in CLAIMS if demo is None or c.demo == demo)


# ----------------------------------------------------------------------------- readers
def reader(records: Mapping[str, Mapping[str, Any]]) -> Reader:
    """`v(method, metric)` over {method: numbers}; KeyError when a number is absent or not a
    finite number."""
    def v(method: str, metric: str) -> float:
        x = records.get(method, {}).get(metric)
        if isinstance(x, bool) or not isinstance(x, (int, float, np.number)) or not np.isfinite(x):
            raise KeyError(f"{method}.{metric}")
        return float(x)
    return v


def metrics_reader(metrics: Mapping[str, Any]) -> Reader:
    """reader() over a run's metrics.json: methods.<m> and skew.<m> of each method."""
    names = set(metrics.get("methods", {})) | set(metrics.get("skew", {}))
    return reader({m: {**metrics.get("methods", {}).get(m, {}), **metrics.get("skew", {}).get(m, {})}
                   for m in names})


def table_reader(table: pd.DataFrame) -> Reader:
    """reader() over a methods x metrics table (evaluate_methods, results_table)."""
    return reader({m: row.to_dict() for m, row in table.iterrows()})


MARK = {True: "yes", False: "NO ", None: " - "}


def check(v: Reader, which: Sequence[Claim] = CLAIMS) -> list[tuple[str, bool | None, str]]:
    """Each claim checked with the reader `v`: (claim, holds, the numbers)."""
    return [(c.text, *c.check(v)) for c in which]


# ----------------------------------------------------------------------------- one run
def findings(table: pd.DataFrame) -> list[str]:
    """What a run's numbers say, in sentences with the numbers (notebooks 02-04): each claim
    the table has the numbers for, "[yes]" or "[NO ]", then what the claims do not say: the
    ablations, GDPO's margins on its own pairs, the sampled JSD against its noise floor and the
    baselines.

    table: one row per method (sft, dpo, gdpo, ablations, baselines), columns among those of
    evaluate_methods / results_table.
    """
    v = table_reader(table)
    out = [f"[{MARK[ok]}] {text}: {numbers}" for text, ok, numbers in check(v) if ok is not None]

    def has(m: str, *cols: str) -> bool:
        try:
            return all(np.isfinite(v(m, c)) for c in cols)
        except KeyError:
            return False

    out += [f"Ablation {m}: test JSD {v(m, 'jsd'):.3f}."
            for m in registry.names(lambda x: x.role == "ablation") if has(m, "jsd")]
    if "jsd_sampled" in table and "noise_floor" in table and table["noise_floor"].notna().any():
        floor = float(table["noise_floor"].dropna().iloc[0])     # the baselines sample nothing
        close = [m for m in table.index if has(m, "jsd_sampled") and v(m, "jsd_sampled") < floor + 0.05]
        out.append(f"Sampled JSD within 0.05 of the noise floor ({floor:.3f}): "
                   f"{', '.join(close) or 'none'}.")
    if has("uniform", "jsd"):
        below = [m for m in table.index if m != "uniform" and has(m, "jsd")
                 and v(m, "jsd") < v("uniform", "jsd")]
        zero = f", zero-shot {v('zeroshot', 'jsd'):.3f}" if has("zeroshot", "jsd") else ""
        out.append(f"Baselines: uniform {v('uniform', 'jsd'):.3f}{zero}; methods below uniform: "
                   f"{', '.join(below) or 'none'}.")
    return out


def paper_findings(metrics: Mapping[str, Any]) -> list[tuple[str, bool | None, str]]:
    """The demo's claims checked on a run's metrics.json (test split): (claim, holds, numbers);
    holds is None ("not measured") when the run lacks a number or a margin is zero."""
    return check(metrics_reader(metrics), claims(demo=True))


def show_findings(run) -> list[str]:
    """Print the paper's findings on this run (paper_findings) and the run directory; in a
    pipeline run these are console lines. Returns the lines."""
    lines = [f"findings ({run.cfg.group_label}, {run.cfg.model}, test split):"]
    lines += [f"  [{MARK[ok]}] {claim}: {numbers}"
              for claim, ok, numbers in paper_findings(run.metrics())]
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
    number of seeds it holds in and the mean ± sd of its difference: "S. Africa /
    seen_questions: GDPO lowers jsd below DPO: holds in 3 of 3 seeds (difference 0.081 ±
    0.012)". runs: one row per (run, method), columns `keys`, seed, method and the metrics. A
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
                           f"(difference {d.mean():+.3f}{sd})")
    return out
