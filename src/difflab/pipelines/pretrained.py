"""Cached training of the stage-1 generative models (the VAE and the GANs).

The models and their training loops live in :mod:`difflab.foundations`; this module
only keeps their trained weights in the cache (:func:`difflab.runtime.cache.cached`),
keyed by the config and the source of the model's module.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from difflab.foundations.gan import (
    Discriminator,
    GANConfig,
    Generator,
    RingGANConfig,
    mlp,
    train_gan,
    train_ring_gan,
)
from difflab.foundations.vae import VAE, VAEConfig, train_vae
from difflab.runtime.cache import cached

VAE_DEPS = ("difflab.foundations.vae",)
GAN_DEPS = ("difflab.foundations.gan",)


def _cpu(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def pretrained_vae(
    config: VAEConfig,
    images: Tensor | None = None,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[VAE, list[float]]:
    """The VAE of ``config`` from the cache, trained (and cached) if not there yet.

    Args:
        images: the training images of ``config.dataset``; needed only to train.
    """

    def build(path) -> dict:
        if images is None:
            raise ValueError(f"No cached VAE at {path}; pass the training images.")
        model, history = train_vae(config, images, device=device, progress=progress)
        return {"model": _cpu(model), "history": history}

    def load(state: dict) -> tuple[VAE, list[float]]:
        model = VAE(config)
        model.load_state_dict(state["model"])
        return model.to(device).eval(), list(state["history"])

    return cached("vae", config, deps=VAE_DEPS, build=build, load=load)[0]


def pretrained_gan(
    config: GANConfig,
    images: Tensor | None = None,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[Generator, Discriminator, dict[str, list[float]]]:
    """The DCGAN of ``config`` from the cache, trained (and cached) if not there."""

    def build(path) -> dict:
        if images is None:
            raise ValueError(f"No cached GAN at {path}; pass the training images.")
        G, D, history = train_gan(config, images, device=device, progress=progress)
        return {"G": _cpu(G), "D": _cpu(D), "history": history}

    def load(state: dict) -> tuple[Generator, Discriminator, dict]:
        G, D = Generator(config), Discriminator(config)
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        return G.to(device).eval(), D.to(device).eval(), state["history"]

    return cached("gan", config, deps=GAN_DEPS, build=build, load=load)[0]


def pretrained_ring_gan(
    config: RingGANConfig, *, every: int = 250, progress: bool = True
) -> tuple[nn.Module, dict[str, list]]:
    """:func:`train_ring_gan` through the cache (the key holds ``every`` too)."""

    def build(path) -> dict:
        G, history = train_ring_gan(config, every=every, progress=progress)
        return {"G": _cpu(G), "history": history}

    def load(state: dict) -> tuple[nn.Module, dict]:
        G = mlp(config.latent_dim, 2, config.hidden)
        G.load_state_dict(state["G"])
        return G.eval(), state["history"]

    key = (config, every)
    return cached("ring-gan", key, deps=GAN_DEPS, build=build, load=load)[0]
