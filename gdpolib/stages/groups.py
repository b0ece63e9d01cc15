"""One model for several groups (`groups`): its numbers per group, beside one model per group,
and for a group it never trained on (zero-shot: that group's name in the prompt).

  per_group(cfg, run, data, methods)           test JSD per group and method (+ uniform)
  versus_per_group(data, tables, per_group_runs, methods)
                                               the same test prompts scored by each group's own
                                               run: same prompts checked, JSD side by side
  zero_shot(cfg, run, data, group, per_group_runs, methods)
                                               an unseen group: the conditioned model named it,
                                               or named its nearest trained group; that group's
                                               own model and p*; uniform

Every number is a mean over prompts of scoring.readout's per-prompt JSD (the conditioned run's
test read-outs of gdpolib.stages.evaluate, or a read-out here for the zero-shot prompts), or of
metrics.distances.jsd_per_prompt for the fixed predictors (uniform, a group's p*).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from gdpolib import beliefs, models
from gdpolib.metrics import distances
from gdpolib.data.records import RunData, group_prompt, load_run_data
from gdpolib.evalset import EvalSet
from gdpolib.scoring import readout
from gdpolib.stages.data import group_data, load_survey
from gdpolib.stages.evaluate import test_readout


def _base_qid(qid: str, group: str) -> str:
    """The survey's qid of a conditioned record's `{qid}@{group}`."""
    return qid.removesuffix(f"@{group}")


def uniform_jsd(p_star: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """JSD per prompt of the uniform distribution over each question's beliefs [N]."""
    return distances.jsd_per_prompt(mask.astype(np.float64), p_star, mask)


def per_group(cfg, run, data: RunData, methods: Sequence[str]) -> pd.DataFrame:
    """Test JSD of each method per group (rows: group, then "all"; columns: methods and
    uniform), from the run's test read-outs (trained and read out where missing)."""
    test = data.prompts["test"].to_pandas()[["qid", "style", "group", "p_star", "belief_mask"]]
    cols = {"uniform": uniform_jsd(np.stack(test.p_star), np.stack(test.belief_mask))}
    for m in methods:
        test_readout(cfg, run, data, m)
        read = pd.read_csv(run.stage_dir(f"stages/test/{m}") / "readout.csv", dtype={"qid": str})
        cols[m] = test[["qid", "style"]].merge(read, on=["qid", "style"], how="left")["jsd"].to_numpy()
    frame = pd.DataFrame({"group": test.group, **cols})
    table = frame.groupby("group").mean()
    table.loc["all"] = frame.drop(columns="group").mean()
    table["n_prompts"] = [*frame.groupby("group").size(), len(frame)]
    return table[[*methods, "uniform", "n_prompts"]]


def _run_test_jsd(run_dir: Path, method: str) -> pd.DataFrame:
    """A finished run's per-prompt test JSD of a method: qid, style, jsd."""
    path = Path(run_dir) / "stages" / "test" / method / "readout.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: train and read out {method} in {run_dir} first "
                                f"(python -m gdpolib.train ... --method {method})")
    return pd.read_csv(path, dtype={"qid": str})[["qid", "style", "jsd"]]


def versus_per_group(data: RunData, per_group_runs: Mapping[str, str | Path],
                     methods: Sequence[str], conditioned_run: Path) -> pd.DataFrame:
    """Per trained group and method: the conditioned model's and the group's own model's mean
    test JSD on the SAME test prompts (checked: the same (qid, style) units), and uniform."""
    rows = []
    test = data.prompts["test"].to_pandas()
    for g in data.groups:
        own = test[test.group == g].assign(qid=lambda t: [_base_qid(q, g) for q in t.qid])
        units = set(zip(own.qid, own["style"]))
        other = load_run_data(Path(per_group_runs[g]) / "data").prompts["test"].to_pandas()
        if set(zip(other.qid, other["style"])) != units:
            raise ValueError(f"{g}: the run {per_group_runs[g]} has other test prompts than the "
                             f"conditioned run (a different split or data parameters)")
        for m in methods:
            cond = _run_test_jsd(conditioned_run, m)
            cond = cond[cond.qid.str.endswith(f"@{g}")]
            rows.append({"group": g, "method": m, "conditioned": cond.jsd.mean(),
                         "per_group": _run_test_jsd(per_group_runs[g], m).jsd.mean(),
                         "n_prompts": len(cond)})
        rows.append({"group": g, "method": "uniform", "n_prompts": len(own),
                     "conditioned": uniform_jsd(np.stack(own.p_star), np.stack(own.belief_mask)).mean()})
    return pd.DataFrame(rows)


def nearest_groups(data: RunData, unseen: dict[str, np.ndarray]) -> list[tuple[str, float, int]]:
    """Trained groups by their mean JSD to the unseen group's p* over the questions both
    answered, nearest first: [(group, mean JSD, shared questions)]. `unseen`: {qid: p*}."""
    out = []
    for g in data.groups:
        mine = {_base_qid(q.qid, g): q.p_star for q in data.questions if q.qid.endswith(f"@{g}")}
        shared = sorted(set(mine) & set(unseen))
        if shared:
            d = distances.js_distance(np.stack([mine[q] for q in shared]),
                                    np.stack([unseen[q] for q in shared]))
            out.append((g, float(np.mean(d)), len(shared)))
    return sorted(out, key=lambda t: t[1])


def _subset(es: EvalSet, idx: Sequence[int]) -> EvalSet:
    def pick(xs):
        return [xs[i] for i in idx]
    return EvalSet(pick(es.prompts), pick(es.questions), pick(es.qids), pick(es.styles),
                   es.p_star[idx], es.mask[idx], pick(es.labels), pick(es.references))


def _readout(path: Path, cfg, es: EvalSet, k_max: int) -> np.ndarray:
    model, tok = models.load_policy(path, cfg)
    return readout(model, tok, es, beliefs.check_belief_tokens(tok, k_max), cfg.eval_batch_size)["jsd"]


def zero_shot(cfg, run, data: RunData, group: str, per_group_runs: Mapping[str, str | Path],
              methods: Sequence[str]) -> tuple[pd.DataFrame, list[tuple[str, float, int]]]:
    """A group the conditioned model never trained on, on all its prompts (every split: no
    prompt of this group was trained on) of the questions some trained group answered. Each
    question's "nearest" group is the nearest trained group (by the unseen group's own answers:
    an oracle choice) that answered it. Rows (predictor, method, jsd, n_prompts):
      conditioned / <group>     the conditioned model, the unseen group named (zero-shot)
      conditioned / nearest     the conditioned model, the nearest trained group named
      per-group model, nearest  the nearest trained group's own model (its prompts)
      nearest p*                the nearest trained group's answers as the prediction
      uniform
    Returns the table and nearest_groups()."""
    survey = load_survey(cfg)
    name = survey.resolve(group)
    if name in data.groups:
        raise ValueError(f"{name} is a trained group of this run; zero-shot needs another one")
    part = group_data(cfg, survey, name)
    unseen = {q.qid: q.p_star for q in part.questions}
    ranking = nearest_groups(data, unseen)
    answered = {g: {_base_qid(q.qid, g) for q in data.questions if q.qid.endswith(f"@{g}")}
                for g in data.groups}
    prompts = [r for r in part.rows["prompts"] if any(r["qid"] in answered[g] for g, *_ in ranking)]
    if not prompts:
        raise ValueError(f"{name} shares no question with the trained groups {data.groups}")
    nearest = [next(g for g, *_ in ranking if r["qid"] in answered[g]) for r in prompts]
    p_star = np.array([r["p_star"] for r in prompts])
    mask = np.array([r["belief_mask"] for r in prompts])
    es = EvalSet([r["prompt"] for r in prompts], [r["question"] for r in prompts],
                 [r["qid"] for r in prompts], [r["style"] for r in prompts], p_star, mask,
                 [r["labels"] for r in prompts], [r["references"] for r in prompts])
    ps_nearest = {g: {_base_qid(q.qid, g): q.p_star for q in data.questions
                      if q.qid.endswith(f"@{g}")} for g in data.groups}
    rows = [{"predictor": "uniform", "method": "", "jsd": uniform_jsd(p_star, mask).mean()},
            {"predictor": "nearest p*", "method": "", "jsd": distances.jsd_per_prompt(
                np.array([ps_nearest[g][r["qid"]] for g, r in zip(nearest, prompts)]),
                p_star, mask).mean()}]
    for m in methods:
        ckpt = run.stage_dir(f"checkpoints/{m}")
        named = es.with_prompts([group_prompt(name, p) for p in es.prompts])
        as_nearest = es.with_prompts([group_prompt(g, p) for g, p in zip(nearest, es.prompts)])
        own = np.empty(len(es))
        for g in sorted(set(nearest)):
            idx = [i for i, n in enumerate(nearest) if n == g]
            own[idx] = _readout(Path(per_group_runs[g]) / "checkpoints" / m, cfg, _subset(es, idx),
                                data.k_max)
        rows += [{"predictor": f"conditioned, named {name}", "method": m,
                  "jsd": _readout(ckpt, cfg, named, data.k_max).mean()},
                 {"predictor": "conditioned, named nearest", "method": m,
                  "jsd": _readout(ckpt, cfg, as_nearest, data.k_max).mean()},
                 {"predictor": "per-group model, nearest", "method": m, "jsd": own.mean()}]
    table = pd.DataFrame(rows)
    table["n_prompts"] = len(es)
    return table, ranking
