"""The GDPO losses against hand computations (gdpolib/losses.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gdpolib import losses


def test_dpo_is_ln2_when_policy_equals_reference():
    pol_c, pol_r = torch.tensor([-3.0, -7.5]), torch.tensor([-4.0, -1.0])
    loss, rc, rr = losses.dpo_loss(pol_c, pol_r, pol_c.clone(), pol_r.clone(), beta=0.1)
    assert torch.allclose(loss, torch.full((2,), math.log(2)))
    assert torch.all(rc == 0) and torch.all(rr == 0)


def test_dpo_matches_hand_value_and_label_smoothing():
    pol_c, pol_r, ref_c, ref_r = (torch.tensor([v]) for v in (-2.0, -5.0, -3.0, -4.0))
    h = (-2.0 + 3.0) - (-5.0 + 4.0)  # 2
    loss, rc, rr = losses.dpo_loss(pol_c, pol_r, ref_c, ref_r, beta=0.5, label_smoothing=0.2)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    expected = -0.8 * math.log(sig(0.5 * h)) - 0.2 * math.log(sig(-0.5 * h))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert rc.item() == pytest.approx(0.5) and rr.item() == pytest.approx(-0.5)


def test_dpo_gradient_raises_chosen_lowers_rejected():
    pol_c = torch.tensor([-3.0], requires_grad=True)
    pol_r = torch.tensor([-3.0], requires_grad=True)
    loss, _, _ = losses.dpo_loss(pol_c, pol_r, torch.tensor([-3.0]), torch.tensor([-3.0]), beta=0.1)
    loss.sum().backward()
    # gradient descent moves against the gradient: chosen up, rejected down
    assert pol_c.grad.item() < 0 < pol_r.grad.item()


def _kl_hand(p, q):
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)


@pytest.mark.parametrize("form", ["renorm", "full"])
def test_kl_is_zero_when_model_matches_p_star(form):
    p = torch.tensor([[0.5, 0.3, 0.2, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2, 1e-3]]))
    lse = torch.logsumexp(logits[:, :3], -1)  # all mass on B: Z = 1
    kl = losses.calibration_kl(logits, p, mask, form, full_logsumexp=lse)
    assert kl.item() == pytest.approx(0.0, abs=1e-6)


def test_kl_matches_hand_computation_both_forms():
    # vocabulary of 6 tokens; belief tokens are the first 4 slots, the question uses 3 of them
    vocab_logits = torch.tensor([[1.0, 0.0, -1.0, 2.0, 0.5, -0.5]])
    belief_logits = vocab_logits[:, :4]
    mask = torch.tensor([[1, 1, 1, 0]])
    p = torch.tensor([[0.2, 0.5, 0.3, 0.0]])
    lse = torch.logsumexp(vocab_logits, -1)
    probs = torch.softmax(vocab_logits, -1)[0, :3].tolist()
    z = sum(probs)
    q_renorm = [x / z for x in probs]
    kl_r = losses.calibration_kl(belief_logits, p, mask, "renorm")
    kl_f = losses.calibration_kl(belief_logits, p, mask, "full", full_logsumexp=lse)
    assert kl_r.item() == pytest.approx(_kl_hand([0.2, 0.5, 0.3], q_renorm), rel=1e-5)
    assert kl_f.item() == pytest.approx(_kl_hand([0.2, 0.5, 0.3], probs), rel=1e-5)
    # full = renorm - log Z, Z = mass on the belief tokens of B
    assert kl_f.item() == pytest.approx(kl_r.item() - math.log(z), rel=1e-5)
    mass = losses.belief_mass(belief_logits, mask, lse)
    assert mass.item() == pytest.approx(z, rel=1e-6)


def test_kl_gradient_is_finite_with_masked_slots():
    logits = torch.randn(3, 10, requires_grad=True)
    mask = torch.tensor([[1] * 4 + [0] * 6, [1] * 10, [1, 1] + [0] * 8])
    p = torch.rand(3, 10) * mask
    p = p / p.sum(-1, keepdim=True)
    p[0, 1] = 0.0
    p = p / p.sum(-1, keepdim=True)
    for form in ("renorm", "full"):
        kl = losses.calibration_kl(logits, p, mask, form, torch.logsumexp(logits, -1) + 1.0)
        kl.sum().backward()
        assert torch.isfinite(logits.grad).all()
        logits.grad = None


def test_kl_against_scipy_entropy():
    from scipy.stats import entropy
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(5, 6)))
    p = torch.tensor(rng.dirichlet(np.ones(6), size=5))
    kl = losses.calibration_kl(logits, p, torch.ones(5, 6), "renorm").numpy()
    q = torch.softmax(logits, -1).numpy()
    assert np.allclose(kl, [entropy(p[i].numpy(), q[i]) for i in range(5)])


def test_belief_logprob_is_token_mean_over_span():
    logps = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-0.5, -0.5, -9.0, 0.0]])
    span = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0]])
    out = losses.belief_logprob(logps, span)
    assert out.tolist() == pytest.approx([-1.5, -4.75])


def test_gdpo_equals_sum_of_parts_and_ablations():
    torch.manual_seed(0)
    n, k, t = 4, 5, 7
    pol_c, pol_r, ref_c, ref_r = (torch.randn(n) - 5 for _ in range(4))
    logits = torch.randn(n, k)
    mask = torch.ones(n, k)
    p = torch.softmax(torch.randn(n, k), -1)
    tok, span = -torch.rand(n, t), (torch.rand(n, t) > 0.5).float()
    lse = torch.logsumexp(logits, -1) + 0.3
    kw = dict(beta=0.1, label_smoothing=0.1, form="full", full_logsumexp=lse)
    loss, diag = losses.gdpo_loss(pol_c, pol_r, ref_c, ref_r, logits, p, mask, tok, span,
                                  lambda_cal=0.7, lambda_nll=0.3, lambda_pref=2.0, **kw)
    kl = losses.calibration_kl(logits, p, mask, "full", lse)
    dpo, rc, rr = losses.dpo_loss(pol_c, pol_r, ref_c, ref_r, 0.1, 0.1)
    blp = losses.belief_logprob(tok, span)
    assert torch.allclose(loss, 0.7 * kl + 2.0 * dpo - 0.3 * blp)
    assert torch.allclose(diag["margin"], rc - rr)
    assert torch.allclose(diag["belief_mass"], torch.exp(torch.logsumexp(logits, -1) - lse))
    cdpo, _ = losses.gdpo_loss(pol_c, pol_r, ref_c, ref_r, logits, p, mask, tok, span,
                               lambda_cal=0.0, lambda_nll=0.0, **kw)
    assert torch.allclose(cdpo, dpo)
    mft, _ = losses.gdpo_loss(pol_c, pol_r, ref_c, ref_r, logits, p, mask, tok, span,
                              lambda_pref=0.0, **kw)
    assert torch.allclose(mft, kl - blp)


def test_belief_prefix_cancels_in_conditioned_dpo():
    """Adding the same prefix log-prob (shared b_c, same context) to both sides changes nothing."""
    torch.manual_seed(1)
    pol_c, pol_r, ref_c, ref_r = (torch.randn(6) - 10 for _ in range(4))
    pre_pol, pre_ref = torch.randn(6) - 2, torch.randn(6) - 2
    a, _, _ = losses.dpo_loss(pol_c, pol_r, ref_c, ref_r, 0.1)
    b, _, _ = losses.dpo_loss(pol_c + pre_pol, pol_r + pre_pol, ref_c + pre_ref, ref_r + pre_ref, 0.1)
    assert torch.allclose(a, b, atol=1e-6)


def test_unknown_form_fails():
    with pytest.raises(ValueError, match="calibration form"):
        losses.calibration_kl(torch.zeros(1, 2), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2), "bogus")


def test_belief_logprob_refuses_an_empty_span():
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -0.5]])
    with pytest.raises(ValueError, match=r"empty belief span in row\(s\) \[1\]"):
        losses.belief_logprob(logps, torch.tensor([[1, 0], [0, 0]]))
