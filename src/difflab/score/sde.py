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

Each SDE is a :class:`~difflab.diffusion.noise.NoiseLevels`: alpha(t), sigma(t),
lambda(t) = log(alpha / sigma) and its inverse, f(t) and g(t), so the samplers and
the likelihood run unchanged on them and on a discrete DDPM schedule.

Notation (paper / code): beta(t) ``beta``, alpha(t) = exp(-1/2 int_0^t beta)
``alpha``, sigma(t) ``sigma``, s_theta(x, t) ``score_fn(x, t)`` with t (B,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from difflab.core.models import ScoreModel
from difflab.core.tensors import append_dims
from difflab.diffusion.noise import NoiseLevels


class SDE(NoiseLevels):
    """A linear forward SDE dx = f(t) x dt + g(t) dw on [0, T], T = 1 (Eq. 5).

    Subclasses define alpha, sigma, lambda's inverse, f and g (see
    :class:`~difflab.diffusion.noise.NoiseLevels`); this class adds the
    reverse-time process.
    """

    def reverse(
        self, score_fn: ScoreModel, probability_flow: bool = False
    ) -> ReverseSDE:
        """The reverse-time SDE (Eq. 6) or, if probability_flow, the ODE (Eq. 13)."""
        return ReverseSDE(self, score_fn, probability_flow)


@dataclass
class ReverseSDE:
    """The reverse-time process of ``sde`` driven by ``score_fn`` (Song 2021, Eq. 6).

    ``drift_diffusion(x, t)`` gives the drift f - g^2 score (or f - g^2 score / 2
    and zero diffusion for the probability-flow ODE, Eq. 13), to be integrated
    with a negative dt from T down to t_min.
    """

    sde: SDE
    score_fn: ScoreModel
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

    @classmethod
    def from_schedule(cls, schedule) -> VPSDE:
        """The VP SDE of a discrete linear schedule of N steps: beta_min = N beta_1,
        beta_max = N beta_N (Song et al. 2021, App. B)."""
        betas, n = schedule.betas, len(schedule.betas)
        return cls(float(betas[0]) * n, float(betas[-1]) * n)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def int_beta(self, t: Tensor) -> Tensor:
        """int_0^t beta(s) ds."""
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)

    def _t_from_int_beta(self, c: Tensor) -> Tensor:
        """Solve int_beta(t) = c for t >= 0 (a quadratic; the cancellation-free root)."""
        b0, d = self.beta_min, self.beta_max - self.beta_min
        return 2 * c / (b0 + (b0**2 + 2 * d * c).sqrt())

    def alpha(self, t: Tensor) -> Tensor:
        return (-0.5 * self.int_beta(t)).exp()

    def sigma(self, t: Tensor) -> Tensor:
        return (-torch.expm1(-self.int_beta(t))).sqrt()

    def t_from_half_log_snr(self, lam: Tensor) -> Tensor:
        # alpha^2 = sigmoid(2 lam), so int_beta = -2 log alpha = softplus(-2 lam).
        return self._t_from_int_beta(torch.nn.functional.softplus(-2 * lam))

    def f(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def g(self, t: Tensor) -> Tensor:
        return self.beta(t).sqrt()

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max})"


class SubVPSDE(VPSDE):
    """sub-VP: dx = -1/2 beta x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw.

    Song et al. 2021, Eq. 12. Same mean as VP, but sigma(t) = 1 - alpha(t)^2,
    always below the VP std sqrt(1 - alpha(t)^2): hence "sub".
    """

    def sigma(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self.int_beta(t))

    def t_from_half_log_snr(self, lam: Tensor) -> Tensor:
        # alpha / (1 - alpha^2) = r = e^lam: r alpha^2 + alpha - r = 0, positive root.
        r = lam.exp()
        alpha = 2 * r / (1 + (1 + 4 * r**2).sqrt())
        return self._t_from_int_beta(-2 * alpha.log())

    def g(self, t: Tensor) -> Tensor:
        return (self.beta(t) * -torch.expm1(-2 * self.int_beta(t))).sqrt()

    def __repr__(self) -> str:
        return f"SubVPSDE(beta_min={self.beta_min}, beta_max={self.beta_max})"


class VESDE(SDE):
    """Variance exploding: dx = sqrt(d[sigma(t)^2]/dt) dw (Song et al. 2021, Eq. 9).

    sigma_ncsn(t) = sigma_min (sigma_max / sigma_min)^t, the continuous limit of
    the NCSN noise levels (Song & Ermon 2019), so g(t) = sigma_ncsn(t)
    sqrt(2 log(sigma_max / sigma_min)). Started at a point x0 at t = 0 the SDE
    has variance sigma(t)^2 = sigma_ncsn(t)^2 - sigma_min^2; Song et al. use
    sigma_ncsn(t)^2 instead, treating the data as already smoothed by sigma_min.
    We keep the exact variance (the two differ by sigma_min^2 = 1e-4) so
    simulation and closed form agree. alpha = 1; the prior is N(0, sigma_max^2 I).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def sigma_ncsn(self, t: Tensor) -> Tensor:
        """sigma_min (sigma_max / sigma_min)^t, the NCSN noise level at t."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return (self.sigma_ncsn(t) ** 2 - self.sigma_min**2).clamp_min(0).sqrt()

    def t_from_half_log_snr(self, lam: Tensor) -> Tensor:
        # sigma = exp(-lam), sigma_ncsn^2 = sigma^2 + sigma_min^2.
        s2 = (-2 * lam).exp() + self.sigma_min**2
        return (
            0.5
            * (s2 / self.sigma_min**2).log()
            / math.log(self.sigma_max / self.sigma_min)
        )

    def f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def g(self, t: Tensor) -> Tensor:
        log_ratio = math.log(self.sigma_max / self.sigma_min)
        return self.sigma_ncsn(t) * math.sqrt(2 * log_ratio)

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"
