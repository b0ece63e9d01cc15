"""Few-shot prompts for the k-shot and ICF baselines: demonstrations from other questions only,
seeded, cut to the token budget."""
from __future__ import annotations

from gdpolib import models
from gdpolib.data.fewshot import DEMO_SEPARATOR, fewshot_prompts


def test_fewshot_prompts_use_other_questions_and_fit_the_budget():
    demos = [f"<Q>q{i}?\n0. Yes\n1. No\n<A>{i % 2}<{'No' if i % 2 else 'Yes'}>Because {i}."
             for i in range(12)]
    qids = [f"q{i % 4}" for i in range(12)]
    tok = models.train_bpe_tokenizer(demos, 300)
    prompts, pqids = ["<Q>q0?\n0. Yes\n1. No\n<A>", "<Q>q9?\n<A>"], ["q0", "q9"]
    out = fewshot_prompts(prompts, pqids, (demos, qids), tok, k=3, max_tokens=10_000,
                          seed=0, salt="t")
    again = fewshot_prompts(prompts, pqids, (demos, qids), tok, k=3, max_tokens=10_000,
                            seed=0, salt="t")
    assert out == again
    for o, p, q in zip(out, prompts, pqids):
        assert o.endswith(p)
        shots = o[:-len(p)].split(DEMO_SEPARATOR)[:-1]
        assert len(shots) == 3 and all(s in demos for s in shots)
        assert all(qids[demos.index(s)] != q for s in shots)      # never its own question
    tight = fewshot_prompts(prompts, pqids, (demos, qids), tok, k=3, max_tokens=1,
                            seed=0, salt="t")
    assert tight == prompts                                        # nothing fits: zero-shot
