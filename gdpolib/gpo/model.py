"""The GPO transformer: padded episode tensors (EpisodeBatch), the attention mask, the
per-question softmax, GPOModel (the paper's model or the group-prior variant), the losses, and
saving / loading a model with its configuration."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

PRIOR_FLOOR = 1e-3      # the smallest prior share the residual logits start from
INITS = ("answer", "torch")   # GPOModel's initialisations: ours, PyTorch's default


def build_mlp(dim_in: int, dim_hidden: int, dim_out: int, depth: int) -> nn.Sequential:
    """`depth` Linear layers with ReLU between them (the TNP embedder: depth 4)."""
    layers: list[nn.Module] = [nn.Linear(dim_in, dim_hidden)]
    for i in range(depth - 1):
        layers += [nn.ReLU(), nn.Linear(dim_hidden, dim_hidden if i < depth - 2 else dim_out)]
    return nn.Sequential(*layers)


def attention_mask(n_ctx: int, n_tar: int, device: torch.device | None = None) -> torch.Tensor:
    """Bool [L, L] (L = n_ctx + n_tar), True = may NOT attend. Every query (context or target)
    attends to context keys only: targets never see themselves or each other, so they are
    conditionally independent given the context (as in the official code)."""
    mask = torch.ones(n_ctx + n_tar, n_ctx + n_tar, dtype=torch.bool, device=device)
    mask[:, :n_ctx] = False
    return mask


def segment_softmax(logits: torch.Tensor, seg: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Softmax of `logits` within each (row, segment): the options of one target question.

    logits: [B, N]; seg: long [B, N] question index of each token within its row (>= 0);
    pad: bool [B, N] (True = padding). Returns [B, N]: each question's entries sum to 1,
    padding is 0.
    """
    B, N = logits.shape
    if N == 0:
        return logits
    n_seg = int(seg.max().item()) + 2          # + one slot per row that collects the padding
    gid = seg.masked_fill(pad, n_seg - 1) + torch.arange(B, device=logits.device)[:, None] * n_seg
    flat, gid = logits.reshape(-1), gid.reshape(-1)
    top = torch.full((B * n_seg,), -math.inf, device=logits.device, dtype=logits.dtype)
    top = top.scatter_reduce(0, gid, flat.detach(), reduce="amax")      # for numerical safety
    e = torch.exp(flat - top[gid])
    den = torch.zeros(B * n_seg, device=logits.device, dtype=logits.dtype).index_add(0, gid, e)
    return (e / den[gid]).view(B, N).masked_fill(pad, 0.0)


@dataclass
class EpisodeBatch:
    """A padded batch of episodes (B groups). True in *_pad marks padding.

    xc: [B, Nc, d] context option embeddings;  yc: [B, Nc] the group's share of each option
    xt: [B, Nt, d] target option embeddings;   yt: [B, Nt] true shares (0 when unknown)
    c_pad: bool [B, Nc];  t_pad: bool [B, Nt];  t_seg: long [B, Nt] question index per target
    token within its row;  n_questions: number of real target questions in the batch.
    """

    xc: torch.Tensor
    yc: torch.Tensor
    c_pad: torch.Tensor
    xt: torch.Tensor
    yt: torch.Tensor
    t_pad: torch.Tensor
    t_seg: torch.Tensor
    n_questions: int

    def to(self, device) -> "EpisodeBatch":
        return EpisodeBatch(*(t.to(device) for t in (self.xc, self.yc, self.c_pad, self.xt,
                                                      self.yt, self.t_pad, self.t_seg)),
                            n_questions=self.n_questions)


class GPOModel(nn.Module):
    """The GPO transformer (TNP-D design): ~0.7 M parameters for d = 768, ~1.2 M for d = 4096.

    embedder: MLP(d+1 -> 128, 4 Linear layers); encoder: 6 post-LN layers, d_model 128, 4 heads,
    FFN 128, dropout 0, no positional encoding; head: 128 -> 128 -> 2 (raw mean, raw scale).
    x is standardised with statistics of the embedding table (buffers, saved with the model).

    init: "answer" (ours, the default) or "torch" (PyTorch's default, as the official code).
    With PyTorch's default the 4-layer embedder shrinks its input at every layer, so every token
    leaves it as nearly the same bias vector, and the answer y is 1 input among d + 1: the
    context then cannot move the prediction, and meta-training settles at the context-free
    per-question prior or never leaves it (measured: 5 of 5 seeds on the synthetic task of the
    tests after 150 steps; before, whether it left depended on float rounding). "answer" gives
    the embedders He-normal weights and zero biases (tokens keep their own x) and scales the
    first layer's answer column by sqrt(d), so that at step 0 the answer moves a token as much
    as its whole x does, and the context has a gradient from the first step.

    deviation_scale (None = the paper's model): the group-prior variant, for x from a
    GroupPriorTable whose last column is the prior share m (the meta-train groups' mean). A
    context answer enters as its deviation (y - m) * deviation_scale, through the embedder and
    its own answer_embedder; the raw means are residuals over log m.
    """

    def __init__(self, dim_x: int, d_model: int = 128, n_layers: int = 6, n_heads: int = 4,
                 d_ff: int = 128, sigma_floor: float = 0.05, deviation_scale: float | None = None,
                 init: str = "answer"):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"unknown GPO init {init!r} ({' | '.join(INITS)})")
        self.dim_x, self.sigma_floor = dim_x, sigma_floor
        self.deviation_scale = deviation_scale
        self.config = dict(dim_x=dim_x, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                           d_ff=d_ff, sigma_floor=sigma_floor, deviation_scale=deviation_scale,
                           init=init)
        self.register_buffer("x_mean", torch.zeros(dim_x))
        self.register_buffer("x_std", torch.ones(dim_x))
        self.embedder = build_mlp(dim_x + 1, d_model, d_model, depth=4)
        if self.uses_prior:
            # As one input among d + 1 the answer barely moves its token, and meta-training
            # settles on the context-free prior (measured on OpinionQA); its own embedding,
            # added to the token's, lets the context be read.
            self.answer_embedder = build_mlp(1, d_model, d_model, depth=2)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, 2))
        if init == "answer":
            self._init_embedders()

    def _init_embedders(self) -> None:
        """He-normal weights and zero biases in the embedders (linear gain for each one's last
        layer); the first layer's answer column (the last input) scaled by sqrt(dim_x)."""
        mlps = [self.embedder] + ([self.answer_embedder] if self.uses_prior else [])
        for mlp in mlps:
            linears = [m for m in mlp if isinstance(m, nn.Linear)]
            for i, lin in enumerate(linears):
                last = i == len(linears) - 1
                nn.init.kaiming_normal_(lin.weight, nonlinearity="linear" if last else "relu")
                nn.init.zeros_(lin.bias)
        with torch.no_grad():
            self.embedder[0].weight[:, -1] *= math.sqrt(self.dim_x)

    @property
    def uses_prior(self) -> bool:
        """True for the group-prior variant: x ends with the prior share (GroupPriorTable)."""
        return self.deviation_scale is not None

    def set_normalisation(self, vectors: np.ndarray) -> None:
        """Standardise inputs with the table's per-dimension mean and std ([rows, d])."""
        v = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
        self.x_mean.copy_(v.mean(0))
        self.x_std.copy_(v.std(0).clamp(min=1e-6))

    def head_outputs(self, b: EpisodeBatch) -> torch.Tensor:
        """Raw head outputs per target token: [B, Nt, 2] (raw mean, raw scale)."""
        if bool((b.c_pad.all(dim=1)).any()):
            raise ValueError("every episode needs at least one context token")
        n_ctx, n_tar = b.xc.shape[1], b.xt.shape[1]
        xc = (b.xc - self.x_mean) / self.x_std
        xt = (b.xt - self.x_mean) / self.x_std
        yc = b.yc.unsqueeze(-1)                                             # [B, Nc, 1]
        if self.uses_prior:
            yc = (yc - b.xc[..., -1:]) * self.deviation_scale
        hc = self.embedder(torch.cat([xc, yc], -1))                         # [B, Nc, 128]
        if self.uses_prior:
            hc = hc + self.answer_embedder(yc)
        ht = self.embedder(torch.cat([xt, torch.zeros_like(xt[..., :1])], -1))
        h = torch.cat([hc, ht], dim=1)                                      # [B, L, 128]
        mask = attention_mask(n_ctx, n_tar, device=h.device)
        # Targets are never keys (the mask), so only the context's padding needs masking.
        key_pad = torch.cat([b.c_pad, torch.ones_like(b.t_pad)], dim=1)
        h = self.encoder(h, mask=mask, src_key_padding_mask=key_pad)
        return self.head(h[:, n_ctx:])

    def forward(self, b: EpisodeBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (mu, sigma), each [B, Nt]: mu = per-question softmax of the raw means
        (plus log prior in the group-prior variant; 0 at padding),
        sigma = floor + (1 - floor) * softplus(raw scale)."""
        raw = self.head_outputs(b)
        logits = raw[..., 0]
        if self.uses_prior:
            logits = logits + torch.log(b.xt[..., -1].clamp(min=PRIOR_FLOOR))
        mu = segment_softmax(logits, b.t_seg, b.t_pad)
        sigma = self.sigma_floor + (1 - self.sigma_floor) * nn.functional.softplus(raw[..., 1])
        return mu, sigma


def gpo_loss(mu: torch.Tensor, sigma: torch.Tensor, b: EpisodeBatch,
             kind: str = "gaussian_nll") -> torch.Tensor:
    """The meta-training loss of a batch (a scalar).

    gaussian_nll: the paper's -log N(y; mu, sigma) per target token, averaged over REAL target
        tokens only (the official code also counted padding in the mean; docs/deviations.md).
    kl: KL(y_q || mu_q) per target question, averaged over the real questions.
    mu, sigma: [B, Nt]; targets and masks come from `b`.
    """
    real = (~b.t_pad).to(mu.dtype)
    if kind == "gaussian_nll":
        nll = -torch.distributions.Normal(mu, sigma).log_prob(b.yt)
        return (nll * real).sum() / real.sum().clamp(min=1)
    if kind == "kl":
        term = torch.xlogy(b.yt, b.yt) - b.yt * torch.log(mu.clamp(min=1e-12))
        return (term * real).sum() / max(b.n_questions, 1)
    raise ValueError(f"unknown GPO loss {kind!r} (gaussian_nll | kl)")


def save_model(model: GPOModel, path: str | Path) -> None:
    """The model's constructor arguments and weights in one torch file (load_model reads it)."""
    torch.save({"config": model.config, "state_dict": model.state_dict()}, path)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> GPOModel:
    """A model written by save_model, on `device`, in eval mode."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = GPOModel(**blob["config"])
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()
