"""A dataset's scaled latents, encoded once and kept in the cache.

Several models train on the latents of the same images under the same autoencoder:
with MNIST present, the conditioning page's model and its noisy classifier, and the
flow-matching page's diffusion, flow-matching and reflow networks, and the
latent-diffusion page's own model all encode the 60,000 training images with that
page's factor-4 autoencoder (6.6 s each on one Zen 5 core, 2026-12-07). :func:`dataset_latents` encodes them once and
stores the latents at ``<cache>/latents/<key>.pt``.

The key hashes the autoencoder's recipe, its weights and scale, and the images'
bytes, shape and dtype (SHA-256; 0.1 s for MNIST's 188 MB), not the recipe alone:
a retrained autoencoder or other images never reach an old entry. What comes back
is, to the bit, what ``ae.encode_images(images)`` returned when the entry was made
on this machine, so a model trained on cached latents is the model trained on fresh
ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from difflab.pipelines.autoencoder import AutoencoderRecipe, TrainedAutoencoder
from difflab.runtime.cache import CacheNotWritable, cached


@dataclass(frozen=True)
class LatentsOf:
    """What a dataset's latents are a function of (the cache key's content)."""

    autoencoder: AutoencoderRecipe
    weights: str  # SHA-256 of the autoencoder's state and scale
    images: str  # SHA-256 of the images' shape, dtype and bytes


def _hash_tensor(h, t: Tensor) -> None:
    """Feed ``t``'s shape, dtype and bytes to the hash ``h``."""
    t = t.detach().cpu().contiguous()
    h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())


def tensor_digest(t: Tensor) -> str:
    """SHA-256 of a tensor's shape, dtype and values."""
    h = hashlib.sha256()
    _hash_tensor(h, t)
    return h.hexdigest()


def weights_digest(ae: TrainedAutoencoder) -> str:
    """SHA-256 of the autoencoder's scale and its parameters and buffers, by name."""
    state = ae.net.state_dict()
    h = hashlib.sha256(repr(float(ae.scale)).encode())
    for name in sorted(state):
        h.update(name.encode() + b"\0")
        _hash_tensor(h, state[name])
    return h.hexdigest()


def dataset_latents(ae: TrainedAutoencoder, images: Tensor) -> Tensor:
    """``ae.encode_images(images)`` (scaled latents, on the CPU), from the cache if
    the same autoencoder has encoded the same images before; encoded now otherwise,
    and stored. Where the cache folder cannot be written, encoded without storing.
    """
    key = LatentsOf(ae.recipe, weights_digest(ae), tensor_digest(images))
    try:
        z, _ = cached(
            "latents",
            key,
            deps=(__name__,),
            build=lambda path: {"latents": ae.encode_images(images)},
            load=lambda state: state["latents"],
        )
    except CacheNotWritable:
        return ae.encode_images(images)
    return z
