"""A small convolutional autoencoder with a KL-regularised latent (latent diffusion).

Rombach et al. (2022, Sec. 3.1 and App. G) compress an image x (C, H, W) to a
latent z (c, H/f, W/f) with a downsampling factor f, and regularise it with a
small KL penalty towards N(0, I): the encoder outputs a diagonal Gaussian
q(z | x) = N(mu(x), diag(sigma^2(x))), the decoder maps z back to pixels. The
diffusion model is then trained on (scaled) latents instead of pixels.

This module holds the network and the closed-form KL; training and caching are
in :mod:`difflab.pipelines.autoencoder`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class AutoencoderConfig:
    """Hyper-parameters of :class:`Autoencoder`.

    Attributes:
        in_channels: image channels C.
        image_size: height = width of the images; divisible by ``factor``.
        factor: downsampling factor f (a power of two: 1, 2, 4, 8, ...).
        latent_channels: channels c of the latent (c, H/f, W/f).
        channels: base width of the convolutions (doubled at each halving).
    """

    in_channels: int = 1
    image_size: int = 16
    factor: int = 2
    latent_channels: int = 2
    channels: int = 32

    def __post_init__(self) -> None:
        f = self.factor
        if not (isinstance(f, int) and f >= 1 and f & (f - 1) == 0):
            raise ValueError(f"factor must be a power of two >= 1, not {f!r}")
        if self.image_size % f:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by the factor {f}"
            )
        for name in ("in_channels", "latent_channels", "channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")

    @property
    def latent_size(self) -> int:
        """H / f."""
        return self.image_size // self.factor

    @property
    def levels(self) -> int:
        """log2 f: the number of halvings."""
        return int(math.log2(self.factor))


def _groups(c: int) -> int:
    return math.gcd(8, c)


class _Res(nn.Module):
    """GroupNorm-SiLU-conv twice, plus the input (a residual block without time)."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(_groups(c), c),
            nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=1),
            nn.GroupNorm(_groups(c), c),
            nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Autoencoder(nn.Module):
    """Encoder to q(z | x) = N(mu, diag sigma^2) and decoder z -> x.

    The encoder is a conv stem, then per halving a residual block and a stride-2
    convolution, then a residual block and a conv to 2c channels (mean and log
    variance). The decoder mirrors it with nearest-neighbour upsampling.
    """

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = cfg = config
        ch = cfg.channels
        enc: list[nn.Module] = [nn.Conv2d(cfg.in_channels, ch, 3, padding=1)]
        c = ch
        for _ in range(cfg.levels):
            enc += [_Res(c), nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)]
            c *= 2
        enc += [_Res(c), nn.GroupNorm(_groups(c), c), nn.SiLU()]
        enc += [nn.Conv2d(c, 2 * cfg.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, c, 3, padding=1)]
        dec += [_Res(c)]
        for _ in range(cfg.levels):
            dec += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c, c // 2, 3, padding=1),
                _Res(c // 2),
            ]
            c //= 2
        dec += [nn.GroupNorm(_groups(c), c), nn.SiLU()]
        dec += [nn.Conv2d(c, cfg.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def _check(self, x: Tensor) -> None:
        cfg = self.config
        want = (cfg.in_channels, cfg.image_size, cfg.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(
                f"the autoencoder takes images (B, {', '.join(map(str, want))}); "
                f"got {tuple(x.shape)}"
            )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log sigma^2) of q(z | x), each (B, c, H/f, W/f).

        The log variance is clamped to [-30, 20] as in the paper's code, so that
        exp() stays finite in float32.
        """
        self._check(x)
        mu, log_var = self.encoder(x).chunk(2, dim=1)
        return mu, log_var.clamp(-30.0, 20.0)

    def decode(self, z: Tensor) -> Tensor:
        """Images (B, C, H, W) from latents (B, c, H/f, W/f)."""
        return self.decoder(z)

    def forward(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(reconstruction of a sampled z, mu, log_var): the reparameterised pass."""
        mu, log_var = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device)
        z = mu + (0.5 * log_var).exp() * eps
        return self.decode(z), mu, log_var


def kl_standard_normal(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, diag e^log_var) || N(0, I)) per sample, summed over all but dim 0.

    Closed form (Kingma & Welling 2014, App. B):
    KL = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2).
    """
    kl = 0.5 * (mu.square() + log_var.exp() - 1.0 - log_var)
    return kl.flatten(1).sum(1)


def kl_monte_carlo(
    mu: Tensor, log_var: Tensor, n: int, generator: torch.Generator | None = None
) -> Tensor:
    """``n`` single-draw estimates (n, B) of the KL: log q(z|x) - log N(z; 0, I).

    With z = mu + sigma eps, log q(z) - log p(z) = sum_j [-log sigma_j - eps_j^2/2
    + z_j^2/2] (the 2 pi terms cancel); its mean over eps is the KL.
    """
    shape = (n, *mu.shape)
    eps = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu + (0.5 * log_var).exp() * eps
    log_ratio = -0.5 * log_var - 0.5 * eps.square() + 0.5 * z.square()
    return log_ratio.flatten(2).sum(2)
