"""Few-shot GDPO (notebook 05, section 4): GDPO trained on GPO's p* predicted from k answered
questions of the run's group vs GDPO trained on the measured p*, both scored against the
TRUE p* on the run's test prompts. This stage trains GDPO (gdpolib.stages.train)."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from gdpolib import runs, seeds
from gdpolib.config import RunConfig
from gdpolib.gpo.predict import FewShotPrediction, few_shot_p_star
from gdpolib.stages.data import prepare_data
from gdpolib.stages.evaluate import jsd_by_question
from gdpolib.stages.gpo import GPOExperiment, load_groups, run_gpo
from gdpolib.stages.train import train_preference

log = logging.getLogger(__name__)
MIN_GROUPS = 4     # groups a survey needs for GPO to learn from others and select on others


def gpo_experiment(cfg: RunConfig, run: runs.Run, goqa_exp: GPOExperiment,
                   ) -> tuple[GPOExperiment | None, str]:
    """The GPO model few-shot GDPO asks for the run's group, or (None, why not): for a
    GlobalOpinionQA country the notebook's GlobalOpinionQA model (`goqa_exp`, the country held
    out); for another survey, GPO meta-trained on that survey's other groups (its own stage)."""
    if not cfg.gpo_fewshot_gdpo:
        return None, "gpo_fewshot_gdpo is false"
    if cfg.groups:
        return None, "a run of several groups (groups) has no one group to predict"
    if cfg.survey == "goqa":
        ok = cfg.country_name in goqa_exp.plans
        return (goqa_exp, "") if ok else (None, f"{cfg.country_name} is not a GPO test group "
                                                f"(fewer than gpo_min_questions questions)")
    try:
        n = len(load_groups(cfg, "survey").groups)
    except ValueError:          # no group has gpo_min_questions questions
        n = 0
    if n < MIN_GROUPS:
        return None, (f"survey {cfg.survey_path or cfg.survey} has {n} groups with at least "
                      f"gpo_min_questions questions; GPO needs {MIN_GROUPS}")
    return run_gpo(cfg, run, "survey"), ""


def few_shot_gdpo(cfg: RunConfig, run: runs.Run, exp: GPOExperiment, k: int | None = None,
                  ) -> tuple[pd.DataFrame, FewShotPrediction]:
    """Few-shot GDPO for the run's group (`exp`: GPO with that group held out, see
    gpo_experiment): GDPO trained on GPO's p* (from k answered questions; the GPO method with the
    best validation score, GPOExperiment.best) vs GDPO trained on the true p*, both scored
    against the TRUE p* on the run's test prompts of
    the questions GPO predicted (the k answered ones are left out of every mean); the GPO
    prediction itself is scored on the same questions.

    GDPO-on-true is the run's own `checkpoints/gdpo` (notebook 03's stage, trained here if
    missing); GDPO-on-predicted lives in its own run `<run>-gpo-k<k>` so that no stage of this
    run is replaced. Returns a one-row-per-method DataFrame (method, jsd, n_questions) with
    methods gpo_prediction, gdpo_on_predicted, gdpo_on_true, and the FewShotPrediction.
    """
    k = cfg.gpo_k if k is None else k
    data = prepare_data(cfg, run)
    group = data.groups[0] if data.groups else cfg.country_name    # the survey's spelling
    best = exp.gpos[exp.best]           # the GPO model chosen on the validation groups
    fs = few_shot_p_star(best.model, best.emb, exp.data, exp.test_plan(group), data.questions, k)
    sub_cfg = cfg.replace(run_name=f"{cfg.run_dir_name}-gpo-k{k}")
    sub_run = runs.Run.open(sub_cfg)
    sub_data = prepare_data(sub_cfg, sub_run, p_star_override=fs.override)
    train_preference(sub_cfg, sub_run, sub_data, "gdpo")
    train_preference(cfg, run, data, "gdpo")
    seeds.seed_everything(cfg.seed)      # Run.open of the sub-run re-seeded; restore the order
    # Both scored on the same test prompts against the TRUE p* (an override changes only the
    # training target: the sub-run's eval prompts carry the true p*).
    per_q = {"gpo_prediction": fs.jsd,
             "gdpo_on_predicted": jsd_by_question(sub_cfg, sub_run, sub_data, "gdpo"),
             "gdpo_on_true": jsd_by_question(cfg, run, data, "gdpo")}
    common = sorted(set.intersection(*(set(v) for v in per_q.values())))
    if not common:
        raise ValueError("few-shot GDPO: no predicted question has a test prompt")
    rows = [{"method": m, "jsd": float(np.mean([v[q] for q in common])),
             "n_questions": len(common)} for m, v in per_q.items()]
    log.info("few-shot GDPO (%s, k=%d): %s", group, k, rows)
    return pd.DataFrame(rows), fs
