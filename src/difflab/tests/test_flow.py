"""Flow matching, rectified flow and consistency models: the maths, checked.

Tolerances: float64 identities are exact up to roundoff (1e-12 relative); the
continuity equation is checked with central differences of step h = 1e-4,
whose truncation error is O(h^2) ~ 1e-8 times the third derivatives (below
1e-6 here); ODE comparisons use a tolerance estimated from the solver itself
(the change when the steps are doubled).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from difflab.diffusion.noise import DiscreteNoise
from difflab.diffusion.samplers import ddim_grid_sample
from difflab.diffusion.schedules import make_schedule
from difflab.flow.consistency import (
    ConsistencyModel,
    consistency_coefs,
    consistency_sample,
    ddim_step,
)
from difflab.flow.exact import continuity_residual, exact_velocity, exact_velocity_fn
from difflab.flow.paths import (
    StraightPath,
    conditional_sample,
    conditional_velocity,
    eps_from_velocity,
    rates,
    velocity_from_eps,
    velocity_weight,
)
from difflab.flow.rectified import (
    FlowTrainConfig,
    flow_sample,
    reflow_pairs,
    straightness,
    time_grid,
    train_velocity,
    velocity_model,
)
from difflab.nets.mlp import MLP, MLPConfig
from difflab.score.samplers import ode_sample
from difflab.score.sde import VPSDE
from difflab.toy.mixtures import two_blobs
from difflab.toy.sandbox import exact_score_fn

F64 = torch.float64


def _draws(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 2, generator=g, dtype=F64)
    eps = torch.randn(n, 2, generator=g, dtype=F64)
    t = 0.02 + 0.96 * torch.rand(n, generator=g, dtype=F64)
    return x0, eps, t


# -- conditional paths and the flow-matching target ---------------------------------


@pytest.mark.parametrize("path", [StraightPath(), VPSDE()], ids=repr)
def test_rates_are_the_time_derivatives(path):
    """alpha', sigma' (from f and g, or constants) match finite differences."""
    _, _, t = _draws()
    h = 1e-6
    d_alpha, d_sigma = rates(path, t)
    assert_close(
        d_alpha, (path.alpha(t + h) - path.alpha(t - h)) / (2 * h), atol=1e-7, rtol=1e-6
    )
    assert_close(
        d_sigma, (path.sigma(t + h) - path.sigma(t - h)) / (2 * h), atol=1e-7, rtol=1e-6
    )


@pytest.mark.parametrize("path", [StraightPath(), VPSDE()], ids=repr)
def test_fm_target_is_affine_in_the_eps_target(path):
    """u_t = f x_t + b eps exactly (Eq. 2), so ||v - u||^2 = b^2 ||eps_v - eps||^2."""
    x0, eps, t = _draws()
    x_t = conditional_sample(path, x0, eps, t)
    u = conditional_velocity(path, x0, eps, t)
    assert_close(velocity_from_eps(path, x_t, eps, t), u, atol=1e-12, rtol=1e-12)
    assert_close(eps_from_velocity(path, x_t, u, t), eps, atol=1e-10, rtol=1e-10)
    eps_hat = eps + 0.1 * torch.randn_like(eps)
    v_hat = velocity_from_eps(path, x_t, eps_hat, t)
    fm = (v_hat - u).pow(2).sum(1)
    assert_close(fm, velocity_weight(path, t) * (eps_hat - eps).pow(2).sum(1))
    # The straight path: u = eps - x0, and the weight is 1 / (1 - t)^2.
    if isinstance(path, StraightPath):
        assert_close(u, eps - x0, atol=1e-15, rtol=0)
        assert_close(velocity_weight(path, t), (1 - t) ** -2)
    # Teeth: the weight sigma'^2 (dropping the f sigma in b = sigma' - f sigma) misses.
    wrong = rates(path, t)[1] ** 2 * (eps_hat - eps).pow(2).sum(1)
    assert (wrong - fm).abs().max() > 1e-3


def test_straight_path_noise_levels():
    path, (_, _, t) = StraightPath(), _draws()
    assert_close(path.t_from_half_log_snr(path.half_log_snr(t)), t)
    # g^2 = d sigma^2/dt - 2 f sigma^2 (the NoiseLevels convention)
    assert_close(path.g(t) ** 2, 2 * t - 2 * path.f(t) * t**2)


# -- exact marginal velocity of a mixture -------------------------------------------


@pytest.mark.parametrize("path,t", [(StraightPath(), 0.4), (VPSDE(), 0.3)], ids=repr)
def test_exact_velocity_solves_the_continuity_equation(path, t):
    mix = two_blobs()
    x = 1.5 * torch.randn(40, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    dp_dt, minus_div = continuity_residual(mix, path, x, t)
    scale = dp_dt.abs().max()
    assert (dp_dt - minus_div).abs().max() < 1e-6 * max(1.0, float(scale))
    # Teeth: a velocity off by a constant shift breaks the equation by far more.
    wrong = continuity_residual(_Shifted(mix), path, x, t)[1]
    assert (dp_dt - wrong).abs().max() > 1e-2


class _Shifted:
    """A mixture whose exact_velocity is computed with shifted means (a wrong field)
    but whose density is the true one: the continuity check must reject it."""

    def __init__(self, mix):
        self.mix = mix
        self.means = mix.means + 0.3
        self.covs, self.weights = mix.covs, mix.weights

    def perturbed_log_posterior(self, x, a, s):
        return self.mix.perturbed_log_posterior(x, a, s)

    def perturb(self, a, s):
        return self.mix.perturb(a, s)


@pytest.mark.parametrize("path", [StraightPath(), VPSDE()], ids=repr)
def test_exact_velocity_is_the_probability_flow_drift(path):
    """Eq. (3) equals f x - 1/2 g^2 grad log p_t (Eq. 2 with Tweedie)."""
    mix, (x, _, t) = two_blobs(), _draws(seed=2)
    alpha, sigma = path.marginal_coefs(t)
    score = mix.perturbed_score(x, alpha, sigma)
    v = exact_velocity(mix, path, x, t)
    assert_close(v, velocity_from_eps(path, x, -sigma[:, None] * score, t))
    if isinstance(path, StraightPath):  # finite at t = 1, where v = x - E[x0]
        ones = torch.ones(len(x), dtype=F64)
        assert_close(exact_velocity(mix, path, x, ones), x - mix.mean())


# -- the ODEs: same samples where theory says so -------------------------------------


def test_fm_velocity_and_pf_ode_give_the_same_samples():
    """The VP path's marginal velocity *is* the PF-ODE drift: Euler on either,
    from the same noise and grid, lands on the same points (roundoff only)."""
    mix, vp = two_blobs(), VPSDE()
    x_T = torch.randn(100, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    grid = torch.linspace(1.0, vp.t_min, 101, dtype=F64)
    a = flow_sample(exact_velocity_fn(mix, vp), x_T, grid)
    b = ode_sample(
        exact_score_fn(mix, vp), x_T, grid, sde=vp, method="euler", progress=False
    )
    assert_close(a, b, atol=1e-9, rtol=0)


def test_ddim_is_euler_on_the_straight_path():
    """DDIM on the straight path is exactly an Euler step of v = eps - x0_hat."""
    mix, path = two_blobs(), StraightPath()
    score = exact_score_fn(mix, path)

    def eps_model(x, t):
        return -path.sigma(t)[:, None] * score(x, t)

    x_T = torch.randn(100, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    grid = torch.linspace(0.99, 0.0, 12, dtype=F64)
    a = ddim_grid_sample(eps_model, x_T, grid, noise=path, progress=False)
    b = flow_sample(exact_velocity_fn(mix, path), x_T, grid)
    assert_close(a, b, atol=1e-10, rtol=0)


def test_vp_and_straight_ode_map_into_each_other():
    """Gaussian paths are reparameterisations of one ODE: x' = x / (alpha + sigma)
    at t' = sigma / (alpha + sigma) carries the VP flow onto the straight flow."""
    mix, vp, sp = two_blobs(), VPSDE(), StraightPath()
    t_hi, t_lo = torch.tensor([0.5], dtype=F64), torch.tensor([0.05], dtype=F64)
    (a_hi, s_hi), (a_lo, s_lo) = vp.marginal_coefs(t_hi), vp.marginal_coefs(t_lo)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(5), dtype=F64)

    def vp_solve(n):
        grid = torch.linspace(0.5, 0.05, n + 1, dtype=F64)
        return flow_sample(exact_velocity_fn(mix, vp), x, grid, method="heun")

    coarse, fine = vp_solve(100), vp_solve(200)
    # Heun is second order: the error of `fine` is about a third of this change.
    tol = float((coarse - fine).abs().max())
    grid = torch.linspace(float(s_hi / (a_hi + s_hi)), float(s_lo / (a_lo + s_lo)), 201)
    straight = flow_sample(
        exact_velocity_fn(mix, sp), x / (a_hi + s_hi), grid.double(), method="heun"
    )
    assert (straight - fine / (a_lo + s_lo)).abs().max() < tol
    # Teeth: the same times without the rescaling of x miss by far more.
    naive = flow_sample(exact_velocity_fn(mix, sp), x, grid.double(), method="heun")
    assert (naive - fine / (a_lo + s_lo)).abs().max() > 100 * tol


# -- rectified flow --------------------------------------------------------------------


def test_straightness_is_zero_for_a_straight_flow():
    x_1 = torch.randn(50, 2, dtype=F64)
    target = torch.tensor([1.0, -2.0], dtype=F64)
    s, x_0 = straightness(lambda x, t: x_1 - target, x_1, steps=10)
    assert_close(x_0, target.expand_as(x_0))
    assert s.abs().max() < 1e-20
    s_curved, _ = straightness(lambda x, t: x * t[:, None], x_1, steps=10)
    assert s_curved.min() > 0


def test_reflow_does_not_increase_straightness_or_transport_cost():
    """Liu et al. 2023, Theorem 3.7, on the sandbox: 1-rectified flow (the exact
    flow-matching velocity) against a network trained on its own ODE pairs.

    Both are measured from the same fresh noise; the per-path difference has a
    standard error, and the claim is checked at 4 of them (the margin printed in
    the failure message)."""
    torch.manual_seed(0)  # the MLP's initial weights
    mix, path = two_blobs(), StraightPath()
    g = torch.Generator().manual_seed(6)
    z = torch.randn(2000, 2, generator=g, dtype=F64)
    x0, _ = reflow_pairs(exact_velocity_fn(mix, path), z, steps=30)
    net = MLP(MLPConfig(dim=2, hidden=64, depth=2, time_scale=1000.0))
    cfg = FlowTrainConfig(steps=300, batch_size=256, lr=3e-3)
    net, _ = train_velocity(net, x0.float(), cfg, noise=z.float())
    z_test = torch.randn(1000, 2, generator=g, dtype=F64)
    s1, e1 = straightness(exact_velocity_fn(mix, path), z_test, steps=40)
    s2, e2 = straightness(velocity_model(net), z_test.float(), steps=40)
    d = s1 - s2.double()
    se = float(d.std()) / math.sqrt(len(d))
    assert float(d.mean()) > -4 * se, (float(d.mean()), se)
    c = (e1 - z_test).pow(2).sum(1) - (e2.double() - z_test).pow(2).sum(1)
    se_c = float(c.std()) / math.sqrt(len(c))
    assert float(c.mean()) > -4 * se_c, (float(c.mean()), se_c)


def test_flow_sample_heun_is_second_order():
    v = lambda x, t: x * t[:, None]  # noqa: E731  dx/dt = t x: x(0) = x(1) e^{-1/2}
    x_1 = torch.ones(1, 1, dtype=F64)
    exact = math.exp(-0.5)
    err = [
        float((flow_sample(v, x_1, time_grid(n), method="heun") - exact).abs())
        for n in (20, 40)
    ]
    assert 3.5 < err[0] / err[1] < 4.5


# -- consistency models ---------------------------------------------------------


def _net():
    torch.manual_seed(0)
    return MLP(MLPConfig(dim=2, hidden=32, depth=1, time_scale=1000.0)).double()


@pytest.mark.parametrize("kind", ["edm", "ddim"])
@pytest.mark.parametrize(
    "noise,t_eps",
    [(VPSDE(), 1e-3), (DiscreteNoise(make_schedule("linear", 1000)), 0.0)],
    ids=["vp", "discrete"],
)
def test_consistency_boundary_condition_is_exact(kind, noise, t_eps):
    model = ConsistencyModel(_net(), noise, t_eps, kind=kind)
    x = torch.randn(32, 2, dtype=F64)
    t = torch.full((32,), t_eps, dtype=F64)
    assert torch.equal(model(x, t), x)  # to the bit
    # Away from the boundary the network matters.
    assert (model(x, t + 0.3) - x).abs().max() > 1e-3


def test_consistency_coefs_without_s_min_break_the_boundary():
    """The coefficients use s - s_min; with s in its place c_out(eps) != 0."""
    s_min = torch.tensor([0.002], dtype=F64)
    c_skip, c_out = consistency_coefs(s_min, s_min)
    assert float(c_skip) == 1.0 and float(c_out) == 0.0
    wrong_skip, wrong_out = consistency_coefs(s_min, 0.0)
    assert float(wrong_out) > 1e-3 and float(wrong_skip) < 1.0


def test_ddim_coefficients_are_one_ddim_step():
    """With kind="ddim" and F = eps model, f(x, t) is DDIM from t straight to eps."""
    noise = DiscreteNoise(make_schedule("linear", 1000))
    net = _net()
    model = ConsistencyModel(net, noise, 0.0, kind="ddim")
    x = torch.randn(16, 2, dtype=F64)
    t = torch.full((16,), 0.6, dtype=F64)
    want = ddim_grid_sample(
        lambda y, tt: net(y, tt),
        x,
        torch.tensor([0.6, 0.0], dtype=F64),
        noise=noise,
        progress=False,
    )
    assert_close(model(x, t), want)
    assert_close(
        ddim_step(lambda y, tt: net(y, tt), noise, x, t, torch.zeros_like(t)), want
    )


def test_consistency_sample_one_step_and_renoising():
    noise = DiscreteNoise(make_schedule("linear", 1000))
    model = ConsistencyModel(_net(), noise, 0.0, kind="ddim")
    x_T = torch.randn(8, 2, dtype=F64)
    one = consistency_sample(model, x_T, torch.tensor([1.0]))
    assert_close(one, model(x_T, torch.ones(8, dtype=F64)))
    g1, g2 = (torch.Generator().manual_seed(0) for _ in range(2))
    two = consistency_sample(model, x_T, torch.tensor([1.0, 0.5]), generator=g1)
    z = torch.randn(8, 2, generator=g2, dtype=F64)
    a, s = noise.marginal_coefs(torch.tensor([0.5], dtype=F64))
    assert_close(two, model(a * one + s * z, torch.full((8,), 0.5, dtype=F64)))
