"""Score matching losses: explicit, implicit (Hyvarinen), sliced and denoising.

All losses here are *without* the customary factor 1/2, so that they compare
directly: for a model s(x) and data density p,

    explicit   J_ESM = E_p ||s(x) - grad log p(x)||^2           (Hyvarinen 2005, Eq. 2)
    implicit   J_ISM = E_p [||s(x)||^2 + 2 tr(grad_x s(x))]     (Hyvarinen 2005, Eq. 4)
    sliced     J_SSM = E_p E_v [||s||^2 + 2 v^T grad_x s v]    (Song et al. 2019, Eq. 8)
    denoising  J_DSM = E ||s(x~) - grad log q(x~ | x)||^2       (Vincent 2011, Eq. 10)

and J_ESM = J_ISM + E_p ||grad log p||^2 = J_SSM + E_p ||grad log p||^2 (the
slice average is the trace), while with x~ = x + sigma eps,
J_ESM(p_sigma) = J_DSM + C, C = D / sigma^2 - E ||grad log p_sigma||^2 with no
dependence on s: minimising the tractable J_DSM minimises the Fisher divergence
to the noisy density p_sigma. The continuous-time version (Song et al. 2021,
Eq. 7) averages J_DSM over t with weight lambda(t) = sigma(t)^2.

``score_fn(x)`` maps (B, D) to (B, D); the SDE loss takes ``score_fn(x, t)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from difflab.core.tensors import append_dims
from difflab.score.sde import SDE


def _sqnorm(v: Tensor) -> Tensor:
    """||v||^2 per sample: (B, ...) -> (B,)."""
    return v.reshape(v.shape[0], -1).pow(2).sum(-1)


def explicit_score_matching_loss(
    score_fn: Callable[[Tensor], Tensor], x: Tensor, true_score: Tensor
) -> Tensor:
    """J_ESM = E ||s(x) - grad log p(x)||^2, needs the true score (B, D) at x.

    The Fisher divergence between p and the model (Hyvarinen 2005, Eq. 2):
    only computable when the true score is known, as in the sandbox.
    """
    return _sqnorm(score_fn(x) - true_score).mean()


def implicit_score_matching_loss(
    score_fn: Callable[[Tensor], Tensor], x: Tensor
) -> Tensor:
    """J_ISM = E [||s(x)||^2 + 2 tr(grad_x s(x))] (Hyvarinen 2005, Theorem 1, Eq. 4).

    Integration by parts removes the unknown score; the trace of the Jacobian
    costs one backward pass per dimension, so this is for low dimension D.
    Differentiable in the model's parameters (``create_graph=True``).
    """
    x = x.detach().requires_grad_(True)
    s = score_fn(x)  # (B, D)
    trace = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for d in range(x.shape[1]):
        (grad,) = torch.autograd.grad(s[:, d].sum(), x, create_graph=True)
        trace = trace + grad[:, d]
    return (_sqnorm(s) + 2 * trace).mean()


def sliced_score_matching_loss(
    score_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    n_projections: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sliced score matching with variance reduction (Song et al. 2019, Eq. 8).

    tr(grad s) is replaced by v^T (grad s) v for Gaussian v, one Jacobian-vector
    product per projection whatever the dimension: E_v[v^T A v] = tr(A).
    """
    x = x.detach().requires_grad_(True)
    s = score_fn(x)
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(n_projections):
        v = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        (grad_v,) = torch.autograd.grad((s * v).sum(), x, create_graph=True)  # v^T J
        total = total + 2 * (grad_v * v).reshape(x.shape[0], -1).sum(-1)
    return (_sqnorm(s) + total / n_projections).mean()


def denoising_score_matching_loss(
    score_fn: Callable[[Tensor], Tensor],
    x0: Tensor,
    sigma: float,
    generator: torch.Generator | None = None,
    eps: Tensor | None = None,
) -> Tensor:
    """J_DSM at one noise level (Vincent 2011, Eq. 10; Song & Ermon 2019, Eq. 2).

    x~ = x0 + sigma eps and the target grad log q(x~ | x0) = -eps / sigma.
    Pass ``eps`` to reuse the same noise across models.
    """
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    x_noisy = x0 + sigma * eps
    return _sqnorm(score_fn(x_noisy) + eps / sigma).mean()


def dsm_loss(
    score_fn: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    sde: SDE,
    *,
    generator: torch.Generator | None = None,
    t_min: float = 1e-5,
    likelihood_weighting: bool = False,
) -> Tensor:
    """Continuous-time denoising score matching (Song et al. 2021, Eq. 7).

    t ~ U(t_min, T), x_t = alpha(t) x0 + sigma(t) eps, and
    lambda(t) ||s(x_t, t) + eps / sigma(t)||^2 with lambda(t) = sigma(t)^2, which
    is ||sigma(t) s(x_t, t) + eps||^2: the DDPM noise-prediction loss with
    eps_hat = -sigma s (Ho et al. 2020, Eq. 14). With ``likelihood_weighting``,
    lambda(t) = g(t)^2 makes the loss a bound on the negative log-likelihood
    (Song, Durkan et al. 2021, Theorem 1). Mean over the batch.
    """
    b = x0.shape[0]
    u = torch.rand(b, generator=generator, dtype=x0.dtype).to(x0.device)
    t = t_min + (sde.T - t_min) * u
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    alpha, sigma = sde.marginal_coefs(t)
    x_t = append_dims(alpha, x0) * x0 + append_dims(sigma, x0) * eps
    residual = _sqnorm(
        append_dims(sigma, x0) * score_fn(x_t, t) + eps
    )  # sigma^2 ||s - target||^2
    if likelihood_weighting:
        _, g = sde.drift_diffusion(x_t, t)
        residual = residual * g**2 / sigma**2
    return residual.mean()
