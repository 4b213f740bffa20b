"""The forward SDEs of score-based generative modelling: VP, VE and sub-VP.

Song et al. 2021 ("Score-Based Generative Modeling through Stochastic
Differential Equations", arXiv:2011.13456) write the forward process as

    dx = f(x, t) dt + g(t) dw,                                  (Eq. 5)

run backwards with the reverse-time SDE

    dx = [f(x, t) - g(t)^2 grad_x log p_t(x)] dt + g(t) dw_bar,  (Eq. 6)

and share its marginals p_t with the probability-flow ODE

    dx/dt = f(x, t) - 1/2 g(t)^2 grad_x log p_t(x).             (Eq. 13)

All three SDEs here are linear with a scalar, state-independent g, so given a
start x0 the marginal is Gaussian, x_t = alpha(t) x0 + sigma(t) eps (Eq. 29),
and the transition between any two times s < t is Gaussian too:
x_t | x_s ~ N(alpha(t)/alpha(s) x_s, sigma(t)^2 - (alpha(t)/alpha(s))^2 sigma(s)^2).

Time runs over [0, T] with T = 1. Samplers stop at ``t_min`` (default 1e-3, as
in Song et al. 2021, Appendix C) rather than 0, where the VP/sub-VP score blows
up; likelihoods use t_min = 1e-5 (Appendix D.2).

Notation (paper / code): beta(t) ``beta``, alpha(t) = exp(-1/2 int_0^t beta)
``alpha``, sigma(t) ``sigma``, s_theta(x, t) ``score_fn(x, t)`` with t (B,).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from difflab.core.tensors import append_dims

ScoreFn = Callable[[Tensor, Tensor], Tensor]


class SDE:
    """A linear forward SDE dx = f(t) x dt + g(t) dw on [0, T], T = 1 (Eq. 5).

    Subclasses define ``beta``-like coefficients through ``drift_diffusion`` and
    the closed-form marginal through ``marginal_coefs``.
    """

    T: float = 1.0
    t_min: float = 1e-3

    def drift_diffusion(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """f(x, t) (same shape as x) and g(t) (B,) of Eq. 5, t (B,)."""
        raise NotImplementedError

    def marginal_coefs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """alpha(t) and sigma(t), both (B,): x_t = alpha(t) x0 + sigma(t) eps."""
        raise NotImplementedError

    def marginal(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean alpha(t) x0 and std sigma(t) (B,) of p_0t(x_t | x0) (Eq. 29)."""
        alpha, sigma = self.marginal_coefs(t)
        return append_dims(alpha, x0) * x0, sigma

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """x_T ~ p_T = N(0, sigma_T^2 I), drawn on the CPU generator then moved."""
        z = torch.randn(shape, generator=generator, dtype=dtype)
        return (z * self.prior_std).to(device)

    @property
    def prior_std(self) -> float:
        return 1.0

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, sigma_T^2 I) summed over non-batch dims: (B, ...) -> (B,)."""
        d = z[0].numel()
        s2 = self.prior_std**2
        sq = z.reshape(z.shape[0], -1).pow(2).sum(-1)
        return -0.5 * d * math.log(2 * math.pi * s2) - 0.5 * sq / s2

    def transition_coefs(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """a, b with x_t | x_s ~ N(a x_s, b^2 I) for s < t, both (B,).

        a = alpha(t)/alpha(s), b^2 = sigma(t)^2 - a^2 sigma(s)^2 (exact for a
        linear SDE with state-independent diffusion).
        """
        alpha_s, sigma_s = self.marginal_coefs(s)
        alpha_t, sigma_t = self.marginal_coefs(t)
        a = alpha_t / alpha_s
        return a, (sigma_t**2 - a**2 * sigma_s**2).clamp_min(0).sqrt()

    def discretize(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        """The discrete forward step from t - dt to t: x_t = x + f_i + G_i z.

        Returns f_i (like x) and G_i (B,). For the VP SDE this is exactly one DDPM
        step with 1 - beta_i = (alpha(t)/alpha(t - dt))^2 (Ho et al. 2020, Eq. 2);
        for VE it is the NCSN step G_i^2 = sigma_i^2 - sigma_{i-1}^2 (Song et al.
        2021, Eqs. 8 and 10). The reverse-diffusion predictor inverts it.
        """
        a, b = self.transition_coefs((t - dt).clamp_min(0), t)
        return (append_dims(a, x) - 1) * x, b

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (Eq. 6) or, if probability_flow, the ODE (Eq. 13)."""
        return ReverseSDE(self, score_fn, probability_flow)

    def ode_drift(self, x: Tensor, t: Tensor, score_fn: ScoreFn) -> Tensor:
        """dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t): probability-flow ODE (Eq. 13)."""
        f, g = self.drift_diffusion(x, t)
        return f - 0.5 * append_dims(g**2, x) * score_fn(x, t)


@dataclass
class ReverseSDE:
    """The reverse-time process of ``sde`` driven by ``score_fn`` (Song 2021, Eq. 6).

    ``drift_diffusion(x, t)`` gives the drift f - g^2 score (or f - g^2 score / 2
    and zero diffusion for the probability-flow ODE, Eq. 13), to be integrated
    with a negative dt from T down to t_min.
    """

    sde: SDE
    score_fn: ScoreFn
    probability_flow: bool = False

    def drift_diffusion(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        f, g = self.sde.drift_diffusion(x, t)
        w = 0.5 if self.probability_flow else 1.0
        drift = f - w * append_dims(g**2, x) * self.score_fn(x, t)
        return drift, torch.zeros_like(g) if self.probability_flow else g


class VPSDE(SDE):
    """Variance preserving: dx = -1/2 beta x dt + sqrt(beta) dw (Song 2021, Eq. 11).

    beta(t) = beta_min + t (beta_max - beta_min) is the continuous limit of DDPM's
    linear schedule with T_ddpm steps: beta_min = T_ddpm * beta_1 = 0.1 and
    beta_max = T_ddpm * beta_T = 20 for beta_1 = 1e-4, beta_T = 0.02 (Appendix B).
    alpha(t) = exp(-1/2 int_0^t beta(s) ds) and sigma(t)^2 = 1 - alpha(t)^2 (Eq. 29).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = beta_min, beta_max

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def int_beta(self, t: Tensor) -> Tensor:
        """int_0^t beta(s) ds."""
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)

    def drift_diffusion(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        beta = self.beta(t)
        return -0.5 * append_dims(beta, x) * x, beta.sqrt()

    def marginal_coefs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        log_alpha = -0.5 * self.int_beta(t)
        return log_alpha.exp(), (-torch.expm1(2 * log_alpha)).sqrt()

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max})"


class SubVPSDE(VPSDE):
    """sub-VP: dx = -1/2 beta x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw.

    Song et al. 2021, Eq. 12. Same mean as VP, but sigma(t) = 1 - alpha(t)^2,
    always below the VP std sqrt(1 - alpha(t)^2): hence "sub".
    """

    def drift_diffusion(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        beta = self.beta(t)
        g2 = beta * -torch.expm1(-2 * self.int_beta(t))
        return -0.5 * append_dims(beta, x) * x, g2.sqrt()

    def marginal_coefs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        log_alpha = -0.5 * self.int_beta(t)
        return log_alpha.exp(), -torch.expm1(2 * log_alpha)

    def __repr__(self) -> str:
        return f"SubVPSDE(beta_min={self.beta_min}, beta_max={self.beta_max})"


class VESDE(SDE):
    """Variance exploding: dx = sqrt(d[sigma(t)^2]/dt) dw (Song et al. 2021, Eq. 9).

    sigma(t) = sigma_min (sigma_max / sigma_min)^t, the continuous limit of the
    NCSN noise levels (Song & Ermon 2019), so g(t) = sigma(t) sqrt(2 log(sigma_max
    / sigma_min)). Started at a point x0 at t = 0 the SDE has variance
    sigma(t)^2 - sigma_min^2; Song et al. use sigma(t)^2 instead, treating the
    data as already smoothed by sigma_min. We keep the exact variance (the two
    differ by sigma_min^2 = 1e-4) so simulation and closed form agree.
    The prior is N(0, sigma_max^2 I).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def sigma_t(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def drift_diffusion(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        log_ratio = math.log(self.sigma_max / self.sigma_min)
        return torch.zeros_like(x), self.sigma_t(t) * math.sqrt(2 * log_ratio)

    def marginal_coefs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        sigma = (self.sigma_t(t) ** 2 - self.sigma_min**2).clamp_min(0).sqrt()
        return torch.ones_like(t), sigma

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"
