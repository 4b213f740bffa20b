"""The noise-aware classifier of classifier guidance: its recipe, training and cache.

Dhariwal & Nichol (2021, Sec. 4.1) train the classifier p_phi(y | x_t, t) on
x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps at a time t drawn
uniformly, with the diffusion model's own schedule, by cross-entropy. That is
what :func:`train_noisy_classifier` does (with small random shifts of x_0, as
the metric classifier is trained), caching the result with
:func:`difflab.runtime.cache.cached` so a rebuild trains nothing.

Time is continuous, t_n = (n + 1) / T for the DDPM index n
(:class:`difflab.diffusion.noise.DiscreteNoise`), the time the guided samplers
of the noise interface pass to the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.core.optim import adam
from difflab.data.images import load_images
from difflab.diffusion.schedules import Schedule, make_schedule
from difflab.nets.noisy_classifier import NoisyClassifier, NoisyClassifierConfig
from difflab.pipelines.autoencoder import (
    AutoencoderRecipe,
    dataset_latents,
    train_autoencoder,
)
from difflab.runtime.cache import cached
from difflab.runtime.profiles import current_profile

# What a trained noisy classifier depends on: this module (its training code), the
# network, the data loaders and the schedules.
DEPS = (
    "difflab.pipelines.noisy_classifier",
    "difflab.nets.noisy_classifier",
    "difflab.data.images",
    "difflab.diffusion.schedules",
    "difflab.pipelines.autoencoder",
)


@dataclass(frozen=True)
class NoisyClassifierRecipe:
    """How the noise-aware classifier is trained (its cache key).

    ``schedule`` and ``T`` must be those of the diffusion model it guides;
    ``autoencoder``, that of a latent diffusion model: the classifier then reads
    noisy scaled latents of the images (no random shifts: a latent pixel is four
    image pixels), as the guided model's samples are latents until decoded.
    """

    dataset: str
    config: NoisyClassifierConfig
    schedule: str = "linear"
    T: int = 1000
    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    autoencoder: AutoencoderRecipe | None = None


def noisy_classifier_recipe(
    dataset: str,
    *,
    schedule: str = "linear",
    T: int = 1000,
    profile: str | None = None,
    autoencoder: AutoencoderRecipe | None = None,
) -> NoisyClassifierRecipe:
    """The recipe for ``dataset`` ("digits", "mnist", ...) in ``profile``, on the
    pixels or on the scaled latents of ``autoencoder``.

    quick: width 16, 1500 steps (8x8 digits, under a minute on two CPU cores);
    full: width 32, 4000 steps (MNIST on a GPU).
    """
    data = load_images(dataset, split="test")
    quick = (profile or current_profile()) == "quick"
    channels, size = data.channels, data.image_size
    if autoencoder is not None:
        channels, size = autoencoder.net.latent_channels, autoencoder.net.latent_size
    cfg = NoisyClassifierConfig(
        in_channels=channels,
        image_size=size,
        num_classes=data.num_classes,
        width=16 if quick else 32,
    )
    return NoisyClassifierRecipe(
        data.name, cfg, schedule, T, steps=1500 if quick else 4000,
        autoencoder=autoencoder,
    )  # fmt: skip


def noisy_batch(
    schedule: Schedule, x0: Tensor, n: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """x_t = sqrt(alpha_bar_n) x0 + sqrt(1 - alpha_bar_n) eps and t_n = (n + 1) / T.

    Ho et al. 2020, Eq. 4; ``n`` (B,) are DDPM indices, ``eps`` is drawn on the
    generator's device. Returns x_t (like x0) and t (B,) in x0's dtype.
    """
    ab = schedule.alpha_bar.to(x0.device)[n.to(x0.device)].to(x0.dtype)
    ab = ab.view(-1, *([1] * (x0.ndim - 1)))
    dev = generator.device if generator is not None else x0.device
    eps = torch.randn(x0.shape, generator=generator, device=dev).to(x0)
    t = (n.to(x0.device, x0.dtype) + 1) / schedule.T
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t


def train_noisy_classifier(
    recipe: NoisyClassifierRecipe,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[NoisyClassifier, bool]:
    """The trained classifier of ``recipe`` (from the cache if there) and whether
    it came from the cache.

    Each step draws a batch, a DDPM index n uniform in 0..T-1 per image, noises
    the (randomly shifted) images to x_t and takes an AdamW step on the
    cross-entropy of p_phi(y | x_t, t_n) (Dhariwal & Nichol 2021, Sec. 4.1).
    """
    schedule = make_schedule(recipe.schedule, recipe.T)

    def build(path) -> dict:
        from difflab.core.progress import tqdm

        net = NoisyClassifier(recipe.config).to(device)
        data = load_images(recipe.dataset, split="train")
        images, labels = data.images, data.labels.to(device)
        size, pad = data.image_size, max(1, data.image_size // 8)
        if recipe.autoencoder is not None:
            ae = train_autoencoder(recipe.autoencoder, device)
            net_cfg = recipe.autoencoder.net
            images = dataset_latents(ae, images)
            size, pad = net_cfg.latent_size, 0
        images = images.to(device)
        gen = torch.Generator(device).manual_seed(recipe.seed)
        opt = adam(
            net.parameters(),
            lr=recipe.lr,
            decoupled=True,
            weight_decay=recipe.weight_decay,
        )
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, recipe.lr, total_steps=recipe.steps
        )
        losses = []
        for _ in tqdm(range(recipe.steps), disable=not progress, desc="noisy clf"):
            idx = torch.randint(
                len(images), (recipe.batch_size,), device=device, generator=gen
            )
            x0 = F.pad(images[idx], (pad,) * 4, value=-1.0)  # pad 0: as it is
            dx, dy = torch.randint(
                0, 2 * pad + 1, (2,), generator=gen, device=device
            ).tolist()
            x0 = x0[:, :, dy : dy + size, dx : dx + size]
            n = torch.randint(
                recipe.T, (recipe.batch_size,), device=device, generator=gen
            )
            x_t, t = noisy_batch(schedule, x0, n, gen)
            loss = F.cross_entropy(net(x_t, t), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        return {"net": net.state_dict(), "losses": losses}

    def load(state: dict) -> NoisyClassifier:
        net = NoisyClassifier(recipe.config).to(device)
        net.load_state_dict(state["net"])
        return net.eval()

    return cached(
        "noisy-classifier", recipe, deps=DEPS, build=build, load=load, device=device
    )


@torch.no_grad()
def accuracy_by_noise(
    net: NoisyClassifier,
    images: Tensor,
    labels: Tensor,
    schedule: Schedule,
    indices: list[int],
    generator: torch.Generator | None = None,
) -> list[tuple[float, float]]:
    """Accuracy and its binomial standard error sqrt(p (1 - p) / N) at each index n.

    Every image is noised once to x_{t_n} with fresh noise from ``generator``.
    """
    out = []
    for n in indices:
        nn_ = torch.full((len(images),), n, dtype=torch.long)
        x_t, t = noisy_batch(schedule, images, nn_, generator)
        p = float((net(x_t, t).argmax(1).cpu() == labels.cpu()).double().mean())
        out.append((p, (p * (1 - p) / len(images)) ** 0.5))
    return out
