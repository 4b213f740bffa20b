"""Named recipes: every trained diffusion model the site shows, as a frozen config.

Each recipe has two profiles: ``quick`` (the CPU default: small net, few steps, the
embedded 8x8 digits) and ``full`` (the GPU default: the real dataset at full
resolution). ``DIFFLAB_PROFILE`` picks the profile, ``DIFFLAB_DATASET`` the data.
:func:`load_or_train` caches the trained checkpoint (:func:`difflab.runtime.cache.cached`)
under a key made of the recipe and the source of the modules training depends on
(:data:`DEPS`), so an unchanged rebuild trains nothing.

Training a recipe is reproducible to the bit on a given device: the initial
weights come from the recipe's seed (:func:`init_net`), not from torch's global
random state, and every later draw from generators the loop seeds and saves. The
number of processes (``torchrun``) is part of the recipe, so a run on two
processes, whose batches differ, is cached apart from a run on one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from difflab.core import cond as conds
from difflab.core.cond import Cond, NullCond
from difflab.core.models import EpsModel
from difflab.data.images import ImageData, load_images
from difflab.diffusion.parameterization import as_eps_model
from difflab.diffusion.schedules import Schedule, make_schedule
from difflab.nets.autoencoder import AutoencoderConfig
from difflab.nets.unet import UNet, UNetConfig, ddpm_cifar10_config
from difflab.pipelines import sampling
from difflab.pipelines.autoencoder import (
    AutoencoderRecipe,
    TrainedAutoencoder,
    autoencoder_here,
    autoencoder_recipe,
    dataset_latents,
    train_autoencoder,
)
from difflab.runtime.cache import cached, entry
from difflab.runtime.checkpoint import (
    CheckpointError,
    load_checkpoint,
    restore,
    unreadable,
)
from difflab.runtime.device import bf16_as_run, default_device
from difflab.runtime.profiles import PROFILES, current_profile
from difflab.train.loop import TrainConfig, TrainResult, train


@dataclass(frozen=True)
class Recipe:
    """A diffusion model to train: data, network, schedule and optimisation.

    ``conditional``: trained on ``{"y": labels}``; condition dropout and the null
    condition are ``train.cond_drop`` and ``train.null_cond``. ``world_size``: the
    number of training processes (``torchrun``), each drawing
    ``train.batch_size // world_size`` images a step; :func:`load_or_train` sets it.
    ``autoencoder``: latent diffusion (Rombach et al. 2022): the UNet models the
    scaled latents of this autoencoder (trained first, cached on its own), and
    :meth:`Trained.sample` decodes them; None: the UNet models the pixels.
    """

    name: str
    profile: str
    dataset: str  # "digits", "mnist", "cifar10" or "auto" (MNIST if downloaded)
    unet: UNetConfig
    train: TrainConfig
    schedule: str = "linear"
    T: int = 1000
    conditional: bool = False
    description: str = ""
    world_size: int = 1
    autoencoder: AutoencoderRecipe | None = None


def _ddpm(profile: str) -> Recipe:
    if profile == "quick":  # 0.16M parameters: about 2 minutes on two idle CPU cores
        return Recipe(
            "ddpm",
            profile,
            "digits",
            UNetConfig(
                in_channels=1,
                image_size=8,
                channels=16,
                channel_mult=(1, 2),
                num_res_blocks=1,
            ),
            TrainConfig(
                steps=1000,
                batch_size=128,
                lr=3e-3,
                warmup=50,
                ema_decay=0.995,
                checkpoint_every=200,
            ),
            description="Unconditional DDPM on the 8x8 digits.",
        )
    return Recipe(  # MNIST at 28x28 in a couple of GPU minutes
        "ddpm",
        profile,
        "auto",
        UNetConfig(
            in_channels=1,
            image_size=28,
            channels=64,
            channel_mult=(1, 2, 2),
            num_res_blocks=2,
            attn_resolutions=(7,),
            head_dim=64,
        ),
        TrainConfig(
            steps=6000,
            batch_size=256,
            lr=1e-3,
            warmup=200,
            ema_decay=0.999,
            checkpoint_every=1000,
            compile=True,
        ),
        description="Unconditional DDPM on MNIST (the digits if MNIST is absent).",
    )


def _with_labels(base: Recipe, name: str, description: str) -> Recipe:
    """``base`` made class-conditional (10 classes) with label dropout of 0.1 for
    classifier-free guidance, the null label 10."""
    return replace(
        base,
        name=name,
        conditional=True,
        unet=replace(base.unet, num_classes=10),
        train=replace(base.train, cond_drop=0.1, null_cond=NullCond((("y", 10),))),
        description=description,
    )


def _ddpm_cond(profile: str) -> Recipe:
    return _with_labels(
        _ddpm(profile),
        "ddpm-cond",
        "Class-conditional DDPM with label dropout for classifier-free guidance.",
    )


def _ddpm_cifar10(profile: str) -> Recipe:
    if profile == "quick":
        return Recipe(
            "ddpm-cifar10",
            profile,
            "cifar10",
            UNetConfig(
                in_channels=3,
                image_size=32,
                channels=32,
                channel_mult=(1, 2, 2),
                num_res_blocks=1,
            ),
            TrainConfig(steps=300, batch_size=64, lr=1e-3, warmup=50, ema_decay=0.99),
            description="A tiny CIFAR-10 DDPM (a smoke test on CPU).",
        )
    return Recipe(
        "ddpm-cifar10",
        profile,
        "cifar10",
        ddpm_cifar10_config(),
        TrainConfig(
            steps=50_000,
            batch_size=128,
            lr=2e-4,
            warmup=5000,
            ema_decay=0.9999,
            checkpoint_every=2000,
            compile=True,
        ),
        description="The DDPM CIFAR-10 network (35.7M parameters), Ho et al. 2020.",
    )


def _laptop_train(steps: int) -> TrainConfig:
    """How the project pages' laptop recipes train their UNet on latents: v on the
    cosine schedule (the recipe's), an EMA of 0.995, label dropout for guidance,
    and bf16 autocast on a CPU that does bf16 in hardware (CIFAR-10's UNet step
    1.7x faster there; :func:`difflab.runtime.device.native_cpu_bf16`)."""
    return TrainConfig(
        steps=steps,
        batch_size=128,
        lr=2e-3,
        warmup=100,
        ema_decay=0.995,
        prediction="v",
        cond_drop=0.1,
        null_cond=NullCond((("y", 10),)),
        checkpoint_every=500,
        cpu_amp=True,
    )


def _mnist(profile: str) -> Recipe:
    """The MNIST project's recipe: class-conditional, with guidance at sampling.

    quick (a laptop): latent diffusion. A factor-4 autoencoder (MNIST padded to
    32x32, 4x8x8 latents, 64k parameters, 500 steps) and a 0.65M-parameter
    UNet on its latents with v-prediction on the cosine schedule, 1,200 steps of
    batch 128: about 2 minutes on one Zen 5 core in bf16 (autoencoder about 35 s,
    UNet 0.075 s a step). The UNet trained 2,000 steps until 2026-12-07; on that
    core, with the MNIST page's three seeds of 500 samples (w = 2, DDIM 50 steps,
    the autoencoder of 1,500 steps), the Frechet distance sat on the floor (0.116
    +- 0.018) at every length tried, from 800 to 2,000 steps, while the confident
    fraction rose with the steps: 93.9 +- 0.8% at 800, 96.1 +- 1.0% at 1,000, 97.6
    +- 0.5% at 1,200, 98.3 +- 0.4% at 1,500, 98.9 +- 0.3% at 2,000 (real test
    images: 96.1%). The autoencoder trained 1,500 steps until 2026-12-07; with the
    1,200-step UNet, measured the same way, 500 steps scored 0.109 +- 0.003 and
    97.9 +- 0.3% confident, 750 steps 0.115 +- 0.005 and 97.7 +- 0.3%, 1,500 steps
    0.101 +- 0.005 and 97.6 +- 0.5% (paired over the seeds, 500 against 1,500:
    +0.007 +- 0.002 in distance, well inside the floor's spread, +0.3 +- 0.4
    points confident), for a third of its cost. Chosen by measurement on
    real MNIST (one CPU thread, five minutes of UNet training each, 1,000 DDIM
    samples, the confident fraction of the metric classifier): pixel-space
    training gets about 200 steps in that time (the MNIST page's old recipe,
    blobs); on these latents eps-prediction on the linear schedule gave 18%
    confident, v on cosine 56% (EMA 0.999) and 69% (EMA 0.995), and the same
    conditioned on the label 83% at w = 1 and 99% at w = 2. Against the
    conditional pixel recipe ``ddpm-cond`` for the same wall-clock time
    (``bench laptop``, w = 2 for both, 1,000 samples, 2026-12-06): with one thread
    and 540 s, Frechet distance 0.12 +- 0.03 against 0.31 +- 0.04 (floor 0.04) and
    99.1% confident against 78.7%; with two threads and 600 s, 0.12 +- 0.03 against
    0.07 +- 0.03 and 99.5% against 94.7%.
    full (a GPU): the conditional pixel DDPM at 28x28 of ``ddpm-cond``.
    """
    if profile != "quick":
        return replace(
            _ddpm_cond(profile),
            name="mnist",
            dataset="mnist",
            description="Class-conditional DDPM on MNIST at 28x28 (pixels).",
        )
    ae = AutoencoderRecipe(
        "mnist",
        AutoencoderConfig(1, 32, 4, 4, channels=8),
        steps=500,
        batch_size=64,
        lr=2e-3,
        fit="pad",
        amp=True,
    )
    return Recipe(
        "mnist",
        profile,
        "mnist",
        UNetConfig(
            in_channels=4,
            image_size=8,
            channels=32,
            channel_mult=(1, 2),
            num_res_blocks=1,
            num_classes=10,
        ),
        _laptop_train(steps=1200),
        schedule="cosine",
        conditional=True,
        autoencoder=ae,
        description="Class-conditional latent DDPM on MNIST (a CPU laptop's recipe).",
    )


def _mnist_latent(profile: str) -> Recipe:
    """The ``ddpm`` recipe's UNet and budget on MNIST's latents, unconditional.

    The flow-matching page's diffusion model when MNIST is present, beside flow
    matching and reflow trained on the same latents with the same network
    (:func:`difflab.pipelines.frontier.load_or_train_flow`). The latents are those
    of the latent-diffusion page's factor-4 autoencoder (MNIST resized to 32x32,
    2x8x8 latents; :func:`difflab.pipelines.autoencoder.autoencoder_recipe`,
    shared through the cache), so the UNet works on an 8x8 grid, as the ``ddpm``
    quick recipe does on the 8x8 digits. full: the same on the full profile's
    autoencoder (2x16x16 latents) with the ``ddpm`` full recipe's UNet and budget.
    """
    base = _ddpm(profile)
    ae = autoencoder_recipe(profile, 4 if profile == "quick" else 2, 2, "mnist")
    return replace(
        base,
        name="mnist-latent",
        dataset="mnist",
        unet=replace(
            base.unet,
            in_channels=ae.net.latent_channels,
            image_size=ae.net.latent_size,
            # full: attention at half the latent's size, as 7 is for 28x28 pixels
            attn_resolutions=(ae.net.latent_size // 2,)
            if base.unet.attn_resolutions
            else (),
        ),
        autoencoder=replace(ae, dataset="mnist"),
        description="Unconditional latent DDPM on MNIST (the flow-matching page's).",
    )


def _mnist_latent_cond(profile: str) -> Recipe:
    """``mnist-latent`` made class-conditional with label dropout, as ``ddpm-cond``
    is made from ``ddpm``: the conditioning page's model when MNIST is present."""
    return _with_labels(
        _mnist_latent(profile),
        "mnist-latent-cond",
        "Class-conditional latent DDPM on MNIST with label dropout for "
        "classifier-free guidance (the conditioning page's).",
    )


def _cifar10(profile: str) -> Recipe:
    """The CIFAR-10 project's recipe: class-conditional, with guidance at sampling.

    quick (a laptop): latent diffusion, as the MNIST project's recipe. A factor-2
    autoencoder (32x32 colour images to 16x16x4 latents) and a UNet on its latents
    with v-prediction on the cosine schedule, conditioned on the class with label
    dropout for classifier-free guidance; both trained within ten minutes on two
    CPU cores. Against the pixel recipe the page trained before
    (``ddpm-cifar10``'s quick profile), trained for the same ten minutes
    (``python -m difflab bench laptop``, 1,000 samples each, w = 2): on two cores
    of an AMD EPYC, 2026-12-07, this recipe in bf16 and the pixel one in float32,
    Frechet distance 0.78 +- 0.07 against 2.24 +- 0.10 (floor 0.14), 3.24 +- 0.31
    times closer to the floor; on two Xeon cores, 2026-12-06, both in float32 and
    with the metric classifier of before, 1.09 +- 0.08 against 2.83 +- 0.11 (floor
    0.19), 2.94 +- 0.26 times. A factor-4 autoencoder to 8x8x8 latents (this
    recipe before) gave only 1.60 +- 0.14 in that first bench: its reconstructions
    of 1,000 test images were at a distance of 1.0, the factor-2 one's at 0.03.
    full (a GPU): the DDPM CIFAR-10 network of ``ddpm-cifar10`` (35.7M
    parameters, Ho et al. 2020), unconditional, in pixels.
    """
    if profile != "quick":
        return replace(
            _ddpm_cifar10(profile),
            name="cifar10",
            description="The DDPM CIFAR-10 network in pixels (a GPU's recipe).",
        )
    ae = AutoencoderRecipe(
        "cifar10",
        AutoencoderConfig(
            3, 32, CIFAR_FACTOR, CIFAR_LATENT_CHANNELS, channels=CIFAR_AE_CHANNELS
        ),
        steps=CIFAR_AE_STEPS,
        batch_size=64,
        lr=2e-3,
        amp=True,
    )
    return Recipe(
        "cifar10",
        profile,
        "cifar10",
        UNetConfig(
            in_channels=CIFAR_LATENT_CHANNELS,
            image_size=32 // CIFAR_FACTOR,
            channels=CIFAR_UNET_CHANNELS,
            channel_mult=(1, 2, 2),
            num_res_blocks=1,
            num_classes=10,
        ),
        _laptop_train(steps=CIFAR_UNET_STEPS),
        schedule="cosine",
        conditional=True,
        autoencoder=ae,
        description="Class-conditional latent DDPM on CIFAR-10 (a CPU laptop's recipe).",
    )


# The CIFAR-10 page's budget. On the page's three seeds of 500 samples (one Zen 5
# core, 2026-12-07) the UNet at 1,000 steps instead of 1,200 scored a Frechet distance
# of 1.686 +- 0.045 against 1.464 +- 0.033 (paired +0.22 +- 0.02, floor 0.21): unlike
# MNIST's, this UNet is still improving, so its steps stay.
CIFAR_FACTOR, CIFAR_LATENT_CHANNELS, CIFAR_AE_CHANNELS, CIFAR_AE_STEPS = 2, 4, 16, 1500
CIFAR_UNET_CHANNELS, CIFAR_UNET_STEPS = 32, 1200

RECIPES: dict[str, Callable[[str], Recipe]] = {
    "ddpm": _ddpm,
    "ddpm-cond": _ddpm_cond,
    "ddpm-cifar10": _ddpm_cifar10,
    "cifar10": _cifar10,
    "mnist": _mnist,
    "mnist-latent": _mnist_latent,
    "mnist-latent-cond": _mnist_latent_cond,
}


class UnknownRecipe(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def get_recipe(name: str, profile: str | None = None) -> Recipe:
    """The recipe ``name`` in ``profile`` (default :func:`current_profile`).

    ``DIFFLAB_DATASET`` (digits, mnist, cifar10, auto) overrides its dataset.
    """
    if name not in RECIPES:
        raise UnknownRecipe(
            f"Unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}."
        )
    profile = profile or current_profile()
    if profile not in PROFILES:
        raise ValueError(
            f"Unknown profile {profile!r}; use one of {', '.join(PROFILES)}."
        )
    recipe = RECIPES[name](profile)
    if os.environ.get("DIFFLAB_DATASET"):
        recipe = replace(recipe, dataset=os.environ["DIFFLAB_DATASET"])
    return recipe


def init_net(recipe: Recipe, device: torch.device | str = "cpu") -> UNet:
    """The recipe's network with initial weights drawn from ``recipe.train.seed``.

    The weights are drawn on the CPU under a forked random state, so they are the
    same on every device and in every process, whatever torch's global state is,
    and that state is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.train.seed)
        net = UNet(recipe.unet)
    return net.to(device)


def with_world_size(recipe: Recipe, world: int) -> Recipe:
    """``recipe`` for ``world`` processes, its global batch a multiple of ``world``.

    Each process draws ``batch_size // world`` images a step, so the global batch
    (what the cache key records) is that times ``world``.

    Raises:
        ValueError: if the batch is smaller than the number of processes.
    """
    batch = recipe.train.batch_size
    if world < 1 or batch < world:
        raise ValueError(
            f"{recipe.name}: a batch of {batch} cannot be split over {world} processes."
        )
    train_cfg = replace(recipe.train, batch_size=batch // world * world)
    return replace(recipe, world_size=world, train=train_cfg)


def resolve_data(recipe: Recipe, split: str = "train") -> tuple[Recipe, ImageData]:
    """Load the recipe's data and fit the network's input size to it (to the
    autoencoder's latent, for a latent recipe)."""
    data = load_images(recipe.dataset, split=split)
    if recipe.autoencoder is not None:
        ae = recipe.autoencoder
        if ae.dataset != data.name:
            raise ValueError(
                f"{recipe.name}: its autoencoder is trained on {ae.dataset}, "
                f"the recipe's data is {data.name}."
            )
        size = ae.net.latent_size
        unet = replace(recipe.unet, in_channels=ae.net.latent_channels, image_size=size)
        return replace(recipe, dataset=data.name, unet=unet), data
    unet = replace(recipe.unet, in_channels=data.channels, image_size=data.image_size)
    if data.image_size != recipe.unet.image_size and data.image_size == 8:
        unet = replace(unet, channel_mult=unet.channel_mult[:2], attn_resolutions=())
    return replace(recipe, dataset=data.name, unet=unet), data


#: What :meth:`Trained.sample` samples with: the two DDPM-chapter samplers, then
#: the ODE solvers of :mod:`difflab.diffusion.solvers`.
SAMPLE_SOLVERS = sampling.SOLVERS


def _bf16_on_cpu(net: nn.Module) -> Callable[..., Tensor]:
    """``net(x, n, cond)`` under CPU bf16 autocast, its output back in float32."""

    def run(x: Tensor, n: Tensor, cond: Cond | None = None) -> Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net(x, n, cond).float()

    return run


@dataclass
class Trained:
    """A trained recipe: the EMA network, its schedule, and how it was obtained."""

    recipe: Recipe
    net: nn.Module
    schedule: Schedule
    losses: list[float]
    train_seconds: float
    from_cache: bool
    data_note: str = ""
    autoencoder: TrainedAutoencoder | None = None
    image_size: int | None = None  # of the data (a latent recipe's decoded images)

    def eps_model(self) -> EpsModel:
        """The network as ``eps_model(x_t, t, cond=None)`` (see :func:`as_eps_model`).

        A recipe that trained in bf16 on this CPU (``train.cpu_amp``, kept only
        where the CPU does bf16 in hardware) runs its network in bf16 here too,
        1.5x faster for CIFAR-10's latent UNet at batch 1000 on a Zen 5 core
        (0.74 s, then 0.49 s, keeping freed memory as the notes do); the solvers'
        arithmetic on x_t stays in float32.
        """
        net = _bf16_on_cpu(self.net) if self.recipe.train.cpu_amp else self.net
        return as_eps_model(net, self.schedule, self.recipe.train.prediction)

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """x_T ~ N(0, I) of the right shape on the network's device."""
        u = self.recipe.unet
        device = next(self.net.parameters()).device
        return torch.randn(
            n,
            u.in_channels,
            u.image_size,
            u.image_size,
            generator=generator,
            device=device,
        )

    def sample(
        self,
        n: int,
        *,
        solver: str | None = None,
        nfe: int | None = None,
        eta: float = 0.0,
        cond: Cond | None = None,
        guidance: float | None = None,
        generator: torch.Generator | None = None,
        progress: bool = True,
        batch_size: int = 500,
        sampler: str | None = None,
        steps: int | None = None,
    ) -> Tensor:
        """``n`` samples in [-1, 1] from any of the package's samplers.

        ``solver`` is one of :data:`SAMPLE_SOLVERS` (default ``"ddim"``):
        ``"ddpm"`` (all T ancestral steps), ``"ddim"`` (``nfe`` steps, ``eta``), or
        an ODE solver of :mod:`difflab.diffusion.solvers` (``"euler"``,
        ``"dpm_solver_1"``, ``"dpm_solver_pp_2m"``, ``"heun"``) on its
        :func:`~difflab.diffusion.solvers.default_grid` for a budget of ``nfe``
        evaluations (default 50); ``sampler`` and ``steps`` are their older names.
        A pixel recipe clips its x0 estimate to [-1, 1] with every sampler; a latent
        recipe draws latents without clipping (scaled latents are not bounded) and
        returns them decoded, at the data's size. All of it is
        :func:`difflab.pipelines.sampling.draw`.

        Args:
            cond: the condition of each sample, (n, ...) tensors (``{"y": labels}``).
            guidance: classifier-free guidance weight w (w = 1: conditional), with
                the recipe's null condition.

        Raises:
            ValueError: for an unknown solver, or a budget the solver cannot spend.
        """
        solver = sampling.solver_name(solver or sampler or "ddim")
        nfe = nfe if nfe is not None else (steps if steps is not None else 50)
        sampling.check_budget(solver, nfe, self.schedule)
        eps = self.eps_model()
        clip = None if self.autoencoder is not None else 1.0

        def one(b: int, rows: slice) -> Tensor:
            x = sampling.draw(
                eps,
                self.schedule,
                self.noise(b, generator),
                solver=solver,
                nfe=nfe,
                eta=eta,
                cond=conds.select(cond, rows),
                guidance=guidance,
                null_cond=self.recipe.train.null_cond,
                clip=clip,
                generator=generator,
                progress=progress,
            )
            if self.autoencoder is not None:
                x = self.decode(x)
            return x.clamp(-1, 1).float()

        return sampling.in_batches(n, batch_size, one)

    def encode(self, images: Tensor) -> Tensor:
        """Scaled latents of images at the data's size (a latent recipe only): the
        inverse of :meth:`decode` up to the autoencoder's loss."""
        ae = self.autoencoder
        if ae is None:
            raise ValueError(f"{self.recipe.name} is not a latent recipe.")
        return ae.encode_images(images)

    def decode(self, z: Tensor) -> Tensor:
        """Images at the data's size from scaled latents (a latent recipe only)."""
        ae = self.autoencoder
        if ae is None:
            raise ValueError(f"{self.recipe.name} is not a latent recipe.")
        return ae.decode_images(z, self.image_size)


def with_steps(cfg: TrainConfig, steps: int) -> TrainConfig:
    """``cfg`` with a budget of ``steps`` optimiser steps, its EMA fitted to it.

    An EMA with decay d still holds a fraction d**n of the initial weights after
    n steps, and the initial network outputs zero, so an average over too short a
    run predicts a shrunken epsilon (the better-networks page measures what that
    does to samples). A recipe's decay is chosen for its own budget N; a shorter
    run keeps the same residue with d**(N / n): at 200 of 1000 steps, 0.995
    becomes 0.975, and 0.975**200 = 0.995**1000 = 0.007. A longer run keeps the
    recipe's decay.

    Raises:
        ValueError: if ``steps`` is not a positive whole number.
    """
    shorter = replace(cfg, steps=steps)  # TrainConfig refuses steps <= 0
    if steps >= cfg.steps or cfg.ema_decay == 0.0:
        return shorter
    return replace(shorter, ema_decay=cfg.ema_decay ** (cfg.steps / steps))


# What a trained recipe depends on: the loop (with the loss and the schedules it
# imports), the network and the data loaders. The samplers are not in it.
DEPS = ("difflab.train.loop", "difflab.nets.unet", "difflab.data.images")


def recipe_deps(recipe: Recipe) -> tuple[str, ...]:
    """:data:`DEPS`, and for a latent recipe the autoencoder's training code (a
    changed autoencoder gives other latents, so the UNet trains again too)."""
    if recipe.autoencoder is None:
        return DEPS
    return (*DEPS, "difflab.pipelines.autoencoder")


def plan(
    recipe: Recipe | str, *, device: torch.device, steps: int | None = None
) -> tuple[Recipe, ImageData, Path]:
    """The recipe as :func:`load_or_train` trains it, its data and its checkpoint.

    The recipe gets the budget ``steps`` (:func:`with_steps`), the number of
    processes, the dataset actually found, off CUDA no ``torch.compile``, and bf16
    on the CPU only where it is done in hardware: what the cache key hashes.
    """
    if isinstance(recipe, str):
        recipe = get_recipe(recipe)
    if steps is not None:
        recipe = replace(recipe, train=with_steps(recipe.train, steps))
    recipe = with_world_size(recipe, int(os.environ.get("WORLD_SIZE", "1")))
    recipe, data = resolve_data(recipe)
    if device.type != "cuda":
        recipe = replace(recipe, train=replace(recipe.train, compile=False))
    recipe = replace(
        recipe, train=bf16_as_run(recipe.train, "cpu_amp", device, cpu_only=True)
    )
    if recipe.autoencoder is not None:
        recipe = replace(
            recipe, autoencoder=autoencoder_here(recipe.autoencoder, device)
        )
    return recipe, data, entry("ddpm", recipe, deps=recipe_deps(recipe)).path


def is_trained(path: Path) -> bool:
    """Whether the checkpoint at ``path`` holds a finished training."""
    if not path.is_file():
        return False
    try:
        return bool(load_checkpoint(path).get("done"))
    except CheckpointError:
        return False  # load_or_train names the file and the fix


def train_net(
    recipe: Recipe,
    data: ImageData,
    ae: TrainedAutoencoder | None,
    schedule: Schedule,
    device: torch.device,
    progress: bool = True,
    **kwargs,
) -> TrainResult:
    """Train a fresh network of ``recipe`` on ``data`` (on the autoencoder's scaled
    latents of the fitted images, for a latent recipe); ``kwargs`` go to
    :func:`difflab.train.loop.train` (``checkpoint``, ``time_budget``)."""
    x = data.images
    if ae is not None:
        x = dataset_latents(ae, x)  # encoded once per autoencoder and images
    return train(
        init_net(recipe, device),
        x,
        schedule,
        recipe.train,
        cond={"y": data.labels} if recipe.conditional else None,
        meta={"recipe": repr(recipe)},
        progress=progress,
        **kwargs,
    )


def load_or_train(
    recipe: Recipe | str,
    *,
    device: torch.device | None = None,
    progress: bool = True,
    steps: int | None = None,
) -> Trained:
    """The trained model of ``recipe``: from the cache if there, else trained now.

    The checkpoint lives at ``.cache/difflab/ddpm/<key>.pt`` where the key hashes
    the recipe (with the dataset actually found and the number of processes) and
    the source of :data:`DEPS`. An interrupted training resumes from its last
    checkpoint on the next call. Under ``torchrun`` every process trains and only
    rank 0 writes.

    ``steps`` replaces the recipe's budget; a shorter one also shortens the EMA's
    horizon (:func:`with_steps`).

    Raises:
        ValueError: if ``steps`` is not a positive whole number.
        CheckpointError: if the cached file cannot be used (the message names it).
    """
    device = device or default_device()
    recipe, data, path = plan(recipe, device=device, steps=steps)
    schedule = make_schedule(recipe.schedule, recipe.T)
    ae = None
    if recipe.autoencoder is not None:
        ae = train_autoencoder(recipe.autoencoder, device, progress=progress)

    def build(path):
        result = train_net(
            recipe, data, ae, schedule, device, progress, checkpoint=path
        )
        if result.step != recipe.train.steps:  # never cache an unfinished run
            raise RuntimeError(
                f"training stopped at step {result.step} of {recipe.train.steps}"
            )
        return {
            "ema": result.ema.state_dict(),
            "losses": result.losses,
            "seconds": result.seconds,
        }

    def load(state):
        net = init_net(recipe, device)  # leaves the global random state alone
        restore(net, state.get("ema"), path)
        try:
            return net.eval(), list(state["losses"]), float(state["seconds"])
        except (KeyError, TypeError, ValueError) as err:
            raise unreadable(path, err) from err

    if int(os.environ.get("RANK", "0")) != 0:  # a follower: trains, writes nothing
        state = load_checkpoint(path, device) if path.is_file() else {}
        hit = bool(state.get("done"))
        net, losses, seconds = load(state if hit else build(path))
    else:
        (net, losses, seconds), hit = cached(
            "ddpm",
            recipe,
            deps=recipe_deps(recipe),
            build=build,
            load=load,
            device=device,
        )
    return Trained(
        recipe, net, schedule, losses, seconds, hit, data.note, ae, data.image_size
    )
