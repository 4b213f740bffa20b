"""Latent recipes (``Recipe.autoencoder``): the MNIST project's laptop recipe."""

from __future__ import annotations

import pytest
import torch

from difflab.pipelines import recipes
from difflab.pipelines.autoencoder import fit_images, unfit_images


def test_pad_fit_is_undone_exactly_and_resize_is_not_a_pad():
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    padded = fit_images(x, 32, "pad")
    assert padded.shape == (3, 1, 32, 32)
    assert torch.equal(padded[..., :2, :], torch.full_like(padded[..., :2, :], -1.0))
    assert torch.equal(unfit_images(padded, 28, "pad"), x)
    resized = fit_images(x, 32, "resize")
    assert not torch.equal(unfit_images(resized, 28, "pad"), x)
    with pytest.raises(ValueError, match="evenly"):
        fit_images(x, 31, "pad")


def test_the_mnist_recipe_is_latent_conditional_and_its_full_profile_is_pixels():
    quick, full = (
        recipes.get_recipe("mnist", "quick"),
        recipes.get_recipe("mnist", "full"),
    )
    assert quick.autoencoder is not None and quick.conditional
    assert quick.autoencoder.fit == "pad" and quick.train.prediction == "v"
    assert full.autoencoder is None and full.conditional and full.dataset == "mnist"
    deps = recipes.recipe_deps(quick)
    assert "difflab.pipelines.autoencoder" in deps
    assert "difflab.pipelines.autoencoder" not in recipes.recipe_deps(full)


def test_a_latent_recipe_trains_two_steps_and_samples_images_at_the_data_size(
    small_latent,
):
    trained = recipes.load_or_train(small_latent, progress=False)
    assert trained.recipe.unet.in_channels == 4  # fitted to the latent
    assert trained.recipe.unet.image_size == 8  # 16 / factor 2
    assert trained.autoencoder is not None and trained.image_size == 8
    g = torch.Generator().manual_seed(0)
    labels = {"y": torch.tensor([3, 7])}
    x = trained.sample(2, steps=3, cond=labels, guidance=2.0, generator=g)
    assert x.shape == (2, 1, 8, 8)
    assert x.min() >= -1 and x.max() <= 1
    # the samples are the decoded DDIM latents (x0 not clipped), cut back to 8x8
    from difflab.diffusion.guidance import guided
    from difflab.diffusion.samplers import ddim_sample, ddim_timesteps

    g2 = torch.Generator().manual_seed(0)
    z_T = trained.noise(2, g2)
    assert z_T.shape == (2, 4, 8, 8)
    eps = guided(trained.eps_model(), 2.0, trained.recipe.train.null_cond)
    taus = ddim_timesteps(trained.schedule.T, 3)
    z = ddim_sample(eps, z_T, trained.schedule, taus, cond=labels, progress=False)
    by_hand = unfit_images(trained.autoencoder.decode(z), 8, "pad")
    torch.testing.assert_close(x, by_hand.clamp(-1, 1))
    again = recipes.load_or_train(small_latent, progress=False)
    assert again.from_cache
    y = again.sample(
        2,
        steps=3,
        cond=labels,
        guidance=2.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(x, y)
