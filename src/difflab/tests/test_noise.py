"""The noise interface: identities of every kind, DDIM on it, and its ODE."""

import pytest
import torch
from torch.testing import assert_close

from difflab.diffusion.forward import gaussian_eps_model
from difflab.diffusion.noise import (
    DiscreteNoise,
    half_log_snr_grid,
    karras_grid,
    quadratic_grid,
    uniform_grid,
)
from difflab.diffusion.samplers import ddim_grid_sample, ddim_sample, ddim_timesteps
from difflab.diffusion.schedules import make_schedule
from difflab.score.samplers import ode_sample
from difflab.score.sde import VESDE, VPSDE, SubVPSDE
from difflab.toy.mixtures import gaussian
from difflab.toy.sandbox import exact_score_fn

F64 = torch.float64
MEAN = torch.tensor([1.0, -0.5], dtype=F64)
COV = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=F64)

KINDS = {
    "linear": DiscreteNoise(make_schedule("linear", 1000)),
    "cosine": DiscreteNoise(make_schedule("cosine", 1000)),
    "vp": VPSDE(),
    "subvp": SubVPSDE(),
    "ve": VESDE(),
}
VP_KINDS = ("linear", "cosine", "vp")
# Times strictly inside (0, 1), away from the knots k / 1000 of the discrete kinds
# (where f is discontinuous) so that central differences see one linear piece.
T_IN = (torch.arange(20, dtype=F64) + 0.5) / 20.5 + 0.37e-3


@pytest.mark.parametrize("kind", VP_KINDS)
def test_variance_preserving_kinds_have_unit_norm(kind):
    noise = KINDS[kind]
    alpha, sigma = noise.marginal_coefs(T_IN)
    assert_close(alpha**2 + sigma**2, torch.ones_like(T_IN), atol=1e-12, rtol=0)


def test_sub_vp_and_ve_marginals():
    t = T_IN
    sub, vp, ve = KINDS["subvp"], KINDS["vp"], KINDS["ve"]
    assert_close(sub.alpha(t), vp.alpha(t))
    assert_close(sub.sigma(t), 1 - vp.alpha(t) ** 2)  # Song et al. 2021, Eq. 12
    assert (sub.sigma(t) < vp.sigma(t)).all()
    assert (ve.alpha(t) == 1).all()
    assert_close(ve.sigma(t) ** 2, ve.sigma_ncsn(t) ** 2 - ve.sigma_min**2)


def test_discrete_noise_hits_alpha_bar_at_its_knots():
    s = make_schedule("cosine", 200)
    noise = DiscreteNoise(s)
    n = torch.arange(200)
    t = noise.time(n)
    assert torch.equal(noise.index(t), n)
    assert_close(noise.alpha(t) ** 2, s.alpha_bar, atol=1e-14, rtol=0)
    assert_close(noise.sigma(t) ** 2, 1 - s.alpha_bar, atol=1e-14, rtol=0)
    assert float(noise.alpha(torch.zeros(1, dtype=F64))) == 1.0  # clean data at t = 0


@pytest.mark.parametrize("kind", list(KINDS))
def test_half_log_snr_is_log_alpha_over_sigma_and_inverts(kind):
    noise = KINDS[kind]
    lam = noise.half_log_snr(T_IN)
    alpha, sigma = noise.marginal_coefs(T_IN)
    assert_close(lam, (alpha / sigma).log(), atol=1e-12, rtol=0)
    assert (lam[1:] < lam[:-1]).all()  # strictly decreasing in t
    # Round trip t -> lambda -> t. The inverse loses about |d lambda/dt|^-1 times
    # lambda's rounding error; 1e-9 leaves room for the stiff ends.
    assert_close(noise.t_from_half_log_snr(lam), T_IN, atol=1e-9, rtol=0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_drift_and_diffusion_match_the_marginals(kind):
    """f = d log alpha / dt and g^2 = d sigma^2 / dt - 2 f sigma^2, by central
    differences (Kingma et al. 2021, App. A.1; Lu et al. 2022, Eq. 2.2)."""
    noise = KINDS[kind]
    h = 1e-7  # inside one linear piece of the discrete kinds (pieces are 1e-3 long)
    up, down = T_IN + h, T_IN - h
    dlog_alpha = (noise.alpha(up).log() - noise.alpha(down).log()) / (2 * h)
    dvar = (noise.sigma(up) ** 2 - noise.sigma(down) ** 2) / (2 * h)
    f, g = noise.f(T_IN), noise.g(T_IN)
    # Central differences: O(h^2) truncation, O(1e-16 / h) = 1e-9 rounding, scaled
    # by the size of the derivative (VE's d sigma^2/dt reaches 2e4 at t = 1).
    scale = 1 + dvar.abs()
    assert ((dlog_alpha - f).abs() / scale).max() < 1e-6
    assert ((dvar - 2 * f * noise.sigma(T_IN) ** 2 - g**2).abs() / scale).max() < 1e-6


def test_a_wrong_diffusion_coefficient_fails_the_check():
    vp = KINDS["vp"]
    h, t = 1e-7, T_IN
    dvar = (vp.sigma(t + h) ** 2 - vp.sigma(t - h) ** 2) / (2 * h)
    wrong_g2 = vp.beta(t) / 2  # a factor 2 lost
    assert (dvar - 2 * vp.f(t) * vp.sigma(t) ** 2 - wrong_g2).abs().max() > 0.01


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("steps", [1000, 37])
def test_ddim_on_the_noise_interface_equals_ddim_sample(eta, steps):
    """The same update in (alpha, sigma, lambda) and in alpha_bar: equal to 1e-10."""
    s = make_schedule("linear", 1000)
    noise = DiscreteNoise(s)
    eps = gaussian_eps_model(MEAN, COV, s)
    taus = ddim_timesteps(1000, steps)
    x_T = torch.randn(128, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = ddim_sample(
        eps,
        x_T,
        s,
        taus,
        eta=eta,
        generator=torch.Generator().manual_seed(1),
        progress=False,
    )
    out = ddim_grid_sample(
        eps,
        x_T,
        noise.grid(taus),
        noise=noise,
        eta=eta,
        generator=torch.Generator().manual_seed(1),
        progress=False,
    )
    assert_close(out, ref, atol=1e-10, rtol=0)


def test_a_wrong_lambda_breaks_the_ddim_equality():
    """lambda is *half* the log-SNR: taking log SNR = 2 lambda (the VDM convention)
    gives the wrong noise level to the eta > 0 update."""

    class LogSNR(DiscreteNoise):
        def half_log_snr(self, t):
            return 2 * super().half_log_snr(t)

    s = make_schedule("linear", 1000)
    eps = gaussian_eps_model(MEAN, COV, s)
    taus = ddim_timesteps(1000, 50)
    x_T = torch.randn(128, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = ddim_sample(
        eps, x_T, s, taus, eta=1.0, generator=torch.Generator().manual_seed(1),
        progress=False,
    )  # fmt: skip
    wrong = LogSNR(s)
    out = ddim_grid_sample(
        eps, x_T, wrong.grid(taus), noise=wrong, eta=1.0,
        generator=torch.Generator().manual_seed(1), progress=False,
    )  # fmt: skip
    assert (out - ref).abs().max() > 0.1


def test_probability_flow_of_discrete_linear_schedule_and_its_vp_sde_agree():
    """Gaussian data, exact scores: both ODEs carry the same x_T to the same x_0.

    For Gaussian data the flow map of either ODE is known in closed form (in the
    eigenbasis of the covariance each coordinate scales by sqrt(alpha^2 lam +
    sigma^2)), so it depends only on (alpha, sigma) at both ends. The two processes
    differ there by 2e-4 in alpha(1) and 5e-4 in sigma(1e-3), which moves the exact
    endpoints apart by about 1e-4. Heun with 200 steps uniform in lambda adds at
    most about 1.5e-4 each (checked against the closed form below), so 5e-4 bounds
    the difference with room; a mismatched pair (the discrete ODE driven by the VP
    score) misses by 2.5e-3, five times that.
    """
    s = make_schedule("linear", 1000)
    discrete, vp = DiscreteNoise(s), VPSDE.from_schedule(s)
    assert discrete.t_min == vp.t_min == 1e-3
    p = gaussian(MEAN, COV)
    lam, U = torch.linalg.eigh(COV)
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=F64)

    def exact_flow(noise):
        ends = torch.tensor([noise.T, noise.t_min], dtype=F64)
        (a0, a1), (s0, s1) = noise.marginal_coefs(ends)
        z = ((x_T - a0 * MEAN) @ U) / (a0**2 * lam + s0**2).sqrt()
        return a1 * MEAN + (z * (a1**2 * lam + s1**2).sqrt()) @ U.T

    out = {}
    for name, noise in (("discrete", discrete), ("vp", vp)):
        grid = half_log_snr_grid(noise, 200)
        out[name] = ode_sample(
            exact_score_fn(p, noise), x_T, grid, sde=noise, progress=False
        )
        assert (out[name] - exact_flow(noise)).abs().max() < 2e-4
    assert (out["discrete"] - out["vp"]).abs().max() < 5e-4
    mixed = ode_sample(
        exact_score_fn(p, vp),
        x_T,
        half_log_snr_grid(discrete, 200),
        sde=discrete,
        progress=False,
    )
    assert (mixed - out["vp"]).abs().max() > 1.5e-3


@pytest.mark.parametrize("kind", ["linear", "vp", "ve"])
def test_time_grids(kind):
    noise = KINDS[kind]
    n = 12
    grids = {
        "uniform": uniform_grid(noise, n),
        "quadratic": quadratic_grid(noise, n),
        "lambda": half_log_snr_grid(noise, n),
        "karras": karras_grid(noise, n),
    }
    for g in grids.values():
        assert g.shape == (n + 1,) and g.dtype == F64
        assert g[0] == noise.T and g[-1] == noise.t_min
        assert (g[1:] < g[:-1]).all()
    assert_close(
        grids["quadratic"].sqrt().diff(), grids["quadratic"].sqrt().diff()[:1].expand(n)
    )
    lam = noise.half_log_snr(grids["lambda"])
    assert_close(lam.diff(), lam.diff()[:1].expand(n), atol=1e-8, rtol=0)
    # Karras et al. 2022, Eq. 5: sigma / alpha = exp(-lambda) to the 1/rho evenly.
    s = (-noise.half_log_snr(grids["karras"])).exp() ** (1 / 7)
    assert_close(s.diff(), s.diff()[:1].expand(n), atol=1e-8, rtol=0)
