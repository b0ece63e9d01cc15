"""THE registry of metrics: every number of metrics.json (and every column of the evaluation
tables) is one `Metric` here: its key, what it means, the function that computes it, its
convention, which way is better and whether it needs well-formed samples to mean anything. The
lists of keys (what metrics.json records, Table 2's rows, the seed tables, the model card, the
notebooks' results table) and docs/metrics.md (`python -m gdpolib.paramdocs --write`) read it.

Adding a metric: compute it in one function (gdpolib.scoring or gdpolib.metrics), add one
`Metric(...)` here naming that function and the tables it appears in, and regenerate the docs.
Light on purpose (no numpy): the docs generator reads it.
"""
from __future__ import annotations

from dataclasses import dataclass

from gdpolib import methods

# Parts of metrics.json; "" = the evaluation tables only (tables/methods.csv, Table 2).
PARTS = {"data": "the data stage (`data.<key>`), written by gdpolib.stages.data.prepare_data",
         "methods": "each method's test numbers (`methods.<method>.<key>`), written by "
                    "gdpolib.stages.evaluate.record",
         "skew": "the reward margins of the methods whose registry entry has `margins` "
                 "(`skew.<method>.<key>`), written by gdpolib.stages.evaluate.record",
         "gpo": "GPO's alignment scores (`gpo.<key>`), written by gdpolib.stages.gpo.record",
         "": "not in metrics.json: columns of the evaluation tables (`tables/methods.csv`, "
             "Table 2) and of the notebooks' tables"}
# The tables a metric appears in, in registry order: Table 2's rows; the extra columns of
# tables/methods.csv; the notebooks' test read-out table (results_table); the seed tables; the
# model card.
TABLES = ("table2", "details", "results", "seeds", "card")
DIRECTIONS = {"lower": "lower", "higher": "higher", "target": "closer to entropy_target",
              "one": "closer to 1", "": "–"}
READOUT = "test read-out: the belief distribution at the answer position, per test prompt"
SAMPLES = "n_samples sampled completions per test prompt"


@dataclass(frozen=True)
class Metric:
    """One number of the evaluation (and, unless part is "", of metrics.json)."""

    key: str
    part: str                      # PARTS
    meaning: str
    function: str                  # the function that computes it (dotted path)
    convention: str = ""           # how it is computed / what it is over
    direction: str = ""            # DIRECTIONS: which way is better ("" = descriptive)
    well_formed: bool = False      # only interpretable for a model whose outputs parse
    ci: bool = False               # has a `<key>_ci` twin: 95% bootstrap interval over questions
    tables: tuple[str, ...] = ()   # TABLES it appears in

    def __post_init__(self):
        if self.part not in PARTS or self.direction not in DIRECTIONS or \
                not set(self.tables) <= set(TABLES):
            raise ValueError(f"metric {self.key!r}: unknown part, direction or table")


CI = "[low, high]: 95% percentile bootstrap interval of the mean, resampling test questions " \
     "(gdpolib.metrics.distances.bootstrap_ci; ci_resamples draws, seeded)"
T2 = ("table2", "card", "seeds", "results")
METRICS: tuple[Metric, ...] = (
    # --- the belief read-out (gdpolib.scoring.readout_summary: means over the valid prompts)
    Metric("jsd", "methods", "Jensen-Shannon distance between the model's belief distribution "
           "and the group's p*, both renormalised over the question's belief set",
           "gdpolib.metrics.distances.jsd_per_prompt", f"{READOUT}; natural log, in [0, "
           "sqrt(ln 2)]; mass outside the belief set is invisible to it", "lower", ci=True,
           tables=T2),
    # --- paired differences (gdpolib.stages.evaluate.paired_comparisons), one per reference
    *(m for ref in methods.paired_references() for m in (
        Metric(f"jsd_vs_{ref}", "methods", f"the method's test JSD minus {ref}'s, question by "
               f"question: mean of the per-question differences (absent for {ref} itself)",
               "gdpolib.metrics.paired.compare_by_question", "mean JSD per question of both read-outs, "
               "over the questions both scored; `_ci`: a PAIRED 95% percentile bootstrap "
               "interval resampling those questions (scipy.stats.bootstrap, paired=True)",
               "lower", ci=True, tables=("table2", "seeds", "results")),
        Metric(f"jsd_vs_{ref}_questions", "methods", f"questions behind jsd_vs_{ref}",
               "gdpolib.metrics.paired.compare_by_question", tables=("details",)))),
    Metric("jsd_digits", "methods", "the JS distance renormalised over ALL K belief digits "
           "(the authors' convention, the paper's Table 2 JSD): mass on digits outside the "
           "question's set counts", "gdpolib.metrics.distances.jsd_digits_per_prompt", READOUT,
           "lower", ci=True, tables=T2),
    Metric("tvd", "methods", "total variation distance 0.5 * sum |p - p*| over the belief set",
           "gdpolib.metrics.distances.tvd_per_prompt", f"{READOUT}; in [0, 1]", "lower",
           ci=True, tables=("table2", "card", "seeds", "results")),
    Metric("wasserstein", "methods", "1-D Wasserstein distance / its maximum over the ordinal "
           "beliefs (stance6 classes 1-5, class 0 'no stance' left out; star ratings)",
           "gdpolib.metrics.distances.wasserstein_per_prompt", f"{READOUT}; only questions "
           "with an ordinal scale (absent when none has one); in [0, 1]", "lower", ci=True,
           tables=("table2", "seeds", "results")),
    Metric("entropy", "methods", "entropy (nats) of the predicted belief distribution",
           "gdpolib.metrics.distances.entropy_per_prompt", f"{READOUT}; renormalised over the "
           "belief set; beside entropy_target it shows a model too sure or too flat", "target",
           tables=("table2", "seeds", "results")),
    Metric("entropy_target", "methods", "entropy (nats) of the group's p*",
           "gdpolib.metrics.distances.entropy_per_prompt", "the same prompts as entropy",
           tables=("table2", "seeds", "results")),
    Metric("belief_mass", "methods", "probability mass the model puts on the question's belief "
           "tokens at the answer position", "gdpolib.scoring.score_probs", f"{READOUT}; "
           "full-vocabulary softmax", "higher", tables=T2),
    Metric("n_invalid", "methods", "test prompts left out of the read-out numbers: no mass on "
           "their belief set (counted, never scored)", "gdpolib.scoring.readout_summary",
           READOUT, "lower", tables=("table2", "results")),
    # --- reward margins (gdpolib.margins.margin_summary: beta * log-ratio vs the SFT reference)
    Metric("margin_majority", "skew", "mean reward margin (chosen - rejected) on the test pairs "
           "whose chosen belief is the majority (argmax p*)", "gdpolib.margins.margin_summary",
           "beta * (policy - SFT reference) log-ratio of chosen vs rejected, on the SAME "
           "conflicting (DPO) test pairs for every method (registry `margins`): like for like",
           tables=("table2", "seeds", "card", "results")),
    Metric("margin_minority", "skew", "mean reward margin on the test pairs whose chosen belief "
           "is a minority one (a gap to margin_majority is the skew)",
           "gdpolib.margins.margin_summary", "as margin_majority",
           tables=("table2", "seeds", "card", "results")),
    Metric("shared_margin_majority", "skew", "mean reward margin on the method's OWN "
           "shared-belief test pairs whose chosen belief is the majority (the paper's Finding 1: "
           "the belief prefix cancels there)", "gdpolib.margins.margin_summary",
           "as margin_majority, on the registry's `shared_margins` pairs (the GDPO family)",
           tables=("table2", "seeds", "results")),
    Metric("shared_margin_minority", "skew", "as shared_margin_majority, minority-chosen pairs",
           "gdpolib.margins.margin_summary", "as shared_margin_majority",
           tables=("table2", "seeds", "results")),
    Metric("accuracy_majority", "", "share of majority-chosen test pairs with a positive margin",
           "gdpolib.margins.margin_summary", "as margin_majority", tables=("results",)),
    Metric("accuracy_minority", "", "share of minority-chosen test pairs with a positive margin",
           "gdpolib.margins.margin_summary", "as margin_majority", tables=("results",)),
    # --- sampled outputs (gdpolib.scoring.score_samples)
    Metric("invalid_rate", "methods", "share of samples that do not parse as `k<label>response` "
           "with k in the question's belief set", "gdpolib.metrics.sampled.belief_counts",
           SAMPLES, "lower", tables=("table2", "card", "seeds")),
    Metric("cbc", "methods", "class-belief consistency: share of samples whose digit agrees "
           "with the `<description>` written after it", "gdpolib.metrics.sampled.cbc",
           f"{SAMPLES}; the belief scheme's check (gdpolib.schemes: options = the option's "
           "text; stance6 = an option the map sends to that class)", "higher",
           well_formed=True, tables=("table2", "card", "seeds")),
    Metric("jsd_sampled", "methods", "JS distance between the histogram of sampled beliefs and "
           "p*; an output that does not parse is its own 'invalid' bucket (costs JSD)",
           "gdpolib.metrics.sampled.sampled_jsd_per_prompt", f"{SAMPLES}; read it against "
           "noise_floor", "lower", well_formed=True, tables=("table2", "card")),
    Metric("noise_floor", "", "the sampled JSD a perfectly calibrated model gets with the same "
           "n samples per prompt", "gdpolib.metrics.sampled.noise_floor", "exact expectation "
           "over histograms (Monte Carlo when too many)", tables=("table2",)),
    Metric("bpc", "methods", "belief-preference consistency: share of judged samples whose "
           "response voices the belief its digit states", "gdpolib.judges.JudgeResult.bpc",
           f"{SAMPLES}; judge = embedding (nearest reference response) or an LLM via the API",
           "higher", well_formed=True, tables=("table2", "card")),
    Metric("rs", "methods", "reference similarity: cosine similarity between a response and the "
           "reference response of its PREDICTED belief", "gdpolib.metrics.sampled."
           "reference_similarity", f"{SAMPLES}; 0 for an invalid sample", "higher",
           well_formed=True, tables=("table2", "card")),
    Metric("majority_bias", "", "sampled share of the majority belief / its p* (> 1: the model "
           "over-produces the majority, DPO's skew)", "gdpolib.metrics.sampled.majority_bias",
           f"{SAMPLES}; among the valid samples", "one", tables=("table2",)),
    # --- counts and bookkeeping of a method's evaluation
    Metric("bpc_judged", "", "samples the BPC judge scored", "gdpolib.judges.JudgeResult.judged",
           "judge_samples per prompt (0 = all)", tables=("details",)),
    Metric("bpc_api_errors", "", "samples the chat judge could not score (API errors)",
           "gdpolib.scoring.score_samples", tables=("details",)),
    Metric("bpc_unparseable", "", "chat-judge replies that were neither yes nor no",
           "gdpolib.scoring.score_samples", tables=("details",)),
    Metric("n_prompts", "", "test prompts scored", "gdpolib.scoring.readout_summary",
           tables=("details",)),
    Metric("n_questions", "methods", "test questions with at least one valid read-out prompt",
           "gdpolib.scoring.readout_summary", READOUT, tables=("details",)),
    Metric("n_samples", "", "completions sampled per test prompt", "gdpolib.scoring.score_samples",
           tables=("details",)),
    Metric("seconds", "", "wall time of sampling and scoring the outputs",
           "gdpolib.scoring.score_samples", tables=("details",)),
    # --- the data stage (gdpolib.data.records.metrics_part)
    Metric("questions", "data", "questions the run uses (after the belief scheme, min/max "
           "questions)", "gdpolib.data.records.metrics_part"),
    Metric("train", "data", "preference pairs (DPO = GDPO) in the train split",
           "gdpolib.data.records.metrics_part", "pairs_per_prompt per training prompt"),
    Metric("eval", "data", "preference pairs in the eval split (model selection, tracking)",
           "gdpolib.data.records.metrics_part"),
    Metric("test", "data", "preference pairs in the test split (the reward margins)",
           "gdpolib.data.records.metrics_part"),
    Metric("protocol", "data", "the evaluation protocol: seen_questions, unseen_questions, "
           "seen_prompts, or given (a dataset's own splits)", "gdpolib.data.splits.split_report"),
    Metric("heldout_styles", "data", "prompt styles never trained on (seen_questions: test "
           "prompts ask training questions in these styles)", "gdpolib.data.splits.split_report"),
    Metric("test_prompts", "data", "test prompts every method is scored on",
           "gdpolib.data.records.metrics_part"),
    Metric("test_questions", "data", "questions the test prompts ask",
           "gdpolib.data.records.metrics_part", "absent for a hub dataset"),
    Metric("test_overlap", "data", "how much training text the test prompts repeat: the mean, "
           "over test prompts, of the longest run of word tokens a test prompt shares with any "
           "training prompt, as a share of its own tokens (1 = it appears whole inside a "
           "training prompt)", "gdpolib.data.splits.overlap_report", "words and punctuation "
           "marks, case kept; absent when a split has no prompts", "lower"),
    # --- GPO (notebook 05)
    Metric("alignment", "gpo", "alignment score of each GPO method and baseline "
           "(`gpo.alignment.<method>`): mean over the test groups' (group, question) pairs of "
           "1 - JS distance to the group's answers", "gdpolib.metrics.alignment.alignment_scores",
           "GlobalOpinionQA test groups, k answered context questions each", "higher"),
    Metric("k", "gpo", "answered context questions per test group behind `alignment`",
           "gdpolib.stages.gpo.record", "the parameter gpo_k"),
    Metric("selected_step", "gpo", "the meta-training step each GPO method's weights come from "
           "(`gpo.selected_step.<method>`): the step scoring best on the validation groups",
           "gdpolib.gpo.experiment.GPOExperiment.selected_step", "validation groups' episodes "
           "at k = gpo_k; the baselines have none"),
)
BY_KEY: dict[tuple[str, str], Metric] = {(m.part, m.key): m for m in METRICS}


def get(key: str) -> Metric:
    """The metric of an evaluation key (a `<key>_ci` interval gives its metric)."""
    base = key.removesuffix("_ci")
    for m in METRICS:
        if m.key == base and m.part not in ("data", "gpo") and (m.ci or base == key):
            return m
    raise KeyError(f"no metric {key!r} in gdpolib/metrics/registry.py")


def keys(*, part: str | None = None, table: str | None = None, intervals: bool = True
         ) -> tuple[str, ...]:
    """Keys in registry order: of one part of metrics.json and/or one table, each interval
    `<key>_ci` right after its metric (unless intervals is False)."""
    out: list[str] = []
    for m in METRICS:
        if (part is None or m.part == part) and (table is None or table in m.tables):
            out += [m.key] + ([f"{m.key}_ci"] if m.ci and intervals else [])
    return tuple(out)


def well_formed_keys() -> tuple[str, ...]:
    """The metrics of sampled text that mean nothing for a model whose outputs do not parse."""
    return tuple(m.key for m in METRICS if m.well_formed)


def render_docs() -> str:
    """docs/metrics.md: every key of metrics.json (and of the evaluation tables), by part."""
    lines = ["# Metrics", "",
             "<!-- generated from gdpolib/metrics/registry.py by `python -m gdpolib.paramdocs "
             "--write`; do not edit -->", "",
             "Every number a run records, declared once in `gdpolib/metrics/registry.py`: what it "
             "means, the function that computes it, its convention and which way is better. A "
             "metric marked *well-formed only* is read from sampled text and means nothing for "
             "a model whose outputs do not parse (see its invalid_rate and cbc). `<key>_ci` is "
             f"{CI}."]
    for part, what in PARTS.items():
        title = f"`{part}`" if part else "tables only"
        lines += ["", f"## {title}", "", what[0].upper() + what[1:] + ".", "",
                  "| key | meaning | computed by | convention | better |", "|---|---|---|---|---|"]
        for m in (m for m in METRICS if m.part == part):
            name = f"`{m.key}`" + (f", `{m.key}_ci`" if m.ci else "")
            note = " (well-formed only)" if m.well_formed else ""
            cells = [name, m.meaning + note, f"`{m.function}`", m.convention or "–",
                     DIRECTIONS[m.direction]]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
