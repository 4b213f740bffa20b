"""The fast ODE solvers: identities, measured orders, and a published implementation."""

import math

import pytest
import torch
from torch.testing import assert_close

from difflab.diffusion import solvers
from difflab.diffusion.noise import (
    DiscreteNoise,
    eps_model_from_score,
    half_log_snr_grid,
    karras_grid,
    uniform_grid,
)
from difflab.diffusion.samplers import ddim_grid_sample, ddim_sample, ddim_timesteps
from difflab.diffusion.schedules import make_schedule
from difflab.score.samplers import CountedScore, ode_sample
from difflab.score.sde import VPSDE
from difflab.toy.mixtures import eight_gaussians
from difflab.toy.sandbox import exact_score_fn

SCHEDULE = make_schedule("linear", 1000)
NOISE = DiscreteNoise(SCHEDULE)


def index_eps(x, n):
    """A smooth, x- and step-dependent stand-in for a trained eps network, written on
    the step index n (an ``IndexEpsModel``)."""
    c = (n.to(torch.float64) / 1000).view(-1, *([1] * (x.dim() - 1)))
    return torch.tanh(x) * (0.5 + c) + 0.3 * torch.sin(3 * c + x)


fixed_eps = NOISE.continuous(index_eps)  # the same model in continuous time


def _x(shape=(4, 3, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64)


# -- identities ---------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 7, 50])
def test_ddim_equals_dpm_solver_1(steps):
    """DDIM (Song et al. 2021a, Eq. 12) and DPM-Solver-1 (Lu et al. 2022a) are one
    update written two ways; they agree to float64 rounding (1e-12 on O(1) values
    after up to 50 steps) on the discrete schedule and on the VP SDE."""
    taus = ddim_timesteps(SCHEDULE.T, steps)
    x_T = _x()
    a = ddim_sample(fixed_eps, x_T, SCHEDULE, taus, progress=False)
    b = solvers.dpm_solver_1(
        fixed_eps, x_T, NOISE.grid(taus), noise=NOISE, progress=False
    )
    assert_close(b, a, rtol=0, atol=1e-12)
    sde = VPSDE()
    eps = eps_model_from_score(exact_score_fn(eight_gaussians(), sde), sde)
    x_T = _x((64, 2))
    grid = half_log_snr_grid(sde, steps)
    a = ddim_grid_sample(eps, x_T, grid, noise=sde, progress=False)
    b = solvers.dpm_solver_1(eps, x_T, grid, noise=sde, progress=False)
    assert_close(b, a, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", list(solvers.SOLVERS))
def test_point_mass_data(name):
    """Data = one point x0: x0_hat = x0 at every (x, t), so the exponential
    integrators (DPM-Solver-1, ++(2M)) integrate exactly, and so does Heun, whose
    ODE dy/ds = (y - x0) / s has the solution y = x0 + c s, linear in s. Euler in t
    does not: its error at 10 steps is O(1). One step or ten, a grid ending at
    sigma = 0 lands on x0 up to rounding."""
    x0 = torch.tensor([0.7, -1.2], dtype=torch.float64)

    def eps(x, t):
        alpha, sigma = NOISE.marginal_coefs(t)
        return (x - alpha[:, None] * x0) / sigma[:, None]

    x_T = _x((16, 2))
    grid = torch.cat([uniform_grid(NOISE, 10), torch.zeros(1, dtype=torch.float64)])
    x = solvers.SOLVERS[name](eps, x_T, grid, noise=NOISE, progress=False)
    err = float((x - x0).norm(dim=1).max())
    if name == "euler":
        assert err > 1e-2, err
    else:
        assert err < 1e-10, err


@pytest.mark.parametrize("name", list(solvers.SOLVERS))
@pytest.mark.parametrize("to_zero", [False, True])
def test_nfe_accounting(name, to_zero):
    """solver_nfe is what the solver actually spends, also on a grid to sigma = 0."""
    grid = uniform_grid(NOISE, 6)
    if to_zero:
        grid = torch.cat([grid, torch.zeros(1, dtype=torch.float64)])
    counted = CountedScore(fixed_eps)
    seen = []
    solvers.SOLVERS[name](
        counted,
        _x(),
        grid,
        noise=NOISE,
        progress=False,
        callback=lambda d: seen.append(d["nfe"]),
    )
    assert counted.nfe == solvers.solver_nfe(name, grid, NOISE) == seen[-1]


@pytest.mark.parametrize("name", list(solvers.SOLVERS))
def test_default_grids_spend_the_budget(name):
    """Each solver's default grid decreases from T to t = 0 and spends the budget:
    exactly for the one-evaluation-a-step solvers, nfe or nfe - 1 for Heun (two a
    step, one on the last); a budget below the solver's least is refused."""
    sde = VPSDE()
    for noise in (NOISE, sde):
        for nfe in range(solvers.MIN_NFE[name], 40):
            grid = solvers.default_grid(name, noise, nfe)
            assert bool((grid[1:] < grid[:-1]).all()), (name, nfe)
            assert float(grid[0]) == noise.T and float(grid[-1]) == 0.0
            spent = solvers.solver_nfe(name, grid, noise)
            assert spent == nfe or (name == "heun" and spent == nfe - 1), (nfe, spent)
    with pytest.raises(ValueError, match="at least"):
        solvers.default_grid(name, NOISE, solvers.MIN_NFE[name] - 1)
    assert_close(  # on the discrete schedule DPM-Solver-1's grid is DDIM's
        solvers.default_grid("dpm_solver_1", NOISE, 7),
        NOISE.grid(ddim_timesteps(SCHEDULE.T, 7)),
    )


# -- measured order on the exact-score sandbox ----------------------------------------

SDE = VPSDE()
ORDER_NFES = (40, 80, 160, 320)
GRIDS = {
    "euler": uniform_grid,
    "dpm_solver_1": half_log_snr_grid,
    "dpm_solver_pp_2m": half_log_snr_grid,
    "heun": karras_grid,
}


@pytest.fixture(scope="module")
def sandbox():
    """200 prior draws, the exact eps of the eight Gaussians, and a tight RK45 solve."""
    score = exact_score_fn(eight_gaussians(), SDE)
    x_T = _x((200, 2), seed=1)
    ref = ode_sample(
        score,
        x_T,
        uniform_grid(SDE, 1),
        sde=SDE,
        method="rk45",
        rtol=1e-10,
        atol=1e-10,
        progress=False,
    )
    return eps_model_from_score(score, SDE), x_T, ref


def measured_order(solver, grid_fn, evals_per_step, sandbox) -> float:
    """Minus the least-squares slope of log mean error against log NFE."""
    eps, x_T, ref = sandbox
    logs = []
    for nfe in ORDER_NFES:
        grid = grid_fn(SDE, nfe // evals_per_step)
        x = solver(eps, x_T, grid, noise=SDE, progress=False)
        err = float((x - ref).norm(dim=1).mean())
        logs.append((math.log(nfe), math.log(err)))
    n = torch.tensor(logs, dtype=torch.float64)
    u, v = n[:, 0] - n[:, 0].mean(), n[:, 1] - n[:, 1].mean()
    return -float((u * v).sum() / (u * u).sum())


# Band: |p_fit - p| < 0.3. A method of the neighbouring order (p +- 1) misses it by
# 0.7. The fitted orders here were 1.01 (Euler, DPM-Solver-1), 1.97 (++(2M)) and
# 2.13 (Heun), the wrong ++(2M) below 1.08. The band is bias, not noise: Heun's
# local slope still drifts towards 2 at these NFE (2.26 from 40 to 80, 2.04 from
# 160 to 320), and the fit is a mean of such slopes. The bootstrap spread over
# the 200 x_T is below 0.01, and the reference's own error (2e-6) is 40 times
# below the smallest error fitted.
BAND = 0.3
EXPECTED = {"euler": 1, "dpm_solver_1": 1, "dpm_solver_pp_2m": 2, "heun": 2}


@pytest.mark.parametrize("name", list(solvers.SOLVERS))
def test_measured_order(name, sandbox):
    per_step = 2 if name == "heun" else 1
    p = measured_order(solvers.SOLVERS[name], GRIDS[name], per_step, sandbox)
    assert abs(p - EXPECTED[name]) < BAND, (name, p)


def _pp_2m_wrong(eps_model, x_T, grid, *, noise, progress=False):
    """DPM-Solver++(2M) with the 1/(2r) of D_i written as 1/r (a plausible slip)."""
    ts = grid
    alpha, sigma = noise.marginal_coefs(ts)
    lam = alpha.log() - sigma.log()
    x, x0_prev = x_T, None
    for i in range(1, len(ts)):
        e = eps_model(x, torch.full((len(x),), float(ts[i - 1]), dtype=x.dtype))
        x0_hat = (x - float(sigma[i - 1]) * e) / float(alpha[i - 1])
        h = lam[i] - lam[i - 1]
        if x0_prev is None:
            d = x0_hat
        else:
            r = float((lam[i - 1] - lam[i - 2]) / h)
            d = (1 + 1 / r) * x0_hat - 1 / r * x0_prev  # should be 1 / (2 r)
        x = float(sigma[i] / sigma[i - 1]) * x - float(alpha[i] * torch.expm1(-h)) * d
        x0_prev = x0_hat
    return x


def test_wrong_pp_2m_coefficient_loses_second_order(sandbox):
    """The order check has teeth: with 1/r for 1/(2r) the multistep correction is
    still consistent (first order) but the fitted order leaves the band for 2."""
    p = measured_order(_pp_2m_wrong, half_log_snr_grid, 1, sandbox)
    assert abs(p - 2) > BAND, p
    assert abs(p - 1) < BAND, p


# -- against diffusers, the published implementation ----------------------------------


def _diffusers_tables(sched, timesteps):
    """Replace a diffusers scheduler's float32 tables by our float64 ones."""
    ab = SCHEDULE.alpha_bar
    sched.alphas_cumprod = ab.clone()
    if hasattr(sched, "final_alpha_cumprod"):
        sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(sched, "sigmas"):
        s = ((1 - ab) / ab).sqrt()[timesteps]
        sched.sigmas = torch.cat([s, torch.zeros(1, dtype=torch.float64)])


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("thresholding", [False, True])
def test_dpm_solver_pp_2m_matches_diffusers(steps, thresholding):
    """difflab's DPM-Solver++(2M) against diffusers' DPMSolverMultistepScheduler
    (dpmsolver++, order 2, last step to sigma = 0 first-order) on one eps function,
    one float64 alpha_bar table and the same timesteps: equal to 1e-8. With
    ``thresholding``: our dynamic_threshold(0.995, max_value=1.5) against
    diffusers' dynamic thresholding with the same ratio and sample_max_value (it
    acts here: the result moves by more than 1e-2).

    diffusers' ``step`` rounds the sample to float32 before every update, so the
    float64 comparison drives its two update methods (which carry the maths) in
    the order ``step`` calls them; ``step`` itself is checked to float32 rounding.
    """
    diffusers = pytest.importorskip(
        "diffusers", reason="diffusers (the bench extra) is not installed"
    )
    taus = ddim_timesteps(SCHEDULE.T, steps)
    x_T = _x()
    thr = solvers.dynamic_threshold(0.995, max_value=1.5) if thresholding else None

    def solve(threshold):
        return solvers.dpm_solver_pp_2m(
            fixed_eps,
            x_T,
            NOISE.grid(taus),
            noise=NOISE,
            x0_threshold=threshold,
            progress=False,
        )

    ours = solve(thr)
    if thresholding:
        assert float((ours - solve(None)).abs().max()) > 1e-2

    def scheduler():
        sched = diffusers.DPMSolverMultistepScheduler(
            num_train_timesteps=SCHEDULE.T,
            trained_betas=SCHEDULE.betas.numpy(),
            algorithm_type="dpmsolver++",
            solver_order=2,
            prediction_type="epsilon",
            final_sigmas_type="zero",
            thresholding=thresholding,
            dynamic_thresholding_ratio=0.995,
            sample_max_value=1.5,
        )
        sched.set_timesteps(timesteps=taus.flip(0).tolist())
        assert sched.timesteps.tolist() == taus.flip(0).tolist()
        _diffusers_tables(sched, sched.timesteps)
        return sched

    sched, x, outputs = scheduler(), x_T.clone(), []
    for i, t in enumerate(sched.timesteps):
        sched._step_index = i  # what step() keeps; set here as step() would
        m = sched.convert_model_output(index_eps(x, t.repeat(len(x))), sample=x)
        outputs.append(m)
        if i == 0 or i == len(sched.timesteps) - 1:
            x = sched.dpm_solver_first_order_update(m, sample=x)
        else:
            x = sched.multistep_dpm_solver_second_order_update(outputs[-2:], sample=x)
    assert_close(ours, x, rtol=0, atol=1e-8)

    sched, x = scheduler(), x_T.clone()
    for t in sched.timesteps:
        x = sched.step(index_eps(x, t.repeat(len(x))), t, x).prev_sample
    # step() rounds the sample to float32 (relative 2^-24) once per step, and the
    # update carries earlier errors forward with coefficients of order 1.
    assert_close(ours, x.double(), rtol=steps * 2**-24, atol=1e-6)


@pytest.mark.parametrize("steps", [10, 50])
def test_ddim_matches_diffusers(steps):
    """DDIM and DPM-Solver-1 against diffusers' DDIMScheduler (eta = 0, its
    "leading" timesteps 0, T/S, 2T/S, ..., final alpha_bar = 1), float64 tables:
    equal to 1e-8."""
    diffusers = pytest.importorskip(
        "diffusers", reason="diffusers (the bench extra) is not installed"
    )
    sched = diffusers.DDIMScheduler(
        num_train_timesteps=SCHEDULE.T,
        trained_betas=SCHEDULE.betas.numpy(),
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )
    sched.set_timesteps(steps)
    _diffusers_tables(sched, sched.timesteps)
    x_T = _x()
    x = x_T.clone()
    for t in sched.timesteps:
        x = sched.step(index_eps(x, t.repeat(len(x))), t, x, eta=0.0).prev_sample
    taus = sched.timesteps.flip(0)
    assert taus.tolist() == list(range(0, SCHEDULE.T, SCHEDULE.T // steps))
    ours = solvers.dpm_solver_1(
        fixed_eps, x_T, NOISE.grid(taus), noise=NOISE, progress=False
    )
    assert_close(ours, x, rtol=0, atol=1e-8)
    ddim = ddim_sample(fixed_eps, x_T, SCHEDULE, taus, progress=False)
    assert_close(ddim, x, rtol=0, atol=1e-8)


# -- x0 thresholding (clipping and dynamic thresholding) -------------------------------

# Five points inside [-1, 1]^2: the exact denoiser E[x0 | x_t] is a convex combination
# of them, so it never leaves the square and a clamp to [-1, 1] never acts.
INSIDE = torch.tensor(
    [[0.9, -0.2], [-0.7, 0.8], [0.1, 0.1], [-0.95, -0.9], [0.5, 0.95]],
    dtype=torch.float64,
)


def _finite_data_eps(points):
    """The exact eps of data uniform on ``points`` (K, 2) under NOISE, in continuous t."""

    def eps(x, t):
        alpha, sigma = NOISE.marginal_coefs(t)
        a, s = alpha[:, None, None], sigma[:, None, None]
        logw = -((x[:, None, :] - a * points[None]) ** 2).sum(-1) / (2 * s[..., 0] ** 2)
        x0 = (logw.softmax(dim=1)[..., None] * points[None]).sum(1)
        return (x - alpha[:, None] * x0) / sigma[:, None]

    return eps


@pytest.mark.parametrize("name", list(solvers.SOLVERS))
@pytest.mark.parametrize("threshold", [1.0, "dynamic"])
def test_threshold_changes_nothing_for_an_exact_denoiser_inside_the_box(
    name, threshold
):
    """Every solver, clamp or dynamic thresholding: with data inside [-1, 1] the
    exact x0_hat is inside too, and the thresholded solve equals the plain one to
    float64 rounding. The same check on data reaching 1.5 fails (the threshold
    acts), so it can tell a threshold that acts from one that does not."""
    thr = solvers.dynamic_threshold() if threshold == "dynamic" else threshold
    grid = torch.cat([uniform_grid(NOISE, 12), torch.zeros(1, dtype=torch.float64)])
    x_T = _x((64, 2), seed=3)
    for points, same in ((INSIDE, True), (1.5 * INSIDE, False)):
        eps = _finite_data_eps(points)
        solve = solvers.SOLVERS[name]
        plain = solve(eps, x_T, grid, noise=NOISE, progress=False)
        seen = []
        clipped = solve(
            eps,
            x_T,
            grid,
            noise=NOISE,
            x0_threshold=thr,
            progress=False,
            callback=lambda d, seen=seen: seen.append(float(d["x0_hat"].abs().max())),
        )
        gap = float((clipped - plain).abs().max())
        if same:
            assert gap < 1e-10, (name, gap)
        else:
            assert gap > 1e-2, (name, gap)
            assert max(seen) <= 1 + 1e-12  # what the solver stepped with was bounded


def test_clipped_dpm_solver_1_is_ddim_with_clip_x0():
    """Thresholding in the solvers is the classic ``clip_x0`` of DDIM, step for step."""
    taus = ddim_timesteps(SCHEDULE.T, 20)
    x_T = 2 * _x()  # fixed_eps overshoots [-1, 1] on these, so the clamp acts
    a = ddim_sample(fixed_eps, x_T, SCHEDULE, taus, clip_x0=1.0, progress=False)
    b = solvers.dpm_solver_1(
        fixed_eps,
        x_T,
        NOISE.grid(taus),
        noise=NOISE,
        x0_threshold=1.0,
        progress=False,
    )
    assert (
        float(
            (a - ddim_sample(fixed_eps, x_T, SCHEDULE, taus, progress=False))
            .abs()
            .max()
        )
        > 1e-3
    )
    assert_close(b, a, rtol=0, atol=1e-12)


def test_dynamic_threshold_is_saharia_et_al():
    """s = the 0.995 quantile of |x0| per sample, at least 1: a sample inside [-1, 1]
    is unchanged, one that overshoots is clamped at s and divided by s (so its
    largest pixels land on +-1 and the rest shrink by the same factor)."""
    thr = solvers.dynamic_threshold(0.995)
    inside = torch.linspace(-1, 1, 1000, dtype=torch.float64).view(1, 1000)
    out = 3 * inside
    x = torch.cat([inside, out])
    y = thr(x)
    assert_close(y[0], inside[0], rtol=0, atol=0)
    s = torch.quantile(out.abs(), 0.995)
    assert 2.9 < float(s) < 3.0
    assert_close(y[1], out[0].clamp(-s, s) / s)
    assert float(y.abs().max()) == 1.0
    capped = solvers.dynamic_threshold(0.995, max_value=2.0)(x)
    assert_close(capped[1], out[0].clamp(-2, 2) / 2)


def _pp_2m_clip_forgets(eps_model, x_T, grid, *, noise, x0_threshold, progress=False):
    """A plausible wrong thresholded ++(2M): when a threshold is set it drops the
    previous evaluation (every step first order), as if clipping broke the memory."""
    return solvers.dpm_solver_1(
        eps_model, x_T, grid, noise=noise, x0_threshold=x0_threshold, progress=False
    )


def test_clipped_pp_2m_is_still_second_order_where_clipping_is_inactive(sandbox):
    """With the clamp set just above the largest |x0_hat| the solve meets (so the
    clipped branch runs but never bites), ++(2M) keeps its measured order 2 within
    the band of the order tests; the variant whose clipped branch forgets the
    previous evaluation measures order 1 and fails this check."""
    eps, x_T, _ = sandbox
    seen = []
    for nfe in ORDER_NFES:
        solvers.dpm_solver_pp_2m(
            eps,
            x_T,
            half_log_snr_grid(SDE, nfe),
            noise=SDE,
            progress=False,
            callback=lambda d: seen.append(float(d["x0_hat"].abs().max())),
        )
    c = 1.01 * max(seen)

    def clipped(solver):
        return lambda e, x, g, *, noise, progress=False: solver(
            e, x, g, noise=noise, x0_threshold=c, progress=False
        )

    p = measured_order(clipped(solvers.dpm_solver_pp_2m), half_log_snr_grid, 1, sandbox)
    assert abs(p - 2) < BAND, p
    p_wrong = measured_order(
        clipped(_pp_2m_clip_forgets), half_log_snr_grid, 1, sandbox
    )
    assert abs(p_wrong - 2) > BAND, p_wrong
