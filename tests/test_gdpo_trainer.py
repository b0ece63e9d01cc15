"""GDPOTrainer on the tiny model + in-process BPE: same loss as the pure functions, one policy
forward per step, cached = live reference log-probs, every parameter trained, spans by offsets;
the tracker's margins equal the trainer's rewards."""
from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from datasets import Dataset

from gdpolib import beliefs, losses, methods, models
from gdpolib.config import RunConfig
from gdpolib.evalset import EvalSet
from gdpolib.stages.train import method_args
from gdpolib.trainers.gdpo_trainer import GDPOConfig, GDPOTrainer
from gdpolib.trainers.tracking import Tracker

warnings.filterwarnings("ignore", category=FutureWarning)
K = 10
LABELS = ["Yes (fully)", "No", "Maybe so", "Don't know"]
RESPONSES = ["I think so.", "We should look again.", "Hard to say, really.", "No idea at all!"]


def _prompt(i: int) -> str:
    opts = "\n".join(f"{k}. {lab}" for k, lab in enumerate(LABELS))
    return f"<Q>Question number {i} about things?\n{opts}\n<A>"


def _pairs(n: int, seed: int = 0, shared: bool = True) -> Dataset:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        p = np.zeros(K)
        p[:4] = rng.dirichlet(np.ones(4))
        b_c, b_r = rng.choice(4, size=2, replace=False)
        y_c, y_r = rng.choice(len(RESPONSES), size=2, replace=False)
        chosen = beliefs.format_completion(int(b_c), LABELS[b_c], RESPONSES[y_c])
        rejected = beliefs.format_completion(int(b_c if shared else b_r), LABELS[b_c if shared else b_r],
                                             RESPONSES[y_r])
        rows.append({"prompt": _prompt(i % 5), "chosen": chosen, "rejected": rejected,
                     "p_star": p.tolist(), "belief_mask": [1] * 4 + [0] * (K - 4),
                     "majority": int(b_c == int(np.argmax(p))), "qid": f"q{i % 5}"})
    return Dataset.from_list(rows)


@pytest.fixture(scope="module")
def tiny():
    cfg = RunConfig(tiny_n_layer=2, tiny_n_embd=32, tiny_n_head=2, tiny_vocab_size=400, max_length=128)
    ds = _pairs(8)
    texts = [r["prompt"] + r["chosen"] for r in ds] + [r["prompt"] + r["rejected"] for r in ds]
    texts += [f"{k}<{lab})>" for k, lab in enumerate(LABELS)] * 20
    model, tok = models.build_tiny(texts, cfg)
    return cfg, model, tok


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1,
                learning_rate=1e-2, bf16=False, use_cpu=True, activation_checkpointing=False,
                report_to=[], save_strategy="no", logging_steps=1, beta=0.1, max_length=128,
                disable_tqdm=True, seed=0)
    base.update(kw)
    return GDPOConfig(**base)


def _trainer(tiny, tmp_path, precompute=False, lambdas=None, model=None, form="full", **kw):
    cfg, base_model, tok = tiny
    model = model or copy.deepcopy(base_model)
    ref = None if precompute else copy.deepcopy(base_model)
    ids = beliefs.check_belief_tokens(tok, K)
    args = _args(tmp_path, precompute_ref_log_probs=precompute, calibration_form=form,
                 **(lambdas or {}), **kw)
    return GDPOTrainer(model=model, ref_model=ref, args=args, processing_class=tok,
                       train_dataset=_pairs(8), belief_token_ids=ids)


def _batch(trainer, n=4):
    rows = [trainer.train_dataset[i] for i in range(n)]
    return trainer.data_collator(rows)


def _reference_loss(trainer, batch, ref_model):
    """The GDPO loss from FULL logits of a plain forward, through the pure functions."""
    model = trainer.model
    n = batch["input_ids"].shape[0] // 2

    def seq_logps(m):
        logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        lp = torch.log_softmax(logits[:, :-1].float(), -1)
        return lp.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1), logits

    tok_lp, logits = seq_logps(model)
    with torch.no_grad():
        ref_lp, _ = seq_logps(ref_model)
    resp = batch["completion_mask"][:, 1:]
    pol = (tok_lp * resp).sum(1)
    ref = (ref_lp * resp).sum(1)
    ans = logits[torch.arange(n), batch["answer_pos"]].float()
    loss, diag = losses.gdpo_loss(
        pol[:n], pol[n:], ref[:n], ref[n:], ans[:, trainer.belief_token_ids], batch["p_star"],
        batch["belief_mask"], tok_lp[:n], batch["belief_span_mask"][:n, 1:], beta=0.1,
        form=trainer.calibration_form, full_logsumexp=torch.logsumexp(ans, -1), **trainer.lambdas)
    return loss.mean(), diag


@pytest.mark.parametrize("form", losses.CALIBRATION_FORMS)
def test_trainer_loss_equals_pure_function_loss(tiny, tmp_path, form):
    """Every calibration form, through the trainer = through the pure functions; at the start
    (policy = reference) and with a policy moved away from its reference."""
    tr = _trainer(tiny, tmp_path, form=form)
    assert tr.calibration_form == form
    batch = _batch(tr)
    got = tr.compute_loss(tr.model, dict(batch))
    want, diag = _reference_loss(tr, batch, tr.ref_model)
    assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)
    # the policy equals the reference at the start: DPO term = ln 2, margins 0
    assert torch.allclose(diag["dpo"], torch.full_like(diag["dpo"], math.log(2)), atol=1e-5)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in tr.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    got = tr.compute_loss(tr.model, dict(batch))
    want, diag = _reference_loss(tr, batch, tr.ref_model)
    assert not torch.allclose(diag["dpo"], torch.full_like(diag["dpo"], math.log(2)), atol=1e-3)
    assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)


def test_belief_spans_by_offsets_and_prefix_cancels(tiny, tmp_path):
    tr = _trainer(tiny, tmp_path)
    tok = tiny[2]
    for ex in tr.train_dataset:
        start, end = beliefs.belief_span(ex["chosen"])
        span_ids = ex["chosen_ids"][:ex["belief_len"]]
        text = tok.decode(span_ids)
        # the span covers the digit, '<' and the label, at most running into a merged '>'
        assert text.startswith(ex["chosen"][:end - 1]) and len(text) <= end
        assert ex["prefix_len"] >= 1 and ex["chosen_ids"][:ex["prefix_len"]] == ex["rejected_ids"][:ex["prefix_len"]]
    # same DPO value with the belief prefix excluded (collator) and included (TRL's mask)
    batch = _batch(tr)
    n = batch["input_ids"].shape[0] // 2
    full_mask = batch["completion_mask"].clone()
    rows = [tr.train_dataset[i] for i in range(n)]
    for i, ex in enumerate(rows):
        p = len(ex["prompt_ids"])
        full_mask[i, p:p + ex["prefix_len"]] = 1
        full_mask[n + i, p:p + ex["prefix_len"]] = 1
    assert not torch.equal(full_mask, batch["completion_mask"])
    with torch.no_grad():
        pol_model = copy.deepcopy(tiny[1]).eval()   # not tr.model: a copy of a TRL-patched model runs the original
        torch.manual_seed(3)
        for p_ in pol_model.parameters():
            p_.add_(0.3 * torch.randn_like(p_))
        vals = []
        for mask in (batch["completion_mask"], full_mask):
            lp = []
            for m in (pol_model, tr.ref_model):
                logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                t = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
                lp.append((t * mask[:, 1:]).sum(1))
            loss, _, _ = losses.dpo_loss(lp[0][:n], lp[0][n:], lp[1][:n], lp[1][n:], 1.0)
            vals.append(loss)
    assert torch.allclose(vals[0], vals[1], atol=1e-5)
    assert (vals[0] - math.log(2)).abs().max() > 1e-2   # a non-trivial value, not ln 2


def test_one_policy_forward_per_step(tiny, tmp_path):
    tr = _trainer(tiny, tmp_path)
    calls = []
    h = tr.model.base_model.register_forward_hook(lambda *a: calls.append(1))
    try:
        tr.train()
    finally:
        h.remove()
    assert tr.state.global_step == 1 and len(calls) == 1


def test_one_step_changes_every_trainable_parameter(tiny, tmp_path):
    tr = _trainer(tiny, tmp_path)
    before = {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
    tr.train()
    unchanged = [n for n, p in tr.model.named_parameters()
                 if p.requires_grad and torch.equal(p.detach(), before[n])]
    assert unchanged == []


def test_cached_and_live_reference_logps_give_the_same_loss(tiny, tmp_path):
    live = _trainer(tiny, tmp_path / "live")
    cached = _trainer(tiny, tmp_path / "cached", precompute=True)
    assert cached.ref_model is None and "ref_chosen_logps" in cached.train_dataset.column_names
    b_live, b_cached = _batch(live), _batch(cached)
    assert "ref_chosen_logps" in b_cached
    a = live.compute_loss(live.model, dict(b_live))
    b = cached.compute_loss(cached.model, dict(b_cached))
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    # cached: no reference forward at all, still one policy forward
    calls = []
    h = cached.model.base_model.register_forward_hook(lambda *a_: calls.append(1))
    try:
        cached.compute_loss(cached.model, dict(b_cached))
    finally:
        h.remove()
    assert len(calls) == 1


def _weights(cfg, method: str) -> dict[str, float]:
    args = method_args(cfg, methods.get(method))
    return {k: args[k] for k in ("lambda_cal", "lambda_nll", "lambda_pref")}


def test_ablations_through_the_same_path(tiny, tmp_path):
    cfg = RunConfig()
    assert _weights(cfg, "cdpo") == {"lambda_cal": 0.0, "lambda_nll": 0.0, "lambda_pref": 1.0}
    assert _weights(cfg, "mft") == {"lambda_cal": 1.0, "lambda_nll": 1.0, "lambda_pref": 0.0}
    assert _weights(cfg.replace(lambda_cal=0.5), "mft")["lambda_cal"] == 0.5
    assert method_args(cfg, methods.get("dpo")) == {}
    tr = _trainer(tiny, tmp_path, lambdas=_weights(cfg, "cdpo"))
    batch = _batch(tr)
    loss = tr.compute_loss(tr.model, dict(batch))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)   # policy = reference: DPO only


def test_gdpo_rejects_pairs_with_different_beliefs(tiny, tmp_path):
    cfg, model, tok = tiny
    with pytest.raises(ValueError, match="share the chosen belief prefix"):
        GDPOTrainer(model=copy.deepcopy(model), ref_model=copy.deepcopy(model),
                    args=_args(tmp_path), processing_class=tok, train_dataset=_pairs(4, shared=False),
                    belief_token_ids=beliefs.check_belief_tokens(tok, K))


def test_gdpo_trainer_needs_a_gdpo_config(tiny, tmp_path):
    from trl import DPOConfig

    cfg, model, tok = tiny
    args = DPOConfig(**{k: getattr(_args(tmp_path), k)
                        for k in ("output_dir", "use_cpu", "bf16", "activation_checkpointing",
                                  "report_to", "max_length")})
    with pytest.raises(TypeError, match="GDPOConfig"):
        GDPOTrainer(model=copy.deepcopy(model), ref_model=copy.deepcopy(model), args=args,
                    processing_class=tok, train_dataset=_pairs(4),
                    belief_token_ids=beliefs.check_belief_tokens(tok, K))
    with pytest.raises(ValueError, match="calibration_form"):
        _args(tmp_path, calibration_form="nope")


def test_tracker_margins_match_trainer_rewards(tiny, tmp_path):
    """Tracker margins (plain forward, whole completion) = trainer margins (fused, response only)."""
    tr = _trainer(tiny, tmp_path)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in tr.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pairs = _pairs(8).select(range(4))
    n = len(pairs)
    prompts = EvalSet([r["prompt"] for r in pairs], [""] * n, list(pairs["qid"]), [""] * n,
                      np.asarray(pairs["p_star"]), np.asarray(pairs["belief_mask"]),
                      [[""] * K] * n, [[""] * K] * n)
    tracker = Tracker(tr.processing_class, tr.belief_token_ids.tolist(), prompts,
                      pairs=pairs, ref_logps_from=tr.ref_model, beta=0.1)
    rec = tracker.evaluate(tr.model)
    _, diag = _reference_loss(tr, _batch(tr), tr.ref_model)
    assert rec["margin"] == pytest.approx(diag["margin"].mean().item(), rel=1e-4, abs=1e-6)
    assert 0 < rec["belief_mass"] <= 1 and 0 <= rec["jsd"] <= math.sqrt(math.log(2))


def test_lora_gdpo_step_trains_only_adapters(tiny, tmp_path):
    """LoRA (PEFT): no reference model is kept; the reference is the adapter-disabled policy."""
    from peft import LoraConfig

    cfg, base_model, tok = tiny
    tr = GDPOTrainer(
        model=copy.deepcopy(base_model), ref_model=None, args=_args(tmp_path),
        processing_class=tok, train_dataset=_pairs(8), belief_token_ids=beliefs.check_belief_tokens(tok, K),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert tr.ref_model is None
    batch = _batch(tr)
    ref = copy.deepcopy(base_model).eval()
    want, diag = _reference_loss(tr, batch, ref)
    assert torch.allclose(diag["dpo"], torch.full_like(diag["dpo"], math.log(2)))  # B = 0: policy = ref
    assert tr.compute_loss(tr.model, dict(batch)).item() == pytest.approx(want.item(), rel=1e-5)
    trainable = {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    tr.train()
    assert all(not torch.equal(p.detach(), trainable[n])
               for n, p in tr.model.named_parameters() if p.requires_grad and "lora_B" in n)


def test_pairs_of_similar_length_share_a_batch(tiny, tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from gdpolib.trainers.pairs import pair_lengths

    tr = _trainer(tiny, tmp_path, train_sampling_strategy="group_by_length")
    ds = tr.train_dataset
    lengths = pair_lengths(ds)
    assert lengths == [len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"]))
                       for r in ds]
    sampler = tr._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler) and sampler.lengths == lengths
    assert sorted(sampler) == list(range(len(ds)))           # every pair once per epoch
    plain = _trainer(tiny, tmp_path)                        # the default: random batches
    assert not isinstance(plain._get_train_sampler(), LengthGroupedSampler)
