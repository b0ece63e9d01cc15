"""Response generators: the template generator, the response cache, strict parsing of LLM
replies (OpenAI-compatible endpoint faked, HF generator)."""
from __future__ import annotations

import pytest

from gdpolib.data.generators import HFGenerator, OpenAIGenerator, parse_styled_reply
from gdpolib.data.responses import (STYLES, ResponseError, ResponseGenerator, StyledQuestion,
                                    TemplateGenerator, clean_reply)


class CountingGenerator(ResponseGenerator):
    id = "counting"

    def __init__(self, cache_path):
        super().__init__(cache_path)
        self.calls = 0

    def _generate_missing(self, todo):
        self.calls += len(todo)
        return {(qid, st[0]): StyledQuestion(st[0], q + "?", [f"{o}!" for o in opts])
                for qid, q, opts, st in todo}


def test_response_cache_avoids_regeneration(tmp_path):
    items = [("q1", "Tea", ["Yes", "No"]), ("q2", "Coffee", ["Yes", "No", "Maybe"])]
    g = CountingGenerator(tmp_path / "c.jsonl")
    out, rep = g.generate(items, 2)
    assert g.calls == 4 and rep.cache_hits == 0
    g2 = CountingGenerator(tmp_path / "c.jsonl")
    out2, rep2 = g2.generate(items, 3)
    assert g2.calls == 2 and rep2.cache_hits == 4           # only the new style is generated
    assert out2["q2"][0].responses == out["q2"][0].responses == ["Yes!", "No!", "Maybe!"]


def test_template_generator_varies_and_is_deterministic():
    items = [("q1", "Do you like tea?", ["Yes", "No", "Don't know"])]
    a, _ = TemplateGenerator(0).generate(items, 6)
    b, _ = TemplateGenerator(0).generate(items, 6)
    assert [s.__dict__ for s in a["q1"]] == [s.__dict__ for s in b["q1"]]
    assert len({s.question for s in a["q1"]}) == 6
    for s in a["q1"]:
        assert len(set(s.responses)) == 3


def test_recast_rewords_the_question_itself():
    from gdpolib.data.responses import recast
    # a survey item after its stem comes first, the stem's opener reworded
    assert recast("Please tell me if you have a favorable opinion of...India") == (
        "Regarding \u201cIndia\u201d: Tell us if you have a favorable opinion of")
    assert recast("How important is it?\n\nFreedom of speech") == (
        "Regarding \u201cFreedom of speech\u201d: How much does it matter?")
    # several sentences: the last (the question asked) first
    assert recast("Some feel A. Others feel B. Which comes closer to your opinion?") == (
        "Which comes closer to your opinion? Some feel A. Others feel B.")
    assert recast("Do you think it will rain?") == "Would you say it will rain?"
    assert recast("Is it raining?") == "Is it raining?"         # nothing to reword: unchanged


def test_only_the_held_out_styles_reword_the_question():
    items = [("q1", "Do you think tea is good?", ["Yes", "No"])]
    out, _ = TemplateGenerator(0, recast=("formal",)).generate(items, 3)
    plain, casual, formal = out["q1"]
    assert plain.question == "Do you think tea is good?"
    assert casual.question.endswith("Do you think tea is good?")
    assert formal.question.endswith("Would you say tea is good?")


REPLY = """Style 1: Plain and direct
Q: Do you enjoy drinking tea?
A1: [Yes] I really do enjoy a cup every morning.
A2: [No] Not for me, I never liked the taste.

Style 2: Casual and friendly
Q: Tea, yay or nay?
A1: [yes] Totally, love the stuff!
A2: [Maybe] Can't stand it honestly.

Style 3: Formal and polite
Q: Would you say you like tea?
A1: [Yes] Indeed, I appreciate it greatly.
A2: [No] I must say it does not appeal to me.
Some junk line here
"""


def test_strict_parsing_of_api_replies():
    kept, rejected = parse_styled_reply(REPLY, ["Yes", "No"], STYLES[:3])
    assert list(kept) == ["plain"]
    assert kept["plain"].question == "Do you enjoy drinking tea?"
    assert kept["plain"].responses[1] == "Not for me, I never liked the taste."
    why = dict(rejected)
    assert "labelled [Maybe]" in why["casual"] and "unexpected line" in why["formal"]
    assert parse_styled_reply("Sure! Here you go.", ["Yes", "No"], STYLES[:1])[0] == {}


def test_openai_generator_needs_endpoint_and_key(monkeypatch):
    with pytest.raises(ResponseError, match="api_base"):
        OpenAIGenerator(None, None, "X_KEY", "S. Africa")
    g = OpenAIGenerator("http://127.0.0.1:9/v1", "m", "GDPO_TEST_NO_SUCH_KEY", "S. Africa")
    monkeypatch.delenv("GDPO_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(ResponseError, match="GDPO_TEST_NO_SUCH_KEY"):
        g.generate([("q", "Tea?", ["Yes", "No"])], 1)
    prompt = g.prompt_for("Tea?", ["Yes", "No"], [("plain", "plain and direct")])
    assert "S. Africa" in prompt and "A1: [Yes]" in prompt and "Choices: 1. Yes; 2. No" in prompt


def test_openai_generator_parses_fake_endpoint(monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_KEY", "k")
    g = OpenAIGenerator("http://fake/v1", "m", "FAKE_KEY", "S. Africa",
                        cache_path=tmp_path / "api.jsonl", retries=0)
    calls = []
    monkeypatch.setattr(g, "_post", lambda prompt: calls.append(prompt) or REPLY)
    out, rep = g.generate([("q", "Tea?", ["Yes", "No"])], 3)
    assert [s.style for s in out["q"]] == ["plain"] and len(rep.rejected) == 2
    assert len(calls) == 1
    g2 = OpenAIGenerator("http://fake/v1", "m", "FAKE_KEY", "S. Africa",
                         cache_path=tmp_path / "api.jsonl", retries=0)
    monkeypatch.setattr(g2, "_post", lambda prompt: pytest.fail("should come from cache"))
    out2, _ = g2.generate([("q", "Tea?", ["Yes", "No"])], 1)
    assert out2["q"][0].responses == out["q"][0].responses
    assert clean_reply("A1: [x] junk") is None


def test_hf_generator_rejects_malformed_replies(tmp_path, monkeypatch):
    g = HFGenerator("fake-model", cache_path=tmp_path / "hf.jsonl", retries=1)
    attempts = []

    def fake_chat(prompts, sample):
        attempts.append(sample)
        out = []
        for p in prompts:
            if p.startswith("Rewrite"):
                out.append("So, tea: nice or not, friend?" if sample else "Q: <|im_end|>")
            elif '"No"' in p:
                out.append("I really do not enjoy it at all." if sample else "No")   # too short
            elif '"Maybe"' in p:
                out.append("A1: [Maybe] junk")                                   # always junk
            else:
                out.append("Yes, I drink it every single day.")
        return out

    monkeypatch.setattr(g, "_chat", fake_chat)
    out, rep = g.generate([("q1", "Do you like tea?", ["Yes", "No"]),
                           ("q2", "Coffee?", ["Yes", "Maybe"])], 2)
    assert attempts == [False, True, False, True]      # paraphrases, answers: greedy + 1 retry
    assert [s.style for s in out["q1"]] == ["plain", "casual"]
    assert out["q1"][1].question == "So, tea: nice or not, friend?"
    assert out["q1"][0].responses == ["Yes, I drink it every single day.",
                                      "I really do not enjoy it at all."]
    assert "q2" not in out                              # junk is rejected, never kept
    assert {r[0] for r in rep.rejected} == {"q2"} and len(rep.rejected) == 2
    assert len((tmp_path / "hf.jsonl").read_text().splitlines()) == 2
