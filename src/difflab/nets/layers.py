"""Layers shared by the networks: the time embedding and the GroupNorm rule."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of a (possibly fractional) time, Vaswani et al. 2017, Sec. 3.5.

    ``emb[:, i] = sin(t * w_i)`` and ``emb[:, half + i] = cos(t * w_i)`` with
    ``w_i = max_period ** (-i / half)``, ``half = dim // 2``; an odd ``dim`` is
    padded with one zero. DDPM (Ho et al. 2020, Appendix B) uses it for the
    diffusion step.

    Args:
        t: (B,) times; DDPM indices 0..T-1 or any real number.
        dim: embedding width.
        max_period: the longest wavelength, ``2 pi max_period``.

    Returns:
        (B, dim) float32 embedding in [-1, 1] (float64 if ``t`` is float64).
    """
    half = dim // 2
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    i = torch.arange(half, device=t.device, dtype=dtype)
    freqs = torch.exp(-math.log(max_period) * i / half)  # (half,)
    args = t.to(dtype)[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)  # (B, 2 half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def num_groups(channels: int) -> int:
    """GroupNorm groups: 32 (as in DDPM) when ``channels`` is a multiple of 64.

    Otherwise the largest power of two dividing ``channels / 2``, so every group
    holds at least two channels (one channel per group would be instance norm).
    """
    return math.gcd(32, max(channels // 2, 1))
