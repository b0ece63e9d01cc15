"""The result pages (results/*.md) and the README's results: their tables are generated from the
raw data files beside them, so no number on a page is typed by hand.

A page is Markdown with generated blocks:

    <!-- generated: speed-step-overhead -->
    ... (written by this module)
    <!-- /generated -->

Each block name is a renderer below that reads its data files (JSON) and returns the block's
Markdown: the command, commit, machine and date of the measurement, then the table.
`python -m gdpolib.resultpages` checks every page (exit 1 when a block differs from its data);
`--write` rewrites the blocks. Text outside the blocks is the page's own.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from gdpolib import generated

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
BENCH = ROOT / "benchmarks" / "results"
WRITE_COMMAND = "python -m gdpolib.resultpages --write"
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated -->)",
                   re.S)


class PageError(RuntimeError):
    """A page names a block no renderer knows, or a data file is missing or malformed."""


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PageError(f"{path.relative_to(ROOT)}: data file missing") from None
    except json.JSONDecodeError as err:
        raise PageError(f"{path.relative_to(ROOT)}: not JSON ({err.msg}, line {err.lineno})") from None


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _link(path: Path, page_dir: Path = RESULTS) -> str:
    return f"[`{path.name}`]({Path(os.path.relpath(path, page_dir)).as_posix()})"


def _provenance(path: Path, command: str, commit: str, machine: str, date: str) -> list[str]:
    """One line: where the data is and what produced it (commit: Markdown, already quoted)."""
    return [f"Data: {_link(path)}. Command: `{command}`. Commit: {commit}. "
            f"Machine: {machine}. Date: {date}."]


# ---- speed (benchmarks/results/*.json, written by benchmarks/*.py) ----

def _bench_provenance(path: Path, d: dict[str, Any]) -> list[str]:
    if d["device"] == "cpu":
        machine = f"CPU, {d['torch_threads']} torch thread(s)"
        if "load_average" in d or "load_average_1m" in d:
            load = d.get("load_average", [d.get("load_average_1m")])[0]
            machine += f", load average {load:.1f} at the start"
    else:
        machine = f"{d['device_name']}, {d['torch_threads']} CPU threads"
    command = d["command"] if d["command"].startswith("python ") else \
        f"python benchmarks/{d['command']}"
    return _provenance(path, command, f"`{d['recorded_in_commit']}` (the commit that added the file)",
                       machine, d["date"][:10])


STEP_KINDS = {"sft-random": "SFT, random batches", "sft": "SFT (the stage's batches)",
              "dpo-random": "DPO, random batches", "dpo": "DPO (the stage's batches)",
              "gdpo-random": "GDPO, random batches", "gdpo": "GDPO (the stage's batches)"}


def _step_overhead(names: Sequence[str]) -> list[str]:
    """One row per (file, trainer) of bench_step_overhead results: CPU and wall seconds per step
    (medians), the bare step, their ratio, padding; the files' provenance above the table."""
    lines, rows = [], []
    for name in names:
        path = BENCH / f"bench_step_overhead-{name}.json"
        d = _load(path)
        lines += _bench_provenance(path, d)
        for kind, r in d["results"].items():
            cpu = r["cpu"]
            rows.append([STEP_KINDS.get(kind, kind), d["torch_threads"],
                         f"{cpu['trainer_step_s']['total']:.3f}",
                         f"{r['wall']['trainer_step_s']['total']:.3f}", f"{cpu['bare_step_s']:.3f}",
                         f"{cpu['ratio_trainer_over_bare']:.2f}",
                         f"{r['padding']['padded_over_real']:.2f}"])
    p = d["params"]
    return lines + [""] + _table(
        ["trainer", "torch threads", "trainer step (CPU s)", "trainer step (wall s)",
         "bare step (CPU s)", "trainer / bare (CPU)", "padded / real tokens"], rows) + [
        "", f"Tiny model {p['tiny_n_layer']} × {p['tiny_n_embd']} ({d['model_parameters']:,} "
            f"parameters), batch {p['batch_size']}, median of {r['steps']} steps."]


def speed_step_overhead() -> list[str]:
    """The demo's tiny model: 1 and 2 torch threads, length-grouped and random batches."""
    return _step_overhead(["tiny-cpu-t1-threads", "tiny-cpu-t2-threads", "tiny-cpu-t1-pairs-random"])


def speed_step_overhead_quick() -> list[str]:
    """The 4 × 64 tiny model of params/quick.yaml and params/cpu-full.yaml."""
    return _step_overhead(["tiny-cpu-t1-llama"])


def speed_gdpo_vs_dpo() -> list[str]:
    path = BENCH / "bench_gdpo_step-gpt2-large-random-cuda.json"
    d = _load(path)
    rows = [[m.upper(), f"{d['median_s'][m]:.4f}", f"{d['peak_memory_gib'][m]:.2f}"]
            for m in ("dpo", "gdpo")]
    return _bench_provenance(path, d) + [""] + _table(
        ["trainer", "median step (s)", "peak memory (GiB)"], rows) + [
        "", f"GPT-2-Large-shaped model ({d['params']:,} parameters, random weights), "
            f"{d['batch_pairs']} pairs of {d['seq_len']} tokens per step, median of {d['reps']} "
            f"steps; GDPO / DPO step time: {d['ratio_gdpo_over_dpo']:.3f}."]


def speed_jsd_batched() -> list[str]:
    path = BENCH / "bench_jsd_batched-smollm2-135m-cpu-t1.json"
    d = _load(path)
    rows = [[b, f"{d['median_s'][b]:.2f}", f"{d['prompts_per_s'][b]:.2f}",
             f"{d['speedup_vs_one_at_a_time'].get(b, 1.0):.2f}",
             f"{d['max_abs_prob_diff_vs_one_at_a_time'].get(b, 0.0):.1e}", f"{d['mean_jsd'][b]:.4f}"]
            for b in sorted(d["median_s"], key=int)]
    return _bench_provenance(path, d) + [""] + _table(
        ["prompts per forward", "median s", "prompts / s", "speed-up", "max |Δp| vs one at a time",
         "mean JSD"], rows) + [
        "", f"{d['model']} ({d['checkpoint']}), {d['n_prompts']} prompts of "
            f"{d['prompt_tokens_mean']:.0f} tokens on average, median of {d['reps']} passes."]


# ---- GPO studies (results/gpo/*.json, written by gdpolib.gpo.results.write_results) ----

GPO_KEYS = {"gpo-validation-variants": ("dataset", "variant", "method"),
            "gpo-planted-signal": ("inputs", "signal", "steps", "method")}


def gpo_table(d: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """mean ± sd over seeds of `score` per (key columns of the study) × k, from the raw rows."""
    keys = GPO_KEYS.get(d["study"])
    if keys is None:
        raise PageError(f"GPO study {d['study']!r}: no key columns known (GPO_KEYS)")
    cells: dict[tuple, dict[int, list[float]]] = {}
    for row in d["rows"]:
        cells.setdefault(tuple(row[k] for k in keys), {}).setdefault(int(row["k"]), []).append(
            row["score"])
    ks = sorted({k for by_k in cells.values() for k in by_k})

    def cell(scores: list[float] | None) -> str:
        if not scores:
            return ""
        if any(s is None for s in scores):
            raise PageError(f"GPO study {d['study']!r}: a missing score")
        mean = statistics.fmean(scores)
        return f"{mean:.4f} ± {statistics.stdev(scores):.4f}" if len(scores) > 1 else f"{mean:.4f}"

    rows = [[*map(str, key), *(cell(by_k.get(k)) for k in ks)] for key, by_k in cells.items()]
    return [*keys, *(f"k = {k}" for k in ks)], rows


def _gpo_score(d: dict[str, Any]) -> str:
    """The alignment score's definition: the file's, or the dataset's (as notebook 05 scores)."""
    if d.get("score"):
        return d["score"]
    names = {"opinionqa": "1 - WD / WD_max", "goqa": "1 - JS distance"}
    return " / ".join(sorted({names[r["dataset"]] for r in d["rows"]}))


def _study_provenance(path: Path, d: dict[str, Any]) -> list[str]:
    """The provenance line of a study file written by gdpolib.gpo.results.write_results."""
    env = d["environment"]
    machine = (", ".join(env["devices"]) if env.get("devices") else
               f"CPU ({env['cpu_count']} cores)") + f", {d['torch_threads']} torch thread(s)"
    return _provenance(path, d["command"], f"`{env['git_commit']}`", machine, d["date"][:10])


def _gpo_block(name: str) -> Callable[[], list[str]]:
    def render() -> list[str]:
        path = RESULTS / "gpo" / f"{name}.json"
        d = _load(path)
        header, rows = gpo_table(d)
        n_seeds = len({r["seed"] for r in d["rows"]})
        return (_study_provenance(path, d) + [""]
                + _table(header, rows) + ["", f"Score: {_gpo_score(d)}; {d['unit']}; "
                                              f"{n_seeds} seeds."])
    return render


def gpo_factor_r2() -> list[str]:
    """How much of the groups' first factor u (and of the mean m) the embeddings carry."""
    path = RESULTS / "gpo" / "factor-r2-opinionqa.json"
    d = _load(path)
    rows = [[r["embedder"], r["pooling"], r["dim"], *(f"{r[k]:.3f}" for k in
                                                      ("r2_u_seen", "r2_u_new", "r2_m_seen",
                                                       "r2_m_new"))] for r in d["rows"]]
    header = ["embedder", "pooling", "dim", "R² of u, seen questions", "R² of u, new questions",
              "R² of m, seen", "R² of m, new"]
    return (_study_provenance(path, d) + [""] + _table(header, rows)
            + ["", f"{d['rows'][0]['questions']} questions, {d['rows'][0]['options']} options, "
                   f"{d['groups']} groups (the first factor carries "
                   f"{100 * d['first_factor_share']:.0f} % of their between-group variance); "
                   f"{d['metric']}; {d['folds']} folds."])


FEWSHOT_ARMS = (("prediction", "predicted p*"), ("train_mean_prediction", "mean p*"),
                ("gdpo_on_predicted", "GDPO on predicted"),
                ("gdpo_on_train_mean", "GDPO on mean"), ("gdpo_on_true", "GDPO on true"))


def gpo_fewshot() -> list[str]:
    """Few-shot GDPO (scripts/gpo_fewshot.py): per (country, seed) cell, then paired contrasts."""
    path = RESULTS / "gpo" / "fewshot-goqa.json"
    d = _load(path)
    chosen = {(j["country"], j["seed"]): j["predictor"] for j in d["jobs"]}
    rows = [[c["country"], c["seed"], chosen[(c["country"], c["seed"])], c["questions"],
             *(f"{c[m]:.4f}" for m, _ in FEWSHOT_ARMS)] for c in d["cells"]]
    rows.append(["mean ± sd", "", "", "", *(_mean_sd([c[m] for c in d["cells"]], "{:.4f}")
                                            for m, _ in FEWSHOT_ARMS)])
    names = dict(FEWSHOT_ARMS)
    pairs = [(c["a"], c["b"]) for c in d["paired"]]

    def contrast(c: dict[str, Any]) -> str:
        interval = f" [{c['ci_lo']:+.4f}, {c['ci_hi']:+.4f}]" if c["n"] > 1 else ""
        return f"{c['diff']:+.4f}{interval} ({c['a_lower_in']} of {c['n']})"
    by_cell: dict[tuple, dict[tuple, str]] = {}
    for c in d["paired_by_cell"]:
        by_cell.setdefault((c["country"], c["seed"]), {})[(c["a"], c["b"])] = contrast(c)
    contrasts = [[country, seed, *(cells.get(p, "") for p in pairs)]
                 for (country, seed), cells in by_cell.items()]
    contrasts.append(["all cells", "", *(contrast(c) for c in d["paired"])])
    return (_study_provenance(path, d) + [""]
            + _table(["country", "seed", "predictor", "questions",
                      *(n for _, n in FEWSHOT_ARMS)], rows)
            + ["", f"k = {d['k']}. {d['metric']}.", "",
               "Paired differences: mean [95 % interval] (units where the first is lower):", ""]
            + _table(["country", "seed", *(f"{names[a]} − {names[b]}" for a, b in pairs)],
                     contrasts)
            + ["", "Intervals: paired percentile bootstrap (gdpolib.metrics.paired), within a "
                   "cell over its predicted questions, and over the (country, seed) cells."])


# ---- the demo over seeds and countries (results/demo/*.json, written by scripts/seed_table.py) ----

DEMO_COLUMNS = (("jsd", "JSD", "{:.3f}"), ("jsd_vs_sft", "JSD - SFT, paired", "{:+.3f}"),
                ("jsd_vs_context_free", "JSD - context-free, paired", "{:+.3f}"),
                ("jsd_digits", "JSD, all digits", "{:.3f}"),
                ("invalid_rate", "invalid", "{:.3f}"), ("cbc", "CBC", "{:.3f}"),
                ("margin_majority", "margin maj", "{:.3f}"), ("margin_minority", "margin min", "{:.3f}"))


def _mean_sd(values: list[float], fmt: str) -> str:
    if not values:
        return ""
    mean = fmt.format(statistics.fmean(values))
    if len(values) == 1:
        return mean
    return f"{mean} ± {fmt.replace('+', '').format(statistics.stdev(values))}"


def demo_table(d: dict[str, Any], keep: Sequence[str] | None = None,
               ) -> tuple[list[str], list[list[str]]]:
    """mean ± sd over seeds per (protocol, country, method) of the seed table's raw rows; `keep`:
    only these DEMO_COLUMNS keys (and only the rows that have one of them)."""
    cells: dict[tuple, list[dict]] = {}
    for row in d["rows"]:
        cells.setdefault((row.get("protocol", ""), row["country"], row["method"]), []).append(row)
    cols = [c for c in DEMO_COLUMNS if any(r.get(c[0]) is not None for r in d["rows"])
            and (keep is None or c[0] in keep)]
    rows = [[*key, len({r["seed"] for r in runs}),
             *(_mean_sd([r[c] for r in runs if r.get(c) is not None], fmt) for c, _, fmt in cols)]
            for key, runs in cells.items()
            if any(r.get(c) is not None for r in runs for c, _, _ in cols)]
    return ["protocol", "country", "method", "seeds", *(name for _, name, _ in cols)], rows


def _demo_block(name: str, keep: Sequence[str] | None = None,
                claims_with: str = "") -> Callable[[], list[str]]:
    """The seed table `results/demo/<name>.json`; `keep`: its columns (demo_table),
    `claims_with`: only the counted findings whose text holds this."""
    def render() -> list[str]:
        path = RESULTS / "demo" / f"{name}.json"
        d = _load(path)
        machine = d.get("machine") or "not recorded in the file"
        header, rows = demo_table(d, keep)
        claims = [f"- {line}" for line in d["findings"]["paper_claims"] if claims_with in line]
        return (_provenance(path, d["command"], f"`{d['commit']}`", machine, d["written"][:10])
                + [""] + _table(header, rows) + ["", "The paper's findings, counted over seeds:",
                                                  ""] + claims)
    return render


RENDERERS: dict[str, Callable[[], list[str]]] = {
    "speed-step-overhead": speed_step_overhead,
    "speed-step-overhead-quick": speed_step_overhead_quick,
    "speed-gdpo-vs-dpo": speed_gdpo_vs_dpo,
    "speed-jsd-batched": speed_jsd_batched,
    "gpo-options-validation": _gpo_block("options-validation"),
    "gpo-planted-opinionqa": _gpo_block("planted-opinionqa"),
    "gpo-planted-bisect": _gpo_block("planted-bisect-opinionqa"),
    "gpo-factor-r2": gpo_factor_r2,
    "gpo-fewshot": gpo_fewshot,
    "demo-seeds": _demo_block("seeds"),
    "demo-seeds-label-tokens": _demo_block("seeds-label-tokens"),
    "demo-seeds-sft-lr-3e-3": _demo_block("seeds-sft-lr-3e-3"),
    "demo-seeds-response-nucleus": _demo_block("seeds-response-top-p-0.5",
                                               ("invalid_rate", "cbc"), "well-formed"),
}


def render_page(text: str, where: str = "page") -> str:
    """The page with every generated block rendered from its data."""
    def fill(m: re.Match) -> str:
        name = m.group("name")
        if name not in RENDERERS:
            raise PageError(f"{where}: unknown generated block {name!r} (known: "
                            f"{', '.join(sorted(RENDERERS))})")
        body = "\n".join(RENDERERS[name]()) + "\n"
        return m.group(1) + body + m.group(4)
    return BLOCK.sub(fill, text)


def pages() -> list[Path]:
    """The result pages, and README.md (its demo findings are a generated block too)."""
    return [*sorted(RESULTS.glob("*.md")), ROOT / "README.md"]


def sync_pages(write: bool = False, files: Sequence[Path] | None = None) -> list[Path]:
    """The pages whose generated blocks differ from their data (rewritten when `write`)."""
    stale = []
    for page in pages() if files is None else files:
        text = page.read_text(encoding="utf-8")
        wanted = render_page(text, page.name)
        if wanted != text:
            stale.append(page)
            if write:
                page.write_text(wanted, encoding="utf-8")
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gdpolib.resultpages",
                                 description="Check (with --write: regenerate) the tables of the "
                                             "result pages (results/*.md) from their data files.")
    ap.add_argument("--write", action="store_true", help="rewrite the stale pages")
    args = ap.parse_args(argv)
    try:
        stale = sync_pages(write=args.write)
    except PageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return generated.finish([p.name for p in stale], args.write, "result pages", WRITE_COMMAND)


if __name__ == "__main__":
    sys.exit(main())
