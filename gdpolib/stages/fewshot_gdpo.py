"""Few-shot GDPO (notebook 05, section 4): GDPO trained on the p* that the best predictor
(chosen on validation groups) gives from k answered questions of the run's group, vs GDPO
trained on the meta-train mean's p* and on the measured p*, all scored against the TRUE p* on
the run's test prompts. This stage trains GDPO (gdpolib.stages.train)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from gdpolib import runs, seeds
from gdpolib.config import RunConfig
from gdpolib.gpo.experiment import few_shot_prediction
from gdpolib.gpo.predict import FewShotPrediction
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


@dataclass
class FewShotGDPO:
    """Few-shot GDPO for one group: the chosen predictor, its p*, and the JSDs to the TRUE p*."""

    predictor: str                        # chosen on validation groups (GPOExperiment.best)
    prediction: FewShotPrediction         # its p* (context: the k answered questions)
    per_question: pd.DataFrame            # qid, method, jsd on the questions every method has
    table: pd.DataFrame                   # method, jsd (mean over those questions), n_questions


def few_shot_gdpo(cfg: RunConfig, run: runs.Run, exp: GPOExperiment, k: int | None = None,
                  ) -> FewShotGDPO:
    """Few-shot GDPO for the run's group (`exp`: GPO with that group held out, see
    gpo_experiment) from k answered questions: GDPO trained on the p* of the predictor chosen on
    validation groups (GPOExperiment.best: gpo, gpo_prior, ridge, knn or train_mean), on the
    meta-train mean's p* (the no-context baseline) and on the true p*; the answered questions
    keep their true p* in every arm. All are scored against the TRUE p* on the run's test
    prompts of the predicted questions (the k answered ones are left out of every mean), beside
    the two predictions themselves.

    GDPO-on-true is the run's own `checkpoints/gdpo` (notebook 03's stage, trained here if
    missing); each predicted p* trains GDPO in its own run `<run>-<predictor>-k<k>`, so that no
    stage of this run is replaced. Methods: prediction, train_mean_prediction,
    gdpo_on_predicted, gdpo_on_train_mean, gdpo_on_true.
    """
    k = cfg.gpo_k if k is None else k
    data = prepare_data(cfg, run)
    group = data.groups[0] if data.groups else cfg.country_name    # the survey's spelling
    train_preference(cfg, run, data, "gdpo")
    best = exp.best                       # chosen on the validation groups
    fs = {arm: few_shot_prediction(exp, method, group, k, data.questions)
          for arm, method in (("predicted", best), ("train_mean", "train_mean"))}
    per_q = {"prediction": fs["predicted"].jsd, "train_mean_prediction": fs["train_mean"].jsd}
    for arm, pred in fs.items():        # the same sub-run twice when the mean is the best
        sub_cfg = cfg.replace(run_name=f"{cfg.run_dir_name}-{pred.method}-k{k}")
        sub_run = runs.Run.open(sub_cfg)
        sub_data = prepare_data(sub_cfg, sub_run, p_star_override=pred.override)
        train_preference(sub_cfg, sub_run, sub_data, "gdpo")
        per_q[f"gdpo_on_{arm}"] = jsd_by_question(sub_cfg, sub_run, sub_data, "gdpo")
    seeds.seed_everything(cfg.seed)      # Run.open of a sub-run re-seeded; restore the order
    # Every arm is scored on the same test prompts against the TRUE p* (an override changes
    # only the training target: a sub-run's eval prompts carry the true p*).
    per_q["gdpo_on_true"] = jsd_by_question(cfg, run, data, "gdpo")
    common = sorted(set.intersection(*(set(v) for v in per_q.values())))
    if not common:
        raise ValueError("few-shot GDPO: no predicted question has a test prompt")
    per_question = pd.DataFrame([{"qid": q, "method": m, "jsd": v[q]}
                                 for m, v in per_q.items() for q in common])
    table = (per_question.groupby("method", sort=False).jsd.agg(["mean", "count"])
             .rename(columns={"mean": "jsd", "count": "n_questions"}).reset_index())
    log.info("few-shot GDPO (%s, k=%d, predictor %s): %s", group, k, best,
             table.to_dict("records"))
    return FewShotGDPO(best, fs["predicted"], per_question, table)
