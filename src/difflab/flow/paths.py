"""Conditional probability paths and their velocities: flow matching's targets.

Flow matching (Lipman et al. 2023) regresses a velocity field v_theta(x, t) on
the velocity of a *conditional* path between a data point x0 and a noise draw
eps. Every path here is Gaussian and written in the site's convention, t = 0 at
the data and t = 1 at the noise (Lipman et al. run time the other way):

    x_t = alpha(t) x0 + sigma(t) eps,     u_t = alpha'(t) x0 + sigma'(t) eps.   (1)

So a path is a :class:`~difflab.diffusion.noise.NoiseLevels`. Two are used:

- the straight (optimal-transport, rectified-flow) path alpha = 1 - t,
  sigma = t, u_t = eps - x0 (Lipman et al. 2023, Sec. 4.1, with sigma_min = 0;
  Liu et al. 2023): :class:`StraightPath`;
- the VP diffusion path of any schedule or SDE (Lipman et al. 2023, Sec. 4.1),
  whose rates follow from f and g: alpha' = f alpha and
  sigma' = (g^2 + 2 f sigma^2) / (2 sigma) (differentiate sigma^2 = ... in
  :mod:`difflab.diffusion.noise`).

The marginal velocity, the minimiser of the flow-matching loss, is
v(x, t) = E[u_t | x_t = x]. Substituting x0 = (x - sigma eps) / alpha gives

    v(x, t) = f(t) x + b(t) E[eps | x_t = x],   b(t) = g(t)^2 / (2 sigma(t)),   (2)

affine in the noise target, with the *same* map for the prediction:
v_theta = f x + b eps_theta. Hence ||v_theta - u||^2 = b^2 ||eps_theta - eps||^2:
flow matching on this path is eps-prediction training with the weight b(t)^2
(:func:`velocity_weight`), and by Tweedie E[eps | x] = -sigma grad log p_t, so
Eq. (2) is the probability-flow ODE's drift f x - 1/2 g^2 grad log p_t (Song et
al. 2021, Eq. 13). Kingma & Gao (2023, Sec. 3) give the weighting view in
general: the common diffusion objectives are one noise-prediction loss under
different weightings over the noise level (their Sec. 4 then relates monotonic
weightings to the ELBO).
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.core.models import VelocityModel
from difflab.core.tensors import append_dims, randn_like
from difflab.diffusion.noise import NoiseLevels


class StraightPath(NoiseLevels):
    """x_t = (1 - t) x0 + t eps, the straight conditional path (Eq. 1).

    As a :class:`NoiseLevels`: lambda(t) = log((1 - t) / t), so
    t = sigmoid(-lambda); f = d log alpha / dt = -1 / (1 - t) and
    g^2 = d sigma^2 / dt - 2 f sigma^2 = 2 t / (1 - t). f and g are infinite at
    t = 1; the rates alpha' = -1 and sigma' = 1 are not (:func:`rates`).
    """

    t_min = 0.0

    def alpha(self, t: Tensor) -> Tensor:
        return 1 - t

    def sigma(self, t: Tensor) -> Tensor:
        return t

    def t_from_half_log_snr(self, lam: Tensor) -> Tensor:
        return torch.sigmoid(-lam)

    def f(self, t: Tensor) -> Tensor:
        return -1 / (1 - t)

    def g(self, t: Tensor) -> Tensor:
        return (2 * t / (1 - t)).sqrt()

    def __repr__(self) -> str:
        return "StraightPath()"


def rates(path: NoiseLevels, t: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha'(t), sigma'(t)), both like t.

    Exact constants for :class:`StraightPath`; otherwise from f and g (module
    docstring), which needs sigma(t) > 0.
    """
    if isinstance(path, StraightPath):
        return -torch.ones_like(t), torch.ones_like(t)
    f, g, alpha, sigma = path.f(t), path.g(t), path.alpha(t), path.sigma(t)
    return f * alpha, (g**2 + 2 * f * sigma**2) / (2 * sigma)


def conditional_sample(path: NoiseLevels, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """x_t = alpha(t) x0 + sigma(t) eps (Eq. 1), t (B,)."""
    alpha, sigma = path.marginal_coefs(t)
    return append_dims(alpha, x0) * x0 + append_dims(sigma, x0) * eps


def conditional_velocity(
    path: NoiseLevels, x0: Tensor, eps: Tensor, t: Tensor
) -> Tensor:
    """u_t = alpha'(t) x0 + sigma'(t) eps, the regression target (Eq. 1)."""
    d_alpha, d_sigma = rates(path, t)
    return append_dims(d_alpha, x0) * x0 + append_dims(d_sigma, x0) * eps


def eps_coef(path: NoiseLevels, t: Tensor) -> Tensor:
    """b(t) = g(t)^2 / (2 sigma(t)) = sigma' - f sigma, the slope of Eq. (2)."""
    return path.g(t) ** 2 / (2 * path.sigma(t))


def velocity_from_eps(path: NoiseLevels, x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """v = f(t) x + b(t) eps (Eq. 2): an eps prediction as a velocity."""
    return append_dims(path.f(t), x) * x + append_dims(eps_coef(path, t), x) * eps


def eps_from_velocity(path: NoiseLevels, x: Tensor, v: Tensor, t: Tensor) -> Tensor:
    """eps = (v - f(t) x) / b(t), the inverse of :func:`velocity_from_eps`."""
    return (v - append_dims(path.f(t), x) * x) / append_dims(eps_coef(path, t), x)


def velocity_weight(path: NoiseLevels, t: Tensor) -> Tensor:
    """w(t) = b(t)^2 with ||v_theta - u_t||^2 = w(t) ||eps_theta - eps||^2 (Eq. 2)."""
    return eps_coef(path, t) ** 2


def velocity_model_from_eps(eps_model: VelocityModel, path: NoiseLevels):
    """A diffusion model's eps prediction as a velocity model on ``path`` (Eq. 2)."""

    def velocity(x: Tensor, t: Tensor, cond=None) -> Tensor:
        eps = eps_model(x, t) if cond is None else eps_model(x, t, cond)
        return velocity_from_eps(path, x, eps, t)

    return velocity


def fm_loss(
    net: VelocityModel,
    path: NoiseLevels,
    x0: Tensor,
    *,
    eps: Tensor | None = None,
    t: Tensor | None = None,
    cond=None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Conditional flow matching E ||v_theta(x_t, t) - u_t||^2 (Lipman et al. 2023).

    t ~ U(0, 1) and eps ~ N(0, I) unless given; passing ``eps`` paired with
    ``x0`` (a coupling) is rectified flow's reflow loss (Liu et al. 2023).
    The mean is over all elements.
    """
    if eps is None:
        eps = randn_like(x0, generator)
    if t is None:
        u = torch.rand(x0.shape[0], generator=generator, dtype=torch.float64)
        t = u.to(x0.device)
    x_t = conditional_sample(path, x0, eps, t)
    target = conditional_velocity(path, x0, eps, t)
    t_in = t.to(x0.dtype)
    out = net(x_t, t_in) if cond is None else net(x_t, t_in, cond)
    return (out - target).pow(2).mean()
