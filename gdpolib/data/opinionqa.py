"""OpinionQA (Santurkar et al. 2023) per-group answer distributions, for GPO.

Reads the original `opinions_qa` files (tatsu-lab/opinions_qa `data/human_resp/`, or the same
format in nicolemeister/benchmarking-distributional-alignment):

    <root>/<WAVE>/info.csv          one row per question: key, question, references (the option
                                    labels, a Python list string), option_ordinal (a Python list
                                    string: the ordinal value of each of the FIRST len() options)
    <root>/<WAVE>/<ATTR>_data.json  {qkey: {"MC_options": [...], "question_text": str,
                                            "<group>": {"<option label>": count, ...}}}

`root` may also be a single wave folder (one with info.csv). The counts are unweighted respondent
counts. A question's ordinal options are the first len(option_ordinal) labels of `references`;
the labels after them ("Refused", "Not sure", ...) are non-ordinal and are dropped, and the
counts of the ordinal options are renormalised into the group's distribution (OpinionQA's D_H).
The ordinal values are kept for the Wasserstein alignment score.

Quirks of the real files that this loader handles (see the data folder's PROVENANCE.md):
- `MC_options` in the json files is split at commas ('Yes', 'I own a gun' for "Yes, I own a
  gun"), so the option labels come from info.csv's `references`, never from MC_options.
- count labels may differ from the references in case only ("noR worse"): matched ignoring case.
- an option with no respondent is missing from the group's counts (count 0).
- `option_ordinal` may be non-monotone ([1, 2, 1.5]: "neither" sits in the middle) or constant
  (a nominal question, WD_max = 0; the alignment score skips those).
- `NONE_data.json` is a copy of POLPARTY_data.json, and the *_RACE/*_SEX files are nested by two
  attributes; neither is read unless asked for.
"""
from __future__ import annotations

import ast
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gdpolib.data.survey import Survey, SurveyReport, SurveyRow
from gdpolib.data.survey_files import read_csv_text

log = logging.getLogger("gdpolib.data.opinionqa")

# GPO's 22 US demographic groups (the GPO paper's) and the attribute file of each.
# The RELIG groups have no data file in tatsu-lab's copy; they are used when a file exists.
GPO_GROUPS: dict[str, str] = {
    "Northeast": "CREGION", "South": "CREGION",
    "Female": "SEX", "Male": "SEX",
    "College graduate/some postgrad": "EDUCATION", "Less than high school": "EDUCATION",
    "Atheist": "RELIG", "Hindu": "RELIG", "Jewish": "RELIG", "Muslim": "RELIG",
    "Protestant": "RELIG",
    "Democrat": "POLPARTY", "Republican": "POLPARTY",
    "$100,000 or more": "INCOME", "Less than $30,000": "INCOME",
    "Conservative": "POLIDEOLOGY", "Liberal": "POLIDEOLOGY", "Moderate": "POLIDEOLOGY",
    "Asian": "RACE", "Black": "RACE", "Hispanic": "RACE", "White": "RACE",
}
INFO_COLUMNS = ("key", "question", "references", "option_ordinal")
# The single-attribute files, and the keys of them that are not a demographic group.
SINGLE_ATTRIBUTES = ("AGE", "CREGION", "EDUCATION", "INCOME", "POLIDEOLOGY", "POLPARTY", "RACE",
                     "SEX", "RELIG")
NOT_A_GROUP = frozenset({"MC_options", "question_text", "nan", "Refused", "Other"})


class OpinionQAError(ValueError):
    """A malformed OpinionQA file or entry; the message names the file and the key."""


@dataclass
class OqaQuestion:
    """One question with the distribution of each group over its ordinal options."""

    qid: str                          # the survey key, e.g. "SAFECRIME_W26"
    wave: str                         # folder name, e.g. "American_Trends_Panel_W26"
    question: str
    options: list[str]                # ordinal options only (refusals dropped), info.csv order
    ordinals: np.ndarray              # float64[len(options)]: the ordinal value of each option
    dists: dict[str, np.ndarray] = field(default_factory=dict)   # group -> float64[n], sums to 1
    counts: dict[str, np.ndarray] = field(default_factory=dict)  # group -> raw counts [n]


@dataclass
class OpinionQAData:
    questions: list[OqaQuestion]
    groups: list[str]                 # the groups loaded, in the order asked for
    attributes: dict[str, str]        # group -> attribute file (e.g. "Democrat" -> "POLPARTY")
    root: str
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (qid or file, reason)

    def for_group(self, group: str) -> list[OqaQuestion]:
        """Questions the group answered."""
        return [q for q in self.questions if group in q.dists]


# ---------------------------------------------------------------------------- parsing helpers
def _norm_label(s: str) -> str:
    """Labels compared ignoring case, surrounding quotes and repeated spaces."""
    return " ".join(str(s).strip().strip('"').split()).casefold()


def _literal_list(text: object, what: str, where: str) -> list:
    if not isinstance(text, str):
        raise OpinionQAError(f"{where}: {what} is {type(text).__name__}, not a list string")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        raise OpinionQAError(f"{where}: {what} is not a Python list ({err}): {text[:80]!r}") from None
    if not isinstance(value, (list, tuple)):
        raise OpinionQAError(f"{where}: {what} is not a list: {text[:80]!r}")
    return list(value)


def read_info(path: Path) -> dict[str, dict]:
    """info.csv -> {qkey: {"question", "references", "ordinals"}}; clear errors per row."""
    df = read_csv_text(path, INFO_COLUMNS, OpinionQAError, str(path))
    out: dict[str, dict] = {}
    for i, row in df.iterrows():
        where = f"{path} row {i} (key {row['key']!r})"
        refs = [str(r) for r in _literal_list(row["references"], "references", where)]
        ords = _literal_list(row["option_ordinal"], "option_ordinal", where)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in ords):
            raise OpinionQAError(f"{where}: option_ordinal holds a non-number: {ords}")
        if len(ords) > len(refs):
            raise OpinionQAError(f"{where}: {len(ords)} ordinal values for {len(refs)} options")
        out[row["key"]] = {"question": row["question"], "references": refs,
                           "ordinals": np.asarray(ords, dtype=np.float64)}
    return out


def _group_counts(counts: object, options: list[str], all_refs: list[str], where: str,
                  ) -> np.ndarray:
    """Counts of a group over the ordinal `options` (labels matched ignoring case)."""
    if not isinstance(counts, dict):
        raise OpinionQAError(f"{where}: counts are {type(counts).__name__}, not a dict "
                             f"(a nested two-attribute file?)")
    index = {_norm_label(o): k for k, o in enumerate(options)}
    known = {_norm_label(o) for o in all_refs}
    out = np.zeros(len(options), dtype=np.float64)
    for label, value in counts.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not math.isfinite(value) or value < 0:
            raise OpinionQAError(f"{where}: count for {label!r} is not a non-negative number: "
                                 f"{value!r}")
        key = _norm_label(label)
        if key in index:
            out[index[key]] += float(value)
        elif key not in known:
            raise OpinionQAError(f"{where}: option {label!r} is not among the question's "
                                 f"references {all_refs}")
    return out


def _wave_dirs(root: Path) -> list[Path]:
    if (root / "info.csv").exists():
        return [root]
    waves = sorted(p for p in root.iterdir() if p.is_dir() and (p / "info.csv").exists())
    if not waves:
        raise OpinionQAError(f"{root}: no wave folder with an info.csv (expected "
                             f"<root>/<WAVE>/info.csv and <ATTR>_data.json files)")
    return waves


def attribute_groups(path: str | Path,
                     attributes: tuple[str, ...] = SINGLE_ATTRIBUTES) -> dict[str, str]:
    """Every demographic group of the single-attribute files: {label: attribute}.

    A group counts when every wave that has its attribute file lists it (so that asking for
    all groups does not shrink the shared question set to a few waves); "Refused", "Other"
    and "nan" are answers about the respondent, not groups. Tatsu-lab's copy gives 34 groups
    (no RELIG file), against the paper's 22.
    """
    waves = _wave_dirs(Path(path))
    groups: dict[str, str] = {}
    for attr in attributes:
        seen: set[str] | None = None
        for wave in waves:
            file = wave / f"{attr}_data.json"
            if not file.exists():
                continue
            labels = {g for q in json.loads(file.read_text()).values() if isinstance(q, dict)
                      for g in q} - NOT_A_GROUP
            seen = labels if seen is None else seen & labels
        groups.update({g: attr for g in sorted(seen or ())})
    return groups


# ---------------------------------------------------------------------------- the loader
def load_opinionqa(path: str | Path, groups: list[str] | dict[str, str] | None = None, *,
                   require_all_groups: bool = True, bad_rows: str = "skip") -> OpinionQAData:
    """Load per-group answer distributions from opinions_qa `human_resp` files.

    path: the `human_resp` folder (holding wave folders) or one wave folder.
    groups: group labels to load; a list takes their attribute from GPO_GROUPS, a dict maps
        label -> attribute (e.g. {"Independent": "POLPARTY"}). Default: GPO's 22 groups, keeping
        those whose attribute file exists (tatsu-lab's copy has no RELIG file: 17 groups).
    require_all_groups: keep only questions every loaded group answered (as GPO does), so all
        groups share one question set.
    bad_rows: "skip" logs and skips a malformed question; "error" raises OpinionQAError.
    Raises OpinionQAError for a missing folder, a malformed info.csv, or a json file that is not
    an object of questions.
    """
    if bad_rows not in ("skip", "error"):
        raise ValueError(f"bad_rows must be 'skip' or 'error', got {bad_rows!r}")
    root = Path(path)
    if not root.is_dir():
        raise OpinionQAError(f"OpinionQA folder {str(root)!r} does not exist (opinionqa_path)")
    waves = _wave_dirs(root)
    explicit = groups is not None
    attributes = dict(GPO_GROUPS) if groups is None else (
        dict(groups) if isinstance(groups, dict) else {g: GPO_GROUPS.get(g, "") for g in groups})
    unknown = [g for g, a in attributes.items() if not a]
    if unknown:
        raise OpinionQAError(f"no attribute known for group(s) {unknown}: pass a dict "
                             f"{{label: attribute}}, e.g. {{'Independent': 'POLPARTY'}}")
    present = {a for w in waves for a in attributes.values() if (w / f"{a}_data.json").exists()}
    missing_attr = sorted(set(attributes.values()) - present)
    if missing_attr:
        if explicit:
            raise OpinionQAError(f"{root}: no {', '.join(f'{a}_data.json' for a in missing_attr)} "
                                 f"in any wave, needed for groups "
                                 f"{[g for g, a in attributes.items() if a in missing_attr]}")
        log.info("OpinionQA: no %s files in %s; skipping groups %s", missing_attr, root,
                 [g for g, a in attributes.items() if a in missing_attr])
        attributes = {g: a for g, a in attributes.items() if a in present}

    questions: list[OqaQuestion] = []
    skipped: list[tuple[str, str]] = []
    seen_groups: set[str] = set()
    for wave in waves:
        info = read_info(wave / "info.csv")
        by_q: dict[str, OqaQuestion] = {}
        bad: set[str] = set()            # a question malformed in one file is dropped in all
        for attr in sorted(set(attributes.values())):
            fpath = wave / f"{attr}_data.json"
            if not fpath.exists():
                continue
            try:
                data = json.loads(fpath.read_text())
            except json.JSONDecodeError as err:
                raise OpinionQAError(f"{fpath}: not valid JSON ({err})") from None
            if not isinstance(data, dict):
                raise OpinionQAError(f"{fpath}: expected an object keyed by question key")
            for qid, entry in data.items():
                where = f"{fpath} question {qid!r}"
                if qid in bad:
                    continue
                try:
                    if qid not in info:
                        raise OpinionQAError(f"{where}: key not in {wave / 'info.csv'}")
                    if not isinstance(entry, dict):
                        raise OpinionQAError(f"{where}: entry is not an object")
                    meta = info[qid]
                    n = len(meta["ordinals"])
                    options = meta["references"][:n]
                    q = by_q.get(qid) or OqaQuestion(
                        qid=qid, wave=wave.name, question=str(meta["question"]), options=options,
                        ordinals=meta["ordinals"])
                    for group, attr_g in attributes.items():
                        if attr_g != attr or group not in entry:
                            continue
                        c = _group_counts(entry[group], options, meta["references"],
                                          f"{where} group {group!r}")
                        if c.sum() > 0:   # a group with no ordinal answer did not answer
                            q.counts[group], q.dists[group] = c, c / c.sum()
                            seen_groups.add(group)
                    by_q[qid] = q
                except OpinionQAError as err:
                    if bad_rows == "error":
                        raise
                    skipped.append((qid, str(err)))
                    bad.add(qid)
                    by_q.pop(qid, None)
        questions.extend(q for q in by_q.values() if len(q.options) >= 2)

    loaded = [g for g in attributes if g in seen_groups]
    if not loaded:
        raise OpinionQAError(f"{root}: none of the groups {list(attributes)} has any answer")
    if require_all_groups:
        questions = [q for q in questions if all(g in q.dists for g in loaded)]
    if skipped:
        log.warning("OpinionQA: skipped %d malformed question entries (first: %s)",
                    len(skipped), skipped[0])
    return OpinionQAData(questions=questions, groups=loaded,
                         attributes={g: attributes[g] for g in loaded}, root=str(root),
                         skipped=skipped)


def to_survey(data: OpinionQAData) -> Survey:
    """OpinionQA in the survey format (gdpolib.data.survey): one row per (group, question),
    qid = the survey key (e.g. SAFECRIME_W26), the ordinal values kept, source = the wave. A
    group is also found as "<ATTRIBUTE>_<group>" (POLPARTY_Democrat) or "<ATTRIBUTE>: <group>"."""
    rows = [SurveyRow(g, q.qid, q.question, list(q.options), q.dists[g],
                      np.asarray(q.ordinals, dtype=np.float64), q.wave)
            for q in data.questions for g in data.groups if g in q.dists]
    report = SurveyReport(origin=data.root, n_rows=len(rows), skipped=list(data.skipped))
    return Survey("opinionqa", rows, report, aliases=group_aliases(data.attributes))


def group_aliases(attributes: dict[str, str]) -> dict[str, str]:
    """Other spellings of each group, casefolded: {"polparty_democrat": "Democrat", ...}."""
    return {f"{attr}{sep}{group}".casefold(): group for group, attr in attributes.items()
            for sep in ("_", ":", ": ", " ")}
