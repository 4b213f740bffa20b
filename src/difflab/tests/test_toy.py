"""Gaussian mixtures: exact score vs autograd, perturb() vs Monte Carlo, sliced W2."""

import math

import pytest
import torch
from torch.testing import assert_close

from difflab.toy.mixtures import eight_gaussians, mixture_1d, ring, two_blobs
from difflab.toy.sandbox import sliced_wasserstein


@pytest.mark.parametrize("make", [two_blobs, eight_gaussians, mixture_1d])
def test_score_is_gradient_of_log_prob(make):
    m = make()
    g = torch.Generator().manual_seed(0)
    x = (1.5 * m.sample(256, g, dtype=torch.float64)).requires_grad_(True)
    (grad,) = torch.autograd.grad(m.log_prob(x).sum(), x)
    assert_close(m.score(x), grad, atol=1e-10, rtol=1e-8)


def test_perturbed_score_per_sample_matches_perturb():
    m = two_blobs()
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    alpha = torch.rand(64, generator=g, dtype=torch.float64)
    sigma = torch.rand(64, generator=g, dtype=torch.float64) + 0.05
    batched = m.perturbed_score(x, alpha, sigma)
    logp = m.perturbed_log_prob(x, alpha, sigma)
    for i in (0, 17, 63):
        p = m.perturb(float(alpha[i]), float(sigma[i]))
        assert_close(batched[i], p.score(x[i : i + 1])[0])
        assert_close(logp[i], p.log_prob(x[i : i + 1])[0])


def test_sample_moments_match_closed_form():
    m = two_blobs()
    x = m.sample(200_000, torch.Generator().manual_seed(2), dtype=torch.float64)
    assert_close(x.mean(0), m.mean(), atol=0.01, rtol=0)
    assert_close(torch.cov(x.T), m.covariance(), atol=0.015, rtol=0)


def test_perturb_matches_monte_carlo():
    m, alpha, sigma = two_blobs(), 0.6, 0.8
    g = torch.Generator().manual_seed(3)
    x0 = m.sample(200_000, g, dtype=torch.float64)
    xt = alpha * x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    p = m.perturb(alpha, sigma)
    assert_close(xt.mean(0), p.mean(), atol=0.01, rtol=0)
    assert_close(torch.cov(xt.T), p.covariance(), atol=0.015, rtol=0)
    # The density itself, not only moments: E_q[log p] = -H(p) when q = p.
    h, se = p.entropy(200_000, g)
    assert abs(float(-p.log_prob(xt).mean()) - h) < 5 * se * math.sqrt(2)


def test_log_prob_is_normalised_1d():
    m = mixture_1d()
    x = torch.linspace(-6, 6, 20_001, dtype=torch.float64)[:, None]
    assert abs(torch.trapezoid(m.log_prob(x).exp(), x[:, 0]).item() - 1) < 1e-8
    assert ring(16).n_components == 16


def test_sliced_wasserstein_of_a_shift():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4000, 2, generator=g, dtype=torch.float64)
    assert float(sliced_wasserstein(x, x, 64, g)) < 1e-12
    # Shift by c e1: each projection shifts by c theta_1, so SW2^2 = c^2 / D.
    shifted = x + torch.tensor([1.0, 0.0], dtype=torch.float64)
    sw = float(sliced_wasserstein(shifted, x, 500, g))
    assert abs(sw - 1 / math.sqrt(2)) < 0.05
    # Unequal sizes go through quantiles.
    assert float(sliced_wasserstein(x[:1000], x, 64, g)) < 0.1
