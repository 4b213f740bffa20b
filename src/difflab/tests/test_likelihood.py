"""ODE likelihood against closed-form densities; bits/dim and dequantisation."""

import math

import pytest
import torch
from torch.testing import assert_close

from difflab.diffusion.forward import gaussian_eps_model
from difflab.diffusion.noise import DiscreteNoise, score_model_from_eps
from difflab.diffusion.schedules import make_schedule
from difflab.score.likelihood import (
    dequantize,
    dequantized_bits_per_dim,
    ode_bits_per_dim,
    ode_log_likelihood,
)
from difflab.score.sde import VESDE, VPSDE, SubVPSDE
from difflab.toy.mixtures import eight_gaussians, gaussian
from difflab.toy.sandbox import exact_score_fn

F64 = torch.float64


def test_ode_likelihood_of_sandbox_mixture_is_exact():
    m, sde = eight_gaussians(), VPSDE()
    x = m.sample(16, torch.Generator().manual_seed(0), dtype=F64)
    # Exact trace, tight RK45, t_min = 1e-5 and the closed-form prior N(0, I).
    res = ode_log_likelihood(exact_score_fn(m, sde), x, sde, rtol=1e-6, atol=1e-6)
    assert (res.log_p - m.log_prob(x)).abs().max() < 0.01


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=repr)
def test_ode_likelihood_of_gaussian_equals_closed_form(sde):
    mean = torch.tensor([0.5, -1.0, 0.2], dtype=F64)
    a = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.6, 0.0], [-0.3, 0.2, 0.4]], dtype=F64)
    p = gaussian(mean, a @ a.T)
    x = p.sample(8, torch.Generator().manual_seed(1), dtype=F64)
    score = exact_score_fn(p, sde)
    # With the exact p_T (the Gaussian carried to T) only the ODE's error remains.
    alpha_T, sigma_T = (float(v) for v in sde.marginal_coefs(torch.tensor([sde.T])))
    p_T = p.perturb(alpha_T, sigma_T)
    res = ode_log_likelihood(
        score, x, sde, rtol=1e-6, atol=1e-6, prior_log_prob=p_T.log_prob
    )
    assert (res.log_p - p.log_prob(x)).abs().max() < 0.005
    # The default prior differs from p_T by exp(-5) in the mean (VP) or by
    # mean / sigma_max^2 (VE): a pointwise error of order 0.01-0.05 nats.
    res_prior = ode_log_likelihood(score, x, sde, rtol=1e-6, atol=1e-6)
    assert_close(
        res_prior.log_p - res_prior.prior_log_p + p_T.log_prob(res_prior.z),
        p.log_prob(x),
        atol=0.005,
        rtol=0,
    )
    assert (res_prior.log_p - p.log_prob(x)).abs().max() < 0.1


def test_hutchinson_trace_is_unbiased():
    m, sde = eight_gaussians(), VPSDE()
    x = m.sample(4, torch.Generator().manual_seed(2), dtype=F64).repeat(64, 1)
    score = exact_score_fn(m, sde)
    exact = m.log_prob(x[:4])
    for probe in ("rademacher", "gaussian"):
        g = torch.Generator().manual_seed(3)
        est = ode_log_likelihood(
            score, x, sde, trace="hutchinson", probe=probe, generator=g
        )
        per_point = est.log_p.reshape(64, 4)
        se = per_point.std(0) / 8
        assert ((per_point.mean(0) - exact).abs() < 4 * se + 0.01).all()


def test_bits_per_dim_offsets():
    # A uniform density on [-1, 1]^D puts 1/256 on every 8-bit level: 8 bits/dim.
    d = 10
    bpd = dequantized_bits_per_dim
    assert math.isclose(bpd(-d * math.log(2), d), 8.0)
    assert math.isclose(bpd(0.0, d, data_range=(0.0, 1.0)), 8.0)
    assert math.isclose(bpd(-d * math.log(2), d, data_range=(0, 256)), 1.0)


def test_dequantize_stays_in_its_bin():
    k = torch.randint(0, 256, (1000,), generator=torch.Generator().manual_seed(4))
    images = k.double() / 255 * 2 - 1
    y = dequantize(images, torch.Generator().manual_seed(5))
    assert torch.equal(torch.floor((y + 1) / 2 * 256).long(), k)


def test_ode_bits_per_dim_of_ddpm_eps_model_for_gaussian_images():
    # Images (B, 1, 2, 2) from a Gaussian: the ideal eps-model of the discrete
    # schedule (continuous t, step n at (n + 1) / T, as DiscreteNoise puts it)
    # gives the closed-form NLL at t = 1/T.
    s = make_schedule("linear", 1000)
    mean = torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=F64)
    cov = 0.05 * torch.eye(4, dtype=F64) + 0.02
    p = gaussian(mean, cov)
    flat_eps = gaussian_eps_model(mean, cov, s)
    eps_model = lambda x, t: flat_eps(x.reshape(len(x), 4), t).reshape(x.shape)
    noise = DiscreteNoise(s)
    score = score_model_from_eps(eps_model, noise)
    images = p.sample(6, torch.Generator().manual_seed(6), dtype=F64).reshape(
        6, 1, 2, 2
    )
    ab0 = float(s.alpha_bar[0])
    p_start = p.perturb(math.sqrt(ab0), math.sqrt(1 - ab0))
    expected = dequantized_bits_per_dim(p_start.log_prob(images.reshape(6, 4)), 4)
    bpd, res = ode_bits_per_dim(
        score,
        images,
        noise,
        hutchinson=False,
        dequantize_data=False,
        rtol=1e-4,
        atol=1e-4,
    )
    assert_close(bpd, expected, atol=0.01, rtol=0)
    g = torch.Generator().manual_seed(7)
    bpd_h, _ = ode_bits_per_dim(
        score, images, noise, generator=g, dequantize_data=False, rtol=1e-4, atol=1e-4
    )
    assert abs(float(bpd_h.mean() - expected.mean())) < 0.2
