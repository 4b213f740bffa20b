"""The forward process, its posterior and the parameterisations, against Monte Carlo and Bayes."""

import math

import torch
from torch.testing import assert_close

from difflab.diffusion.forward import q_mean_variance, q_posterior, q_sample, q_step
from difflab.diffusion.parameterization import (
    eps_from_score,
    eps_from_v,
    eps_from_x0,
    score_from_eps,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
)
from difflab.diffusion.schedules import (
    cosine_betas,
    gather,
    linear_betas,
    make_schedule,
)


def test_schedules_match_their_definitions():
    s = make_schedule("linear", 1000)
    assert_close(s.betas[0].item(), 1e-4) and assert_close(s.betas[-1].item(), 0.02)
    assert_close(s.alpha_bar, torch.cumprod(1 - s.betas, 0))
    # Ho et al.'s linear schedule ends with alpha_bar_T about 4e-5 (nearly pure noise).
    assert 1e-5 < s.alpha_bar[-1] < 1e-4
    # The cosine schedule's alpha_bar follows cos^2 (Nichol & Dhariwal 2021, Eq. 17).
    c = make_schedule("cosine", 1000)
    t = torch.tensor([100, 500, 900])
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    expect = torch.tensor(
        [f((k + 1) / 1000) / f(0) for k in t.tolist()], dtype=torch.float64
    )
    assert_close(c.alpha_bar[t], expect, rtol=1e-6, atol=0)
    assert (cosine_betas(1000) <= 0.999).all() and (linear_betas(50) < 1).all()
    # SNR and sigma are two views of alpha_bar: sigma^2 = 1 / SNR.
    assert_close(s.sigma() ** 2, 1 / s.snr())
    assert (s.snr()[1:] < s.snr()[:-1]).all()


def test_closed_form_marginal_matches_iterated_chain():
    """q(x_t | x_0) = N(sqrt(alpha_bar) x_0, (1 - alpha_bar) I) against running Eq. 2."""
    s = make_schedule("linear", 200)
    g = torch.Generator().manual_seed(0)
    n, x0 = 40_000, torch.tensor([1.5, -0.5], dtype=torch.float64)
    x = x0.expand(n, 2).clone()
    for k in range(120):
        x = q_step(
            s, x, torch.full((n,), k), torch.randn(n, 2, generator=g, dtype=x.dtype)
        )
    t = torch.full((n,), 119)
    mean, var = q_mean_variance(s, x0.expand(n, 2), t)
    assert_close(x.mean(0), mean[0], atol=4 * math.sqrt(var[0, 0] / n), rtol=0)
    assert_close(x.var(0), var[0], rtol=0.03, atol=0)
    # q_sample draws from the same law.
    xs = q_sample(s, x0.expand(n, 2), t, torch.randn(n, 2, generator=g, dtype=x.dtype))
    assert_close(xs.mean(0), mean[0], atol=4 * math.sqrt(var[0, 0] / n), rtol=0)


def test_posterior_is_bayes_rule():
    """q(x_{t-1} | x_t, x_0) equals conditioning the joint Gaussian of (x_{t-1}, x_t) given x_0."""
    s = make_schedule("cosine", 100)
    for k in [1, 10, 57, 99]:
        a_prev, a, alpha = s.alpha_bar[k - 1], s.alpha_bar[k], s.alphas[k]
        x0 = torch.tensor([[0.7]], dtype=torch.float64)
        x_t = torch.tensor([[-0.3]], dtype=torch.float64)
        var_prev, var_t = 1 - a_prev, 1 - a
        cov = alpha.sqrt() * var_prev  # Cov(x_{t-1}, x_t | x_0)
        mean = a_prev.sqrt() * x0 + cov / var_t * (x_t - a.sqrt() * x0)
        var = var_prev - cov**2 / var_t
        got_mean, got_var, got_log_var = q_posterior(s, x0, x_t, torch.tensor([k]))
        assert_close(got_mean, mean)
        assert_close(got_var, var.view(1, 1))
        assert_close(got_log_var, var.log().view(1, 1))


def test_posterior_mean_by_monte_carlo():
    """E[x_{t-1} | x_t, x_0] from simulated pairs, regressed on x_t, for fixed x_0."""
    s = make_schedule("linear", 50)
    g = torch.Generator().manual_seed(1)
    k, n = 20, 200_000
    x0 = torch.full((n, 1), 0.5, dtype=torch.float64)
    x_prev = q_sample(
        s, x0, torch.full((n,), k - 1), torch.randn(n, 1, generator=g, dtype=x0.dtype)
    )
    x_t = q_step(
        s, x_prev, torch.full((n,), k), torch.randn(n, 1, generator=g, dtype=x0.dtype)
    )
    # Linear regression of x_{t-1} on x_t gives the posterior mean's coefficients.
    X = torch.cat([x_t, torch.ones_like(x_t)], 1)
    coef = torch.linalg.lstsq(X, x_prev).solution.squeeze()
    assert_close(coef[0], s.posterior_coef_xt[k], atol=0.01, rtol=0)
    assert_close(coef[1], s.posterior_coef_x0[k] * 0.5, atol=0.01, rtol=0)
    resid = x_prev - X @ coef.unsqueeze(1)
    assert_close(resid.var(), s.posterior_variance[k], rtol=0.02, atol=0)


def test_parameterisation_round_trips():
    g = torch.Generator().manual_seed(2)
    s = make_schedule("cosine", 1000)
    x0 = torch.randn(16, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(16, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1000, (16,), generator=g)
    a = gather(s.alpha_bar, t, x0)
    x_t = q_sample(s, x0, t, eps)
    v = v_from_x0_eps(x0, eps, a)
    assert_close(x0_from_eps(x_t, eps, a), x0)
    assert_close(eps_from_x0(x_t, x0, a), eps)
    assert_close(x0_from_v(x_t, v, a), x0)
    assert_close(eps_from_v(x_t, v, a), eps)
    assert_close(eps_from_score(score_from_eps(eps, a), a), eps)
    # v is a rotation of (eps, x0): its norm equals that of (eps, x0) mixed unitarily.
    assert_close(v**2 + x_t**2, eps**2 + x0**2)
