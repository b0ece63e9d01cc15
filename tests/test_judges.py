"""BPC judges: strict yes/no parsing, retries, API errors and junk EXCLUDED (fake client, no
network); the embedding judge on hand-made vectors."""
from __future__ import annotations

import types

import numpy as np
import pytest

from gdpolib import judges


class FakeClient:
    """Mimics openai.OpenAI().chat.completions.create: replies from a script; an Exception in
    the script is raised instead."""

    def __init__(self, script):
        self.script, self.calls = list(script), []
        self.chat = types.SimpleNamespace(completions=types.SimpleNamespace(create=self.create))

    def create(self, model, messages, **kw):
        self.calls.append(messages)
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        msg = types.SimpleNamespace(content=item)
        return types.SimpleNamespace(choices=[types.SimpleNamespace(message=msg)])


@pytest.mark.parametrize("reply, verdict", [
    ("Yes\nIt voices the option.", True), ("no\nIt does not.", False), ("  YES.  \nok", True),
    ("**No**", False), ("Yes", True),
    ("Yes, it does.", None), ("Maybe\nunclear", None), ("", None), (None, None),
    ("The answer is Yes\nYes", None), ("Yes or No\n", None),
])
def test_parse_verdict_is_strict(reply, verdict):
    assert judges.parse_verdict(reply) is verdict


def test_chat_judge_counts_and_excludes_errors_and_junk():
    err = RuntimeError("503")
    client = FakeClient(["Yes\nfine",             # sample 0: pass
                         err, err, err,           # sample 1: every retry fails -> excluded
                         "Definitely\nyes",       # sample 2: unparseable -> excluded
                         err, "No\nnot it"])      # sample 3: one retry, then a fail verdict
    sleeps = []
    judge = judges.ChatJudge(client, "m", max_retries=2, backoff_s=0.5, sleep=sleeps.append)
    res = judge.judge([0, 1, 2, 1, judges_invalid()], ["a", "b", "c", "d", "e"],
                      questions=["q"] * 5, descriptions=["Yes", "No", "Yes", "No", None])
    assert res.verdicts == [True, None, None, False, False]
    assert res.api_errors == 1 and res.unparseable == 1 and res.judged == 3
    assert res.bpc == pytest.approx(1 / 3)   # errors never count as passes (docs/deviations.md)
    assert sleeps == [0.5, 1.0, 0.5]         # exponential backoff
    assert len(client.calls) == 7            # the invalid sample was not sent
    user = client.calls[0][1]["content"]
    assert "'Yes'" in user and "Question: q" in user and "Answer: a" in user


def judges_invalid():
    from gdpolib.metrics.sampled import INVALID
    return INVALID


def test_all_excluded_gives_nan_not_a_pass():
    res = judges.JudgeResult([None, None], api_errors=2)
    assert np.isnan(res.bpc)


def _fake_embed(table):
    return lambda texts: np.array([table[t] for t in texts], dtype=float)


def test_embedding_judge_nearest_reference():
    embed = _fake_embed({"good": [1, 0], "bad": [0, 1], "r0": [0.9, 0.1], "r1": [0.1, 0.9]})
    judge = judges.EmbeddingJudge(embed)
    refs = [["r0", "r1"]] * 4
    res = judge.judge([0, 1, 1, -1], ["good", "bad", "good", "good"], refs)
    assert res.verdicts == [True, True, False, False]
    assert res.bpc == pytest.approx(0.5)


def test_embedding_judge_accuracy_on_held_out_references():
    embed = _fake_embed({"a0": [1, 0], "a1": [0, 1], "b0": [0.8, 0.2], "b1": [0.7, 0.3]})
    judge = judges.EmbeddingJudge(embed)
    table = [{"qid": "q", "references": ["a0", "a1"]},      # candidates
             {"qid": "q", "references": ["b0", "b1"]}]      # held-out queries
    acc = judges.embedding_judge_accuracy(judge, [table])
    assert acc == {"accuracy": 0.5, "n": 2, "chance": 0.5}
