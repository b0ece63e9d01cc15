"""Tables and long frames of a run for the notebooks' figures and tables: the protocol in words,
the test read-out table, the eval stage's records, the distributions and sampled outputs of some
questions, the training curves. Reads what the evaluation stages wrote; computes no metric of a
model."""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from gdpolib.evalset import EvalSet
from gdpolib.metrics import registry as metric_registry
from gdpolib.metrics.distances import renormalise


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
    columns qid, question, label, belief, source (target | method), prob. A method's
    distribution is its test read-out (stages/test/<method>: any method or baseline that was
    read out), renormalised and averaged over the question's test prompts."""
    es = EvalSet.from_table(data.prompts["test"])
    rows = []
    for q in qids:
        idx = [i for i, x in enumerate(es.qids) if x == q]
        if not idx:
            continue
        mask, labels = es.mask[idx[0]], es.labels[idx[0]]
        sources = {"target (p*)": es.p_star[idx[0]]}
        for m in methods:
            probs = np.load(run.stage_dir(f"stages/test/{m}") / "probs.npy")[idx]
            sources[m] = renormalise(probs, es.mask[idx]).mean(axis=0)
        for src, p in sources.items():
            for k in np.flatnonzero(mask):
                rows.append({"qid": q, "question": es.questions[idx[0]], "belief": int(k),
                             "label": f"{k}. {labels[k][:28]}", "source": src,
                             "prob": float(p[k])})
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


def results_table(results: dict[str, dict]) -> pd.DataFrame:
    """Test read-out numbers per method (rows) as a DataFrame (notebooks 02 and 03); intervals
    as "[low, high]" strings."""
    cols = [c for c in metric_registry.keys(table="results")
            if any(c in r for r in results.values())]
    return pd.DataFrame({m: {c: format_ci(r.get(c, np.nan)) for c in cols}
                         for m, r in results.items()}).T.infer_objects()


def load_tracks(run, methods: Sequence[str]) -> pd.DataFrame:
    """The tracking records (tracking.jsonl) of the trained stages among `methods`, as one
    DataFrame (columns method, step, seconds, jsd, belief_mass, margins ...)."""
    frames = [pd.read_json(p, lines=True) for m in methods
              if (p := run.stage_dir(f"checkpoints/{m}") / "tracking.jsonl").exists()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
