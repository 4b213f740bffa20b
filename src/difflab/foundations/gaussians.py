"""Gaussian algebra: sampling, KL divergences, products, marginals and conditionals.

Everything a diffusion model does to its data is Gaussian: the forward process adds
Gaussian noise (Ho et al. 2020, Eq. 2), the posterior q(x_{t-1} | x_t, x_0) is a
Gaussian conditional (Eq. 6-7), and every term of the variational bound is a KL
divergence between two Gaussians (Eq. 5). This module holds those closed forms.

Conventions: a *diagonal* Gaussian is given by its mean ``mu`` and its variances
``var`` (same shape, the last axes are the event axes, earlier ones batch axes); a
*full-covariance* Gaussian by ``mu`` of shape (..., D) and ``Sigma`` of shape
(..., D, D). Functions follow the device and dtype of their inputs.

References:
    Bishop (2006), Pattern Recognition and Machine Learning, Sec. 2.3.
    Petersen & Pedersen, The Matrix Cookbook, Sec. 8.1.
    Kingma & Welling (2014), Auto-Encoding Variational Bayes, arXiv:1312.6114.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def reparameterize(
    mu: Tensor, log_var: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Draw ``x ~ N(mu, exp(log_var))`` as ``mu + exp(log_var / 2) * eps``.

    The randomness sits in ``eps ~ N(0, I)``, which does not depend on ``mu`` or
    ``log_var``, so gradients flow through the sample (Kingma & Welling 2014,
    Sec. 2.4).

    Args:
        mu: means, any shape.
        log_var: log-variances, same shape as ``mu``.
        generator: source of ``eps`` (on the device of ``mu``).

    Returns:
        A sample with the shape, device and dtype of ``mu``.
    """
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * log_var) * eps


def gaussian_log_prob(x: Tensor, mu: Tensor, var: Tensor) -> Tensor:
    """Elementwise log N(x; mu, var) of a diagonal Gaussian (sum it over event axes)."""
    return -0.5 * (LOG_2PI + torch.log(var) + (x - mu) ** 2 / var)


def gaussian_kl(mu1: Tensor, var1: Tensor, mu2: Tensor, var2: Tensor) -> Tensor:
    """Elementwise KL(N(mu1, var1) || N(mu2, var2)) between 1D Gaussians.

    ``0.5 * (log(var2 / var1) + (var1 + (mu1 - mu2)^2) / var2 - 1)``. For diagonal
    Gaussians sum the result over the event axes. Ho et al. (2020) use it for the
    L_{t-1} terms of Eq. 5.

    Args:
        mu1, var1, mu2, var2: broadcastable tensors (variances > 0).

    Returns:
        The KL divergence in nats, broadcast shape of the inputs.
    """
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mu1 - mu2) ** 2) / var2 - 1.0)


def mvn_log_prob(x: Tensor, mu: Tensor, Sigma: Tensor) -> Tensor:
    """log N(x; mu, Sigma), full covariance. x, mu: (..., D); Sigma: (..., D, D)."""
    L = torch.linalg.cholesky(Sigma)
    diff = (x - mu).unsqueeze(-1)  # (..., D, 1)
    z = torch.linalg.solve_triangular(L, diff, upper=False).squeeze(-1)
    log_det = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    D = mu.shape[-1]
    return -0.5 * (D * LOG_2PI + log_det + (z**2).sum(-1))


def mvn_kl(mu1: Tensor, Sigma1: Tensor, mu2: Tensor, Sigma2: Tensor) -> Tensor:
    """KL(N(mu1, Sigma1) || N(mu2, Sigma2)) for full covariances.

    ``0.5 * (tr(Sigma2^-1 Sigma1) + d^T Sigma2^-1 d - D + log|Sigma2| - log|Sigma1|)``
    with ``d = mu2 - mu1`` (The Matrix Cookbook, Sec. 8.1).

    Args:
        mu1, mu2: (..., D) means.
        Sigma1, Sigma2: (..., D, D) symmetric positive-definite covariances.

    Returns:
        (...,) KL divergence in nats.
    """
    L1 = torch.linalg.cholesky(Sigma1)
    L2 = torch.linalg.cholesky(Sigma2)
    M = torch.linalg.solve_triangular(L2, L1, upper=False)  # L2^-1 L1
    trace = (M**2).sum((-2, -1))  # tr(Sigma2^-1 Sigma1) = ||L2^-1 L1||_F^2
    d = (mu2 - mu1).unsqueeze(-1)
    z = torch.linalg.solve_triangular(L2, d, upper=False).squeeze(-1)
    log_det1 = 2.0 * torch.log(torch.diagonal(L1, dim1=-2, dim2=-1)).sum(-1)
    log_det2 = 2.0 * torch.log(torch.diagonal(L2, dim1=-2, dim2=-1)).sum(-1)
    D = mu1.shape[-1]
    return 0.5 * (trace + (z**2).sum(-1) - D + log_det2 - log_det1)


class GaussianProduct(NamedTuple):
    """``N(x; mu1, S1) N(x; mu2, S2) = exp(log_scale) N(x; mu, Sigma)``."""

    mu: Tensor
    Sigma: Tensor
    log_scale: Tensor


def gaussian_product(
    mu1: Tensor, Sigma1: Tensor, mu2: Tensor, Sigma2: Tensor
) -> GaussianProduct:
    """Product of two Gaussian densities in the same variable.

    The product is an unnormalised Gaussian with precision ``S1^-1 + S2^-1``, mean
    ``Sigma (S1^-1 mu1 + S2^-1 mu2)`` and scale ``N(mu1; mu2, S1 + S2)``
    (Bishop 2006, Sec. 2.3.3; The Matrix Cookbook, Sec. 8.1.8).

    Args:
        mu1, mu2: (..., D) means.
        Sigma1, Sigma2: either (..., D, D) covariances, or (..., D) variances of
            diagonal Gaussians (then everything is elementwise, and ``log_scale``
            is elementwise too).

    Returns:
        ``GaussianProduct(mu, Sigma, log_scale)`` in the same layout as the input.
    """
    if Sigma1.shape == mu1.shape:  # diagonal: independent 1D products
        var = 1.0 / (1.0 / Sigma1 + 1.0 / Sigma2)
        mu = var * (mu1 / Sigma1 + mu2 / Sigma2)
        log_scale = gaussian_log_prob(mu1, mu2, Sigma1 + Sigma2)
        return GaussianProduct(mu, var, log_scale)
    P1 = torch.linalg.inv(Sigma1)
    P2 = torch.linalg.inv(Sigma2)
    Sigma = torch.linalg.inv(P1 + P2)
    Sigma = 0.5 * (Sigma + Sigma.transpose(-2, -1))
    eta = (P1 @ mu1.unsqueeze(-1) + P2 @ mu2.unsqueeze(-1)).squeeze(-1)
    mu = (Sigma @ eta.unsqueeze(-1)).squeeze(-1)
    log_scale = mvn_log_prob(mu1, mu2, Sigma1 + Sigma2)
    return GaussianProduct(mu, Sigma, log_scale)


def gaussian_linear(
    A: Tensor, mu: Tensor, Sigma: Tensor, b: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Law of ``A x + b`` for ``x ~ N(mu, Sigma)``: ``N(A mu + b, A Sigma A^T)``.

    Args:
        A: (M, D) matrix; mu: (D,); Sigma: (D, D); b: (M,) or None.

    Returns:
        (mean (M,), covariance (M, M)).
    """
    mean = A @ mu if b is None else A @ mu + b
    return mean, A @ Sigma @ A.transpose(-2, -1)


def gaussian_sum(
    mu1: Tensor, Sigma1: Tensor, mu2: Tensor, Sigma2: Tensor
) -> tuple[Tensor, Tensor]:
    """Law of ``x + y`` for independent Gaussians: means add and covariances add."""
    return mu1 + mu2, Sigma1 + Sigma2


def _complement(idx: Tensor | list[int], D: int, device: torch.device) -> Tensor:
    idx = torch.as_tensor(idx, dtype=torch.long, device=device)
    keep = torch.ones(D, dtype=torch.bool, device=device)
    keep[idx] = False
    return torch.arange(D, device=device)[keep]


def gaussian_marginal(
    mu: Tensor, Sigma: Tensor, idx: Tensor | list[int]
) -> tuple[Tensor, Tensor]:
    """Marginal of the coordinates ``idx`` of N(mu, Sigma): pick the sub-blocks.

    Args:
        mu: (D,) mean; Sigma: (D, D) covariance; idx: K indices to keep.

    Returns:
        (mu[idx] (K,), Sigma[idx, idx] (K, K)).
    """
    idx = torch.as_tensor(idx, dtype=torch.long, device=mu.device)
    return mu[idx], Sigma[idx][:, idx]


def gaussian_conditional(
    mu: Tensor, Sigma: Tensor, idx_obs: Tensor | list[int], x_obs: Tensor
) -> tuple[Tensor, Tensor]:
    """Law of the unobserved coordinates given ``x[idx_obs] = x_obs``.

    With a = unobserved, b = observed (Bishop 2006, Eq. 2.81-2.82)::

        mu_a|b    = mu_a + Sigma_ab Sigma_bb^-1 (x_b - mu_b)
        Sigma_a|b = Sigma_aa - Sigma_ab Sigma_bb^-1 Sigma_ba

    Args:
        mu: (D,) mean; Sigma: (D, D) covariance.
        idx_obs: K observed indices.
        x_obs: (K,) observed values, or (N, K) for N observations at once.

    Returns:
        (mean (D-K,) or (N, D-K), covariance (D-K, D-K)); the unobserved
        coordinates are in increasing index order. The covariance does not
        depend on ``x_obs``.
    """
    D = mu.shape[-1]
    b = torch.as_tensor(idx_obs, dtype=torch.long, device=mu.device)
    a = _complement(b, D, mu.device)
    S_aa, S_ab, S_bb = Sigma[a][:, a], Sigma[a][:, b], Sigma[b][:, b]
    K = torch.linalg.solve(S_bb, S_ab.T).T  # Sigma_ab Sigma_bb^-1, (D-K, K)
    mean = mu[a] + (x_obs - mu[b]) @ K.T
    cov = S_aa - K @ S_ab.T
    return mean, 0.5 * (cov + cov.T)


def discretized_gaussian_log_likelihood(
    x: Tensor, mean: Tensor, log_scale: Tensor, levels: int = 256
) -> Tensor:
    """log P(x) of 8-bit data in [-1, 1] under N(mean, exp(log_scale)^2), binned.

    Ho et al. 2020, Eq. 13: bins of width 2/(levels-1) around x; the outermost bins
    extend to -inf and +inf so the probabilities of the levels sum to one.
    Differences of CDFs are taken in the tail where they are accurate.

    Args:
        x: data in [-1, 1], any shape.
        mean, log_scale: same shape as ``x``.

    Returns:
        Elementwise log-probabilities (nats), shape of ``x``.
    """
    half = 1.0 / (levels - 1)
    inv_s = torch.exp(-log_scale)
    z_lo, z_hi = (x - half - mean) * inv_s, (x + half - mean) * inv_s
    # Phi(z_hi) - Phi(z_lo) == Phi(-z_lo) - Phi(-z_hi): use the side with small tails.
    flip = z_lo > 0
    a = torch.where(flip, -z_hi, z_lo)
    b = torch.where(flip, -z_lo, z_hi)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    diff = (log_a - log_b).clamp(max=-1e-12)
    log_mid = log_b + torch.log(-torch.expm1(diff))
    # When the bin is narrow next to the scale, density x width is more accurate.
    log_pdf = -0.5 * ((x - mean) * inv_s) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)
    log_mid = torch.where(b - a < 1e-3, log_pdf + math.log(2 * half), log_mid)
    left = torch.special.log_ndtr(z_hi)  # x at -1: mass of (-inf, -1 + half]
    right = torch.special.log_ndtr(-z_lo)  # x at +1: mass of [1 - half, inf)
    return torch.where(x < -1 + half, left, torch.where(x > 1 - half, right, log_mid))


def nats_to_bits_per_dim(log_p: Tensor | float, num_dims: int) -> Tensor | float:
    """-log p / (D ln 2): a log-probability in nats over D dimensions as bits/dim.

    For a *discrete* log-probability, such as that of
    :func:`discretized_gaussian_log_likelihood` (Ho et al. 2020, Sec. 4 report
    their NLL so). A continuous density needs the bin width too:
    :func:`difflab.score.likelihood.dequantized_bits_per_dim`.
    """
    return -log_p / (num_dims * math.log(2.0))
