"""The data section: the group(s) to align to, the survey they come from, the belief scheme,
the responses, the evaluation protocol and the records built from them."""
from __future__ import annotations

import dataclasses
from typing import Any

from gdpolib import sources
from gdpolib.countries import UnknownCountryError, resolve_country
from gdpolib.paramspec import FRACTIONS, fractions_problem, param
from gdpolib.schemes import SURVEY_SCHEMES

N_STYLES_MAX = 6          # len(gdpolib.data.responses.STYLES), not imported: config stays light


def data_input(name: str, default: str | None, help: str) -> Any:
    """A data input: its values mean what gdpolib.sources says (path, hub, github, URL, auto)."""
    return param(default, help, check=lambda value: sources.problem(name, value),
                 allowed=sources.accepted(name))


def _check_country(value: str) -> str | None:
    try:
        resolve_country(value)
    except UnknownCountryError as err:
        return str(err)
    return None


@dataclasses.dataclass(frozen=True)
class DataSection:
    """What the run aligns to and the records it learns and is tested on."""

    country: str = param("sa", "GlobalOpinionQA country whose opinions are the target: its "
                               "dataset name or an alias (sa, pk, us, 'south africa'); the "
                               "survey=goqa name of `group`.",
                         check=_check_country, allowed="a GlobalOpinionQA country or alias")
    survey: str = param("goqa", "Survey the group comes from: goqa (GlobalOpinionQA, goqa_path), "
                                "opinionqa (US groups, opinionqa_path) or file (survey_path).",
                        choices=("goqa", "opinionqa", "file"))
    survey_path: str | None = data_input("survey_path", None, "survey=file (implied when only this "
                                    "is set): a CSV, JSONL or Parquet table, one row per (group, "
                                    "question): group, question, options, distribution[, ordinal, "
                                    "source, qid].")
    group: str | None = param(None, "Group to align to, as the survey names it (close matches "
                                    "suggested): goqa = country (group wins); opinionqa e.g. "
                                    "Democrat or POLPARTY_Democrat; file: null = its only group.")
    groups: list[str] = param([], "Several groups: ONE model conditioned on the group named in "
                                  "every prompt, p* per (group, question); [] = one group.")
    goqa_path: str | None = data_input("goqa_path", "data/globalopinionqa/goqa_partial_hf_schema.csv.gz",
                                  "GlobalOpinionQA as a CSV in the hub file's schema (default: the "
                                  "embedded partial copy); hub or null = the full dataset, "
                                  "downloaded once at goqa_revision.")
    goqa_revision: str = param("cb2880488749218abb81802a94c2c62ebfde2f35",
                               "Commit of Anthropic/llm_global_opinions read from the hub.")
    bad_rows: str = param("skip", "A malformed data row: skip it (counted in the load report) or "
                                  "stop with an error naming it.", choices=("skip", "error"))
    option_map_path: str | None = data_input("option_map_path", "data/gdpo_option_map/option_map.json",
                                        "JSON map option text -> stance class 0..5 (stance6); "
                                        "github downloads the authors' map at its pinned commit.")
    belief_scheme: str = param("options", "Beliefs of a question: options = its answer options, "
                                          "stance6 = the paper's six stance classes (option map).",
                               choices=tuple(SURVEY_SCHEMES))
    max_options: int = param(10, "options scheme: questions with more options are left out "
                                 "(beliefs are single digit tokens).", ge=1, le=10)
    max_questions: int | None = param(None, "Use the first N questions only (quick runs, CI); "
                                            "null = all.", ge=1)
    max_text_chars: int = param(2000, "Longest question or option (characters) a run accepts; "
                                      "a longer one is an error naming it.", ge=1)
    min_questions: int = param(30, "Fewest usable questions the group must have (counted before "
                                   "max_questions); fewer is an error naming the count.", ge=1)
    hub_dataset: str | None = param(None, "The authors' GDPO data from the hub instead "
                                          "(Binwei01/mmoqa_<country>, movie_review...).")
    movies_path: str | None = data_input("movies_path", None, "SNAP web-Movies text file: movie "
                                    "reviews as the data instead (beliefs = star ratings).")
    responses: str = param("template", "Writer of the belief-conditioned responses: template "
                                       "(offline), hf (response_model) or openai (the API).",
                           choices=("template", "hf", "openai"))
    response_model: str | None = param(None, "LM for responses=hf: a hub id, a local folder or "
                                             "smollm2-135m; null = smollm2-135m.")
    api_base: str | None = param(None, "Base URL of an OpenAI-compatible API (responses=openai, "
                                       "judge=openai), e.g. http://localhost:8000/v1.")
    api_model: str | None = param(None, "Model name sent to that API.")
    api_key_env: str = param("OPENAI_API_KEY", "Environment variable that holds the API key.")
    # Six: the model then trains on five option layouts, so the held-out sixth is a new layout
    # of a familiar kind; with two training layouts the demo's model copied the wrong label after
    # the digit in a quarter of its test samples (CBC 0.72 against 0.89 with five;
    # results/demo.md, "The tiny model's recipe").
    n_styles: int = param(6, "Prompt styles (paraphrases) per question, each with its own "
                             "responses.", ge=1, le=N_STYLES_MAX)
    split_by: str = param("prompt", "Evaluation protocol: prompt = seen questions (the paper: "
                                    "test prompts ask training questions in held-out styles), "
                                    "question = unseen questions (whole questions held out).",
                          choices=("prompt", "question"))
    heldout_styles: int = param(1, "split_by prompt: the last N of the n_styles prompt styles are "
                                   "never trained on; every question is trained in the others and "
                                   "asked in these at eval/test time, eval and test split by "
                                   "question. 0 = split prompt strings at random (a test prompt's "
                                   "question and style are then trained on).", ge=0,
                                le=N_STYLES_MAX - 1)
    split_fractions: list[float] = param([0.8, 0.1, 0.1], "Train / eval / test fractions (split_by "
                                         "prompt with held-out styles: only eval : test is used).",
                                         check=fractions_problem, allowed=FRACTIONS)
    sft_per_prompt: int = param(10, "SFT examples per prompt, beliefs drawn from p*.", ge=1)
    pairs_per_prompt: int = param(10, "DPO and GDPO pairs per prompt, chosen belief drawn from "
                                      "p*.", ge=1)
