"""Stage-1 foundations: Gaussians, Markov chains, SDE basics and optimisation toys.

Each test checks a closed form against an independent computation (Monte Carlo,
numerical integration, autograd or torch's own optimiser).
"""

import math

import torch
from torch.testing import assert_close

from difflab.foundations import gaussians as G
from difflab.foundations import markov as M
from difflab.foundations import optim as O
from difflab.foundations import sdes as S

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_spd(D: int, g: torch.Generator) -> torch.Tensor:
    A = torch.randn(D, D, generator=g, dtype=F64)
    return A @ A.T + 0.5 * torch.eye(D, dtype=F64)


# --- Gaussians ----------------------------------------------------------------------


def test_reparameterize_moments_and_gradient():
    mu = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    log_var = torch.tensor([0.0, math.log(4.0)], dtype=F64, requires_grad=True)
    x = G.reparameterize(mu.expand(50_000, 2), log_var.expand(50_000, 2), gen(1))
    assert_close(x.mean(0), mu.detach(), atol=0.03, rtol=0)
    assert_close(x.var(0), log_var.detach().exp(), atol=0.08, rtol=0)
    x.mean(0).sum().backward()  # d E[x] / d mu = 1: the sample is differentiable
    assert_close(mu.grad, torch.ones(2, dtype=F64))


def test_gaussian_kl_closed_form_vs_monte_carlo():
    mu1, var1, mu2, var2 = (torch.tensor(v, dtype=F64) for v in (0.3, 0.5, -1.0, 2.0))
    x = mu1 + var1.sqrt() * torch.randn(400_000, generator=gen(2), dtype=F64)
    mc = (G.gaussian_log_prob(x, mu1, var1) - G.gaussian_log_prob(x, mu2, var2)).mean()
    kl = G.gaussian_kl(mu1, var1, mu2, var2)
    assert abs(mc - kl) < 0.01, (mc, kl)
    assert G.gaussian_kl(mu1, var1, mu1, var1).abs() < 1e-12


def test_mvn_kl_vs_monte_carlo_and_diagonal():
    g = gen(3)
    D = 3
    mu1, mu2 = (
        torch.randn(D, generator=g, dtype=F64),
        torch.randn(D, generator=g, dtype=F64),
    )
    S1, S2 = random_spd(D, g), random_spd(D, g)
    L1 = torch.linalg.cholesky(S1)
    x = mu1 + torch.randn(300_000, D, generator=g, dtype=F64) @ L1.T
    mc = (G.mvn_log_prob(x, mu1, S1) - G.mvn_log_prob(x, mu2, S2)).mean()
    kl = G.mvn_kl(mu1, S1, mu2, S2)
    assert abs(mc - kl) < 0.02 * max(1.0, float(kl)), (mc, kl)
    # Diagonal covariances: the full formula equals the sum of 1D KLs.
    v1, v2 = (
        torch.rand(D, generator=g, dtype=F64) + 0.2,
        torch.rand(D, generator=g, dtype=F64) + 0.2,
    )
    assert_close(
        G.mvn_kl(mu1, torch.diag(v1), mu2, torch.diag(v2)),
        G.gaussian_kl(mu1, v1, mu2, v2).sum(),
    )


def test_gaussian_product_vs_numerical_integration():
    x = torch.linspace(-15, 15, 200_001, dtype=F64)
    dx = x[1] - x[0]
    mu1, v1, mu2, v2 = (torch.tensor(v, dtype=F64) for v in (1.0, 0.5, -2.0, 3.0))
    p = (G.gaussian_log_prob(x, mu1, v1) + G.gaussian_log_prob(x, mu2, v2)).exp()
    Z = p.sum() * dx
    mean = (x * p).sum() * dx / Z
    var = ((x - mean) ** 2 * p).sum() * dx / Z
    prod = G.gaussian_product(
        mu1.reshape(1), v1.reshape(1), mu2.reshape(1), v2.reshape(1)
    )
    assert_close(prod.mu[0], mean, atol=1e-8, rtol=0)
    assert_close(prod.Sigma[0], var, atol=1e-8, rtol=0)
    assert_close(prod.log_scale[0].exp(), Z, atol=1e-8, rtol=0)
    # Full-covariance path agrees with the diagonal path on a diagonal problem.
    full = G.gaussian_product(
        torch.stack([mu1, mu2]),
        torch.diag(torch.stack([v1, v2])),
        torch.stack([mu2, mu1]),
        torch.diag(torch.stack([v2, v1])),
    )
    assert_close(torch.diagonal(full.Sigma), torch.stack([var, var]), atol=1e-8, rtol=0)
    assert_close(full.log_scale, 2 * prod.log_scale[0])


def test_gaussian_conditional_vs_grid_and_marginal():
    g = gen(4)
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    Sigma = random_spd(3, g)
    x_obs = torch.tensor([0.3, 1.5], dtype=F64)
    mean_c, var_c = G.gaussian_conditional(mu, Sigma, [0, 2], x_obs)
    # Brute force: evaluate the joint density along the free coordinate and normalise.
    grid = torch.linspace(-30, 30, 100_001, dtype=F64)
    pts = torch.stack([x_obs[0].expand_as(grid), grid, x_obs[1].expand_as(grid)], -1)
    w = G.mvn_log_prob(pts, mu, Sigma).exp()
    w = w / w.sum()
    m = (w * grid).sum()
    assert_close(mean_c[0], m, atol=1e-7, rtol=0)
    assert_close(var_c[0, 0], (w * (grid - m) ** 2).sum(), atol=1e-7, rtol=0)
    mu_m, S_m = G.gaussian_marginal(mu, Sigma, [2, 0])
    assert_close(mu_m, mu[[2, 0]])
    assert_close(
        S_m, torch.tensor([[Sigma[2, 2], Sigma[2, 0]], [Sigma[0, 2], Sigma[0, 0]]])
    )


# --- Markov chains ------------------------------------------------------------------


def test_stationary_distribution_vs_simulation():
    P = torch.tensor(
        [
            [0.5, 0.3, 0.2, 0.0],
            [0.1, 0.6, 0.2, 0.1],
            [0.2, 0.2, 0.4, 0.2],
            [0.3, 0.0, 0.3, 0.4],
        ],
        dtype=F64,
    )
    pi = M.stationary_distribution(P)
    assert_close(pi @ P, pi)
    x0 = torch.zeros(4000, dtype=torch.long)
    states = M.simulate_chain(P, x0, 60, gen(5))[:, -1]
    freq = torch.bincount(states, minlength=4).to(F64) / len(states)
    assert M.total_variation(freq, pi) < 0.03
    # Exact marginals converge at the rate |lambda_2|^t.
    tv = M.total_variation(M.distribution_after(P, torch.eye(4, dtype=F64)[0], 30), pi)
    assert tv[30] <= 2 * M.second_eigenvalue(P) ** 30


def test_ar1_closed_form_marginal_vs_monte_carlo():
    betas = torch.linspace(0.01, 0.2, 40, dtype=F64)
    x0 = 3.0 + 0.5 * torch.randn(20_000, generator=gen(6), dtype=F64)
    path = M.ar1_simulate(x0, betas, 40, gen(7))
    mean, var = M.ar1_marginal(3.0, 0.25, betas, 40)
    assert_close(path.mean(1), mean, atol=0.03, rtol=0)
    assert_close(path.var(1), var, atol=0.04, rtol=0)
    alpha_bar = torch.cumprod(1 - betas, 0)
    assert_close(mean[1:], 3.0 * alpha_bar.sqrt())  # Ho et al. 2020, Eq. 4
    # With a constant beta the chain forgets its start: N(0, 1) in the limit.
    m, v = M.ar1_marginal(torch.tensor([-5.0, 0.0, 5.0]), 0.0, 0.05, 400)
    assert_close(m[-1], torch.zeros(3, dtype=F64), atol=1e-3, rtol=0)
    assert_close(v[-1], torch.ones(3, dtype=F64), atol=1e-8, rtol=0)


# --- SDEs ---------------------------------------------------------------------------


def test_brownian_motion_variance():
    t = torch.linspace(0, 2, 101, dtype=F64)
    W = S.brownian_motion(t, (20_000,), gen(8))
    assert_close(W.var(1), t, atol=0.06, rtol=0)
    cov = (W[50] * W[100]).mean()  # Cov(W_s, W_t) = min(s, t)
    assert abs(cov - 1.0) < 0.06


def test_euler_maruyama_strong_order_half():
    mu, sigma = 1.5, 1.0
    x0 = torch.ones(2000, dtype=F64)
    h, err = S.strong_error(
        lambda x, t: mu * x,
        lambda x, t: sigma * x,
        lambda x0, T, W: S.gbm_exact(x0, mu, sigma, T, W),
        x0,
        T=1.0,
        n_fine=2**9,
        factors=[2**k for k in range(1, 7)],
        generator=gen(9),
    )
    slope = S.fit_order(h, err)
    assert 0.35 < slope < 0.65, slope


def test_ou_marginal_vs_euler_maruyama_and_fokker_planck():
    theta, mu, sigma = 2.0, 1.0, 0.8
    x0 = -1.0 + 0.3 * torch.randn(10_000, generator=gen(10), dtype=F64)
    t = torch.linspace(0, 1, 201, dtype=F64)
    path = S.euler_maruyama(
        lambda x, t: theta * (mu - x), lambda x, t: sigma, x0, t, gen(11)
    )
    m, v = S.ou_marginal(-1.0, 0.09, t, theta, mu, sigma)
    assert_close(path.mean(1), m, atol=0.02, rtol=0)
    assert_close(path.var(1), v, atol=0.02, rtol=0)
    # The closed-form density solves the Fokker-Planck equation.
    x = torch.linspace(-3, 4, 701, dtype=F64)
    dt = 1e-5

    def p(s):
        ms, vs = S.ou_marginal(-1.0, 0.09, s, theta, mu, sigma)
        return G.gaussian_log_prob(x, ms, vs).exp()

    dp_dt = (p(0.3 + dt) - p(0.3 - dt)) / (2 * dt)
    rhs = S.fokker_planck_rhs(p(0.3), x, theta * (mu - x), sigma**2)
    assert_close(rhs, dp_dt[1:-1], atol=2e-3, rtol=0)


def test_reverse_sde_recovers_mixture():
    w = torch.tensor([0.3, 0.7], dtype=F64)
    means = torch.tensor([-2.0, 1.5], dtype=F64)
    variances = torch.tensor([0.1, 0.2], dtype=F64)
    T = 4.0

    def score(x, t):
        m, v = S.ou_marginal(means, variances, t)
        return S.mixture_1d_score(x, w, m, v)

    f = lambda x, t: -x
    g = lambda x, t: math.sqrt(2.0)
    x_T = torch.randn(5000, generator=gen(12), dtype=F64)
    t = torch.linspace(T, 0, 201, dtype=F64)
    x0 = S.euler_maruyama(S.reverse_drift(f, g, score), g, x_T, t, gen(13))[-1]
    assert abs((x0 < 0).to(F64).mean() - 0.3) < 0.02
    assert abs(x0.mean() - (w * means).sum()) < 0.08
    inner = x0[x0 > 0]  # the right component keeps its spread
    assert abs(inner.var() - variances[1]) < 0.04
    # Score of the mixture against autograd of its log-density.
    xs = torch.linspace(-4, 4, 50, dtype=F64, requires_grad=True)
    S.mixture_1d_log_prob(xs, w, means, variances).sum().backward()
    assert_close(S.mixture_1d_score(xs.detach(), w, means, variances), xs.grad)


# --- Optimisation -------------------------------------------------------------------


def test_gradients_match_autograd():
    x = torch.randn(5, 2, generator=gen(14), dtype=F64, requires_grad=True)
    O.rosenbrock(x).sum().backward()
    assert_close(O.rosenbrock_grad(x.detach()), x.grad)
    A = random_spd(2, gen(15))
    b = torch.tensor([1.0, -1.0], dtype=F64)
    x.grad = None
    O.quadratic(x, A, b).sum().backward()
    assert_close(O.quadratic_grad(x.detach(), A, b), x.grad)


def _torch_trajectory(opt_cls, x0, steps, **kw):
    x = x0.clone().requires_grad_(True)
    opt = opt_cls([x], **kw)
    xs = [x0.clone()]
    for _ in range(steps):
        opt.zero_grad()
        O.rosenbrock(x).backward()
        opt.step()
        xs.append(x.detach().clone())
    return torch.stack(xs)


def test_adam_and_momentum_match_torch_optim():
    x0 = torch.tensor([-1.5, 2.0], dtype=F64)
    ours = O.adam(
        O.rosenbrock_grad, x0, lr=0.05, betas=(0.9, 0.99), eps=1e-8, steps=100
    )
    ref = _torch_trajectory(
        torch.optim.Adam, x0, 100, lr=0.05, betas=(0.9, 0.99), eps=1e-8
    )
    assert_close(ours, ref)
    ours = O.momentum(O.rosenbrock_grad, x0, lr=1e-4, beta=0.9, steps=100)
    ref = _torch_trajectory(torch.optim.SGD, x0, 100, lr=1e-4, momentum=0.9)
    assert_close(ours, ref)


def test_gradient_descent_on_quadratic_rate():
    # On 0.5 x^T A x, GD contracts each eigen-direction by |1 - lr lambda_i| per step.
    A = torch.diag(torch.tensor([1.0, 10.0], dtype=F64))
    x0 = torch.tensor([1.0, 1.0], dtype=F64)
    xs = O.gradient_descent(lambda x: O.quadratic_grad(x, A), x0, lr=0.1, steps=20)
    assert_close(xs[-1], torch.tensor([0.9**20, 0.0], dtype=F64))


def test_backprop_by_hand_equals_autograd():
    g = gen(16)
    params = O.mlp_init(3, 8, 2, g)
    x = torch.randn(16, 3, generator=g, dtype=F64)
    y = torch.randn(16, 2, generator=g, dtype=F64)
    loss, grads = O.mlp_backprop_by_hand(params, x, y)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    ref_loss = O.mlp_loss(leaves, x, y)
    ref_loss.backward()
    assert_close(loss, ref_loss.detach())
    for k in params:
        assert_close(grads[k], leaves[k].grad)
