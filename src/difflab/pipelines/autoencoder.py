"""Training and caching of the latent autoencoder and of DDPMs in its latent space.

Latent diffusion (Rombach et al. 2022) in two stages: :func:`train_autoencoder`
fits :class:`difflab.nets.autoencoder.Autoencoder` (reconstruction plus a small
KL weight, Sec. 3.1) and fixes the latent scale factor 1 / std(z) from the
training latents (Sec. 4.3.2 and App. G); :func:`train_latent_ddpm` then trains
the ordinary UNet with :func:`difflab.train.loop.train` on the scaled latents,
or on the pixels when no autoencoder is given, for a fixed training wall-clock,
so the two can be compared at equal cost. Both are cached with
:func:`difflab.runtime.cache.cached`, and so are a dataset's latents
(:func:`dataset_latents`: encoded once per autoencoder and images, shared by every
model that trains on them).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.core.optim import adam
from difflab.data.images import ImageData, load_images
from difflab.diffusion.parameterization import as_eps_model
from difflab.diffusion.schedules import Schedule, make_schedule
from difflab.nets.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    kl_standard_normal,
)
from difflab.nets.unet import UNet, UNetConfig
from difflab.pipelines import sampling
from difflab.runtime.cache import CacheNotWritable, cached
from difflab.runtime.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from difflab.runtime.device import bf16_as_run, default_device
from difflab.train.loop import TrainConfig, train


class AutoencoderMismatch(CheckpointError):
    """An autoencoder checkpoint made for another configuration."""


@dataclass(frozen=True)
class AutoencoderRecipe:
    """How the latent autoencoder is trained (its cache key).

    Attributes:
        dataset: "digits", "mnist" or "auto"; images are resized to
            ``net.image_size`` (bilinear) when they are smaller.
        net: the network's configuration.
        steps, batch_size, lr: Adam with a cosine decay.
        kl_weight: beta in  sum_pixels (x - x_hat)^2 + beta KL(q(z|x) || N(0, I)).
        seed: of the initial weights and of every draw.
        fit: how smaller images reach ``net.image_size``: "resize" (bilinear) or
            "pad" (a background border of -1, cut off again after decoding:
            MNIST's 28x28 in a 32x32 frame, every pixel kept as it is).
        amp: train under bf16 autocast where the hardware does bf16 (CUDA, or a
            CPU with AMX or AVX512-BF16, where a 32x32 step is 1.4 to 1.7x
            faster);
            :func:`train_autoencoder` sets it off elsewhere, so the key says
            what ran.
    """

    dataset: str
    net: AutoencoderConfig
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    kl_weight: float = 1e-6
    seed: int = 0
    fit: str = "resize"
    amp: bool = False

    def __post_init__(self) -> None:
        if self.fit not in ("resize", "pad"):
            raise ValueError(f"fit must be 'resize' or 'pad', not {self.fit!r}")


def resized_images(
    dataset: str, size: int, split: str = "train", fit: str = "resize"
) -> ImageData:
    """``dataset`` with its images brought to ``size`` x ``size``.

    ``fit="resize"``: bilinear. The embedded 8x8 digits have no room for a
    factor-4 autoencoder (a 2x2 latent), so they are upsampled to 16x16; MNIST
    28x28 goes to 32x32. ``fit="pad"``: a border of background (-1) around the
    image, centred (:func:`unfit_images` cuts it off again).
    """
    data = load_images(dataset, split=split)
    if data.image_size == size:
        return data
    x = fit_images(data.images, size, fit)
    how = "padded" if fit == "pad" else "resized"
    note = f"{data.note[:-1]}, {how} from {data.image_size} to {size}."
    return replace(data, images=x.contiguous(), note=note)


def fit_images(x: Tensor, size: int, fit: str = "resize") -> Tensor:
    """Images (N, C, s, s) brought to ``size`` x ``size`` (see :func:`resized_images`)."""
    s = x.shape[-1]
    if s == size:
        return x
    if fit == "pad":
        if size < s or (size - s) % 2:
            raise ValueError(f"cannot pad {s}x{s} images to {size}x{size} evenly")
        return F.pad(x, ((size - s) // 2,) * 4, value=-1.0)
    return F.interpolate(x, size=(size, size), mode="bilinear").clamp(-1.0, 1.0)


def unfit_images(x: Tensor, size: int, fit: str = "resize") -> Tensor:
    """The inverse of :func:`fit_images`: images back at ``size`` x ``size``
    (the border cut off, or an antialiased bilinear resize)."""
    s = x.shape[-1]
    if s == size:
        return x
    if fit == "pad":
        b = (s - size) // 2
        return x[..., b : b + size, b : b + size].contiguous()
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True).clamp(
        -1.0, 1.0
    )


def _seeded(make, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


@dataclass
class TrainedAutoencoder:
    """A trained autoencoder with its latent scale factor.

    ``scale`` is 1 / std of the posterior means over the training images, so
    ``scale * mu(x)`` has unit variance on the training set.
    """

    recipe: AutoencoderRecipe
    net: Autoencoder
    scale: float
    seconds: float
    losses: list[float] = field(default_factory=list)
    from_cache: bool = False

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def posterior(self, x: Tensor, batch: int = 500) -> tuple[Tensor, Tensor]:
        """(mu, log sigma^2) of q(z | x), unscaled, on the CPU."""
        out = [self.net.encode(b.to(self.device)) for b in x.split(batch)]
        return tuple(torch.cat([o[i] for o in out]).cpu() for i in (0, 1))

    @torch.no_grad()
    def encode(self, x: Tensor, batch: int = 500) -> Tensor:
        """Scaled latents ``scale * mu(x)`` (the posterior mean, as a code), CPU."""
        return self.posterior(x, batch)[0] * self.scale

    @torch.no_grad()
    def decode(self, z: Tensor, batch: int = 500) -> Tensor:
        """Images in [-1, 1] (on the CPU) from scaled latents."""
        dev = self.device
        out = [self.net.decode((b / self.scale).to(dev)).cpu() for b in z.split(batch)]
        return torch.cat(out).clamp(-1.0, 1.0)

    def encode_images(self, x: Tensor) -> Tensor:
        """Scaled latents of images at any size: brought to the autoencoder's size
        the way it was trained (:func:`fit_images`), then :meth:`encode`."""
        return self.encode(fit_images(x, self.recipe.net.image_size, self.recipe.fit))

    def decode_images(self, z: Tensor, size: int | None = None) -> Tensor:
        """Images at ``size`` x ``size`` (default: the autoencoder's) from scaled
        latents: :meth:`decode`, then :func:`unfit_images`."""
        x = self.decode(z)
        return x if size is None else unfit_images(x, size, self.recipe.fit)


def latent_scale(net: Autoencoder, images: Tensor, batch: int = 500) -> float:
    """1 / std of the posterior means of ``images`` (all elements pooled)."""
    with torch.no_grad():
        mu = torch.cat([net.encode(b)[0] for b in images.split(batch)])
    return 1.0 / mu.double().std().item()


def autoencoder_state(trained: TrainedAutoencoder) -> dict:
    """What a checkpoint of ``trained`` holds (with its recipe, to check on load)."""
    return {
        "recipe": repr(trained.recipe),
        "net": trained.net.state_dict(),
        "scale": trained.scale,
        "seconds": trained.seconds,
        "losses": list(trained.losses),
    }


def autoencoder_from_state(
    state: dict,
    recipe: AutoencoderRecipe,
    device: torch.device | str = "cpu",
    path: str | Path = "<state>",
) -> TrainedAutoencoder:
    """Rebuild a :class:`TrainedAutoencoder` of ``recipe`` from its state.

    Raises:
        AutoencoderMismatch: if the state was saved for another recipe (the
            message shows both), before any weight is loaded.
    """
    saved = state.get("recipe")
    if saved != repr(recipe):
        raise AutoencoderMismatch(
            f"The autoencoder checkpoint {path} was trained for another "
            f"configuration:\n  saved:    {saved}\n  expected: {recipe!r}\n"
            "Train one for this configuration (train_autoencoder) or pass the "
            "recipe it was saved with."
        )
    net = Autoencoder(recipe.net).to(device)
    net.load_state_dict(state["net"])
    return TrainedAutoencoder(
        recipe,
        net.eval().requires_grad_(False),
        float(state["scale"]),
        float(state["seconds"]),
        list(state["losses"]),
    )


def save_autoencoder(trained: TrainedAutoencoder, path: str | Path) -> None:
    """Write ``trained`` (weights, scale, recipe) to ``path`` atomically."""
    save_checkpoint(autoencoder_state(trained), path)


def load_autoencoder(
    path: str | Path, recipe: AutoencoderRecipe, device: torch.device | str = "cpu"
) -> TrainedAutoencoder:
    """The autoencoder saved at ``path``, which must have been trained for ``recipe``.

    Raises:
        AutoencoderMismatch: if it was saved for another recipe.
        CheckpointError: if the file cannot be read.
    """
    return autoencoder_from_state(load_checkpoint(path, device), recipe, device, path)


def autoencoder_loss(
    net: Autoencoder, x: Tensor, kl_weight: float, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, squared error, KL), each a batch mean of per-image sums.

    The loss is the negative ELBO of a Gaussian decoder with fixed variance 1/2,
    up to constants, with the KL down-weighted by ``kl_weight`` (Rombach et al.
    2022, Sec. 3.1: a slight KL weight keeps the latent close to the data rather
    than to N(0, I)).
    """
    x_hat, mu, log_var = net(x, generator)
    sq = (x_hat - x).square().flatten(1).sum(1).mean()
    kl = kl_standard_normal(mu, log_var).mean()
    return sq + kl_weight * kl, sq, kl


# What the autoencoder depends on: this module (its training code, which imports
# the network and the data loaders).
DEPS = ("difflab.pipelines.autoencoder",)


def train_autoencoder(
    recipe: AutoencoderRecipe,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> TrainedAutoencoder:
    """The trained autoencoder of ``recipe``: from the cache, or trained now.

    ``device``: where it trains and runs (default: :func:`default_device`).
    """
    device = torch.device(device) if device else default_device()
    recipe = autoencoder_here(recipe, device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.amp)

    def build(path: Path) -> dict:
        from difflab.core.progress import tqdm

        data = resized_images(recipe.dataset, recipe.net.image_size, fit=recipe.fit)
        images = data.images.to(device)
        net = _seeded(lambda: Autoencoder(recipe.net), recipe.seed).to(device)
        gen = torch.Generator(device).manual_seed(recipe.seed)
        opt = adam(net.parameters(), lr=recipe.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.steps)
        losses, t0 = [], time.perf_counter()
        for _ in tqdm(range(recipe.steps), disable=not progress, desc="autoencoder"):
            idx = torch.randint(
                len(images), (recipe.batch_size,), device=device, generator=gen
            )
            with amp:
                loss, _, _ = autoencoder_loss(net, images[idx], recipe.kl_weight, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        net.eval()
        trained = TrainedAutoencoder(
            recipe,
            net,
            latent_scale(net, images),
            time.perf_counter() - t0,
            losses[::25],
        )
        return autoencoder_state(trained)

    def load(state: dict) -> TrainedAutoencoder:
        return autoencoder_from_state(state, recipe, device)

    trained, hit = cached(
        "autoencoder", recipe, deps=DEPS, build=build, load=load, device=device
    )
    trained.from_cache = hit
    return trained


def autoencoder_here(
    recipe: AutoencoderRecipe, device: torch.device
) -> AutoencoderRecipe:
    """``recipe`` as it trains on ``device``: ``amp`` off where bf16 would not run
    (:func:`difflab.runtime.device.bf16_as_run`, the rule every recipe's key uses)."""
    return bf16_as_run(recipe, "amp", device)


def autoencoder_recipe(
    profile: str, factor: int, latent_channels: int = 2, dataset: str = "digits"
) -> AutoencoderRecipe:
    """The site's autoencoder for ``factor`` f in the ``profile``.

    quick: the 8x8 digits upsampled to 16x16, or with ``dataset="mnist"`` MNIST
    resized to 32x32 with half the channels (a step costs about what a 16x16 one
    with 16 channels does; bf16 where the hardware does it); full: MNIST 28x28
    resized to 32x32.
    """
    if profile == "quick" and dataset == "mnist":
        net = AutoencoderConfig(1, 32, factor, latent_channels, channels=8)
        return AutoencoderRecipe(
            dataset, net, steps=300, batch_size=64, lr=3e-3, amp=True
        )
    if profile == "quick":
        net = AutoencoderConfig(1, 16, factor, latent_channels, channels=16)
        return AutoencoderRecipe(dataset, net, steps=300, batch_size=64, lr=3e-3)
    net = AutoencoderConfig(1, 32, factor, latent_channels, channels=32)
    return AutoencoderRecipe("auto", net, steps=6000, batch_size=128)


# --- A dataset's latents, encoded once -----------------------------------------
#
# Several models train on the latents of the same images under the same autoencoder:
# with MNIST present, the conditioning page's model and its noisy classifier, the
# flow-matching page's diffusion, flow-matching and reflow networks, and the
# latent-diffusion page's own model all encode the 60,000 training images with that
# page's factor-4 autoencoder (6.6 s each on one Zen 5 core, 2026-12-07).
# :func:`dataset_latents` encodes them once and stores the latents at
# ``<cache>/latents/<key>.pt``.
#
# The key hashes the autoencoder's recipe, its weights and scale, and the images'
# bytes, shape and dtype (SHA-256; 0.1 s for MNIST's 188 MB), not the recipe alone:
# a retrained autoencoder or other images never reach an old entry. What comes back
# is, to the bit, what ``ae.encode_images(images)`` returned when the entry was made
# on this machine, so a model trained on cached latents is the model trained on fresh
# ones.


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


# --- DDPM on latents or pixels, for a fixed wall-clock ---------------------------


@dataclass(frozen=True)
class LatentDDPMRecipe:
    """A DDPM on the scaled latents of ``autoencoder`` (None: on the pixels).

    ``train.steps`` is a ceiling: training stops after ``time_budget`` seconds,
    so runs that differ in cost per step get the same wall-clock.
    """

    autoencoder: AutoencoderRecipe | None
    dataset: str
    image_size: int
    unet: UNetConfig
    train: TrainConfig
    time_budget: float
    schedule: str = "linear"
    T: int = 1000


@dataclass
class TrainedLatentDDPM:
    """A trained (latent or pixel) DDPM, its autoencoder and how long it trained."""

    recipe: LatentDDPMRecipe
    net: nn.Module
    schedule: Schedule
    autoencoder: TrainedAutoencoder | None
    steps: int
    seconds: float
    losses: list[float]
    from_cache: bool

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        solver: str = "ddim",
        nfe: int | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = 500,
        progress: bool = False,
        steps: int | None = None,
    ) -> Tensor:
        """``n`` images in [-1, 1]: solver ``solver`` (DDIM, eta = 0, by default) at
        ``nfe`` evaluations (default 50; ``steps`` is its older name) in latent
        space, then decoded (:func:`difflab.pipelines.sampling.draw`).

        The pixel model clips its x0 estimate to [-1, 1]; the latent model does
        not (scaled latents are not bounded).
        """
        nfe = nfe if nfe is not None else (steps if steps is not None else 50)
        sampling.check_budget(solver, nfe, self.schedule)
        u = self.recipe.unet
        eps = as_eps_model(self.net, self.schedule, self.recipe.train.prediction)
        clip = None if self.autoencoder else 1.0
        device = next(self.net.parameters()).device

        def one(b: int, rows: slice) -> Tensor:
            shape = (b, u.in_channels, u.image_size, u.image_size)
            x_T = torch.randn(shape, generator=generator).to(device)
            x = sampling.draw(
                eps, self.schedule, x_T, solver=solver, nfe=nfe, clip=clip,
                generator=generator, progress=progress,
            ).cpu()  # fmt: skip
            return self.autoencoder.decode(x) if self.autoencoder else x

        return sampling.in_batches(n, batch_size, one).clamp(-1.0, 1.0)


LATENT_DEPS = ("difflab.pipelines.autoencoder", "difflab.train.loop")


def train_latent_ddpm(
    recipe: LatentDDPMRecipe,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> TrainedLatentDDPM:
    """The DDPM of ``recipe`` from the cache, or trained now for its time budget.

    The UNet is :class:`difflab.nets.unet.UNet` and the loop is
    :func:`difflab.train.loop.train`, unchanged: only the data differ (scaled
    latents instead of pixels).
    """
    device = torch.device(device) if device else default_device()
    ae = train_autoencoder(recipe.autoencoder, device) if recipe.autoencoder else None
    schedule = make_schedule(recipe.schedule, recipe.T)

    def build(path: Path) -> dict:
        if ae:  # the images as the autoencoder was trained on them, encoded once
            # per autoencoder and images and shared (the flow-matching and
            # conditioning pages train on these same latents)
            x = dataset_latents(ae, load_images(recipe.dataset).images)
        else:
            x = resized_images(recipe.dataset, recipe.image_size).images
        net = _seeded(lambda: UNet(recipe.unet), recipe.train.seed).to(device)
        result = train(
            net,
            x,
            schedule,
            recipe.train,
            checkpoint=path,
            meta={"recipe": repr(recipe)},
            progress=progress,
            time_budget=recipe.time_budget,
        )
        return {
            "ema": result.ema.state_dict(),
            "losses": result.losses,
            "seconds": result.seconds,
            "steps": result.step,
        }

    def load(state: dict):
        net = _seeded(lambda: UNet(recipe.unet), recipe.train.seed).to(device)
        net.load_state_dict(state["ema"])
        return net.eval(), state

    (net, state), hit = cached(
        "latent-ddpm", recipe, deps=LATENT_DEPS, build=build, load=load, device=device
    )
    return TrainedLatentDDPM(
        recipe,
        net,
        schedule,
        ae,
        int(state["steps"]),
        float(state["seconds"]),
        list(state["losses"]),
        hit,
    )


def latent_ddpm_recipe(
    profile: str,
    autoencoder: AutoencoderRecipe | None,
    time_budget: float,
    dataset: str | None = None,
) -> LatentDDPMRecipe:
    """The UNet of the ``ddpm`` recipe, sized to the latents (or the pixels).

    The data are the autoencoder's; a pixel model (``autoencoder`` None) takes
    ``dataset`` (default: the 8x8 digits at 16x16 in the quick profile, "auto"
    at 32x32 in the full one; "mnist" is at 32x32 in both).
    """
    if autoencoder:
        size, dataset = autoencoder.net.image_size, autoencoder.dataset
    else:
        dataset = dataset or ("digits" if profile == "quick" else "auto")
        size = 16 if profile == "quick" and dataset == "digits" else 32
    if autoencoder:
        c, s = autoencoder.net.latent_channels, autoencoder.net.latent_size
    else:
        c, s = 1, size
    quick = profile == "quick"
    unet = UNetConfig(
        in_channels=c,
        image_size=s,
        channels=16 if quick else 64,
        channel_mult=(1, 2) if quick else (1, 2, 2)[: max(1, int(math.log2(s)) - 1)],
        num_res_blocks=1 if quick else 2,
    )
    cfg = TrainConfig(
        steps=100_000,
        batch_size=64 if quick else 256,
        lr=3e-3 if quick else 1e-3,
        warmup=50 if quick else 200,
        ema_decay=0.995 if quick else 0.999,
        checkpoint_every=100_000,
    )
    return LatentDDPMRecipe(autoencoder, dataset, size, unet, cfg, time_budget)
