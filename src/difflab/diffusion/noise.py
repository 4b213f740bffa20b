"""One noise-level interface for the discrete schedules and the SDEs, and time grids.

Every diffusion model of the package perturbs data as x_t = alpha(t) x_0 + sigma(t)
eps (Song et al. 2021b, Eq. 29; Kingma et al. 2021, Eq. 1). :class:`NoiseLevels`
is that view, with continuous time t in [0, T], T = 1:

- ``alpha(t)``, ``sigma(t)``: the marginal coefficients;
- ``half_log_snr(t)``: lambda(t) = log(alpha(t) / sigma(t)), *half* the log
  signal-to-noise ratio, as in DPM-Solver (Lu et al. 2022, Sec. 3.1). Kingma et
  al. (2021) call log(alpha^2 / sigma^2) = 2 lambda the log-SNR; the name says
  which one this is. It decreases strictly in t;
- ``t_from_half_log_snr(lam)``: its inverse;
- ``f(t)``, ``g(t)``: the linear SDE dx = f(t) x dt + g(t) dw with these marginals
  (Song et al. 2021b, Eq. 5), f = d log alpha / dt and
  g^2 = d sigma^2 / dt - 2 f sigma^2 (Kingma et al. 2021, App. A.1; Lu et al.
  2022, Eq. 2.2).

The discrete DDPM schedules enter through :class:`DiscreteNoise`, the one place
where integer steps and continuous t meet. The time grid of a sampler is chosen
by its caller, as in k-diffusion's ``sample_*(model, x, sigmas)``; the plain
functions at the end make the usual ones (uniform, quadratic, uniform in lambda,
Karras et al. 2022 with rho = 7).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from difflab.core.models import EpsModel, IndexEpsModel, ScoreModel, call
from difflab.core.tensors import append_dims, randn
from difflab.diffusion.schedules import Schedule


class NoiseLevels(ABC):
    """x_t = alpha(t) x_0 + sigma(t) eps on t in [0, T]: the interface every
    schedule and SDE implements.

    Subclasses define ``alpha``, ``sigma``, ``t_from_half_log_snr``, ``f`` and
    ``g``; everything else (lambda, the drift of the SDE and of the
    probability-flow ODE, Gaussian transitions, the prior) follows from them.
    All methods take and return (B,) tensors (or any shape, elementwise).
    """

    T: float = 1.0
    t_min: float = 1e-3  # where samplers stop (Song et al. 2021b, App. C)

    @abstractmethod
    def alpha(self, t: Tensor) -> Tensor:
        """alpha(t), the scale of x_0 in x_t."""

    @abstractmethod
    def sigma(self, t: Tensor) -> Tensor:
        """sigma(t), the standard deviation of the noise in x_t."""

    def half_log_snr(self, t: Tensor) -> Tensor:
        """lambda(t) = log(alpha(t) / sigma(t)) = 1/2 log SNR(t) (Lu et al. 2022)."""
        return self.alpha(t).log() - self.sigma(t).log()

    @abstractmethod
    def t_from_half_log_snr(self, lam: Tensor) -> Tensor:
        """The time t with lambda(t) = lam, the inverse of :meth:`half_log_snr`."""

    @abstractmethod
    def f(self, t: Tensor) -> Tensor:
        """Drift coefficient f(t) = d log alpha / dt of dx = f(t) x dt + g(t) dw."""

    @abstractmethod
    def g(self, t: Tensor) -> Tensor:
        """Diffusion coefficient g(t), g^2 = d sigma^2 / dt - 2 f(t) sigma^2."""

    def marginal_coefs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """alpha(t) and sigma(t): x_t = alpha(t) x0 + sigma(t) eps."""
        return self.alpha(t), self.sigma(t)

    def marginal(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean alpha(t) x0 and std sigma(t) (B,) of p_0t(x_t | x0) (Eq. 29)."""
        return append_dims(self.alpha(t), x0) * x0, self.sigma(t)

    def drift_diffusion(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """f(x, t) = f(t) x (like x) and g(t) (B,) of the forward SDE (Eq. 5)."""
        return append_dims(self.f(t), x) * x, self.g(t)

    def ode_drift(
        self, x: Tensor, t: Tensor, score_fn: ScoreModel, cond=None
    ) -> Tensor:
        """dx/dt = f(t) x - 1/2 g(t)^2 score(x, t): probability-flow ODE (Eq. 13)."""
        f, g = self.drift_diffusion(x, t)
        return f - 0.5 * append_dims(g**2, x) * call(score_fn, x, t, cond)

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

        Returns f_i (like x) and G_i (B,). For a VP process this is one DDPM step
        with 1 - beta_i = (alpha(t)/alpha(t - dt))^2 (Ho et al. 2020, Eq. 2); for
        VE it is the NCSN step G_i^2 = sigma_i^2 - sigma_{i-1}^2 (Song et al.
        2021b, Eqs. 8 and 10). The reverse-diffusion predictor (Song et al. 2021b,
        App. E) is built from it; it is not this step's exact inverse, nor one DDPM
        ancestral step, but agrees with both to O(beta_i^2) per step.
        """
        a, b = self.transition_coefs((t - dt).clamp_min(0), t)
        return (append_dims(a, x) - 1) * x, b

    @property
    def prior_std(self) -> float:
        """The standard deviation of the prior p_T = N(0, prior_std^2 I)."""
        return 1.0

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """x_T ~ p_T = N(0, prior_std^2 I), drawn on the generator's device."""
        return randn(shape, generator, dtype=dtype, device=device) * self.prior_std

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, prior_std^2 I) summed over non-batch dims: (B, ...) -> (B,)."""
        d = z[0].numel()
        s2 = self.prior_std**2
        sq = z.reshape(z.shape[0], -1).pow(2).sum(-1)
        return -0.5 * d * math.log(2 * math.pi * s2) - 0.5 * sq / s2


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation of (xp, fp) at x, xp increasing, extended
    linearly beyond the ends (as DPM-Solver's ``interpolate_fn``)."""
    xp, fp = xp.to(x.device, x.dtype), fp.to(x.device, x.dtype)
    i = torch.searchsorted(xp, x.contiguous()).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    return f0 + (x - x0) * (f1 - f0) / (x1 - x0)


class DiscreteNoise(NoiseLevels):
    """A discrete DDPM :class:`~difflab.diffusion.schedules.Schedule` in continuous time.

    Convention (Lu et al. 2022, App. D.1, "discrete-time DPMs"): step index
    n = 0..N-1 (the paper's step n + 1) sits at t_n = (n + 1) / N, and
    log alpha(t) is piecewise linear between the knots (t_n, 1/2 log alpha_bar_n),
    with the extra knot (0, 0) for the clean data alpha_bar = 1. So alpha(t_n)^2
    is exactly alpha_bar_n and sigma = sqrt(1 - alpha^2) (variance preserving);
    f(t) is the slope of log alpha, constant between knots, and g(t)^2 = -2 f(t)
    (the N beta_n of that step, up to O(beta^2)).

    A network trained on indices knows only the knots: :meth:`index` maps t to
    the nearest index and :meth:`continuous` wraps an index-based eps model;
    samplers and likelihoods should stop at ``t_min`` = 1 / N.
    """

    def __init__(self, schedule: Schedule):
        self.schedule = schedule
        self.N = n = schedule.T
        self.t_min = 1.0 / n
        self._t = torch.arange(n + 1, dtype=torch.float64) / n  # knots 0, 1/N, .., 1
        self._log_alpha = torch.cat(
            [torch.zeros(1, dtype=torch.float64), 0.5 * schedule.alpha_bar.log()]
        )

    def log_alpha(self, t: Tensor) -> Tensor:
        """log alpha(t), piecewise linear through the knots."""
        return _interp(t, self._t, self._log_alpha)

    def alpha(self, t: Tensor) -> Tensor:
        return self.log_alpha(t).exp()

    def sigma(self, t: Tensor) -> Tensor:
        return (-torch.expm1(2 * self.log_alpha(t))).sqrt()

    def half_log_snr(self, t: Tensor) -> Tensor:
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * torch.log(-torch.expm1(2 * log_alpha))

    def t_from_half_log_snr(self, lam: Tensor) -> Tensor:
        # alpha^2 = sigmoid(2 lam) for VP, then invert the decreasing log alpha.
        log_alpha = -0.5 * torch.nn.functional.softplus(-2 * lam)
        return _interp(log_alpha, self._log_alpha.flip(0), self._t.flip(0))

    def f(self, t: Tensor) -> Tensor:
        i = (t * self.N).ceil().long().clamp(1, self.N)  # segment (t_{i-1}, t_i]
        slope = (self._log_alpha[1:] - self._log_alpha[:-1]) * self.N
        return slope.to(t.device, t.dtype)[i - 1]

    def g(self, t: Tensor) -> Tensor:
        return (-2 * self.f(t)).sqrt()

    def index(self, t: Tensor) -> Tensor:
        """The step index n = round(t N) - 1 of time t, clamped to 0..N-1 (long)."""
        return self.schedule.index(t)

    def time(self, n: Tensor) -> Tensor:
        """The time t_n = (n + 1) / N of step index n (float64)."""
        return self.schedule.time(n)

    def grid(self, timesteps: Tensor) -> Tensor:
        """The time grid of an increasing index subsequence (e.g. ``ddim_timesteps``):
        its times from the last down to the first, then t = 0 (alpha = 1, the clean
        data), as DDIM's last step to alpha_bar_0 = 1 (Song et al. 2021a, Eq. 12)."""
        return torch.cat([self.time(timesteps.flip(0)), torch.zeros(1).double()])

    def continuous(self, eps_model: IndexEpsModel) -> EpsModel:
        """An index-based ``eps_model(x, n, cond)`` as a model of continuous t."""

        def model(x: Tensor, t: Tensor, cond=None) -> Tensor:
            return call(eps_model, x, self.index(t).to(x.device), cond)

        return model

    def __repr__(self) -> str:
        return f"DiscreteNoise({self.schedule!r})"


def score_model_from_eps(eps_model: EpsModel, noise: NoiseLevels) -> ScoreModel:
    """s(x, t) = -eps(x, t) / sigma(t) (Song et al. 2021b, Eq. 7; Ho et al. 2020, Eq. 11)."""

    def score_fn(x: Tensor, t: Tensor, cond=None) -> Tensor:
        return -call(eps_model, x, t, cond) / append_dims(noise.sigma(t), x)

    return score_fn


def eps_model_from_score(score_fn: ScoreModel, noise: NoiseLevels) -> EpsModel:
    """eps(x, t) = -sigma(t) s(x, t), the inverse of :func:`score_model_from_eps`."""

    def eps_model(x: Tensor, t: Tensor, cond=None) -> Tensor:
        return -append_dims(noise.sigma(t), x) * call(score_fn, x, t, cond)

    return eps_model


# -- time grids: steps + 1 decreasing times from t_max (default T) to t_min ----------


def _ends(noise: NoiseLevels, t_max, t_min) -> tuple[float, float]:
    return (noise.T if t_max is None else t_max), (
        noise.t_min if t_min is None else t_min
    )


def uniform_grid(
    noise: NoiseLevels, steps: int, t_max: float | None = None, t_min=None
) -> Tensor:
    """Times evenly spaced from t_max down to t_min (Song et al. 2021b, App. C)."""
    hi, lo = _ends(noise, t_max, t_min)
    return torch.linspace(hi, lo, steps + 1, dtype=torch.float64)


def quadratic_grid(
    noise: NoiseLevels, steps: int, t_max: float | None = None, t_min=None
) -> Tensor:
    """sqrt(t) evenly spaced, so steps bunch up at low noise (Song et al. 2021a,
    App. D.2's quadratic DDIM spacing; Lu et al. 2022, "time_quadratic")."""
    hi, lo = _ends(noise, t_max, t_min)
    t = torch.linspace(hi**0.5, lo**0.5, steps + 1, dtype=torch.float64) ** 2
    t[0], t[-1] = hi, lo  # exact end points despite rounding in the square
    return t


def half_log_snr_grid(
    noise: NoiseLevels, steps: int, t_max: float | None = None, t_min=None
) -> Tensor:
    """lambda(t) evenly spaced (Lu et al. 2022, Sec. 3.4, "logSNR" spacing)."""
    hi, lo = _ends(noise, t_max, t_min)
    ends = noise.half_log_snr(torch.tensor([hi, lo], dtype=torch.float64))
    lam = torch.linspace(float(ends[0]), float(ends[1]), steps + 1, dtype=torch.float64)
    t = noise.t_from_half_log_snr(lam)
    t[0], t[-1] = hi, lo  # exact end points despite rounding in the inverse
    return t


def karras_grid(
    noise: NoiseLevels,
    steps: int,
    rho: float = 7.0,
    t_max: float | None = None,
    t_min=None,
) -> Tensor:
    """Karras et al. 2022, Eq. 5: sigma_i^(1/rho) evenly spaced, rho = 7.

    Their sigma is the noise level of x / alpha, sigma / alpha = exp(-lambda), so
    the grid is taken in that variable and mapped back through lambda's inverse.
    """
    hi, lo = _ends(noise, t_max, t_min)
    lam = noise.half_log_snr(torch.tensor([hi, lo], dtype=torch.float64))
    s_max, s_min = (-lam).exp().tolist()
    u = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    s = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    t = noise.t_from_half_log_snr(-s.log())
    t[0], t[-1] = hi, lo
    return t
