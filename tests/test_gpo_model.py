"""gdpolib.gpo.model: the attention mask and padding, the per-question softmax, the losses,
the group-prior variant's output, saving and loading."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gdpolib.gpo.model import (EpisodeBatch, GPOModel, attention_mask, gpo_loss, load_model,
                               save_model, segment_softmax)
from gdpolib.gpo.predict import Job, predict


# ---------------------------------------------------------------------------- helpers
def small_model(dim: int = 8, seed: int = 0, prior: bool = False) -> GPOModel:
    """The paper's model, or (prior=True) the group-prior variant (x's last column = prior)."""
    torch.manual_seed(seed)
    return GPOModel(dim, deviation_scale=20.0 if prior else None).eval()


def random_batch(dim: int = 8, seed: int = 0) -> EpisodeBatch:
    """Two episodes: row 0 full (5 context, 6 target tokens = questions of 2, 3, 1 options),
    row 1 padded (3 context, 4 target tokens = questions of 2, 2)."""
    g = torch.Generator().manual_seed(seed)
    B, Nc, Nt = 2, 5, 6
    c_pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    t_pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    seg = torch.tensor([[0, 0, 1, 1, 1, 2], [0, 0, 1, 1, 0, 0]])
    return EpisodeBatch(torch.randn(B, Nc, dim, generator=g), torch.rand(B, Nc, generator=g),
                        c_pad, torch.randn(B, Nt, dim, generator=g), torch.rand(B, Nt, generator=g),
                        t_pad, seg, n_questions=5)


def perturbed(b: EpisodeBatch, field: str, index: tuple) -> EpisodeBatch:
    out = EpisodeBatch(*(t.clone() for t in (b.xc, b.yc, b.c_pad, b.xt, b.yt, b.t_pad, b.t_seg)),
                       n_questions=b.n_questions)
    getattr(out, field)[index] += 5.0
    return out


# ---------------------------------------------------------------------------- mask and padding
def test_attention_mask_opens_context_columns_only():
    m = attention_mask(3, 2)
    assert m.shape == (5, 5)
    assert not m[:, :3].any()          # everyone may attend to the context
    assert m[:, 3:].all()              # nobody attends to a target (not even itself)


@pytest.mark.parametrize("prior", [False, True])
def test_targets_see_only_the_context_and_padding_is_ignored(prior):
    model, b = small_model(prior=prior), random_batch()
    with torch.no_grad():
        base = model.head_outputs(b)
        # a target's own x changes its own output only
        out = model.head_outputs(perturbed(b, "xt", (0, 2)))
        changed = (out - base).abs().amax(-1) > 1e-6
        assert changed[0, 2] and changed.sum() == 1
        # a padded context item (x or y) changes nothing
        for field, idx in (("xc", (1, 4)), ("yc", (1, 3))):
            assert torch.allclose(model.head_outputs(perturbed(b, field, idx)), base, atol=1e-6)
        # a padded target changes no real target
        out = model.head_outputs(perturbed(b, "xt", (1, 5)))
        assert torch.allclose(out[~b.t_pad], base[~b.t_pad], atol=1e-6)
        # a target's y is never read
        assert torch.allclose(model.head_outputs(perturbed(b, "yt", (0, 1))), base, atol=1e-6)
        # a real context item changes every target of its row, and no other row
        out = model.head_outputs(perturbed(b, "yc", (0, 1)))
        assert ((out[0] - base[0]).abs().amax(-1) > 1e-6).all()
        assert torch.allclose(out[1], base[1], atol=1e-6)


def test_a_batch_row_without_context_is_an_error():
    b = random_batch()
    b.c_pad[1] = True
    with pytest.raises(ValueError, match="context"):
        small_model().head_outputs(b)


# ---------------------------------------------------------------------------- initialisation
def test_answer_init_weights_the_answer_like_all_of_x_and_zeroes_the_embedder_biases():
    torch.manual_seed(0)
    model = GPOModel(64, init="answer")
    first = model.embedder[0].weight                       # [128, 64 + 1]
    ratio = first[:, -1].norm() / first[:, :-1].norm(dim=0).mean()
    assert 4 < ratio < 16                                  # sqrt(64) = 8, up to sampling noise
    linears = [m for m in model.embedder if isinstance(m, torch.nn.Linear)]
    assert all(bool((m.bias == 0).all()) for m in linears)
    with pytest.raises(ValueError, match="unknown GPO init 'xavier'"):
        GPOModel(8, init="xavier")


def test_answer_init_lets_the_context_answers_move_the_prediction_from_step_0():
    """With PyTorch's default init every token leaves the 4-layer embedder as nearly the same
    vector, and the answers barely move the prediction: the saddle meta-training sat in."""
    moved = {}
    for init in ("answer", "torch"):
        changes = []
        for seed in range(5):
            torch.manual_seed(seed)
            model, b = GPOModel(8, init=init).eval(), random_batch(seed=seed)
            flipped = EpisodeBatch(b.xc, 1 - b.yc, b.c_pad, b.xt, b.yt, b.t_pad, b.t_seg,
                                   b.n_questions)
            with torch.no_grad():
                changes.append(float((model(b)[0] - model(flipped)[0]).abs().max()))
        moved[init] = np.mean(changes)
    assert moved["answer"] > 4 * moved["torch"], moved


# ---------------------------------------------------------------------------- softmax per question
def test_segment_softmax_sums_to_one_per_question():
    b = random_batch()
    logits = torch.randn(2, 6) * 3
    p = segment_softmax(logits, b.t_seg, b.t_pad)
    assert torch.all(p[b.t_pad] == 0)
    for row, n_q in ((0, 3), (1, 2)):
        for s in range(n_q):
            sel = (b.t_seg[row] == s) & ~b.t_pad[row]
            assert torch.isclose(p[row, sel].sum(), torch.tensor(1.0), atol=1e-6)
            assert torch.allclose(p[row, sel], torch.softmax(logits[row, sel], 0), atol=1e-6)


@pytest.mark.parametrize("prior", [False, True])
def test_model_output_is_a_distribution_per_question(prior):
    b = random_batch()
    b.xt[..., -1] = b.xt[..., -1].abs()          # the prior variant reads x's last column as a share
    with torch.no_grad():
        mu, sigma = small_model(prior=prior)(b)
    sums = torch.zeros(2, 4).index_put_((torch.arange(2)[:, None].expand(2, 6)[~b.t_pad],
                                         b.t_seg[~b.t_pad]), mu[~b.t_pad], accumulate=True)
    assert torch.allclose(sums[0, :3], torch.ones(3), atol=1e-5)
    assert torch.allclose(sums[1, :2], torch.ones(2), atol=1e-5)
    assert torch.all(sigma >= 0.05)


# ---------------------------------------------------------------------------- losses
def test_losses_ignore_padded_targets():
    model, b = small_model(), random_batch()
    for kind in ("gaussian_nll", "kl"):
        with torch.no_grad():
            mu, sigma = model(b)
            base = gpo_loss(mu, sigma, b, kind)
            b2 = perturbed(b, "yt", (1, 5))           # garbage y on a padded target
            assert torch.isclose(gpo_loss(mu, sigma, b2, kind), base)


def test_kl_loss_is_the_mean_per_question_kl():
    b = random_batch()
    mu = segment_softmax(torch.randn(2, 6), b.t_seg, b.t_pad)
    y = segment_softmax(torch.randn(2, 6), b.t_seg, b.t_pad)
    b.yt = y
    kls = []
    for row, n_q in ((0, 3), (1, 2)):
        for s in range(n_q):
            sel = (b.t_seg[row] == s) & ~b.t_pad[row]
            kls.append(float((y[row, sel] * (y[row, sel] / mu[row, sel]).log()).sum()))
    assert math.isclose(float(gpo_loss(mu, torch.ones_like(mu), b, "kl")), np.mean(kls),
                        rel_tol=1e-5)


# ---------------------------------------------------------------------------- group prior
def test_prior_model_outputs_the_prior_when_its_residual_is_zero():
    model, b = small_model(prior=True), random_batch()
    prior = torch.rand(2, 6) + 0.05
    b.xt[..., -1] = prior
    with torch.no_grad():
        model.head[-1].weight.zero_()
        model.head[-1].bias.zero_()
        mu, _ = model(b)
    assert torch.allclose(mu, segment_softmax(prior.log(), b.t_seg, b.t_pad), atol=1e-6)


# ---------------------------------------------------------------------------- save and load
def test_save_and_load_give_the_same_predictions(tmp_path, gpo_synthetic_run):
    data, emb, split, res = gpo_synthetic_run
    save_model(res.model, tmp_path / "gpo.pt")
    again = load_model(tmp_path / "gpo.pt")
    assert again.config == res.model.config and again.config["init"] == "answer"
    g = split["test"][0]
    job = [Job(g, data.qids(g)[:5], data.qids(g)[5:9])]
    a, b = predict(res.model, emb, data, job)[g], predict(again, emb, data, job)[g]
    for q in a:
        np.testing.assert_allclose(a[q], b[q], atol=1e-6)
