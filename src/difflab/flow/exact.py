"""The exact marginal velocity of a Gaussian mixture under a Gaussian path.

For data x0 ~ sum_k w_k N(m_k, C_k) and x_t = alpha x0 + sigma eps, each component
is jointly Gaussian with x_t, so the posterior means are linear in x (Bishop
2006, Eq. 2.116; Song et al. 2021, Eq. 29 for the marginal):

    S_k = alpha^2 C_k + sigma^2 I,   r_k(x) = p_t(k | x),
    E[x0 | x, k]  = m_k + alpha C_k S_k^{-1} (x - alpha m_k),
    E[eps | x, k] = sigma S_k^{-1} (x - alpha m_k),

and the marginal velocity of flow matching (Lipman et al. 2023, Sec. 3) is

    v(x, t) = sum_k r_k(x) (alpha' E[x0 | x, k] + sigma' E[eps | x, k]).     (3)

Unlike f x - 1/2 g^2 grad log p_t, Eq. (3) stays finite at t = 1 of the straight
path (alpha = 0, where r_k = w_k and v = x - E[x0]). The mixture is any object
with ``means`` (K, D), ``covs`` (K, D, D), ``weights`` (K,) and
``perturbed_log_posterior(x, alpha, sigma)``, as
:class:`difflab.toy.mixtures.GaussianMixture`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from difflab.diffusion.noise import NoiseLevels
from difflab.flow.paths import rates


def posterior_means(mixture, path: NoiseLevels, x: Tensor, t: Tensor):
    """E[x0 | x_t = x] and E[eps | x_t = x], both (B, D), for x (B, D) and t (B,)."""
    dtype, device = x.dtype, x.device
    alpha, sigma = (v.to(dtype).view(-1, 1, 1) for v in path.marginal_coefs(t))
    means = mixture.means.to(device, dtype)  # (K, D)
    covs = mixture.covs.to(device, dtype)  # (K, D, D)
    eye = torch.eye(x.shape[1], dtype=dtype, device=device)
    s = alpha[..., None] ** 2 * covs + sigma[..., None] ** 2 * eye  # (B, K, D, D)
    diff = x.unsqueeze(1) - alpha * means  # (B, K, D)
    solved = torch.linalg.solve(s, diff.unsqueeze(-1)).squeeze(-1)  # S_k^{-1} diff
    x0_k = means + alpha * torch.einsum("kde,bke->bkd", covs, solved)
    eps_k = sigma * solved
    a, b = path.marginal_coefs(t)
    r = mixture.perturbed_log_posterior(x, a.to(dtype), b.to(dtype)).exp()  # (B, K)
    return torch.einsum("bk,bkd->bd", r, x0_k), torch.einsum("bk,bkd->bd", r, eps_k)


def exact_velocity(mixture, path: NoiseLevels, x: Tensor, t: Tensor) -> Tensor:
    """v(x, t) of Eq. (3): the minimiser of the flow-matching loss on ``path``."""
    x0_hat, eps_hat = posterior_means(mixture, path, x, t)
    d_alpha, d_sigma = (v.to(x.dtype).view(-1, 1) for v in rates(path, t))
    return d_alpha * x0_hat + d_sigma * eps_hat


def exact_velocity_fn(mixture, path: NoiseLevels) -> Callable[[Tensor, Tensor], Tensor]:
    """``v(x, t)`` of Eq. (3) as a velocity model (t a (B,) tensor)."""
    return lambda x, t: exact_velocity(mixture, path, x, t)


def continuity_residual(
    mixture, path: NoiseLevels, x: Tensor, t: float, h: float = 1e-4
) -> tuple[Tensor, Tensor]:
    """Both sides of the continuity equation d_t p_t = -div(p_t v) at points x (B, D).

    Central finite differences of step ``h`` in t (on the exact perturbed density)
    and in each coordinate of x (on p_t v); float64 advised. Returns
    (d_t p_t, -div(p_t v)), each (B,), equal up to O(h^2) when v is the velocity
    that transports p_t (the continuity equation).
    """

    def density(xs: Tensor, tt: float) -> Tensor:
        tv = torch.full((1,), tt, dtype=torch.float64)
        a, s = (float(v) for v in path.marginal_coefs(tv))
        return mixture.perturb(a, s).log_prob(xs).exp()

    def flux(xs: Tensor) -> Tensor:
        tv = torch.full((xs.shape[0],), t, dtype=torch.float64)
        return density(xs, t).unsqueeze(1) * exact_velocity(mixture, path, xs, tv)

    dp_dt = (density(x, t + h) - density(x, t - h)) / (2 * h)
    div = torch.zeros(x.shape[0], dtype=x.dtype)
    for d in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, d] = h
        div = div + (flux(x + e)[:, d] - flux(x - e)[:, d]) / (2 * h)
    return dp_dt, -div
