"""Cached training of the stage-1 generative models (the VAE and the GANs).

The models and their training loops live in :mod:`difflab.foundations`; this module
only keeps their trained weights in the cache.
"""

from __future__ import annotations

from dataclasses import asdict

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
from difflab.train.cache import checkpoint_path
from difflab.train.checkpoint import load_checkpoint, save_checkpoint


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
    path = checkpoint_path("vae", config)
    if path.is_file():
        state = load_checkpoint(path)
        if state.get("done") and state.get("config") == asdict(config):
            model = VAE(config)
            model.load_state_dict(state["model"])
            return model.to(device).eval(), list(state["history"])
    if images is None:
        raise ValueError(f"No cached VAE at {path}; pass the training images.")
    model, history = train_vae(config, images, device=device, progress=progress)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(
        {"done": True, "config": asdict(config), "model": state, "history": history},
        path,
    )
    return model, history


def pretrained_gan(
    config: GANConfig,
    images: Tensor | None = None,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[Generator, Discriminator, dict[str, list[float]]]:
    """The DCGAN of ``config`` from the cache, trained (and cached) if not there."""
    path = checkpoint_path("gan", config)
    if path.is_file():
        state = load_checkpoint(path)
        if state.get("done") and state.get("config") == asdict(config):
            G, D = Generator(config), Discriminator(config)
            G.load_state_dict(state["G"])
            D.load_state_dict(state["D"])
            return G.to(device).eval(), D.to(device).eval(), state["history"]
    if images is None:
        raise ValueError(f"No cached GAN at {path}; pass the training images.")
    G, D, history = train_gan(config, images, device=device, progress=progress)
    cpu = lambda m: {k: v.detach().cpu() for k, v in m.state_dict().items()}  # noqa: E731
    save_checkpoint(
        {
            "done": True,
            "config": asdict(config),
            "G": cpu(G),
            "D": cpu(D),
            "history": history,
        },
        path,
    )
    return G, D, history


def pretrained_ring_gan(
    config: RingGANConfig, *, every: int = 250, progress: bool = True
) -> tuple[nn.Module, dict[str, list]]:
    """:func:`train_ring_gan` through the cache (the key holds ``every`` too)."""
    path = checkpoint_path("ring-gan", (config, every))
    if path.is_file():
        state = load_checkpoint(path)
        if state.get("done") and state.get("config") == asdict(config):
            G = mlp(config.latent_dim, 2, config.hidden)
            G.load_state_dict(state["G"])
            return G.eval(), state["history"]
    G, history = train_ring_gan(config, every=every, progress=progress)
    save_checkpoint(
        {
            "done": True,
            "config": asdict(config),
            "G": G.state_dict(),
            "history": history,
        },
        path,
    )
    return G, history
