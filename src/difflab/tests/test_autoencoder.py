"""The latent autoencoder: shapes, the KL closed form, the scale factor, checkpoints."""

import math

import pytest
import torch

from difflab.nets.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    kl_monte_carlo,
    kl_standard_normal,
)
from difflab.pipelines.autoencoder import (
    AutoencoderMismatch,
    AutoencoderRecipe,
    TrainedAutoencoder,
    latent_scale,
    load_autoencoder,
    save_autoencoder,
)


def _net(factor: int, c: int = 3, seed: int = 0) -> Autoencoder:
    torch.manual_seed(seed)
    return Autoencoder(AutoencoderConfig(1, 16, factor, c, channels=8))


@pytest.mark.parametrize("factor", [2, 4])
def test_shapes(factor):
    net = _net(factor)
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    mu, log_var = net.encode(x)
    assert mu.shape == log_var.shape == (5, 3, 16 // factor, 16 // factor)
    x_hat, mu2, _ = net(x, torch.Generator().manual_seed(0))
    assert x_hat.shape == x.shape
    torch.testing.assert_close(mu2, mu)
    assert net.decode(mu).shape == x.shape


def test_bad_shapes_and_configs():
    with pytest.raises(ValueError, match="power of two"):
        AutoencoderConfig(factor=3)
    with pytest.raises(ValueError, match="not divisible"):
        AutoencoderConfig(image_size=18, factor=4)
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
        _net(2).encode(torch.zeros(2, 1, 8, 8))


def test_kl_closed_form_matches_monte_carlo():
    """The closed form equals the mean of log q(z) - log p(z) over z ~ q.

    Tolerance: 4 Monte Carlo standard errors (std / sqrt(n)) per sample; a
    missing 1/2 (the closed form doubled) misses by far more than that.
    """
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    log_var = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    kl = kl_standard_normal(mu, log_var)
    draws = kl_monte_carlo(mu, log_var, 200_000, generator=g)
    est, se = draws.mean(0), draws.std(0) / math.sqrt(draws.shape[0])
    assert ((est - kl).abs() < 4 * se).all(), (est, kl, se)
    wrong = 2 * kl  # the 1/2 forgotten
    assert ((est - wrong).abs() > 4 * se).all()
    # And it is zero exactly at the prior.
    zero = kl_standard_normal(torch.zeros(1, 5), torch.zeros(1, 5))
    assert zero.item() == 0.0


def test_scale_factor_gives_unit_variance():
    """scale * mu has variance 1 on the batch it was fitted on (to rounding)."""
    net = _net(2).eval()
    x = torch.rand(64, 1, 16, 16) * 2 - 1
    s = latent_scale(net, x)
    with torch.no_grad():
        z = net.encode(x)[0] * s
    # The std is computed in float64 from the same float32 latents: 1 to ~1e-6.
    assert abs(z.double().std().item() - 1.0) < 1e-5


def _trained(factor: int) -> TrainedAutoencoder:
    recipe = AutoencoderRecipe("digits", AutoencoderConfig(1, 16, factor, 3, 8))
    return TrainedAutoencoder(recipe, _net(factor).eval(), 0.5, 1.0, [1.0])


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    path = tmp_path / "ae.pt"
    ae = _trained(2)
    save_autoencoder(ae, path)
    back = load_autoencoder(path, ae.recipe)
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    torch.testing.assert_close(back.encode(x), ae.encode(x))
    assert back.scale == 0.5
    other = _trained(4).recipe
    with pytest.raises(AutoencoderMismatch, match="another configuration") as err:
        load_autoencoder(path, other)
    assert "factor=2" in str(err.value) and "factor=4" in str(err.value)


def test_scale_cancels_in_the_round_trip():
    """decode(encode(x)) through the scaled latent equals the unscaled pass."""
    ae = _trained(2)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        direct = ae.net.decode(ae.net.encode(x)[0]).clamp(-1, 1)
        z = ae.encode(x)
        torch.testing.assert_close(z, ae.net.encode(x)[0] * ae.scale)
    torch.testing.assert_close(ae.decode(z), direct)


def test_resized_digits():
    from difflab.pipelines.autoencoder import resized_images

    data = resized_images("digits", 16, "test")
    assert data.images.shape[1:] == (1, 16, 16)
    assert data.images.min() >= -1 and data.images.max() <= 1
    assert "resized from 8 to 16" in data.note
    # A 2x2 average of the bilinear upsampling is the original blurred by a
    # local average: measured mean error 0.14, against 0.67 for the mean
    # absolute deviation of the pixels (what a wrong or shuffled resize gives).
    # The bound sits between the two, at half the deviation.
    back = torch.nn.functional.avg_pool2d(data.images, 2)
    orig = resized_images("digits", 8, "test").images
    spread = (orig - orig.mean()).abs().mean()
    assert (back - orig).abs().mean() < 0.5 * spread
    shuffled = back[
        torch.randperm(len(back), generator=torch.Generator().manual_seed(0))
    ]
    assert (shuffled - orig).abs().mean() > 0.5 * spread  # the check can fail


def test_dataset_latents_are_encoded_once_per_autoencoder_and_images(
    monkeypatch, tmp_path
):
    """The cached latents equal a fresh encoding to the bit; the same autoencoder and
    images (another tensor with the same values) load them without encoding; one
    changed pixel, one changed weight or another scale encodes anew."""
    from dataclasses import replace

    from difflab.pipelines.autoencoder import dataset_latents

    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path))
    encode = TrainedAutoencoder.encode_images
    calls = []

    def counted(self, images):
        calls.append(len(images))
        return encode(self, images)

    monkeypatch.setattr(TrainedAutoencoder, "encode_images", counted)
    ae = _trained(2)
    x = torch.rand(50, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = dataset_latents(ae, x)
    assert calls == [50] and torch.equal(z, encode(ae, x))
    assert torch.equal(dataset_latents(ae, x.clone()), z) and calls == [50]

    y = x.clone()
    y[7, 0, 3, 3] += 0.01  # one pixel of fifty images
    zy = dataset_latents(ae, y)
    assert len(calls) == 2 and torch.equal(zy, encode(ae, y)) and not torch.equal(zy, z)

    other = _trained(2)
    with torch.no_grad():
        next(other.net.parameters()).view(-1)[0] += 1e-3  # one weight
    zo = dataset_latents(other, x)
    assert len(calls) == 3 and torch.equal(zo, encode(other, x))
    assert not torch.equal(zo, z)

    half = replace(ae, scale=ae.scale / 2)
    assert torch.equal(dataset_latents(half, x), z / 2) and len(calls) == 4


def test_a_latent_ddpm_trains_on_the_shared_latents_of_the_resized_images(
    monkeypatch, tmp_path
):
    """The latent-diffusion page's models train on what they did before (the
    autoencoder's encoding of the images resized to its size, to the bit), now
    taken from the dataset's latents in the cache, which other models share."""
    from dataclasses import replace

    from difflab.data.images import load_images
    from difflab.pipelines import autoencoder as pa
    from difflab.pipelines.autoencoder import dataset_latents

    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path))
    ae_recipe = replace(pa.autoencoder_recipe("quick", 4, 2, "digits"), steps=3)
    recipe = pa.latent_ddpm_recipe("quick", ae_recipe, time_budget=60.0)
    recipe = replace(recipe, train=replace(recipe.train, steps=2))
    seen = []
    real_train = pa.train

    def recording(net, x, *args, **kwargs):
        seen.append(x)
        return real_train(net, x, *args, **kwargs)

    monkeypatch.setattr(pa, "train", recording)
    trained = pa.train_latent_ddpm(recipe, device="cpu")
    ae = trained.autoencoder
    before = ae.encode(pa.resized_images("digits", ae_recipe.net.image_size).images)
    assert len(seen) == 1 and torch.equal(seen[0], before)

    def no_encoding(self, images):
        raise AssertionError("the latents were not in the cache")

    monkeypatch.setattr(TrainedAutoencoder, "encode_images", no_encoding)
    assert torch.equal(dataset_latents(ae, load_images("digits").images), before)
