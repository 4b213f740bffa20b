"""Samplers against exact denoisers of Gaussian data, and DDIM(eta=1) against DDPM."""

import math

import pytest
import torch
from torch.testing import assert_close

from difflab.diffusion.forward import gaussian_eps_model
from difflab.diffusion.losses import (
    discretized_gaussian_log_likelihood,
    vlb_terms,
)
from difflab.diffusion.samplers import ddim_sample, ddim_timesteps, ddpm_sample
from difflab.diffusion.schedules import make_schedule
from difflab.foundations.gaussians import gaussian_kl

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=torch.float64)


def _check_moments(x, tol_mean=0.06, tol_cov=0.06):
    assert_close(x.mean(0), MEAN, atol=tol_mean, rtol=0)
    assert_close(torch.cov(x.T), COV, atol=tol_cov, rtol=0)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_with_exact_denoiser_reproduces_gaussian(variance):
    s = make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(4000, 2, generator=g, dtype=torch.float64)
    x = ddpm_sample(
        gaussian_eps_model(MEAN, COV, s),
        x_T,
        s,
        variance=variance,
        generator=g,
        progress=False,
    )
    _check_moments(x)


@pytest.mark.parametrize("eta,steps", [(0.0, 1000), (0.0, 200), (1.0, 1000)])
def test_ddim_with_exact_denoiser_reproduces_gaussian(eta, steps):
    s = make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(4000, 2, generator=g, dtype=torch.float64)
    x = ddim_sample(
        gaussian_eps_model(MEAN, COV, s),
        x_T,
        s,
        ddim_timesteps(1000, steps),
        eta=eta,
        generator=g,
        progress=False,
    )
    _check_moments(x)


def test_ddim_eta1_is_ddpm_with_posterior_variance():
    """Over all T steps, eta = 1 gives sigma_t^2 = beta_tilde_t: the same chain as DDPM."""
    s = make_schedule("cosine", 100)
    model = gaussian_eps_model(MEAN, COV, s)
    x_T = torch.randn(
        64, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    a = ddim_sample(
        model,
        x_T,
        s,
        eta=1.0,
        generator=torch.Generator().manual_seed(4),
        progress=False,
    )
    b = ddpm_sample(
        model,
        x_T,
        s,
        variance="beta_tilde",
        generator=torch.Generator().manual_seed(4),
        progress=False,
    )
    assert_close(a, b)


def test_ddim_eta0_is_deterministic_and_invertible_in_law():
    s = make_schedule("linear", 1000)
    model = gaussian_eps_model(MEAN, COV, s)
    x_T = torch.randn(
        8, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    taus = ddim_timesteps(1000, 20)
    assert_close(
        ddim_sample(model, x_T, s, taus, progress=False),
        ddim_sample(model, x_T, s, taus, progress=False),
    )


def test_timestep_spacings():
    for spacing in ("uniform", "quadratic"):
        for steps in (1, 2, 10, 50, 999, 1000):
            tau = ddim_timesteps(1000, steps, spacing)
            assert len(tau) == steps and tau[-1] == 999 and (tau.diff() > 0).all()
            assert steps == 1 or tau[0] == 0
    q = ddim_timesteps(1000, 10, "quadratic")
    assert q[1] - q[0] < q[-1] - q[-2]  # denser near the data
    with pytest.raises(ValueError, match="steps"):
        ddim_timesteps(1000, 0)


def test_callback_sees_every_step():
    s = make_schedule("linear", 30)
    seen = []
    ddpm_sample(
        gaussian_eps_model(MEAN, COV, s),
        torch.zeros(4, 2, dtype=torch.float64),
        s,
        callback=lambda d: seen.append(d["t"]),
        progress=False,
    )
    assert seen == list(range(29, -1, -1))


def test_discretized_decoder_is_a_distribution():
    """The 256 bin probabilities of the decoder sum to one."""
    values = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, log_scale in [(0.1, -2.0), (-0.9, -4.0), (0.99, 0.0)]:
        p = discretized_gaussian_log_likelihood(
            values, torch.full_like(values, mean), torch.full_like(values, log_scale)
        ).exp()
        assert_close(p.sum().item(), 1.0, atol=1e-6, rtol=0)


def test_normal_kl_closed_form_against_monte_carlo():
    g = torch.Generator().manual_seed(6)
    m1, lv1, m2, lv2 = 0.3, math.log(0.5), -0.2, math.log(1.7)
    x = m1 + math.exp(lv1 / 2) * torch.randn(400_000, generator=g, dtype=torch.float64)
    log_q = -0.5 * (math.log(2 * math.pi) + lv1 + (x - m1) ** 2 / math.exp(lv1))
    log_p = -0.5 * (math.log(2 * math.pi) + lv2 + (x - m2) ** 2 / math.exp(lv2))
    m1_, v1, m2_, v2 = (
        torch.tensor(v, dtype=torch.float64)
        for v in (m1, math.exp(lv1), m2, math.exp(lv2))
    )
    kl = gaussian_kl(m1_, v1, m2_, v2)
    assert_close((log_q - log_p).mean(), kl, atol=3e-3, rtol=0)


def test_bits_per_dim_of_a_point_mass():
    """Data that is always the image c: the exact denoiser makes every middle KL zero.

    What remains is known in closed form: the prior term KL(N(sqrt(a_T) c, 1 - a_T) ||
    N(0, 1)) and the decoder's mass on c's bin, with std sqrt(beta_tilde_2).
    """
    s = make_schedule("linear", 100)
    c = torch.tensor([[-1.0, 0.0, 0.5, 1.0]], dtype=torch.float64).expand(3, 4)

    def eps_model(x_t, t):  # E[eps | x_t] when x_0 = c surely
        a = s.alpha_bar[s.index(t)].unsqueeze(1)  # t continuous: step index s.index(t)
        return (x_t - a.sqrt() * c) / (1 - a).sqrt()

    terms = vlb_terms(
        eps_model,
        c,
        s,
        variance="beta_tilde",
        generator=torch.Generator().manual_seed(7),
    )
    assert_close(terms[:, 1:-1], torch.zeros_like(terms[:, 1:-1]), atol=1e-9, rtol=0)
    a_T = s.alpha_bar[-1]
    prior = 0.5 * ((1 - a_T) + a_T * c[0] ** 2 - 1 - torch.log(1 - a_T))
    std = s.posterior_variance[1].sqrt()
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))
    half = (1 / 255) / std.item()
    mass = torch.tensor(
        [phi(half), 2 * phi(half) - 1, 2 * phi(half) - 1, phi(half)],
        dtype=torch.float64,
    )  # edge bins extend to infinity
    expect = (prior - mass.log()).sum() / (4 * math.log(2))
    assert_close(terms.sum(1), expect.expand(3), atol=1e-7, rtol=0)


@pytest.mark.parametrize("T", [1000, 37])
def test_step_index_and_time_round_trip(T):
    """Step index n sits at t = (n + 1) / T, and index(time(n)) = n for every n,
    in float64 and in the float32 a network's input is cast to."""
    s = make_schedule("linear", T)
    n = torch.arange(T)
    assert_close(s.time(n), (n.double() + 1) / T, rtol=0, atol=0)
    for dtype in (torch.float64, torch.float32):
        assert torch.equal(s.index(s.time(n).to(dtype)), n)
    with pytest.raises(TypeError, match="step index"):
        s.index(n)  # an index where a time belongs is refused, not misread


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_chain_samplers_call_the_model_at_the_step_times(sampler):
    """ddpm_sample and ddim_sample loop over step indices but call the model in
    continuous time: at schedule.time(n), from the last step down to the first."""
    s = make_schedule("linear", 50)
    seen = []

    def model(x, t):
        assert t.is_floating_point() and t.dtype == x.dtype
        seen.append(float(t[0]))
        return torch.zeros_like(x)

    x_T = torch.zeros(3, 2, dtype=torch.float32)
    if sampler == "ddpm":
        ddpm_sample(model, x_T, s, generator=torch.Generator().manual_seed(0),
                    progress=False)  # fmt: skip
        want = s.time(torch.arange(50).flip(0))
    else:
        taus = ddim_timesteps(50, 7)
        ddim_sample(model, x_T, s, taus, progress=False)
        want = s.time(taus.flip(0))
    assert_close(torch.tensor(seen, dtype=torch.float64), want, rtol=1e-6, atol=0)


def test_as_eps_model_takes_continuous_time_and_refuses_an_index():
    """The wrapped network sees step index n (as a float) at t = (n + 1) / T, and
    converts its v-prediction with alpha_bar_n; an integer t is a TypeError."""
    from difflab.diffusion.parameterization import as_eps_model, eps_from_v

    s = make_schedule("linear", 100)
    inputs = []

    def net(x, n, cond):
        inputs.append(n.clone())
        return x * 0.5

    eps_model = as_eps_model(net, s, "v")
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    n = torch.tensor([0, 9, 50, 99])
    out = eps_model(x, s.time(n).float())
    assert torch.equal(inputs[0], n.float())
    a = s.alpha_bar[n].float().unsqueeze(1)
    assert_close(out, eps_from_v(x, 0.5 * x, a))
    with pytest.raises(TypeError, match="step index"):
        eps_model(x, n)
