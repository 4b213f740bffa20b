"""Noise schedules of the discrete diffusion process, as plain tensors.

Notation (Ho et al. 2020, Sec. 2): ``betas[t]`` is beta_t, ``alphas`` = 1 - beta_t,
``alpha_bar[t]`` = prod_{s<=t} alpha_s. Code index ``t = 0..T-1`` stands for the
paper's t = 1..T. All tables are float64 on the CPU; :func:`gather` moves a slice to
the data's device and dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def linear_betas(T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> Tensor:
    """Linearly increasing beta_t (Ho et al. 2020, Sec. 4: 1e-4 to 0.02 over T = 1000).

    For T != 1000 the end points are rescaled by 1000 / T so that the total noise
    added, and hence alpha_bar_T, stays about the same (Nichol & Dhariwal 2021).
    """
    scale = 1000 / T
    return torch.linspace(scale * beta_1, scale * beta_T, T, dtype=torch.float64)


def cosine_betas(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Betas of the cosine schedule (Nichol & Dhariwal 2021, Eq. 17).

    alpha_bar(t) = f(t) / f(0) with f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2), and
    beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1), clipped at ``max_beta`` near t = T.
    """
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


@dataclass(frozen=True, eq=False)
class Schedule:
    """Every per-step quantity of a discrete diffusion, each a float64 tensor (T,).

    Attributes:
        betas: beta_t, the variance added at step t.
        alphas: alpha_t = 1 - beta_t.
        alpha_bar: prod_{s <= t} alpha_s, so q(x_t | x_0) = N(sqrt(alpha_bar) x_0,
            (1 - alpha_bar) I) (Ho et al. 2020, Eq. 4).
        alpha_bar_prev: alpha_bar_{t-1}, with alpha_bar_0 = 1.
        posterior_variance: beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
            beta_t, the variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, Eq. 7).
        posterior_log_variance: log beta_tilde_t, with the t = 0 entry (where
            beta_tilde is 0) replaced by that of t = 1, as in Ho et al.'s code.
        posterior_coef_x0: the coefficient of x_0 in the posterior mean (Eq. 7).
        posterior_coef_xt: the coefficient of x_t in the posterior mean (Eq. 7).
    """

    betas: Tensor
    alphas: Tensor
    alpha_bar: Tensor
    alpha_bar_prev: Tensor
    posterior_variance: Tensor
    posterior_log_variance: Tensor
    posterior_coef_x0: Tensor
    posterior_coef_xt: Tensor

    @classmethod
    def from_betas(cls, betas: Tensor) -> Schedule:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("betas must be a 1-D tensor with every entry in (0, 1).")
        alphas = 1 - betas
        alpha_bar = torch.cumprod(alphas, 0)
        alpha_bar_prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
        var = betas * (1 - alpha_bar_prev) / (1 - alpha_bar)
        log_var = (
            torch.log(torch.cat([var[1:2], var[1:]])) if len(var) > 1 else var.log()
        )
        return cls(
            betas=betas,
            alphas=alphas,
            alpha_bar=alpha_bar,
            alpha_bar_prev=alpha_bar_prev,
            posterior_variance=var,
            posterior_log_variance=log_var,
            posterior_coef_x0=betas * alpha_bar_prev.sqrt() / (1 - alpha_bar),
            posterior_coef_xt=(1 - alpha_bar_prev) * alphas.sqrt() / (1 - alpha_bar),
        )

    @property
    def T(self) -> int:
        """The number of steps."""
        return len(self.betas)

    def time(self, n: Tensor | int) -> Tensor:
        """The continuous time t = (n + 1) / T of step index n (float64).

        Step index n is the paper's step n + 1, so t is the paper's step over T: every
        model is called on this t (:mod:`difflab.core.models`), and
        :class:`~difflab.diffusion.noise.DiscreteNoise` puts alpha_bar_n exactly there.
        """
        return (torch.as_tensor(n).to(torch.float64) + 1) / self.T

    def index(self, t: Tensor) -> Tensor:
        """The step index n = round(t T) - 1 of continuous time t, clamped to 0..T-1.

        The inverse of :meth:`time` (exactly, in float32 too, for T below 10^6).

        Raises:
            TypeError: for an integer ``t``: a step index where a time is expected.
        """
        if not (t.is_floating_point() or t.is_complex()):
            raise TypeError(
                f"expected a continuous time t in (0, 1], got a {t.dtype} tensor (a "
                "step index?); the time of step index n is schedule.time(n) = (n + 1) / T"
            )
        n = torch.round(t.to(torch.float64) * self.T) - 1
        return n.clamp(0, self.T - 1).long()

    def snr(self) -> Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) (Kingma et al. 2021, Eq. 2)."""
        return self.alpha_bar / (1 - self.alpha_bar)

    def sigma(self) -> Tensor:
        """The noise level of the variance-exploding view, sqrt((1 - alpha_bar) / alpha_bar).

        x_t / sqrt(alpha_bar_t) = x_0 + sigma_t eps, the sigma of Karras et al. 2022
        and of DDIM's ODE form (Song et al. 2021a, Eq. 14); sigma = 1 / sqrt(SNR).
        """
        return ((1 - self.alpha_bar) / self.alpha_bar).sqrt()

    def __repr__(self) -> str:  # a stable, content-based repr for cache keys
        b = self.betas
        return (
            f"Schedule(T={self.T}, beta_1={b[0].item():.6g}, beta_T={b[-1].item():.6g})"
        )


def make_schedule(kind: str = "linear", T: int = 1000) -> Schedule:
    """The ``"linear"`` (Ho et al. 2020) or ``"cosine"`` (Nichol & Dhariwal 2021) schedule."""
    if kind == "linear":
        return Schedule.from_betas(linear_betas(T))
    if kind == "cosine":
        return Schedule.from_betas(cosine_betas(T))
    raise ValueError(f"Unknown schedule {kind!r}; use 'linear' or 'cosine'.")


def gather(a: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """``a[t]`` in ``x``'s dtype and device, shaped (B, 1, ..., 1) to broadcast against x."""
    out = a.to(x.device)[t.to(x.device)].to(x.dtype)
    return out.reshape(t.shape[0], *([1] * (x.ndim - 1)))
