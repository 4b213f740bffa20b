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


def test_the_cifar10_recipe_is_latent_conditional_and_its_full_profile_is_pixels():
    quick, full = (
        recipes.get_recipe("cifar10", "quick"),
        recipes.get_recipe("cifar10", "full"),
    )
    assert quick.autoencoder is not None and quick.conditional
    assert quick.autoencoder.net.in_channels == 3 and quick.train.prediction == "v"
    assert quick.autoencoder.dataset == quick.dataset == "cifar10"
    assert full.autoencoder is None and full.dataset == "cifar10"
    assert full.unet == recipes.get_recipe("ddpm-cifar10", "full").unet


def _tiny_cifar(root, per_class: int = 2) -> None:
    """A CIFAR-10 PNG tree (``CIFAR10/train/<class>/``) of random 32x32 images."""
    from PIL import Image

    from difflab.data.images import CIFAR10_CLASSES

    g = torch.Generator().manual_seed(0)
    for name in CIFAR10_CLASSES:
        folder = root / "CIFAR10" / "train" / name
        folder.mkdir(parents=True)
        for k in range(per_class):
            px = torch.randint(0, 256, (32, 32, 3), generator=g, dtype=torch.uint8)
            Image.fromarray(px.numpy()).save(folder / f"{k}.png")


def test_the_cifar10_recipe_trains_two_steps_and_samples_at_batch_2(
    monkeypatch, tmp_path
):
    """The smoke test of the CIFAR-10 laptop recipe as it is (its autoencoder and
    UNet at their sizes), two steps of each part, on a tiny PNG tree."""
    from dataclasses import replace

    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DIFFLAB_DATA", str(tmp_path / "data"))
    _tiny_cifar(tmp_path / "data")
    r = recipes.get_recipe("cifar10", "quick")
    r = replace(
        r,
        autoencoder=replace(r.autoencoder, steps=2, batch_size=4),
        train=replace(
            r.train, steps=2, batch_size=4, warmup=1, checkpoint_every=2, log_every=1
        ),
    )
    trained = recipes.load_or_train(r, progress=False)
    assert trained.recipe.unet.in_channels == r.autoencoder.net.latent_channels
    assert trained.recipe.unet.image_size == 32 // r.autoencoder.net.factor
    g = torch.Generator().manual_seed(0)
    x = trained.sample(
        2, nfe=3, cond={"y": torch.tensor([1, 8])}, guidance=2.0, generator=g
    )
    assert x.shape == (2, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert torch.isfinite(x).all()


def test_bench_laptop_skips_a_dataset_that_is_not_there(monkeypatch, tmp_path, capsys):
    """``bench laptop`` trains nothing for a missing dataset: it says so, with the
    command that fetches it, and goes on."""
    from difflab.eval.bench_laptop import bench_laptop

    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("DIFFLAB_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    assert bench_laptop(only="cifar10", progress=False) == []
    out = capsys.readouterr().out
    assert "cifar10: skipped" in out and "download-datasets.sh cifar10" in out
    assert not (tmp_path / "cache").exists()


def test_the_mnist_latent_recipes_share_the_latent_pages_autoencoder():
    """mnist-latent (flow matching) and mnist-latent-cond (conditioning) work on the
    latents of the latent-diffusion page's f = 4 MNIST autoencoder (one cache
    entry for the three pages), and differ only as ddpm-cond differs from ddpm."""
    from difflab.pipelines.autoencoder import autoencoder_recipe

    shared = autoencoder_recipe("quick", 4, 2, "mnist")
    plain = recipes.get_recipe("mnist-latent", "quick")
    cond = recipes.get_recipe("mnist-latent-cond", "quick")
    assert plain.autoencoder == shared == cond.autoencoder
    assert (plain.unet.in_channels, plain.unet.image_size) == (2, 8)
    assert not plain.conditional and cond.conditional
    assert cond.unet.num_classes == 10 and cond.train.cond_drop == 0.1
    ddpm, ddpm_cond = (
        recipes.get_recipe("ddpm", "quick"),
        recipes.get_recipe("ddpm-cond", "quick"),
    )
    assert cond.train.null_cond == ddpm_cond.train.null_cond
    assert plain.train == ddpm.train  # the ddpm recipe's budget


def test_a_noisy_classifier_of_a_latent_model_reads_its_latents():
    from difflab.pipelines.autoencoder import autoencoder_recipe
    from difflab.pipelines.noisy_classifier import noisy_classifier_recipe

    ae = autoencoder_recipe("quick", 2, 2, "digits")  # 16x16 -> 2x8x8
    r = noisy_classifier_recipe("digits", profile="quick", autoencoder=ae)
    assert (r.config.in_channels, r.config.image_size) == (2, 8)
    assert r.autoencoder == ae
    pixels = noisy_classifier_recipe("digits", profile="quick")
    assert (pixels.config.in_channels, pixels.config.image_size) == (1, 8)
    assert pixels.autoencoder is None and pixels != r  # two cache entries
