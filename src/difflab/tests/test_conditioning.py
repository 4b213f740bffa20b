"""Classifier-free and classifier guidance against the closed-form tilted score.

On a 2D Gaussian mixture whose classes are its components, every score is known:
grad log p_t(x | y = k) is the score of component k carried to time t, and
grad log p_t(x) that of the whole mixture. Guidance with weight w should give the
score of p_t(x | y)^w p_t(x)^(1 - w),

    s_w(x, t) = w grad log p_t(x | y) + (1 - w) grad log p_t(x),

which is computed here by a second, independent route: explicit matrix inverses
and responsibilities from ``torch.distributions``, not the mixture class.
"""

import math

import pytest
import torch
from torch.testing import assert_close

from difflab.core.cond import NullCond
from difflab.diffusion.guidance import classifier_guided, guided
from difflab.diffusion.noise import DiscreteNoise, eps_model_from_score
from difflab.diffusion.schedules import make_schedule
from difflab.nets.noisy_classifier import (
    NoisyClassifier,
    NoisyClassifierConfig,
    label_log_prob,
)
from difflab.pipelines.noisy_classifier import noisy_batch
from difflab.score.sde import VPSDE
from difflab.toy.mixtures import GaussianMixture
from difflab.toy.sandbox import class_log_posterior_fn, class_score_fn

F64 = torch.float64
# Scores of order 1-100 computed in float64 by two routes agree to ~1e-13
# relative; 1e-9 leaves room for the eigendecomposition inside the mixture class
# and is still ten orders of magnitude below the errors of the wrong formulas.
TOL = dict(atol=1e-9, rtol=1e-9)


def three_classes() -> GaussianMixture:
    """Three overlapping, anisotropic, unequally weighted classes in 2D."""
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.3], [0.0, 1.5]], dtype=F64)
    covs = torch.tensor(
        [
            [[0.40, 0.15], [0.15, 0.30]],
            [[0.20, -0.10], [-0.10, 0.50]],
            [[0.30, 0.00], [0.00, 0.10]],
        ],
        dtype=F64,
    )
    return GaussianMixture(means, covs, torch.tensor([0.5, 0.3, 0.2]))


def closed_form_tilted_score(mix, alpha, sigma, x, y, w):
    """w grad log p_t(x | y) + (1 - w) grad log p_t(x), from the definitions."""
    eye = torch.eye(2, dtype=F64)
    scores, log_dens = [], []
    for k in range(mix.n_components):
        mean = alpha[:, None] * mix.means[k]  # (B, 2)
        cov = alpha[:, None, None] ** 2 * mix.covs[k] + sigma[:, None, None] ** 2 * eye
        prec = torch.linalg.inv(cov)  # (B, 2, 2)
        scores.append(-torch.einsum("bij,bj->bi", prec, x - mean))
        dist = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
        log_dens.append(mix.weights[k].log() + dist.log_prob(x))
    scores = torch.stack(scores, 1)  # (B, K, 2)
    resp = torch.softmax(torch.stack(log_dens, 1), dim=1)  # (B, K): p_t(k | x)
    marginal = (resp[..., None] * scores).sum(1)
    conditional = scores[torch.arange(len(x)), y]
    return w * conditional + (1 - w) * marginal


def setup(noise, seed=0, n=96):
    mix = three_classes()
    g = torch.Generator().manual_seed(seed)
    x = 1.5 * torch.randn(n, 2, generator=g, dtype=F64)
    # Several times, from nearly clean to nearly pure noise.
    t = torch.tensor([0.02, 0.1, 0.3, 0.6, 0.9], dtype=F64).repeat(n // 5 + 1)[:n]
    y = torch.randint(0, 3, (n,), generator=g)
    return mix, x, t, y


NOISES = [VPSDE(), DiscreteNoise(make_schedule("linear", 1000))]


def score_of(eps, noise, t):
    return -eps / noise.sigma(t)[:, None]


@pytest.mark.parametrize("noise", NOISES, ids=["vp-sde", "discrete"])
@pytest.mark.parametrize("w", [0.0, 1.0, 2.5, 5.0])
def test_classifier_free_guidance_is_the_tilted_score(noise, w):
    mix, x, t, y = setup(noise)
    eps = eps_model_from_score(class_score_fn(mix, noise), noise)
    eps_w = guided(eps, w, NullCond((("y", 3),)))(x, t, {"y": y})
    alpha, sigma = noise.marginal_coefs(t)
    want = closed_form_tilted_score(mix, alpha, sigma, x, y, w)
    assert_close(score_of(eps_w, noise, t), want, **TOL)


@pytest.mark.parametrize("noise", NOISES, ids=["vp-sde", "discrete"])
@pytest.mark.parametrize("s", [0.0, 1.0, 2.5, 5.0])
def test_classifier_guidance_with_the_exact_posterior_is_the_tilted_score(noise, s):
    """eps_u - s sigma grad log p_t(y | x) with scale s is CFG with w = s."""
    mix, x, t, y = setup(noise, seed=1)
    eps = eps_model_from_score(class_score_fn(mix, noise), noise)
    null = NullCond((("y", 3),))  # the unconditional branch: the mixture's score
    log_post = class_log_posterior_fn(mix, noise)
    eps_s = classifier_guided(eps, log_post, s, noise, null=null)(x, t, {"y": y})
    alpha, sigma = noise.marginal_coefs(t)
    want = closed_form_tilted_score(mix, alpha, sigma, x, y, s)
    assert_close(score_of(eps_s, noise, t), want, **TOL)
    # ... and equal to classifier-free guidance at w = s.
    assert_close(eps_s, guided(eps, s, null)(x, t, {"y": y}), **TOL)


def test_wrong_guidance_formulas_fail():
    """The checks have teeth: plausible slips miss the closed form by far more
    than the tolerance."""
    noise = VPSDE()
    mix, x, t, y = setup(noise, seed=2)
    alpha, sigma = noise.marginal_coefs(t)
    want = closed_form_tilted_score(mix, alpha, sigma, x, y, 3.0)
    eps = eps_model_from_score(class_score_fn(mix, noise), noise)
    null = NullCond((("y", 3),))
    cond = {"y": y}
    log_post = class_log_posterior_fn(mix, noise)
    eps_u = eps(x, t, null(cond))
    with torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(log_post(xg, t, cond).sum(), xg)
    wrong = {
        # Ho & Salimans' own weight w' = w - 1 used as ours.
        "w - 1 for w": score_of(guided(eps, 2.0, null)(x, t, cond), noise, t),
        # the gradient added to eps without the factor sigma(t) = sqrt(1 - abar).
        "no sigma": score_of(eps_u - 3.0 * grad, noise, t),
        # the gradient with the wrong sign (pushing away from the class).
        "sign": score_of(eps_u + 3.0 * sigma[:, None] * grad, noise, t),
        # guiding the conditional model instead of the unconditional one.
        "no null": score_of(
            classifier_guided(eps, log_post, 3.0, noise)(x, t, cond), noise, t
        ),
    }
    for name, score in wrong.items():
        err = (score - want).abs().max().item()
        assert err > 1e6 * TOL["atol"], name


def test_classifier_guidance_rejects_bad_input():
    noise = VPSDE()
    mix = three_classes()
    eps = eps_model_from_score(class_score_fn(mix, noise), noise)
    log_post = class_log_posterior_fn(mix, noise)
    for bad in (math.nan, math.inf, "three"):
        with pytest.raises((ValueError, TypeError), match="finite|number"):
            classifier_guided(eps, log_post, bad, noise)
        with pytest.raises((ValueError, TypeError), match="finite|number"):
            guided(eps, bad, NullCond((("y", 3),)))
    x, t = torch.zeros(2, 2, dtype=F64), torch.full((2,), 0.5, dtype=F64)
    with pytest.raises(ValueError, match="labels"):
        classifier_guided(eps, log_post, 1.0, noise)(x, t)
    # Scale 0 is the model itself, and no gradient is needed inside no_grad.
    cond = {"y": torch.tensor([0, 2])}
    with torch.no_grad():
        out = classifier_guided(eps, log_post, 0.0, noise)(x, t, cond)
        guided_out = classifier_guided(eps, log_post, 2.0, noise)(x, t, cond)
    assert torch.equal(out, eps(x, t, cond))
    assert not torch.equal(guided_out, out)


def test_exact_posterior_is_bayes_rule():
    """p_t(k | x) sums to one and equals w_k N_k,t(x) / p_t(x)."""
    mix, x, t, _ = setup(VPSDE(), seed=3)
    alpha, sigma = VPSDE().marginal_coefs(t)
    log_post = mix.perturbed_log_posterior(x, alpha, sigma)
    assert_close(log_post.exp().sum(1), torch.ones(len(x), dtype=F64))
    k = 1
    log_joint = torch.stack(
        [
            mix.weights[k].log()
            + mix.component(k).perturbed_log_prob(x[i : i + 1], alpha[i], sigma[i])[0]
            for i in range(len(x))
        ]
    )
    want = log_joint - mix.perturbed_log_prob(x, alpha, sigma)
    assert_close(log_post[:, k], want, **TOL)


def test_noisy_batch_has_the_forward_marginal():
    """x_t | x_0 ~ N(sqrt(abar_n) x_0, (1 - abar_n) I) (Ho et al. 2020, Eq. 4):
    Monte Carlo mean and variance within 5 standard errors."""
    schedule = make_schedule("linear", 1000)
    m = 40_000
    x0 = torch.tensor([0.7, -0.3], dtype=F64).expand(m, 2)
    n = torch.full((m,), 400)
    x_t, t = noisy_batch(schedule, x0, n, torch.Generator().manual_seed(0))
    ab = schedule.alpha_bar[400]
    assert_close(t, torch.full((m,), 401 / 1000, dtype=F64))
    se_mean = ((1 - ab) / m).sqrt()
    assert ((x_t.mean(0) - ab.sqrt() * x0[0]).abs() < 5 * se_mean).all()
    se_var = (1 - ab) * math.sqrt(2 / m)
    assert ((x_t.var(0) - (1 - ab)).abs() < 5 * se_var).all()


def test_noisy_classifier_rows_are_independent_and_time_matters():
    torch.manual_seed(0)
    net = NoisyClassifier(NoisyClassifierConfig(image_size=8, width=8)).double()
    x = torch.randn(4, 1, 8, 8, dtype=F64)
    t = torch.tensor([0.1, 0.1, 0.5, 0.9], dtype=F64)
    logits = net(x, t)
    assert logits.shape == (4, 10)
    x2 = x.clone()
    x2[0] += 1.0  # changing one row changes only that row's logits
    out = net(x2, t)
    assert not torch.equal(out[0], logits[0])
    assert_close(out[1:], logits[1:], atol=1e-12, rtol=0)
    # the same image at another time is classified differently
    assert not torch.allclose(net(x[:1], t[:1]), net(x[:1], t[3:]))
    # label_log_prob picks log softmax of each row's label
    y = torch.tensor([3, 0, 9, 1])
    lp = label_log_prob(net)(x, t, {"y": y})
    assert_close(lp, torch.log_softmax(logits, -1)[torch.arange(4), y])
    # and its autograd gradient per row equals the gradient of the summed one
    xg = x.clone().requires_grad_(True)
    (g_sum,) = torch.autograd.grad(label_log_prob(net)(xg, t, {"y": y}).sum(), xg)
    x0 = x[:1].clone().requires_grad_(True)
    (g0,) = torch.autograd.grad(label_log_prob(net)(x0, t[:1], {"y": y[:1]}).sum(), x0)
    assert_close(g_sum[:1], g0)


def test_energy_distance_and_its_permutation_null():
    """The V-statistic equals 2 E|X-Y| - E|X-X'| - E|Y-Y'| written out, and the
    permutation test rejects a shift of half a standard deviation but not equal laws."""
    from difflab.eval.two_sample import energy_distance, energy_test

    g = torch.Generator().manual_seed(0)
    x, y, z = torch.randn(3, 300, 2, generator=g, dtype=F64)
    mean_dist = lambda a, b: torch.cdist(a, b).mean()  # noqa: E731
    direct = 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)
    assert_close(torch.tensor(energy_distance(x, y), dtype=F64), direct)
    same = energy_test(x, y, 200, torch.Generator().manual_seed(1))
    assert_close(torch.tensor(same.statistic, dtype=F64), direct)
    assert same.p_value > 0.01  # fixed seed: equal laws are not rejected
    shifted = energy_test(x, z + 0.5, 200, torch.Generator().manual_seed(1))
    assert shifted.p_value < 0.01 and shifted.statistic > shifted.quantile(0.99)
