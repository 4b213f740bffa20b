"""Generative adversarial networks: the optimal discriminator, DCGAN, mode collapse.

Goodfellow et al. 2014 (arXiv:1406.2661), Radford et al. 2016 (DCGAN,
arXiv:1511.06434), Metz et al. 2017 (unrolled GANs, arXiv:1611.02163; the ring of
eight Gaussians used to show mode collapse).

Notation (paper / code): data density p_data / ``p``; generator density p_g /
``q``; discriminator D(x) = sigmoid(logit) / ``D``; noise z / ``z``;
value V(D, G) = E_p[log D] + E_q[log(1 - D)].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from difflab.core.optim import adam
from difflab.core.progress import tqdm
from difflab.core.tensors import randn


def optimal_discriminator(p_logpdf: Tensor, q_logpdf: Tensor) -> Tensor:
    """D*(x) = p(x) / (p(x) + q(x)) from log-densities at the same points.

    Goodfellow et al. 2014, Proposition 1. Written as sigmoid(log p - log q), which
    is the same ratio without overflow.
    """
    return torch.sigmoid(p_logpdf - q_logpdf)


# ----------------------------------------------------------------------------------
# DCGAN on images


def _trunk_sizes(image_size: int) -> list[int]:
    """Spatial sizes of a conv trunk: halve while even and > 4 (8: 8,4; 28: 28,14,7)."""
    sizes = [image_size]
    while sizes[-1] % 2 == 0 and sizes[-1] > 4:
        sizes.append(sizes[-1] // 2)
    return sizes


@dataclass(frozen=True)
class GANConfig:
    """DCGAN architecture and training settings (the whole cache key)."""

    image_size: int = 8
    channels: int = 1
    latent_dim: int = 32
    width: int = 32  # D's first conv channels (doubled at each downsampling); G mirrors
    dataset: str = "digits"
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-4  # Radford et al. 2016, Sec. 4
    beta1: float = 0.5  # ditto: 0.9 oscillates
    seed: int = 0


def gan_config(profile: str, dataset: str, **overrides) -> GANConfig:
    """The preset of this site: small on CPU (``quick``), wider and longer (``full``)."""
    size, ch = {"digits": (8, 1), "mnist": (28, 1), "cifar10": (32, 3)}[dataset]
    if profile == "quick":
        base = dict(width=16, latent_dim=32, steps=1500, batch_size=64)
    else:
        base = dict(width=64, latent_dim=64, steps=10000, batch_size=128)
    base.update(overrides)
    return GANConfig(image_size=size, channels=ch, dataset=dataset, **base)


class Generator(nn.Module):
    """DCGAN generator: z (B, latent_dim) -> image (B, C, H, W) in (-1, 1).

    Radford et al. 2016, Sec. 3: fractionally strided convolutions, batch norm,
    ReLU inside and tanh at the output.
    """

    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        w, sizes = config.width, _trunk_sizes(config.image_size)
        widths = [w * 2**i for i in range(len(sizes))]
        bottom = (widths[-1], sizes[-1], sizes[-1])
        layers: list[nn.Module] = [
            nn.Linear(config.latent_dim, math.prod(bottom), bias=False),
            nn.Unflatten(1, bottom),
            nn.BatchNorm2d(widths[-1]),
            nn.ReLU(),
        ]
        for i in range(len(sizes) - 1, 0, -1):
            layers += [
                nn.ConvTranspose2d(widths[i], widths[i - 1], 4, 2, 1, bias=False),
                nn.BatchNorm2d(widths[i - 1]),
                nn.ReLU(),
            ]
        layers += [nn.Conv2d(widths[0], config.channels, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images from z ~ N(0, I), shape (n, C, H, W)."""
        p = next(self.parameters())
        return self(randn((n, self.config.latent_dim), generator, like=p))


class Discriminator(nn.Module):
    """DCGAN discriminator: image (B, C, H, W) -> logit (B,); D = sigmoid(logit).

    Radford et al. 2016, Sec. 3: strided convolutions, LeakyReLU(0.2), batch norm
    everywhere but the input layer.
    """

    def __init__(self, config: GANConfig):
        super().__init__()
        w, sizes = config.width, _trunk_sizes(config.image_size)
        widths = [w * 2**i for i in range(len(sizes))]
        layers: list[nn.Module] = [
            nn.Conv2d(config.channels, widths[0], 3, padding=1),
            nn.LeakyReLU(0.2),
        ]
        for i in range(1, len(sizes)):
            layers += [
                nn.Conv2d(widths[i - 1], widths[i], 4, 2, 1, bias=False),
                nn.BatchNorm2d(widths[i]),
                nn.LeakyReLU(0.2),
            ]
        layers += [nn.Flatten(), nn.Linear(widths[-1] * sizes[-1] ** 2, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)


def gan_losses(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    """Discriminator loss -V and the non-saturating generator loss, from logits.

    Goodfellow et al. 2014, Eq. 1 and Sec. 3: D minimises
    -E_p[log D] - E_q[log(1 - D)]; G minimises -E_q[log D] instead of
    E_q[log(1 - D)], which has the same fixed point but strong gradients early on.
    ``d_fake`` for the D loss must be computed on detached samples.
    """
    d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    g_loss = F.softplus(-d_fake).mean()
    return d_loss, g_loss


def _adversarial_loop(
    G, D, sample_real, config, gen, device, progress, desc, hook=None
):
    """Alternate one D step and one G step (Goodfellow et al. 2014, Algorithm 1, k=1)."""
    opt_d = adam(D.parameters(), lr=config.lr, betas=(config.beta1, 0.999))
    opt_g = adam(G.parameters(), lr=config.lr, betas=(config.beta1, 0.999))
    history: dict[str, list[float]] = {"d_loss": [], "g_loss": []}
    G.train(), D.train()
    for step in tqdm(range(config.steps), disable=not progress, desc=desc):
        x = sample_real(config.batch_size)
        z = torch.randn(config.batch_size, config.latent_dim, generator=gen).to(device)
        fake = G(z)
        d_real = D(x)
        d_loss, _ = gan_losses(d_real, D(fake.detach()))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        # The generator's loss reads D on its samples only: D on the real batch is
        # not evaluated again (it cost a sixth of a DCGAN step, and only moved the
        # batch-norm running statistics that an eval-mode D uses).
        _, g_loss = gan_losses(d_real.detach(), D(fake))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        history["d_loss"].append(d_loss.item())
        history["g_loss"].append(g_loss.item())
        if hook is not None:
            hook(step + 1, G)
    return history


def train_gan(
    config: GANConfig,
    images: Tensor,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[Generator, Discriminator, dict[str, list[float]]]:
    """Train a DCGAN on ``images`` (N, C, H, W) in [-1, 1].

    Returns:
        G and D (eval mode) and the per-step history of ``d_loss`` and ``g_loss``.
    """
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # the initial weights
        G, D = Generator(config).to(device), Discriminator(config).to(device)
    images = images.to(device)

    def sample_real(n: int) -> Tensor:
        return images[torch.randint(len(images), (n,), generator=gen).to(device)]

    history = _adversarial_loop(G, D, sample_real, config, gen, device, progress, "GAN")
    return G.eval(), D.eval(), history


# ----------------------------------------------------------------------------------
# Toy worlds: a 1D discriminator, and the ring of Gaussians for mode collapse


def mlp(d_in: int, d_out: int, hidden: int = 128, depth: int = 2) -> nn.Sequential:
    """A ReLU perceptron with ``depth`` hidden layers (the toy G and D)."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d_in if i == 0 else hidden, hidden), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, d_out))


def fit_discriminator(
    x_p: Tensor,
    x_q: Tensor,
    *,
    steps: int = 2000,
    batch_size: int = 512,
    lr: float = 1e-3,
    hidden: int = 64,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Maximise V(D) = E_p[log D] + E_q[log(1 - D)] over an MLP D for fixed samples.

    Args:
        x_p, x_q: (N, d) samples of the data p and of the generator q.

    Returns:
        The logit network: D(x) = sigmoid(net(x)).squeeze(-1).
    """
    gen = generator if generator is not None else torch.Generator()
    seed = int(torch.randint(2**31, (1,), generator=gen))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = mlp(x_p.shape[1], 1, hidden).to(x_p.device)
    opt = adam(net.parameters(), lr=lr)
    for _ in range(steps):
        i = torch.randint(len(x_p), (batch_size,), generator=gen)
        j = torch.randint(len(x_q), (batch_size,), generator=gen)
        loss, _ = gan_losses(net(x_p[i]).squeeze(-1), net(x_q[j]).squeeze(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def ring_centers(modes: int = 8, radius: float = 2.0) -> Tensor:
    """(modes, 2) centres evenly spaced on a circle (Metz et al. 2017, Sec. 3.1)."""
    angle = 2 * math.pi * torch.arange(modes) / modes
    return radius * torch.stack([angle.cos(), angle.sin()], dim=1)


def sample_ring(
    n: int,
    modes: int = 8,
    radius: float = 2.0,
    std: float = 0.02,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(n, 2) samples of the equal mixture of N(centre_k, std^2 I) on a ring."""
    k = torch.randint(modes, (n,), generator=generator)
    return ring_centers(modes, radius)[k] + std * torch.randn(n, 2, generator=generator)


def modes_covered(
    samples: Tensor, centers: Tensor, radius: float, min_count: int = 1
) -> int:
    """How many centres have at least ``min_count`` samples within ``radius``.

    Args:
        samples: (N, d); centers: (K, d). A sample counts for its nearest centre
            only, so overlapping balls do not count one sample twice.
    """
    dist = torch.cdist(samples.to(centers.dtype), centers)  # (N, K)
    d_min, nearest = dist.min(dim=1)
    counts = torch.bincount(nearest[d_min <= radius], minlength=len(centers))
    return int((counts >= min_count).sum())


@dataclass(frozen=True)
class RingGANConfig:
    """A small MLP GAN on the ring (settings close to Metz et al. 2017, App. A)."""

    modes: int = 8
    radius: float = 2.0
    std: float = 0.02
    latent_dim: int = 2
    hidden: int = 128
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    beta1: float = 0.5
    seed: int = 0


def train_ring_gan(
    config: RingGANConfig,
    *,
    every: int = 250,
    num_eval: int = 2000,
    progress: bool = True,
) -> tuple[nn.Module, dict[str, list]]:
    """Train a GAN on the ring and record mode coverage every ``every`` steps.

    A mode is covered when at least 1% of ``num_eval`` samples lie within three
    standard deviations of its centre (Metz et al. 2017 count modes the same way).

    Returns:
        G (a noise -> 2D MLP) and a history with ``d_loss``, ``g_loss``, ``step``,
        ``modes`` (count at each check) and ``samples`` ((num_eval, 2) tensors).
    """
    gen = torch.Generator().manual_seed(config.seed)
    eval_gen = torch.Generator().manual_seed(config.seed + 1)
    z_eval = torch.randn(num_eval, config.latent_dim, generator=eval_gen)
    centers = ring_centers(config.modes, config.radius)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        G = mlp(config.latent_dim, 2, config.hidden)
        D = nn.Sequential(mlp(2, 1, config.hidden), nn.Flatten(0))  # logits (N,)
    checks: dict[str, list] = {"step": [], "modes": [], "samples": []}

    def hook(step: int, G: nn.Module) -> None:
        if step % every == 0 or step == 1:
            with torch.no_grad():
                x = G(z_eval)
            checks["step"].append(step)
            checks["samples"].append(x)
            checks["modes"].append(
                modes_covered(x, centers, 3 * config.std, min_count=num_eval // 100)
            )

    sample_real = lambda n: sample_ring(  # noqa: E731
        n, config.modes, config.radius, config.std, generator=gen
    )
    history = _adversarial_loop(
        G, D, sample_real, config, gen, "cpu", progress, "ring", hook
    )
    return G.eval(), {**history, **checks}
