"""A noise-aware classifier p_phi(y | x_t, t) for classifier guidance.

Dhariwal & Nichol (2021, Sec. 4) guide a diffusion model with the gradient of a
classifier trained on *noisy* images x_t at every noise level, since a classifier
of clean images says nothing useful about x_t early in sampling. Theirs is the
downsampling half of their UNet; this one is the small CNN of
:mod:`difflab.nets.classifier` (three stages of two 3x3 convs, GroupNorm, SiLU,
global average pooling) with the time added to every stage: the sinusoidal
embedding of Vaswani et al. (2017, Sec. 3.5) through a small MLP, then a
per-channel scale and shift after each normalisation (FiLM; Perez et al. 2018),
as the DDPM UNet conditions its residual blocks on time (Ho et al. 2020, App. B).

There is no batch normalisation, so each row's logits depend on that row only
and the gradient of a summed log-probability is each row's own gradient.

Papers: Dhariwal & Nichol 2021 https://arxiv.org/abs/2105.05233 ;
Perez et al. 2018 https://arxiv.org/abs/1709.07871
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from difflab.core.cond import Cond
from difflab.nets.layers import num_groups, sinusoidal_embedding


@dataclass(frozen=True)
class NoisyClassifierConfig:
    """Hyper-parameters of :class:`NoisyClassifier`.

    Attributes:
        in_channels: image channels. image_size: height = width (for the record).
        num_classes: number of classes K.
        width: channels of the first stage (then 2 width, 4 width).
        time_embed_dim: width of the sinusoidal time embedding.
        time_scale: multiplies t before the embedding: 1000 for continuous t in
            [0, 1] (so t_n = (n + 1) / 1000 embeds like the DDPM index n + 1).
    """

    in_channels: int = 1
    image_size: int = 8
    num_classes: int = 10
    width: int = 32
    time_embed_dim: int = 64
    time_scale: float = 1000.0


class _Stage(nn.Module):
    """conv (stride s) -> GroupNorm -> FiLM(t) -> SiLU -> conv -> GroupNorm -> SiLU."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.norm1 = nn.GroupNorm(num_groups(c_out), c_out)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(num_groups(c_out), c_out)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1)
        h = self.act(self.norm1(self.conv1(x)) * (1 + scale) + shift)
        return self.act(self.norm2(self.conv2(h)))


class NoisyClassifier(nn.Module):
    """``logits = f(x_t, t)``: a CNN classifier of noisy images (B, C, H, W)."""

    def __init__(self, config: NoisyClassifierConfig):
        super().__init__()
        self.config = cfg = config
        w, e = cfg.width, cfg.time_embed_dim
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.stages = nn.ModuleList(
            [
                _Stage(cfg.in_channels, w, e, stride=1),  # (B, w, H, W)
                _Stage(w, 2 * w, e, stride=2),  # (B, 2w, H/2, W/2)
                _Stage(2 * w, 4 * w, e, stride=2),  # (B, 4w, H/4, W/4)
            ]
        )
        self.head = nn.Linear(4 * w, cfg.num_classes)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x_t (B, C, H, W) and t (B,) float -> logits (B, num_classes)."""
        cfg = self.config
        t_emb = sinusoidal_embedding(t * cfg.time_scale, cfg.time_embed_dim)
        emb = self.time_mlp(t_emb.to(x.dtype))  # (B, e)
        h = x
        for stage in self.stages:
            h = stage(h, emb)
        return self.head(h.mean(dim=(2, 3)))  # global average pool -> (B, K)


def label_log_prob(net: nn.Module) -> Callable[[Tensor, Tensor, Cond], Tensor]:
    """``log_prob_fn(x_t, t, cond) -> (B,)``: log p_phi(y | x_t, t) of ``cond["y"]``.

    The form :func:`difflab.diffusion.guidance.classifier_guided` takes.
    """

    def log_prob_fn(x: Tensor, t: Tensor, cond: Cond) -> Tensor:
        logp = torch.log_softmax(net(x, t), dim=-1)  # (B, K)
        return logp.gather(1, cond["y"].to(x.device).view(-1, 1)).squeeze(1)

    return log_prob_fn
