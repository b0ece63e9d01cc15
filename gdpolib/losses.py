"""GDPO losses: pure functions on tensors (no models, no trainers).

Notation (the GDPO paper's): x = prompt, B = the question's belief set (digits
"0".."K-1"; `belief_mask` marks which of the K_MAX slots are in B), p* = the group's target
distribution over B, b_c = the chosen belief, y_c / y_r = chosen / rejected responses,
beta = DPO temperature.

    GDPO = lambda_cal * KL(p* || p_theta(b|x))        calibration at the answer position
         - lambda_nll * log p_theta(b_c|x)            token-averaged belief-span log-prob
         + lambda_pref * DPO(y_c > y_r | x, b_c)      both sides share b_c, so it cancels

Ablations through the same function: `cdpo` = lambda_cal = lambda_nll = 0, `mft` = lambda_pref = 0.

Calibration forms (`form`):
- "renorm" (our default): log q~(k) = log_softmax over the belief set only (logits at the belief
  token ids, masked by belief_mask). KL(p* || q~) is exactly what the JSD metric measures.
- "full" (the authors' `_CE_loss`): log q(k) = log_softmax over the FULL vocabulary read at the
  belief ids, not renormalised. With Z = sum_{k in B} q(k) (the mass on belief tokens),
  KL_full = KL_renorm - log Z, so the full form also pushes mass onto the belief tokens.
  Both gave the same GDPO JSD in our prototype (SFT already puts ~0.99 of the mass on the digits).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CALIBRATION_FORMS = ("renorm", "full")


def dpo_loss(pol_c: torch.Tensor, pol_r: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor,
             beta: float, label_smoothing: float = 0.0,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigmoid DPO (Rafailov et al.) with optional label smoothing (conservative DPO).

    pol_c, pol_r, ref_c, ref_r: [N] summed log-probs of the chosen / rejected completions under the
    policy and the reference. With h = (pol_c - ref_c) - (pol_r - ref_r):
        loss = -(1 - eps) * log sigmoid(beta h) - eps * log sigmoid(-beta h)
    Returns (loss [N], reward_c [N], reward_r [N]) with reward = beta * (policy - reference),
    rewards detached (they are diagnostics). loss = ln 2 when policy = reference.
    """
    h = (pol_c - ref_c) - (pol_r - ref_r)
    loss = -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    return loss, (beta * (pol_c - ref_c)).detach(), (beta * (pol_r - ref_r)).detach()


def belief_log_distribution(belief_logits: torch.Tensor, belief_mask: torch.Tensor,
                            form: str = "renorm", full_logsumexp: torch.Tensor | None = None,
                            ) -> torch.Tensor:
    """log q(k) at the answer position, per form.

    belief_logits: [N, K] logits at the belief token ids; belief_mask: [N, K] 0/1;
    full_logsumexp: [N] logsumexp of the logits over the whole vocabulary (needed for "full").
    Returns [N, K]; entries outside the mask are -inf for "renorm" and the full-vocabulary value
    for "full" (they are never read where p* = 0).
    """
    if form == "renorm":
        masked = belief_logits.masked_fill(belief_mask <= 0, float("-inf"))
        return masked - torch.logsumexp(masked, dim=-1, keepdim=True)
    if form == "full":
        if full_logsumexp is None:
            raise ValueError("calibration form 'full' needs full_logsumexp (logsumexp over the vocabulary)")
        return belief_logits - full_logsumexp.unsqueeze(-1)
    raise ValueError(f"calibration form {form!r} is not one of {', '.join(CALIBRATION_FORMS)}")


def belief_mass(belief_logits: torch.Tensor, belief_mask: torch.Tensor,
                full_logsumexp: torch.Tensor) -> torch.Tensor:
    """Z = sum_{k in B} softmax_vocab(logits)[k]: probability mass on the belief tokens, [N]."""
    masked = belief_logits.masked_fill(belief_mask <= 0, float("-inf"))
    return torch.exp(torch.logsumexp(masked, dim=-1) - full_logsumexp)


def calibration_kl(belief_logits: torch.Tensor, p_star: torch.Tensor, belief_mask: torch.Tensor,
                   form: str = "renorm", full_logsumexp: torch.Tensor | None = None) -> torch.Tensor:
    """KL(p* || p_theta(b|x)) at the answer position, per example.

    belief_logits: [N, K] logits at the belief token ids (the position that predicts the digit);
    p_star: [N, K] target (zero outside the belief set, sums to 1 over it); belief_mask: [N, K];
    form: "renorm" | "full" (module docstring); full_logsumexp: [N] for "full".
    Returns kl [N] = sum_k p*(k) (log p*(k) - log q(k)), terms with p*(k) = 0 count 0.
    """
    logq = belief_log_distribution(belief_logits, belief_mask, form, full_logsumexp)
    p = p_star.to(logq.dtype)
    keep = p > 0
    terms = torch.where(keep, p * (torch.log(p.clamp_min(1e-30)) - logq.masked_fill(~keep, 0.0)),
                        torch.zeros_like(p))
    return terms.sum(dim=-1)


def belief_logprob(token_logps: torch.Tensor, span_mask: torch.Tensor) -> torch.Tensor:
    """Token-averaged log-prob of the belief span (the digit, '<' and the label tokens).

    token_logps: [N, T] per-token log-probs of the chosen sequence; span_mask: [N, T] 0/1 marking
    the belief-span tokens (from character offsets, never a '>' token search).
    Returns [N] = sum(token_logps * mask) / sum(mask). A row with an empty span raises
    ValueError (its log-prob would read as 0, a perfect score, instead of a broken record).
    """
    m = span_mask.to(token_logps.dtype)
    n = m.sum(dim=-1)
    if bool((n <= 0).any()):
        rows = torch.nonzero(n <= 0).flatten().tolist()
        raise ValueError(f"belief_logprob: empty belief span in row(s) {rows[:5]} of {len(n)}: "
                         f"every chosen completion must start with its `k<label>` prefix")
    return (token_logps * m).sum(dim=-1) / n


def gdpo_loss(pol_c: torch.Tensor, pol_r: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor,
              belief_logits: torch.Tensor, p_star: torch.Tensor, belief_mask: torch.Tensor,
              belief_token_logps: torch.Tensor, belief_span_mask: torch.Tensor, *,
              beta: float = 0.1, label_smoothing: float = 0.0, lambda_cal: float = 1.0,
              lambda_nll: float = 1.0, lambda_pref: float = 1.0, form: str = "renorm",
              full_logsumexp: torch.Tensor | None = None,
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GDPO per example = lambda_cal * KL + lambda_pref * DPO - lambda_nll * belief log-prob.

    pol_c, pol_r, ref_c, ref_r: [N] summed response log-probs (belief prefix excluded: it is the
    same b_c on both sides and cancels); belief_logits: [N, K] at the answer position of the
    chosen row; p_star, belief_mask: [N, K]; belief_token_logps, belief_span_mask: [N, T] for the
    chosen row; full_logsumexp: [N] (for form "full" and for the mass diagnostic).
    The mean over N equals the authors' total (their KL is a batch mean too).
    Returns (loss [N], diagnostics) with diagnostics kl, dpo, belief_logp, reward_c, reward_r,
    margin [N] and, when full_logsumexp is given, belief_mass [N]; all detached.
    """
    kl = calibration_kl(belief_logits, p_star, belief_mask, form, full_logsumexp)
    dpo, reward_c, reward_r = dpo_loss(pol_c, pol_r, ref_c, ref_r, beta, label_smoothing)
    blogp = belief_logprob(belief_token_logps, belief_span_mask)
    loss = lambda_cal * kl + lambda_pref * dpo - lambda_nll * blogp
    diag = {"kl": kl.detach(), "dpo": dpo.detach(), "belief_logp": blogp.detach(),
            "reward_c": reward_c, "reward_r": reward_r, "margin": reward_c - reward_r}
    if full_logsumexp is not None:
        diag["belief_mass"] = belief_mass(belief_logits.detach(), belief_mask,
                                          full_logsumexp.detach())
    return loss, diag
