"""VP / VE / sub-VP SDEs, their samplers with the exact score, and score matching."""

import math

import pytest
import torch
from torch.testing import assert_close

from difflab.diffusion.noise import uniform_grid
from difflab.diffusion.schedules import linear_betas
from difflab.score.matching import (
    denoising_score_matching_loss,
    dsm_loss,
    explicit_score_matching_loss,
    implicit_score_matching_loss,
    sliced_score_matching_loss,
)
from difflab.score.samplers import (
    CountedScore,
    annealed_langevin_sample,
    langevin_sample,
    ode_sample,
    pc_sample,
    reverse_sde_sample,
)
from difflab.score.sde import VESDE, VPSDE, SubVPSDE
from difflab.toy.mixtures import gaussian, two_blobs
from difflab.toy.sandbox import (
    exact_score_fn,
    noise_conditional_score,
    sliced_wasserstein,
)

F64 = torch.float64


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=repr)
def test_forward_euler_maruyama_matches_closed_form_marginal(sde):
    g = torch.Generator().manual_seed(0)
    n, steps, t_end = 10_000, 200, 0.3
    x0 = torch.tensor([1.5, -0.5], dtype=F64)
    x = x0.expand(n, 2).clone()
    dt = t_end / steps
    for i in range(steps):
        t = torch.full((n,), i * dt, dtype=F64)
        f, gt = sde.drift_diffusion(x, t)
        x = (
            x
            + f * dt
            + gt[:, None] * math.sqrt(dt) * torch.randn(x.shape, generator=g, dtype=F64)
        )
    mean, std = sde.marginal(x0.expand(1, 2), torch.tensor([t_end], dtype=F64))
    # 5 standard errors of the mean / of the std, plus the O(dt) Euler bias.
    assert_close(x.mean(0), mean[0], atol=5 * float(std) / math.sqrt(n) + 1e-3, rtol=0)
    assert_close(x.std(0), std.expand(2), atol=0, rtol=0.02)


def test_ddpm_chain_converges_to_vp_sde():
    # alpha_bar_i = prod (1 - beta_j) -> exp(-int_0^t beta) with t = (i + 1) / T.
    T = 1000
    alpha_bar = torch.cumprod(1 - linear_betas(T), 0)
    t = torch.arange(1, T + 1, dtype=F64) / T
    alpha, _ = VPSDE().marginal_coefs(t)
    assert (alpha_bar.sqrt() - alpha).abs().max() < 2e-3


def test_reverse_probability_flow_is_the_ode_drift():
    sde, m = VPSDE(), two_blobs()
    score = exact_score_fn(m, sde)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = torch.full((8,), 0.4, dtype=F64)
    drift, g = sde.reverse(score, probability_flow=True).drift_diffusion(x, t)
    assert_close(drift, sde.ode_drift(x, t, score))
    assert (g == 0).all()


def _sw_to_truth(sampler, score, sde, seed=0, *, steps, **kw):
    m = two_blobs()
    g = torch.Generator().manual_seed(seed)
    x_T = sde.prior_sample((2000, 2), g, dtype=F64)
    grid = uniform_grid(sde, steps)
    x = sampler(score, x_T, grid, sde=sde, generator=g, progress=False, **kw)
    return float(sliced_wasserstein(x, m.sample(2000, g, dtype=F64), 64, g))


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=repr)
def test_ode_with_exact_score_carries_prior_to_data(sde):
    score = CountedScore(exact_score_fn(two_blobs(), sde))
    sw = _sw_to_truth(ode_sample, score, sde, steps=50, method="heun")
    assert score.nfe == 100
    # Two independent 2000-samples of the truth sit at about 0.05-0.1.
    assert sw < 0.15, sw
    flipped = lambda x, t: -score(x, t)  # a sign error in the score
    assert _sw_to_truth(ode_sample, flipped, sde, steps=50, method="heun") > 0.5


def test_reverse_sde_and_pc_with_exact_score_reach_data():
    sde = VPSDE()
    score = exact_score_fn(two_blobs(), sde)
    assert _sw_to_truth(reverse_sde_sample, score, sde, steps=100) < 0.15
    assert _sw_to_truth(pc_sample, score, sde, steps=50) < 0.15
    sw_euler = _sw_to_truth(pc_sample, score, sde, steps=50, predictor="euler")
    assert sw_euler < 0.15
    # Dropping the g^2 score term leaves the forward SDE's drift: no data.
    wrong = lambda x, t: torch.zeros_like(x)
    assert _sw_to_truth(reverse_sde_sample, wrong, sde, steps=100) > 0.5


def test_langevin_with_exact_score_reaches_gaussian_target():
    mean = torch.tensor([1.0, -2.0], dtype=F64)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64)
    p = gaussian(mean, cov)
    g = torch.Generator().manual_seed(2)
    x = 4 * torch.randn(3000, 2, generator=g, dtype=F64)
    x = langevin_sample(
        p.score, x, steps=500, step_size=0.03, generator=g, progress=False
    )
    assert_close(x.mean(0), mean, atol=0.06, rtol=0)
    assert_close(torch.cov(x.T), cov, atol=0.06, rtol=0)


def test_annealed_langevin_reaches_mixture():
    m = two_blobs()
    g = torch.Generator().manual_seed(3)
    sigmas = torch.logspace(math.log10(5), math.log10(0.01), 10, dtype=F64)
    x = sigmas[0] * torch.randn(2000, 2, generator=g, dtype=F64)
    x = annealed_langevin_sample(
        noise_conditional_score(m),
        x,
        sigmas,
        steps_per_sigma=40,
        eps=1e-4,
        generator=g,
        progress=False,
    )
    assert_close(x.mean(0), m.mean(), atol=0.08, rtol=0)
    assert_close(torch.cov(x.T), m.covariance(), atol=0.12, rtol=0)


def test_explicit_and_denoising_score_matching_differ_by_a_constant():
    # Vincent 2011: J_ESM(p_sigma) = J_DSM + E||grad log p_sigma||^2 - D / sigma^2.
    m, sigma, n = two_blobs(), 0.5, 200_000
    g = torch.Generator().manual_seed(4)
    x0 = m.sample(n, g, dtype=F64)
    eps = torch.randn(x0.shape, generator=g, dtype=F64)
    p_sigma = m.perturb(1.0, sigma)
    x = x0 + sigma * eps
    true = p_sigma.score(x)
    a = torch.tensor([[0.3, -1.0], [0.5, -0.2]], dtype=F64)
    models = [lambda x: -x, lambda x: x @ a.T + 0.5, p_sigma.score]
    # Per-sample ESM - DSM, paired on the same (x0, eps).
    diffs = [
        ((s(x) - true) ** 2).sum(-1) - ((s(x) + eps / sigma) ** 2).sum(-1)
        for s in models
    ]
    const = float((true**2).sum(-1).mean()) - 2 / sigma**2
    for d in diffs:
        assert abs(float(d.mean()) - const) < 5 * float(d.std()) / math.sqrt(n)
    for d in diffs[1:]:
        paired = d - diffs[0]
        assert abs(float(paired.mean())) < 5 * float(paired.std()) / math.sqrt(n)
    # And through the package's losses.
    esm = explicit_score_matching_loss(models[1], x, true)
    dsm = denoising_score_matching_loss(models[1], x0, sigma, eps=eps)
    assert abs(float(esm - dsm) - const) < 0.1


def test_implicit_and_sliced_score_matching_equal_explicit_up_to_fisher_constant():
    m, n = two_blobs(), 100_000
    g = torch.Generator().manual_seed(5)
    x = m.sample(n, g, dtype=F64)
    a = torch.tensor([[-1.0, 0.4], [0.2, -2.0]], dtype=F64)
    model = lambda x: x @ a.T + 0.3  # tr(grad s) = tr(a) exactly
    fisher = float((m.score(x) ** 2).sum(-1).mean())
    esm = float(explicit_score_matching_loss(model, x, m.score(x)))
    ism = implicit_score_matching_loss(model, x).item()
    ssm = sliced_score_matching_loss(model, x, 1, g).item()
    assert abs(ism + fisher - esm) < 0.05  # integration by parts: in expectation
    assert abs(ssm - ism) < 0.05  # the probes average to the trace


def test_continuous_dsm_prefers_the_exact_score():
    m, sde = two_blobs(), VPSDE()
    g = torch.Generator().manual_seed(6)
    x0 = m.sample(20_000, g, dtype=F64)
    exact = dsm_loss(
        exact_score_fn(m, sde), x0, sde, generator=torch.Generator().manual_seed(7)
    )
    scaled = lambda x, t: 1.2 * exact_score_fn(m, sde)(x, t)
    worse = dsm_loss(scaled, x0, sde, generator=torch.Generator().manual_seed(7))
    assert float(exact) < float(worse)
    # lambda = sigma^2 makes the loss a noise-prediction loss: at most D = 2.
    assert 0 < float(exact) < 2
