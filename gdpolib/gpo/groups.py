"""GPO's input: each group's answer distribution per question, group splits, the meta-train
mean and the group-prior table (the meta-train groups' answers appended to every x)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from gdpolib.embeddings import EmbeddingTable, QuestionItem

# Two spellings of one national sample in GlobalOpinionQA (GAS vs WVS); such twins stay together.
SPELLING_TWINS = {"Great Britain": "Britain", "Czechia": "Czech Rep.",
                  "South Korea": "S. Korea", "Taiwan ROC": "Taiwan"}


def country_family(country: str) -> str:
    """The population a GOQA key samples: 'India (Non-national sample)' -> 'India'.

    All keys of one family go to the same split, so a held-out country's "(Non-national
    sample)" (or old/current national sample, or other spelling) never leaks into training.
    """
    base = country.split(" (")[0].strip()
    return SPELLING_TWINS.get(base, base)


@dataclass
class GroupOpinions:
    """The input of GPO: questions and each group's answer distribution per question.

    items: qid -> QuestionItem (question text and options);
    dists: group -> {qid: float64[K_q] distribution over the question's options};
    family: group -> family name (groups of one family share a split);
    ordinals: qid -> float64[K_q] ordinal values (OpinionQA: WD score) or None (JS score).
    """

    name: str
    items: dict[str, QuestionItem]
    dists: dict[str, dict[str, np.ndarray]]
    family: dict[str, str]
    ordinals: dict[str, np.ndarray] | None = None

    @property
    def groups(self) -> list[str]:
        return sorted(self.dists)

    @property
    def metric(self) -> str:
        return "js" if self.ordinals is None else "wd"

    def qids(self, group: str) -> list[str]:
        """The questions a group answered, sorted (a stable order for seeded permutations)."""
        return sorted(self.dists[group])


def from_goqa(goqa, min_questions: int = 60) -> GroupOpinions:
    """Every GlobalOpinionQA country with at least `min_questions` usable questions.

    goqa: gdpolib.data.goqa.GoqaData. The filter is per country (not the paper's
    14-country filter, which deletes questions Pakistan and S. Africa need): a (question,
    country) entry is used when its distribution has one finite, non-negative value per option
    and a positive sum; it is renormalised.
    """
    dists: dict[str, dict[str, np.ndarray]] = {}
    items: dict[str, QuestionItem] = {}
    for q in goqa.questions:
        for country, p in q.selections.items():
            p = np.asarray(p, dtype=np.float64)
            if p.shape != (len(q.options),) or not np.all(np.isfinite(p)) or np.any(p < 0) \
                    or p.sum() <= 0:
                continue
            dists.setdefault(country, {})[q.qid] = p / p.sum()
    dists = {c: d for c, d in dists.items() if len(d) >= min_questions}
    used = {qid for d in dists.values() for qid in d}
    for q in goqa.questions:
        if q.qid in used:
            items[q.qid] = QuestionItem(q.qid, q.question, list(q.options))
    if not dists:
        raise ValueError(f"no GlobalOpinionQA country has >= {min_questions} usable questions "
                         "(lower gpo_min_questions)")
    return GroupOpinions("goqa", items, dists, {c: country_family(c) for c in dists})


def from_opinionqa(oqa) -> GroupOpinions:
    """OpinionQA groups (gdpolib.data.opinionqa.OpinionQAData); scored by the WD alignment."""
    items = {q.qid: QuestionItem(q.qid, q.question, list(q.options)) for q in oqa.questions}
    dists = {g: {q.qid: q.dists[g] for q in oqa.questions if g in q.dists} for g in oqa.groups}
    ordinals = {q.qid: np.asarray(q.ordinals, dtype=np.float64) for q in oqa.questions}
    return GroupOpinions("opinionqa", items, dists, {g: g for g in dists}, ordinals)


def from_survey(survey, min_questions: int = 1) -> GroupOpinions:
    """Any survey in the survey format (gdpolib.data.survey.Survey): every group with at least
    `min_questions` questions; scored by the WD alignment when every question has ordinal
    values, else by 1 - JS. Families as for GlobalOpinionQA ('X (Non-national sample)' is X)."""
    dists: dict[str, dict[str, np.ndarray]] = {}
    for r in survey.rows:
        dists.setdefault(r.group, {})[r.qid] = r.distribution / r.distribution.sum()
    dists = {g: d for g, d in dists.items() if len(d) >= min_questions}
    if not dists:
        raise ValueError(f"no group of survey {survey.name} has >= {min_questions} questions")
    used = {q for d in dists.values() for q in d}
    questions = [q for q in survey.questions() if q.qid in used]
    items = {q.qid: QuestionItem(q.qid, q.question, list(q.options)) for q in questions}
    ordinals = None if any(q.ordinal is None for q in questions) else \
        {q.qid: np.asarray(q.ordinal, dtype=np.float64) for q in questions}
    return GroupOpinions(survey.name, items, dists, {g: country_family(g) for g in dists}, ordinals)


def split_groups(data: GroupOpinions, fractions: Sequence[float], seed: int,
                 holdout: Sequence[str] = ()) -> dict[str, list[str]]:
    """Seeded meta-train / validation / test split of the groups, by FAMILY.

    fractions: (train, val, test), summing to 1, applied to the families other than the
    `holdout` ones; the families of `holdout` groups go to test. Validation and test get at
    least one family each when their fraction is positive and there are families to spare.
    Returns {"train": [...], "val": [...], "test": [...]} (sorted group names).
    """
    unknown = [g for g in holdout if g not in data.dists]
    if unknown:
        raise KeyError(f"holdout group(s) {unknown} not among the {len(data.dists)} groups "
                       f"(too few questions? groups: {', '.join(data.groups[:10])}, ...)")
    held = {data.family[g] for g in holdout}
    families = sorted(set(data.family.values()) - held)
    order = [families[i] for i in np.random.default_rng(seed).permutation(len(families))]
    n = len(order)
    n_val, n_test = round(fractions[1] * n), round(fractions[2] * n)
    if fractions[1] > 0 and n_val == 0 and n >= 3:
        n_val = 1
    if fractions[2] > 0 and n_test == 0 and n >= 3 and not held:
        n_test = 1
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"group split {list(fractions)} leaves no meta-train group ({n} families)")
    part = {f: "train" for f in order[:n_train]}
    part.update({f: "val" for f in order[n_train:n_train + n_val]})
    part.update({f: "test" for f in order[n_train + n_val:]})
    part.update({f: "test" for f in held})
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for g in data.groups:
        out[part[data.family[g]]].append(g)
    return out


# ------------------------------------------------------------ meta-train mean, group prior
def train_mean(data: GroupOpinions, train_groups: Sequence[str], qid: str) -> np.ndarray:
    """Mean distribution of the meta-train groups that answered `qid` (uniform if none)."""
    ps = [data.dists[g][qid] for g in train_groups if qid in data.dists[g]]
    k = len(data.items[qid].options)
    return np.mean(ps, axis=0) if ps else np.full(k, 1 / k)


@dataclass
class GroupPriorTable(EmbeddingTable):
    """An embedding table extended with what the meta-train groups answered (gpo_prior:
    train_groups), for the group-prior GPO variant (GPOModel.deviation_scale).

    Row (q, o) = [x_{q,o}; d_{g_1,q,o} .. d_{g_G,q,o}; m_{q,o}]: m is the mean share of option o
    over the meta-train groups that answered q (train_mean) and d_g = y_{g,q,o} - m (0 where g
    did not answer q). Questions are shared across groups (the paper's setting), so these are
    known for a new group's targets too; no validation or test group's answer is read.
    deviation_scale = 1 / std of the answered d's: deviations enter the model at unit scale.
    This type is the one switch of the variant: meta_train builds the group-prior model
    exactly when its table is a GroupPriorTable.
    """

    deviation_scale: float = 1.0


def with_group_prior(emb: EmbeddingTable, data: GroupOpinions,
                     train_groups: Sequence[str]) -> GroupPriorTable:
    """`emb` with the meta-train groups' answer profile and mean appended ([rows, d + G + 1])."""
    extra = np.zeros((len(emb.vectors), len(train_groups) + 1), np.float32)
    answered = np.zeros(extra.shape[:1] + (len(train_groups),), bool)
    for qid, (start, n) in emb.index.items():
        if qid not in data.items:
            continue
        m = train_mean(data, train_groups, qid)
        extra[start:start + n, -1] = m
        for j, g in enumerate(train_groups):
            if qid in data.dists[g]:
                extra[start:start + n, j] = data.dists[g][qid] - m
                answered[start:start + n, j] = True
    std = float(extra[:, :-1][answered].std()) if answered.any() else 0.0
    return GroupPriorTable(np.hstack([emb.vectors, extra]), emb.index, emb.model,
                           emb.dim + extra.shape[1], key=f"{emb.key}+prior{len(train_groups)}",
                           deviation_scale=1.0 / std if std > 0 else 1.0)
