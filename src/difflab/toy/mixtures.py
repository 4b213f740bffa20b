"""Gaussian mixtures with exact density and score: the sandbox of the score-SDE chapter.

A mixture p(x) = sum_k w_k N(x; m_k, C_k) stays a mixture under the forward
process of every diffusion model in the package: if x0 ~ p and
x_t = alpha * x0 + sigma * eps with eps ~ N(0, I), then

    x_t ~ sum_k w_k N(x; alpha m_k, alpha^2 C_k + sigma^2 I),

so the perturbed density p_t and its score grad_x log p_t(x) are known in closed
form at every t (Song et al. 2021, Eq. 29 gives the transition kernels). Every
sampler can then be run with the *exact* score and its error measured.

Each covariance is stored by its eigendecomposition C_k = U_k diag(lam_k) U_k^T,
so the perturbed covariance alpha^2 C_k + sigma^2 I = U_k diag(alpha^2 lam_k +
sigma^2) U_k^T costs nothing extra, even with a different (alpha, sigma) for
each sample of a batch.

Notation (paper / code): w_k ``weights``, m_k ``means`` (K, D), C_k ``covs``
(K, D, D), r_k(x) the responsibilities (posterior component probabilities).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class GaussianMixture:
    """A D-dimensional Gaussian mixture with exact sample, log_prob and score.

    Args:
        means: (K, D) component means m_k.
        covs: (K, D, D) symmetric positive-definite covariances C_k.
        weights: (K,) mixture weights (normalised here); uniform if omitted.

    Parameters are stored in float64; evaluations follow ``x.dtype``/``x.device``.
    """

    def __init__(self, means: Tensor, covs: Tensor, weights: Tensor | None = None):
        means = torch.as_tensor(means, dtype=torch.float64)
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if means.ndim != 2 or covs.shape != (*means.shape, means.shape[1]):
            raise ValueError(
                f"means must be (K, D) and covs (K, D, D); got {tuple(means.shape)} "
                f"and {tuple(covs.shape)}"
            )
        k = means.shape[0]
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (k,) or (weights <= 0).any():
            raise ValueError("weights must be (K,) and positive")
        self.means = means  # (K, D)
        self.covs = 0.5 * (covs + covs.transpose(-1, -2))  # (K, D, D)
        self.weights = weights / weights.sum()  # (K,)
        lam, u = torch.linalg.eigh(self.covs)  # (K, D), (K, D, D)
        if (lam <= 0).any():
            raise ValueError("covariances must be positive definite")
        self._lam, self._u = lam, u

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def component(self, k: int) -> GaussianMixture:
        """Component k alone, N(m_k, C_k): the law of x given the class y = k."""
        return GaussianMixture(self.means[k : k + 1], self.covs[k : k + 1])

    def mean(self) -> Tensor:
        """E[x] = sum_k w_k m_k, shape (D,)."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Cov[x] = sum_k w_k (C_k + m_k m_k^T) - E[x] E[x]^T, shape (D, D)."""
        mu = self.mean()
        second = torch.einsum("k,kij->ij", self.weights, self.covs) + torch.einsum(
            "k,ki,kj->ij", self.weights, self.means, self.means
        )
        return second - torch.outer(mu, mu)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """Draw n samples (n, D): a component k ~ w, then m_k + C_k^{1/2} z.

        Randomness is drawn on the CPU from ``generator`` so that a seed gives the
        same samples on every device.
        """
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        root = self._u * self._lam.sqrt().unsqueeze(-2)  # (K, D, D): U diag(sqrt(lam))
        x = self.means[k] + torch.einsum("nij,nj->ni", root[k], z)
        return x.to(device=device, dtype=dtype)

    def perturb(self, alpha: float, sigma: float) -> GaussianMixture:
        """The exact law of alpha * x0 + sigma * eps, x0 ~ self, eps ~ N(0, I).

        Song et al. 2021, Eq. 29 (Gaussian transition kernels): each component
        becomes N(alpha m_k, alpha^2 C_k + sigma^2 I), the weights are unchanged.
        """
        eye = torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(
            alpha * self.means, alpha**2 * self.covs + sigma**2 * eye, self.weights
        )

    # -- exact density and score, optionally perturbed per sample -------------------

    def _components(
        self, x: Tensor, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0
    ) -> tuple[Tensor, Tensor]:
        """log(w_k N_k(x)) (B, K) and each component's score (B, K, D) of the law of
        alpha * x0 + sigma * eps, with alpha, sigma floats or (B,) tensors."""
        dtype, device = x.dtype, x.device
        alpha = torch.as_tensor(alpha, dtype=dtype, device=device).reshape(-1, 1, 1)
        sigma = torch.as_tensor(sigma, dtype=dtype, device=device).reshape(-1, 1, 1)
        means = self.means.to(device=device, dtype=dtype)  # (K, D)
        lam = self._lam.to(device=device, dtype=dtype)  # (K, D)
        u = self._u.to(device=device, dtype=dtype)  # (K, D, D)
        log_w = self.weights.to(device=device, dtype=dtype).log()  # (K,)
        lam_t = alpha**2 * lam + sigma**2  # (B or 1, K, D): eigenvalues of the cov
        diff = x.unsqueeze(1) - alpha * means  # (B, K, D)
        proj = torch.einsum("bkd,kde->bke", diff, u)  # U^T (x - alpha m)
        maha = (proj**2 / lam_t).sum(-1)  # (B, K)
        log_norm = -0.5 * (self.dim * math.log(2 * math.pi) + lam_t.log().sum(-1))
        log_comp = log_w + log_norm - 0.5 * maha  # (B, K)
        comp_score = -torch.einsum("kde,bke->bkd", u, proj / lam_t)  # -Sigma^-1 diff
        return log_comp, comp_score

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) for x (B, D), returns (B,) (log-sum-exp over components)."""
        return self._components(x)[0].logsumexp(-1)

    def score(self, x: Tensor) -> Tensor:
        """grad_x log p(x) = sum_k r_k(x) (-C_k^{-1} (x - m_k)), (B, D) -> (B, D).

        The responsibilities r_k = softmax_k(log w_k N_k(x)) are computed with
        log-sum-exp, so the score is exact far out in the tails too.
        """
        return self.perturbed_score(x, 1.0, 0.0)

    def perturbed_log_prob(
        self, x: Tensor, alpha: Tensor | float, sigma: Tensor | float
    ) -> Tensor:
        """log p_t(x) of alpha * x0 + sigma * eps; alpha, sigma (B,) or float."""
        return self._components(x, alpha, sigma)[0].logsumexp(-1)

    def perturbed_score(
        self, x: Tensor, alpha: Tensor | float, sigma: Tensor | float
    ) -> Tensor:
        """grad_x log p_t(x) with a per-sample (alpha, sigma): x (B, D), alpha (B,).

        This is the exact score a network trained with denoising score matching
        would learn at infinite capacity (Song et al. 2021, Eq. 7).
        """
        log_comp, comp_score = self._components(x, alpha, sigma)
        r = torch.softmax(log_comp, dim=-1)  # (B, K) responsibilities
        return torch.einsum("bk,bkd->bd", r, comp_score)

    def perturbed_log_posterior(
        self, x: Tensor, alpha: Tensor | float, sigma: Tensor | float
    ) -> Tensor:
        """log p_t(k | x) of each component k given x_t = x, (B, D) -> (B, K).

        Bayes' rule on the perturbed mixture: log w_k N_k,t(x) - log p_t(x), the
        exact noise-aware classifier when the class is the component (the ideal
        p_phi(y | x_t) of Dhariwal & Nichol 2021, Sec. 4.1).
        """
        return torch.log_softmax(self._components(x, alpha, sigma)[0], dim=-1)

    def entropy(
        self, n: int = 200_000, generator: torch.Generator | None = None
    ) -> tuple[float, float]:
        """Monte Carlo entropy H = -E log p(x) in nats and its standard error.

        A mixture has no closed-form entropy; with exact log p the estimate is
        unbiased and its error is std(log p) / sqrt(n).
        """
        x = self.sample(n, generator, dtype=torch.float64)
        logp = self.log_prob(x)
        return float(-logp.mean()), float(logp.std() / math.sqrt(n))

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, D={self.dim})"


def gaussian(mean: Tensor, cov: Tensor) -> GaussianMixture:
    """A single Gaussian N(mean, cov) as a one-component mixture."""
    mean = torch.as_tensor(mean, dtype=torch.float64)
    cov = torch.as_tensor(cov, dtype=torch.float64)
    return GaussianMixture(mean.unsqueeze(0), cov.unsqueeze(0))


def ring(n: int = 8, radius: float = 2.0, std: float = 0.2) -> GaussianMixture:
    """n isotropic Gaussians of standard deviation ``std`` evenly spaced on a circle."""
    angle = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
    means = radius * torch.stack([angle.cos(), angle.sin()], dim=-1)
    covs = std**2 * torch.eye(2, dtype=torch.float64).expand(n, 2, 2)
    return GaussianMixture(means, covs)


def eight_gaussians(radius: float = 2.0, std: float = 0.2) -> GaussianMixture:
    """The classic 2D benchmark: eight Gaussians on a circle of radius 2."""
    return ring(8, radius, std)


def two_blobs() -> GaussianMixture:
    """Two correlated, unequally weighted 2D Gaussians (weights 0.3 and 0.7).

    Off-diagonal covariances and unequal weights test the parts of the score an
    isotropic ring would not.
    """
    means = torch.tensor([[-1.5, 0.5], [1.0, -0.5]], dtype=torch.float64)
    covs = torch.tensor(
        [[[0.30, 0.20], [0.20, 0.30]], [[0.10, -0.05], [-0.05, 0.40]]],
        dtype=torch.float64,
    )
    return GaussianMixture(means, covs, torch.tensor([0.3, 0.7]))


def mixture_1d() -> GaussianMixture:
    """A 1D mixture of three Gaussians, for histograms of marginals p_t(x)."""
    means = torch.tensor([[-2.0], [0.0], [1.5]], dtype=torch.float64)
    covs = torch.tensor([0.15, 0.05, 0.3], dtype=torch.float64).reshape(3, 1, 1)
    return GaussianMixture(means, covs, torch.tensor([0.3, 0.2, 0.5]))
