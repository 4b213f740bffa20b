"""The VAE's bounds and the GAN's optimal discriminator, checked against the maths."""

import math

import pytest
import torch
import torch.nn.functional as F

from difflab.foundations import gan, vae
from difflab.pipelines import pretrained


def _digits(n: int = 256) -> torch.Tensor:
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images[:n], dtype=torch.float32)
    return (x / 8 - 1)[
        :, None
    ]  # (n, 1, 8, 8) in [-1, 1], as difflab.data.images scales them


def _tiny_vae(**kw) -> vae.VAE:
    torch.manual_seed(0)  # tests may seed globally; the library never does
    return vae.VAE(vae.VAEConfig(hidden=32, latent_dim=2, **kw)).eval()


def test_discretized_gaussian_is_a_distribution_over_256_levels():
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)[:, None]  # (256, 1)
    mean = torch.tensor([-1.3, -0.2, 0.0, 0.7, 1.0], dtype=torch.float64)
    for log_scale in (-6.0, -3.0, -1.0, 0.5):
        ls = torch.full_like(mean, log_scale)
        logp = vae.discretized_gaussian_log_likelihood(levels, mean, ls)  # (256, 5)
        torch.testing.assert_close(logp.exp().sum(0), torch.ones(5, dtype=mean.dtype))
    # Narrow bins: mass ~ density x width (bin width 2/255).
    x, m, ls = torch.tensor(0.1), torch.tensor(0.0), torch.tensor(0.0)
    logp = vae.discretized_gaussian_log_likelihood(x, m, ls)
    approx = -0.5 * 0.01 - 0.5 * math.log(2 * math.pi) + math.log(2 / 255)
    assert abs(logp.item() - approx) < 1e-4


def test_analytic_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 4, generator=g, dtype=torch.float64)
    log_var = torch.randn(3, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(200_000, 3, 4, generator=g, dtype=torch.float64)
    z = mu + (0.5 * log_var).exp() * eps
    log_q = vae._log_normal(z, mu, log_var)
    log_p = vae._log_normal(z, torch.zeros_like(mu), torch.zeros_like(log_var))
    mc = (log_q - log_p).mean(0)
    torch.testing.assert_close(
        mc, vae.gaussian_kl_standard(mu, log_var), atol=0.03, rtol=0
    )


def test_elbo_is_exact_when_the_posterior_is_in_the_family():
    # Linear-Gaussian model: z ~ N(0,1), x|z ~ N(w z + b, s^2). Its posterior is
    # Gaussian, so with q = p(z|x) the ELBO equals log p(x) = log N(x; b, w^2 + s^2).
    w, b, s2 = 1.7, 0.3, 0.25
    x = torch.tensor([-2.0, 0.1, 1.5], dtype=torch.float64)
    post_var = 1 / (1 + w**2 / s2)

    def linear_gaussian_elbo(mu, log_var):  # E_q[log p(x|z)] in closed form - KL
        var = log_var.exp()[:, 0]
        rec = -0.5 * math.log(2 * math.pi * s2) - (
            (x - w * mu[:, 0] - b) ** 2 + w**2 * var
        ) / (2 * s2)
        return rec - vae.gaussian_kl_standard(mu, log_var)

    mu = (post_var * w * (x - b) / s2)[:, None]
    log_var = torch.full_like(mu, math.log(post_var))
    log_px = -0.5 * (math.log(2 * math.pi * (w**2 + s2)) + (x - b) ** 2 / (w**2 + s2))
    torch.testing.assert_close(linear_gaussian_elbo(mu, log_var), log_px)
    # A wrong q leaves a gap equal to KL(q || posterior), here Gaussian in closed form.
    gap = log_px - linear_gaussian_elbo(mu + 0.5, log_var + 0.3)
    kl = 0.5 * (math.exp(0.3) - 1 - 0.3 + 0.25 / post_var)
    torch.testing.assert_close(gap, torch.full_like(gap, kl))


def test_elbo_below_iwae_bounds_increasing_in_K():
    model, x = _tiny_vae(), _digits(8)
    with torch.no_grad():  # a decoder that reads z and a narrow q: a clear gap
        model.decoder[0].weight.mul_(10)
        model.encoder[-1].bias[2:].fill_(-3.0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        e = torch.stack([vae.elbo(model, x, g).elbo for _ in range(64)]).mean(0)
    l1 = torch.stack([vae.iwae_bound(model, x, 1, g) for _ in range(64)]).mean(0)
    bounds = {K: vae.iwae_bound(model, x, K, g).mean().item() for K in (8, 64)}
    assert abs(l1.mean() - e.mean()) < 0.02 * abs(e.mean())  # L_1 is the ELBO
    assert e.mean().item() + 1 < bounds[8] < bounds[64] - 0.5
    with torch.no_grad():
        terms = vae.elbo(model, x, g)
    torch.testing.assert_close(terms.elbo, terms.reconstruction - terms.kl)


@pytest.mark.parametrize("size,ch", [(8, 1), (28, 1), (32, 3)])
def test_shapes_for_every_image_size(size, ch):
    m = _tiny_vae(image_size=size, channels=ch)
    x = torch.rand(2, ch, size, size) * 2 - 1
    assert m.decode(m.encode(x)[0])[0].shape == x.shape
    cfg = gan.GANConfig(image_size=size, channels=ch, width=8, latent_dim=4)
    G, D = gan.Generator(cfg), gan.Discriminator(cfg)
    assert G(torch.randn(2, 4)).shape == x.shape and D(x).shape == (2,)


def test_tiny_vae_training_decreases_the_loss_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path))
    cfg = vae.VAEConfig(hidden=32, steps=100, batch_size=32, lr=3e-3)
    model, hist = pretrained.pretrained_vae(cfg, _digits(256), progress=False)
    assert sum(hist[-20:]) / 20 < 0.8 * sum(hist[:20]) / 20
    again, hist2 = pretrained.pretrained_vae(
        cfg, None
    )  # from the cache: no images needed
    assert hist2 == hist
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def _normal_logpdf(x, m, s):
    return -0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)


def test_optimal_discriminator_maximises_the_pointwise_value():
    x = torch.linspace(-4, 5, 50, dtype=torch.float64)
    lp, lq = _normal_logpdf(x, 0.0, 1.0), _normal_logpdf(x, 1.5, 0.7)
    d_star = gan.optimal_discriminator(lp, lq)
    # Brute force: for each x, the D in a fine grid maximising p log D + q log(1-D).
    d = torch.linspace(1e-6, 1 - 1e-6, 100_001, dtype=torch.float64)[:, None]
    value = lp.exp() * d.log() + lq.exp() * (-d).log1p()
    torch.testing.assert_close(d[value.argmax(0), 0], d_star, atol=2e-5, rtol=0)


def test_value_at_optimum_is_two_jsd_minus_log4():
    x = torch.linspace(-15, 15, 200_001, dtype=torch.float64)
    for (m1, s1), (m2, s2) in [
        ((0, 1), (1.5, 0.7)),
        ((0, 1), (0, 1)),
        ((-3, 0.5), (4, 2)),
    ]:
        lp, lq = _normal_logpdf(x, m1, s1), _normal_logpdf(x, m2, s2)
        d = gan.optimal_discriminator(lp, lq)
        torch.testing.assert_close(d, lp.exp() / (lp.exp() + lq.exp()))
        # log D* and log(1 - D*) as log-sigmoids: no 0 * log 0 in the far tails.
        log_d, log_1md = F.logsigmoid(lp - lq), F.logsigmoid(lq - lp)
        v = torch.trapezoid(lp.exp() * log_d + lq.exp() * log_1md, x)
        # JSD = H(m) - (H(p) + H(q)) / 2, with Gaussian entropies in closed form.
        pm = 0.5 * (lp.exp() + lq.exp())
        h_m = -torch.trapezoid(pm * pm.clamp_min(1e-300).log(), x)
        h = lambda s: 0.5 * math.log(2 * math.pi * math.e * s**2)  # noqa: E731
        jsd = h_m - 0.5 * (h(s1) + h(s2))
        assert abs(v.item() - (2 * jsd.item() - math.log(4))) < 1e-6
        assert -math.log(4) - 1e-9 <= v.item() <= 1e-9


def test_modes_covered_counts_constructed_samples():
    c = gan.ring_centers(8, 2.0)
    g = torch.Generator().manual_seed(0)
    near = c[[0, 0, 2, 5, 5, 5]] + 0.01 * torch.randn(6, 2, generator=g)
    far = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    x = torch.cat([near, far])
    assert gan.modes_covered(x, c, radius=0.06) == 3
    assert gan.modes_covered(x, c, radius=0.06, min_count=2) == 2
    assert gan.modes_covered(gan.sample_ring(4000, generator=g), c, 0.06, 100) == 8
    assert gan.modes_covered(torch.zeros(5, 2), c, 0.5) == 0
