"""The variational autoencoder: ELBO, importance-weighted bound, training and cache.

Kingma & Welling 2014 (arXiv:1312.6114), Rezende et al. 2014 (arXiv:1401.4082),
Burda et al. 2016 (arXiv:1509.00519).

Notation (paper / code): x / ``x``; z / ``z``; q_phi(z|x) = N(mu, diag sigma^2) /
``mu``, ``log_var``; prior p(z) = N(0, I); decoder p_theta(x|z) / ``x_mean``,
``x_log_scale``; K importance samples / ``K``.

Likelihood: images live in [-1, 1] on 256 levels (8-bit data, as in Ho et al. 2020,
Eq. 13), so p_theta(x|z) is a *discretised* Gaussian: each pixel's probability is
the Gaussian mass of its bin of width 2/255. Log-likelihoods are then true log
probabilities in nats, and ``nats_to_bits_per_dim`` converts them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from difflab.core.optim import adam
from difflab.core.progress import tqdm
from difflab.core.tensors import randn
from difflab.foundations.gaussians import (
    discretized_gaussian_log_likelihood,
    gaussian_kl,
)

LOG_SCALE_MIN, LOG_SCALE_MAX = -7.0, 1.0


@dataclass(frozen=True)
class VAEConfig:
    """Architecture and training settings of a VAE (the whole cache key)."""

    image_size: int = 8
    channels: int = 1
    latent_dim: int = 2
    hidden: int = 256  # width of the two hidden layers of encoder and decoder
    dataset: str = "digits"
    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    kl_warmup: int = 0  # steps over which the KL weight rises from 0 to 1
    seed: int = 0


def vae_config(profile: str, dataset: str, **overrides) -> VAEConfig:
    """The preset of this site: small on CPU (``quick``), wider and longer (``full``)."""
    size, ch = {"digits": (8, 1), "mnist": (28, 1), "cifar10": (32, 3)}[dataset]
    if profile == "quick":
        base = dict(hidden=256, steps=1500, batch_size=128, lr=2e-3)
    else:
        base = dict(hidden=512, steps=15000, batch_size=256, lr=1e-3)
    base.update(overrides)
    return VAEConfig(image_size=size, channels=ch, dataset=dataset, **base)


class VAE(nn.Module):
    """Encoder q(z|x) and decoder p(x|z), two-hidden-layer perceptrons on the pixels.

    Kingma & Welling 2014, Appendix C used perceptrons too; they work for every
    image size here (8x8, 28x28, 32x32x3) and are cheap enough for a CPU page.
    Encoder: (B, C, H, W) -> (mu, log_var), each (B, latent_dim).
    Decoder: (B, latent_dim) -> (x_mean, x_log_scale), each (B, C, H, W).
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        c, s, h = config.channels, config.image_size, config.hidden
        d = c * s * s
        self.encoder = nn.Sequential(
            nn.Flatten(),
            nn.Linear(d, h), nn.SiLU(),
            nn.Linear(h, h), nn.SiLU(),
            nn.Linear(h, 2 * config.latent_dim),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim, h), nn.SiLU(),
            nn.Linear(h, h), nn.SiLU(),
            nn.Linear(h, 2 * d),
            nn.Unflatten(1, (2 * c, s, s)),
        )  # fmt: skip
        with torch.no_grad():  # start with pixel scales ~0.4 (log-scale -1), not 0.02
            self.decoder[-2].bias[d:].fill_(math.log(6 / 2))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x) = N(mu, diag exp(log_var)); x (B, C, H, W) -> two (B, latent_dim)."""
        mu, log_var = self.encoder(x).chunk(2, dim=1)
        return mu, log_var

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """p(x|z): per-pixel mean and log-scale of the discretised Gaussian."""
        x_mean, raw = self.decoder(z).chunk(2, dim=1)
        lo, hi = LOG_SCALE_MIN, LOG_SCALE_MAX  # soft clamp keeps the bins resolvable
        x_log_scale = lo + (hi - lo) * torch.sigmoid(raw)
        return x_mean, x_log_scale

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral samples: z ~ N(0, I), x = decoder mean (the usual picture)."""
        p = next(self.parameters())
        z = randn((n, self.config.latent_dim), generator, like=p)
        return self.decode(z)[0].clamp(-1, 1)


def gaussian_kl_standard(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, diag exp(log_var)) || N(0, I)), summed over the last dim.

    Kingma & Welling 2014, Appendix B: -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2),
    the special case of :func:`~difflab.foundations.gaussians.gaussian_kl`.
    """
    zero = torch.zeros((), dtype=mu.dtype, device=mu.device)
    return gaussian_kl(mu, log_var.exp(), zero, zero + 1).sum(-1)


class ELBOTerms(NamedTuple):
    """Per-example terms, each (B,), in nats: elbo = reconstruction - kl."""

    elbo: Tensor
    reconstruction: Tensor  # E_q[log p(x|z)], one reparameterised sample
    kl: Tensor  # KL(q(z|x) || p(z)), analytic


def elbo(model: VAE, x: Tensor, generator: torch.Generator | None = None) -> ELBOTerms:
    """One-sample ELBO estimate with the reparameterisation trick (Kingma & Welling
    2014, Eq. 10): z = mu + sigma * eps, eps ~ N(0, I).

    Args:
        x: (B, C, H, W) images in [-1, 1].

    Returns:
        ELBOTerms of (B,) tensors (nats).
    """
    mu, log_var = model.encode(x)
    eps = randn(mu.shape, generator, like=mu)
    z = mu + torch.exp(0.5 * log_var) * eps
    x_mean, x_log_scale = model.decode(z)
    rec = discretized_gaussian_log_likelihood(x, x_mean, x_log_scale).flatten(1).sum(1)
    kl = gaussian_kl_standard(mu, log_var)
    return ELBOTerms(rec - kl, rec, kl)


def _log_normal(z: Tensor, mu: Tensor, log_var: Tensor) -> Tensor:
    """log N(z; mu, diag exp(log_var)), summed over the last dim."""
    sq = (z - mu) ** 2 / log_var.exp()
    return -0.5 * (sq + log_var + math.log(2 * math.pi)).sum(-1)


@torch.no_grad()
def iwae_bound(
    model: VAE,
    x: Tensor,
    K: int,
    generator: torch.Generator | None = None,
    chunk: int = 256,
) -> Tensor:
    """Importance-weighted bound L_K = E[log (1/K) sum_k p(x, z_k) / q(z_k|x)].

    Burda et al. 2016, Eq. 8. L_1 is the ELBO, L_K increases with K and tends to
    log p(x) (their Theorem 1).

    Args:
        x: (B, C, H, W) images; K: number of samples z_k ~ q(z|x) per image.
        chunk: samples decoded at once per image (memory bound).

    Returns:
        (B,) one Monte Carlo estimate of L_K per image (nats).
    """
    mu, log_var = model.encode(x)  # (B, D)
    B, D = mu.shape
    log_w = []
    for k0 in range(0, K, chunk):
        k = min(chunk, K - k0)
        eps = randn((k, B, D), generator, like=mu)
        z = mu + torch.exp(0.5 * log_var) * eps  # (k, B, D)
        x_mean, x_log_scale = model.decode(z.reshape(k * B, D))
        xk = x.expand(k, *x.shape).reshape(k * B, *x.shape[1:])
        log_px_z = discretized_gaussian_log_likelihood(xk, x_mean, x_log_scale)
        log_px_z = log_px_z.flatten(1).sum(1).reshape(k, B)
        log_pz = -0.5 * (z**2 + math.log(2 * math.pi)).sum(-1)
        log_w.append(log_px_z + log_pz - _log_normal(z, mu, log_var))
    return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(K)


def train_vae(
    config: VAEConfig,
    images: Tensor,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[VAE, list[float]]:
    """Maximise the ELBO with Adam on minibatches (Kingma & Welling 2014, Alg. 1).

    Args:
        config: architecture and training settings (``steps``, ``batch_size``,
            ``lr``, ``seed``).
        images: (N, C, H, W) training images in [-1, 1].

    Returns:
        The model (eval mode) and the history of the negative ELBO per image
        (nats), one value per step.
    """
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # the initial weights
        model = VAE(config).to(device)
    opt = adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.steps)
    dev_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    images = images.to(device)
    history: list[float] = []
    model.train()
    for step in tqdm(range(config.steps), disable=not progress, desc="VAE"):
        idx = torch.randint(len(images), (config.batch_size,), generator=gen)
        terms = elbo(model, images[idx.to(device)], dev_gen)
        beta = min(1.0, step / config.kl_warmup) if config.kl_warmup else 1.0
        loss = -(terms.reconstruction - beta * terms.kl).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(-terms.elbo.mean().item())
    return model.eval(), history
