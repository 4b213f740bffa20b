"""Coupled DDIM runs across step grids, and paired bootstrap spreads of a distance."""

import torch
from torch.testing import assert_close

from difflab.diffusion.forward import gaussian_eps_model
from difflab.diffusion.samplers import ddim_sample, ddim_timesteps
from difflab.diffusion.schedules import make_schedule
from difflab.eval.convergence import (
    bootstrap_frechet,
    bridge_weights,
    coarse_noise_weights,
    coupled_ddim,
)
from difflab.eval.metrics import frechet_distance, gaussian_stats

F64 = torch.float64
MEAN = torch.tensor([1.0, -0.5], dtype=F64)
COV = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=F64)


def test_composed_noise_is_the_eta_one_jump():
    """Sum of c_j^2 over a span = sigma^2 of Eq. 16 (eta = 1) for the jump t -> s,
    and the product of b_j = the jump's coefficient of x_t (Song et al. 2021a, Eq. 12)."""
    s = make_schedule("linear", 1000)
    ab = s.alpha_bar
    taus = ddim_timesteps(s.T, 10)
    c = coarse_noise_weights(s, taus, 1.0)
    _, b = bridge_weights(s, 1.0)
    for k in range(1, len(taus)):
        lo, hi = int(taus[k - 1]), int(taus[k])
        var = (1 - ab[lo]) / (1 - ab[hi]) * (1 - ab[hi] / ab[lo])
        assert_close(c[lo + 1 : hi + 1].pow(2).sum(), var)
        coef = (1 - ab[lo] - var).sqrt() / (1 - ab[hi]).sqrt()
        assert_close(b[lo + 1 : hi + 1].prod(), coef)


def test_eta_zero_equals_ddim_sample():
    s = make_schedule("linear", 1000)
    eps = gaussian_eps_model(MEAN, COV, s)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    out = coupled_ddim(eps, x_T, s, [10, 50], eta=0.0)
    for S in (10, 50, 1000):
        ref = ddim_sample(eps, x_T, s, ddim_timesteps(s.T, S), progress=False)
        assert_close(out[S], ref, rtol=0, atol=1e-12)


def test_full_chain_at_eta_one_is_ddim_sample_draw_for_draw():
    s = make_schedule("linear", 200)
    eps = gaussian_eps_model(MEAN, COV, s)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    out = coupled_ddim(
        eps, x_T, s, [], eta=1.0, generator=torch.Generator().manual_seed(2)
    )
    ref = ddim_sample(
        eps, x_T, s, eta=1.0, generator=torch.Generator().manual_seed(2), progress=False
    )
    assert_close(out[s.T], ref, rtol=0, atol=1e-12)


def test_eta_one_coupling_is_exact_for_a_model_that_knows_x0():
    """Same Brownian path: with eps from the true x_0 (a different x_0 per sample),
    the coarse chain passes through the full chain's states at its grid points."""
    s = make_schedule("linear", 300)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(32, 2, generator=g, dtype=F64)

    def oracle(x, t):
        a = s.alpha_bar[s.index(t)].unsqueeze(1)  # t continuous: step index s.index(t)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    states = {}

    def keep(d):
        states[d["S"], d["t"]] = d["x"].clone()

    x_T = torch.randn(32, 2, generator=g, dtype=F64)
    coupled_ddim(oracle, x_T, s, [7, 30], eta=1.0, generator=g, callback=keep)
    for S in (7, 30):
        for t in ddim_timesteps(s.T, S).tolist()[:-1]:  # the last one is x_T
            assert_close(states[S, t], states[s.T, t], rtol=0, atol=1e-10)
    # not trivially so: midway the states carry noise of std ~0.8 around the mean
    t = ddim_timesteps(s.T, 7)[3].item()
    assert (states[7, t] - s.alpha_bar[t].sqrt() * x0).std() > 0.3


def test_bootstrap_spread_matches_the_sampling_spread():
    """For Gaussian features the bootstrap std of the distance from one draw agrees
    with its std over independent draws (200 of them): within 35%, which covers the
    ~5% Monte Carlo error of each std and the O(1/sqrt(N)) bias of the bootstrap."""
    g = torch.Generator().manual_seed(4)
    n, d = 500, 4
    shift = torch.tensor([0.5, 0.0, 0.0, 0.0], dtype=F64)

    def draw():
        return (
            torch.randn(n, d, generator=g, dtype=F64) + shift,
            torch.randn(n, d, generator=g, dtype=F64),
        )

    fds = []
    for _ in range(200):
        x, ref = draw()
        fds.append(frechet_distance(*gaussian_stats(x), *gaussian_stats(ref)))
    true_std = torch.tensor(fds).std()
    x, ref = draw()
    reps = bootstrap_frechet({"a": x, "b": x.clone()}, ref, n_boot=300, generator=g)
    assert_close(reps["a"], reps["b"])  # same indices for every setting: paired
    assert 0.65 < float(reps["a"].std() / true_std) < 1.35
