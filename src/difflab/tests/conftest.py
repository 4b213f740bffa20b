"""Core tests run on small tensors, where one thread beats two (and avoids contention)."""

from dataclasses import replace

import pytest
import torch

from difflab.core.memory import keep_freed_memory

torch.set_num_threads(1)
keep_freed_memory()  # the same results, faster CPU loops


@pytest.fixture
def small_latent(monkeypatch, tmp_path):
    """The quick mnist recipe on the embedded digits (padded 8 -> 16, a factor-2
    autoencoder: 4x8x8 latents), two steps of each part, in a fresh cache."""
    from difflab.pipelines import recipes  # only the tests that train import it

    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DIFFLAB_DATASET", raising=False)
    r = recipes.get_recipe("mnist", "quick")
    ae = replace(
        r.autoencoder,
        dataset="digits",
        net=replace(r.autoencoder.net, image_size=16, factor=2),
        steps=2,
    )
    return replace(
        r,
        dataset="digits",
        autoencoder=ae,
        train=replace(r.train, steps=2, warmup=1, checkpoint_every=2, log_every=1),
        T=50,
    )
