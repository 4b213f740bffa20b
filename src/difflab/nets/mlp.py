"""A small time-conditioned MLP for 2D toy distributions.

It plays the role of the UNet in the toy chapters: it maps a point x_t (B, D)
and a time t (B,) to a prediction of the same shape (eps, x0, v or a score, as
the recipe decides). Time enters through the sinusoidal embedding of Vaswani
et al. 2017 (Sec. 3.5), as in Ho et al. 2020 (Appendix B), and is added to every
hidden layer.

Papers: Vaswani et al. 2017 https://arxiv.org/abs/1706.03762 ;
Ho et al. 2020 https://arxiv.org/abs/2006.11239
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.nets.layers import sinusoidal_embedding


@dataclass(frozen=True)
class MLPConfig:
    """Hyper-parameters of :class:`MLP`.

    Attributes:
        dim: data dimension D.
        hidden: hidden width.
        depth: number of residual hidden layers.
        time_embed_dim: width of the sinusoidal time embedding.
        num_classes: if set, a learned class embedding is added to the time
            embedding; label ``num_classes`` is the "null" class (classifier-free
            guidance, Ho & Salimans 2022).
        time_scale: multiplies ``t`` before the embedding. Keep 1.0 for DDPM
            indices 0..T-1; use e.g. 1000.0 for continuous t in [0, 1], whose
            sinusoids would otherwise barely move (the fastest frequency is 1).
    """

    dim: int = 2
    hidden: int = 128
    depth: int = 3
    time_embed_dim: int = 32
    num_classes: int | None = None
    time_scale: float = 1.0


class MLP(nn.Module):
    """Residual MLP ``eps_hat = f(x_t, t[, y])`` for D-dimensional toy data."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = cfg = config
        self.time_mlp = nn.Sequential(
            nn.Linear(cfg.time_embed_dim, cfg.hidden),
            nn.SiLU(),
            nn.Linear(cfg.hidden, cfg.hidden),
        )
        self.class_emb = (
            nn.Embedding(cfg.num_classes + 1, cfg.hidden) if cfg.num_classes else None
        )
        self.fc_in = nn.Linear(cfg.dim, cfg.hidden)
        self.fcs = nn.ModuleList(
            nn.Linear(cfg.hidden, cfg.hidden) for _ in range(cfg.depth)
        )
        self.fc_out = nn.Linear(cfg.hidden, cfg.dim)

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        cond: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Predict from x_t.

        Args:
            x: (B, D) points x_t.
            t: (B,) float times, multiplied by ``config.time_scale``.
            cond: ``{"y": (B,) long labels in 0..num_classes}`` (``num_classes``
                or no ``"y"`` is the null label); only with ``config.num_classes``.
                A ``"context"`` is refused: the MLP has no cross-attention.

        Returns:
            (B, D).
        """
        cfg = self.config
        y = cond.get("y") if cond else None
        if cond and cond.get("context") is not None:
            raise NotImplementedError("the MLP has no cross-attention")
        if y is not None and self.class_emb is None:
            raise ValueError("labels y given but MLPConfig.num_classes is None")
        t_emb = sinusoidal_embedding(t * cfg.time_scale, cfg.time_embed_dim)
        emb = self.time_mlp(t_emb.to(x.dtype))  # (B, hidden)
        if self.class_emb is not None:
            if y is None:
                y = torch.full_like(t, cfg.num_classes, dtype=torch.long)
            emb = emb + self.class_emb(y)
        h = self.fc_in(x)  # (B, hidden)
        for fc in self.fcs:
            h = h + fc(F.silu(h + emb))  # residual layer, time added at every depth
        return self.fc_out(F.silu(h))  # (B, D)
