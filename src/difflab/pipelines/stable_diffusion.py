"""A small Stable Diffusion: captioned digits, a text encoder, a latent UNet, guidance.

The three parts of Rombach et al. (2022) at the size of our digits:

1. the latent autoencoder of the latent-diffusion chapter
   (:func:`difflab.pipelines.autoencoder.train_autoencoder`, from its cache);
2. a transformer text encoder tau_theta (:class:`difflab.nets.text.TextEncoder`)
   over a word tokenizer of the caption grammar (:mod:`difflab.data.captions`);
3. the UNet with cross-attention to tau_theta(y) (Sec. 3.3, Eq. 3), trained
   jointly with the encoder by :func:`difflab.train.loop.train` on the scaled
   latents, with empty-caption dropout (the null condition is the empty
   caption: all padding, whose encoding is the encoder's start vector), and
   sampled by DDIM with classifier-free guidance
   (:func:`difflab.diffusion.guidance.guided`).

:func:`train_stable_diffusion` caches the result with :func:`runtime.cache.cached`;
:meth:`TrainedStableDiffusion.text_to_image` turns prompts into images.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from difflab.data import captions as cap
from difflab.diffusion.parameterization import as_eps_model
from difflab.diffusion.schedules import Schedule, make_schedule
from difflab.nets.text import (
    TextConditioned,
    TextEncoder,
    TextEncoderConfig,
    WordTokenizer,
)
from difflab.nets.unet import UNet, UNetConfig
from difflab.pipelines import sampling
from difflab.pipelines.autoencoder import (
    AutoencoderRecipe,
    TrainedAutoencoder,
    autoencoder_recipe,
    resized_images,
    train_autoencoder,
)
from difflab.runtime.cache import cached
from difflab.runtime.device import default_device
from difflab.runtime.profiles import current_profile
from difflab.train.loop import TrainConfig, train

#: Words per prompt: the longest caption of the grammar.
MAX_LENGTH = cap.MAX_WORDS


def tokenizer() -> WordTokenizer:
    """The word tokenizer of the caption grammar (``<pad>``, ``<unk>``, its words)."""
    return WordTokenizer(cap.VOCABULARY, MAX_LENGTH)


@dataclass(frozen=True)
class StableDiffusionRecipe:
    """Everything that determines the trained model (its cache key).

    Attributes:
        autoencoder: the first stage (the latent-diffusion chapter's recipe).
        text: the text encoder's configuration.
        unet: the latent UNet, with ``context_dim = text.dim``.
        train: the loop's settings, with ``cond_drop`` and the null condition.
        schedule, T: the DDPM noise schedule.
    """

    autoencoder: AutoencoderRecipe
    text: TextEncoderConfig
    unet: UNetConfig
    train: TrainConfig
    schedule: str = "linear"
    T: int = 1000


def stable_diffusion_recipe(
    profile: str,
    factor: int = 2,
    steps: int | None = None,
    dataset: str = "digits",
) -> StableDiffusionRecipe:
    """The site's small Stable Diffusion in ``profile`` (quick: CPU, full: GPU).

    quick: 16x16 digits (upsampled 8x8) -> 2x8x8 latents (f = 2), 1,000 steps; or
    with ``dataset="mnist"`` and ``factor=4`` MNIST at 32x32 -> 2x8x8 latents, the
    same UNet, 2,000 steps; full: MNIST at 32x32 -> 2x16x16 latents (f = 2). The
    autoencoder is the latent-diffusion chapter's (:func:`autoencoder_recipe`),
    shared through the cache.
    """
    quick = profile == "quick"
    ae = autoencoder_recipe(profile, factor, 2, dataset)
    tok = tokenizer()
    text = TextEncoderConfig(
        len(tok), MAX_LENGTH, dim=32 if quick else 128, layers=2, heads=2
    )
    size = ae.net.latent_size
    unet = UNetConfig(
        in_channels=ae.net.latent_channels,
        image_size=size,
        channels=16 if quick else 64,
        channel_mult=(1, 2) if quick else (1, 2, 2),
        num_res_blocks=1 if quick else 2,
        attn_resolutions=(size,) if quick else (size, size // 2),
        head_dim=16 if quick else 32,
        context_dim=text.dim,
    )
    cfg = TrainConfig(
        steps=steps or (20_000 if not quick else 2000 if dataset == "mnist" else 1000),
        batch_size=64 if quick else 256,
        lr=2e-3 if quick else 5e-4,
        warmup=50 if quick else 500,
        ema_decay=0.995 if quick else 0.9995,
        cond_drop=0.1,
        null_cond=tok.null(),
        checkpoint_every=500 if quick else 2000,
    )
    return StableDiffusionRecipe(ae, text, unet, cfg)


@dataclass
class CaptionData:
    """The training rows: scaled latents, token ids and masks, and the captions."""

    latents: Tensor  # (M, c, h, w)
    ids: Tensor  # (M, L) long
    mask: Tensor  # (M, L) bool
    captions: list[str]
    bins: cap.AttributeBins
    kept: int
    dropped: int


def caption_data(
    recipe: StableDiffusionRecipe, autoencoder: TrainedAutoencoder
) -> CaptionData:
    """Caption the training images (held-out pairs removed) and encode them.

    Each kept image is encoded once and its latent repeated for its four
    captions (on MNIST that is 50,000 encoder passes instead of 200,000).
    """
    data = resized_images(recipe.autoencoder.dataset, recipe.autoencoder.net.image_size)
    bins = cap.fit_attributes(data.images, data.labels)
    rows = cap.captioned(data.images, data.labels, bins)
    ids, mask = tokenizer().encode(rows.captions)
    kept, row_of = rows.source.unique(return_inverse=True)
    return CaptionData(
        autoencoder.encode(data.images[kept])[row_of],
        ids,
        mask,
        rows.captions,
        bins,
        rows.kept,
        rows.dropped,
    )


@dataclass
class TrainedStableDiffusion:
    """A trained text-to-image model: autoencoder, text encoder + UNet, tokenizer."""

    recipe: StableDiffusionRecipe
    net: TextConditioned
    autoencoder: TrainedAutoencoder
    schedule: Schedule
    tokenizer: WordTokenizer
    steps: int
    seconds: float
    losses: list[float]
    from_cache: bool = False

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def encode_prompts(self, prompts: str | Sequence[str]) -> dict[str, Tensor]:
        """``{"ids", "mask"}`` of the prompts, on the model's device."""
        ids, mask = self.tokenizer.encode(prompts)
        return {"ids": ids.to(self.device), "mask": mask.to(self.device)}

    @torch.no_grad()
    def sample_latents(
        self,
        cond: dict[str, Tensor],
        *,
        solver: str = "ddim",
        nfe: int | None = None,
        guidance: float = 3.0,
        generator: torch.Generator | None = None,
        progress: bool = False,
        steps: int | None = None,
    ) -> Tensor:
        """Scaled latents (B, c, h, w) for encoded prompts ``cond``: solver
        ``solver`` (DDIM, eta = 0, by default) with ``nfe`` evaluations (default 50;
        ``steps`` is its older name) and guidance weight w (``guidance``), through
        :func:`difflab.pipelines.sampling.draw`; latents are not clipped.

        x_T is drawn on the CPU with ``generator`` (the same latents on every
        device), then moved to the model.
        """
        nfe = nfe if nfe is not None else (steps if steps is not None else 50)
        sampling.check_budget(solver, nfe, self.schedule)
        eps = as_eps_model(self.net, self.schedule, self.recipe.train.prediction)
        u = self.recipe.unet
        B = cond["ids"].shape[0]
        x_T = torch.randn(
            (B, u.in_channels, u.image_size, u.image_size), generator=generator
        ).to(self.device)
        return sampling.draw(
            eps,
            self.schedule,
            x_T,
            solver=solver,
            nfe=nfe,
            cond=cond,
            guidance=guidance,
            null_cond=self.recipe.train.null_cond,
            clip=None,
            generator=generator,
            progress=progress,
        )

    def sample(
        self,
        n: int,
        *,
        solver: str = "ddim",
        nfe: int = 50,
        cond: str | Sequence[str] = "",
        guidance: float = 3.0,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> Tensor:
        """``n`` images (n, 1, H, W) in [-1, 1] of each prompt in ``cond`` (a
        caption or a list of them, prompt-major), decoded from latents drawn with
        ``solver`` at ``nfe`` evaluations and guidance weight w (``guidance``; 1 =
        the conditional model, 0 = the unconditional one, where the prompt does not
        matter).

        Raises:
            ValueError: an empty or over-long prompt, an unknown solver or a budget
                it cannot spend, or a guidance weight that is not a finite number.
        """
        prompts = [cond] if isinstance(cond, str) else list(cond)
        if not prompts or n < 1:
            raise ValueError("give at least one prompt and n >= 1")
        encoded = self.encode_prompts([p for p in prompts for _ in range(n)])
        z = self.sample_latents(
            encoded,
            solver=solver,
            nfe=nfe,
            guidance=guidance,
            generator=generator,
            progress=progress,
        )
        return self.autoencoder.decode(z.cpu())

    def text_to_image(
        self,
        prompt: str | Sequence[str],
        *,
        n: int = 1,
        steps: int = 50,
        guidance: float = 3.0,
        seed: int = 0,
        progress: bool = False,
        solver: str = "ddim",
    ) -> Tensor:
        """Images (len(prompts) * n, 1, H, W) in [-1, 1], prompt-major: :meth:`sample`
        with a seed. The same ``seed`` gives the same images.

        Args:
            prompt: a caption ("a thick seven leaning right") or a list of them.
            n: images per prompt.
            steps: the budget of network evaluations (``nfe`` of :meth:`sample`).
            guidance: w; 1 = the conditional model, 0 = the unconditional one
                (then the prompt does not matter), > 1 sharpens towards it.

        Raises:
            ValueError: an empty or over-long prompt, or a guidance weight that
                is not a finite number.
        """
        gen = torch.Generator().manual_seed(seed)
        return self.sample(
            n,
            solver=solver,
            nfe=steps,
            cond=prompt,
            guidance=guidance,
            generator=gen,
            progress=progress,
        )


def build_model(recipe: StableDiffusionRecipe) -> TextConditioned:
    """Fresh (seeded) text encoder and UNet of ``recipe``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.train.seed)
        return TextConditioned(TextEncoder(recipe.text), UNet(recipe.unet))


DEPS = (
    "difflab.pipelines.stable_diffusion",
    "difflab.pipelines.autoencoder",
    "difflab.train.loop",
)


def train_stable_diffusion(
    recipe: StableDiffusionRecipe,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> TrainedStableDiffusion:
    """The model of ``recipe``: from the cache, or trained now (autoencoder first)."""
    device = torch.device(device) if device else default_device()
    ae = train_autoencoder(recipe.autoencoder, device)
    schedule = make_schedule(recipe.schedule, recipe.T)

    def build(path: Path) -> dict:
        data = caption_data(recipe, ae)
        net = build_model(recipe).to(device)
        result = train(
            net,
            data.latents,
            schedule,
            recipe.train,
            cond={"ids": data.ids, "mask": data.mask},
            checkpoint=path,
            meta={"recipe": repr(recipe)},
            progress=progress,
        )
        return {
            "ema": result.ema.state_dict(),
            "losses": result.losses,
            "seconds": result.seconds,
            "steps": result.step,
        }

    def load(state: dict):
        net = build_model(recipe).to(device)
        net.load_state_dict(state["ema"])
        return net.eval().requires_grad_(False), state

    (net, state), hit = cached(
        "stable-diffusion", recipe, deps=DEPS, build=build, load=load, device=device
    )
    return TrainedStableDiffusion(
        recipe,
        net,
        ae,
        schedule,
        tokenizer(),
        int(state["steps"]),
        float(state["seconds"]),
        list(state["losses"]),
        hit,
    )


def text_to_image(
    prompt: str | Sequence[str],
    steps: int = 50,
    guidance: float = 3.0,
    seed: int = 0,
    *,
    n: int = 1,
    profile: str | None = None,
    progress: bool = False,
) -> Tensor:
    """Images in [-1, 1] for ``prompt`` from the site's model (trained if not cached).

    ``profile`` defaults to ``DIFFLAB_PROFILE`` (quick unless set). The same
    arguments give the same images; see :meth:`TrainedStableDiffusion.text_to_image`.
    """
    profile = profile or current_profile()
    model = train_stable_diffusion(stable_diffusion_recipe(profile), progress=progress)
    return model.text_to_image(prompt, n=n, steps=steps, guidance=guidance, seed=seed)


def sample_command(
    prompt: str,
    *,
    n: int,
    steps: int,
    guidance: float | None,
    seed: int,
    profile: str,
    progress: bool = True,
    solver: str = "ddim",
) -> tuple[Tensor, str]:
    """What ``python -m difflab sample sd --prompt ...`` draws: (images, summary)."""
    w = 3.0 if guidance is None else guidance
    model = train_stable_diffusion(stable_diffusion_recipe(profile), progress=progress)
    t0 = time.perf_counter()
    x = model.text_to_image(
        prompt, n=n, steps=steps, guidance=w, seed=seed, solver=solver
    )
    budget = f"{model.schedule.T} steps" if solver == "ddpm" else f"{steps} evaluations"
    what = f"{prompt!r}, {solver} {budget}, guidance {w:g}, {time.perf_counter() - t0:.1f} s"
    return x, what


def with_steps(recipe: StableDiffusionRecipe, steps: int) -> StableDiffusionRecipe:
    """``recipe`` trained for ``steps`` optimiser steps instead."""
    return replace(recipe, train=replace(recipe.train, steps=steps))
