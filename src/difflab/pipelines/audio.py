"""Audio diffusion recipes: spoken digits as waveforms or as log spectrograms.

Two representations of the same clips, trained with the same loop, objective and
schedule so that only the representation differs:

- ``wave``: the waveform itself, (1, L), with the 1D UNet of
  :mod:`difflab.nets.unet1d`;
- ``spec``: a log-magnitude STFT image, (1, n_fft / 2, frames - 1), with the 2D
  UNet of :mod:`difflab.nets.unet`, turned back into sound by Griffin-Lim.

Both predict v (Salimans & Ho 2022, Sec. 4) on the cosine schedule (Nichol &
Dhariwal 2021), the objective of audio-diffusion-pytorch, and are trained with
label dropout for classifier-free guidance (Ho & Salimans 2022).

**Clips.** Each recording is read at 8 kHz, cut or zero-padded to
``length * 8000 / rate`` samples, resampled to ``rate`` (an ideal low-pass,
:func:`difflab.data.signal.resample_half`) and peak-normalised to 0.95, so that
loudness (which varies a lot between FSDD's speakers) is not part of the task.

**Spectrogram image.** With |X| <= sum_n w[n] = n_fft / 2 for |x| <= 1, the image
is 2 (log(|X| + floor) - lo) / (hi - lo) - 1 with lo = log(floor) and
hi = log(n_fft / 2 + floor), so it lies in [-1, 1] without clipping; the Nyquist
bin and the last frame are dropped so both sides are powers of two, and put back
(as zeros and a copy of the last frame) before Griffin-Lim.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from difflab.core.cond import NullCond
from difflab.data.audio import AudioData, load_audio
from difflab.data.signal import griffin_lim, n_frames, resample_half, stft
from difflab.diffusion.parameterization import as_eps_model
from difflab.diffusion.schedules import Schedule, make_schedule
from difflab.nets.unet import UNet, UNetConfig
from difflab.nets.unet1d import UNet1D, UNet1DConfig
from difflab.pipelines import sampling
from difflab.runtime.cache import cached
from difflab.runtime.checkpoint import restore, unreadable
from difflab.runtime.device import default_device
from difflab.runtime.profiles import current_profile
from difflab.train.loop import TrainConfig, train

REPRESENTATIONS = ("wave", "spec")
NULL = NullCond((("y", 10),))
SOURCE_RATE = 8000  # FSDD's (and the synthetic tones') sample rate
PEAK = 0.95


@dataclass(frozen=True)
class AudioRecipe:
    """One audio diffusion model: data, representation, network and training."""

    representation: str
    profile: str
    net: UNet1DConfig | UNetConfig
    train: TrainConfig
    dataset: str = "auto"  # "fsdd", "tones" or "auto" (FSDD if downloaded)
    rate: int = 4000
    length: int = 2048
    n_fft: int = 128
    hop: int = 64
    floor: float = 1e-2
    schedule: str = "cosine"
    T: int = 1000

    @property
    def spec_shape(self) -> tuple[int, int]:
        """(frequency bins, frames) of the spectrogram image."""
        return self.n_fft // 2, n_frames(self.length, self.n_fft, self.hop) - 1


def audio_recipe(representation: str, profile: str | None = None) -> AudioRecipe:
    """The ``wave`` or ``spec`` recipe in ``profile`` (default: the current one).

    quick: 4 kHz, 2048 samples (0.51 s); n_fft 128 and hop 64 (50% overlap), so
    the spectrogram is a 64 x 32 image, as many numbers as the waveform; a
    minute or two of CPU training each. full: the same clips, 75% overlap
    (a 64 x 64 image), wider networks and 20x the steps (a GPU run).
    """
    if representation not in REPRESENTATIONS:
        raise ValueError(
            f"unknown representation {representation!r}; use one of {REPRESENTATIONS}"
        )
    profile = profile or current_profile()
    quick = profile == "quick"
    opt = TrainConfig(
        steps=300 if quick else 6000,
        batch_size=32 if quick else 128,
        lr=2e-3 if quick else 5e-4,
        warmup=50 if quick else 500,
        ema_decay=0.98 if quick else 0.999,
        prediction="v",
        cond_drop=0.1,
        null_cond=NULL,
        checkpoint_every=200 if quick else 1000,
        channels_last=False,
    )
    if representation == "wave":
        net = UNet1DConfig(
            channels=8 if quick else 32,
            channel_mult=(1, 2, 4, 8),
            factors=(4, 4, 4),
            num_res_blocks=1 if quick else 2,
            kernel_size=3 if quick else 5,
            num_classes=10,
        )
    else:
        net = UNetConfig(
            in_channels=1,
            image_size=64,
            channels=8 if quick else 32,
            channel_mult=(1, 2, 4, 8),
            num_res_blocks=1 if quick else 2,
            num_classes=10,
        )
    return AudioRecipe(representation, profile, net, opt, hop=64 if quick else 32)


def clips(dataset: str, split: str, rate: int, length: int) -> tuple[Tensor, AudioData]:
    """Peak-normalised clips (N, length) at ``rate`` and the data they came from."""
    factor = SOURCE_RATE // rate
    if rate * factor != SOURCE_RATE or factor & (factor - 1):
        raise ValueError(f"rate must be 8000 / 2^k, got {rate}")
    data = load_audio(dataset, split, length=length * factor)
    x = data.waveforms[:, 0].double()
    while x.shape[-1] > length:
        x = resample_half(x)
    peak = x.abs().amax(-1, keepdim=True).clamp(min=1e-8)
    return (PEAK * x / peak).float(), data


def to_image(x: Tensor, recipe: AudioRecipe) -> Tensor:
    """Clips (N, L) -> spectrogram images (N, 1, n_fft / 2, frames - 1) in [-1, 1]."""
    lo, hi = math.log(recipe.floor), math.log(recipe.n_fft / 2 + recipe.floor)
    s = torch.log(stft(x, recipe.n_fft, recipe.hop).abs() + recipe.floor)
    img = 2 * (s - lo) / (hi - lo) - 1
    return img[:, None, :-1, :-1].clamp(-1, 1).float()


def magnitude_of(img: Tensor, recipe: AudioRecipe) -> Tensor:
    """Images (N, 1, F, M) -> |STFT| (N, F + 1, M + 1), the inverse of :func:`to_image`."""
    lo, hi = math.log(recipe.floor), math.log(recipe.n_fft / 2 + recipe.floor)
    s = lo + (img[:, 0].double().clamp(-1, 1) + 1) / 2 * (hi - lo)
    mag = (s.exp() - recipe.floor).clamp(min=0)
    mag = torch.cat([mag, torch.zeros_like(mag[:, :1])], dim=1)  # Nyquist bin
    return torch.cat([mag, mag[:, :, -1:]], dim=2)  # last frame


def represent(x: Tensor, recipe: AudioRecipe) -> Tensor:
    """Clips (N, L) as the model's training data."""
    return x[:, None] if recipe.representation == "wave" else to_image(x, recipe)


def decode(
    samples: Tensor,
    recipe: AudioRecipe,
    gl_iters: int = 64,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Model outputs -> clips (N, L) in [-1, 1] (Griffin-Lim for spectrograms)."""
    if recipe.representation == "wave":
        return samples[:, 0].clamp(-1, 1).float()
    mag = magnitude_of(samples.cpu(), recipe)
    x, _ = griffin_lim(
        mag, recipe.n_fft, recipe.hop, recipe.length, gl_iters, generator
    )
    return x.clamp(-1, 1).float()


def init_net(recipe: AudioRecipe, device: torch.device | str = "cpu") -> nn.Module:
    """The recipe's network, initial weights from ``recipe.train.seed`` (forked RNG)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.train.seed)
        make = UNet1D if recipe.representation == "wave" else UNet
        net = make(recipe.net)
    return net.to(device)


@dataclass
class TrainedAudio:
    """A trained audio model: the EMA network and how it was obtained."""

    recipe: AudioRecipe
    net: nn.Module
    schedule: Schedule
    losses: list[float]
    train_seconds: float
    from_cache: bool
    data_note: str

    @property
    def shape(self) -> tuple[int, ...]:
        r = self.recipe
        return (1, r.length) if r.representation == "wave" else (1, *r.spec_shape)

    @torch.no_grad()
    def sample_raw(
        self,
        n: int,
        *,
        solver: str = "ddim",
        nfe: int = 50,
        cond: Tensor | dict[str, Tensor],
        guidance: float = 1.0,
        generator: torch.Generator | None = None,
        progress: bool = False,
        batch_size: int = 100,
    ) -> Tensor:
        """The model's own samples (n, *shape) of the digits ``cond`` (n labels, or
        ``{"y": labels}``): solver ``solver`` at ``nfe`` evaluations with guidance
        weight w (``guidance``), through :func:`difflab.pipelines.sampling.draw`."""
        labels = cond["y"] if isinstance(cond, dict) else cond
        if len(labels) != n:
            raise ValueError(f"asked for {n} clips but gave {len(labels)} digits")
        sampling.check_budget(solver, nfe, self.schedule)
        device = next(self.net.parameters()).device
        eps = as_eps_model(self.net, self.schedule, "v")

        def one(b: int, rows: slice) -> Tensor:
            y = labels[rows].to(device)
            x_T = torch.randn(
                b, *self.shape, generator=generator,
                device=generator.device if generator is not None else "cpu",
            ).to(device)  # fmt: skip
            x = sampling.draw(
                eps, self.schedule, x_T, solver=solver, nfe=nfe, cond={"y": y},
                guidance=guidance, null_cond=NULL, clip=1.0, generator=generator,
                progress=progress,
            )  # fmt: skip
            return x.float()

        return sampling.in_batches(n, batch_size, one)

    def decode(
        self, raw: Tensor, generator: torch.Generator | None = None, gl_iters: int = 64
    ) -> Tensor:
        """Clips (N, L) in [-1, 1] from the model's samples: the waveform itself, or
        the spectrogram's sound by Griffin-Lim (``gl_iters`` iterations)."""
        return decode(raw, self.recipe, gl_iters, generator)

    def sample(
        self,
        n: int,
        *,
        solver: str = "ddim",
        nfe: int = 50,
        cond: Tensor | dict[str, Tensor],
        guidance: float = 1.0,
        generator: torch.Generator | None = None,
        progress: bool = False,
        gl_iters: int = 64,
        batch_size: int = 100,
    ) -> Tensor:
        """``n`` clips (n, L) in [-1, 1] of the digits ``cond``: :meth:`sample_raw`,
        then :meth:`decode` (with the same generator)."""
        raw = self.sample_raw(
            n, solver=solver, nfe=nfe, cond=cond, guidance=guidance,
            generator=generator, progress=progress, batch_size=batch_size,
        )  # fmt: skip
        return self.decode(raw, generator, gl_iters)


# What a trained audio model depends on: the loop (loss, schedules), both networks,
# the loaders and the signal processing that makes the training data.
DEPS = (
    "difflab.train.loop",
    "difflab.nets.unet",
    "difflab.nets.unet1d",
    "difflab.data.audio",
    "difflab.data.signal",
    "difflab.pipelines.audio",
)


def load_or_train_audio(
    recipe: AudioRecipe | str,
    *,
    device: torch.device | None = None,
    progress: bool = False,
) -> TrainedAudio:
    """The trained model of ``recipe`` from the cache, or trained now and cached."""
    if isinstance(recipe, str):
        recipe = audio_recipe(recipe)
    device = device or default_device()
    if device.type != "cuda":
        recipe = replace(recipe, train=replace(recipe.train, compile=False))
    x, data = clips(recipe.dataset, "train", recipe.rate, recipe.length)
    recipe = replace(recipe, dataset=data.name)  # the data actually found
    schedule = make_schedule(recipe.schedule, recipe.T)

    def build(path):
        t0 = time.perf_counter()
        result = train(
            init_net(recipe, device), represent(x, recipe), schedule, recipe.train,
            cond={"y": data.labels}, checkpoint=path, progress=progress,
            meta={"recipe": repr(recipe)},
        )  # fmt: skip
        if result.step != recipe.train.steps:
            raise RuntimeError(
                f"training stopped at step {result.step} of {recipe.train.steps}"
            )
        seconds = result.seconds or time.perf_counter() - t0
        return {"ema": result.ema.state_dict(), "losses": result.losses,
                "seconds": seconds}  # fmt: skip

    def load(state):
        net = init_net(recipe, device)
        restore(net, state.get("ema"), "the audio cache entry")
        try:
            return net.eval(), list(state["losses"]), float(state["seconds"])
        except (KeyError, TypeError, ValueError) as err:
            raise unreadable("the audio cache entry", err) from err

    (net, losses, seconds), hit = cached(
        "audio", recipe, deps=DEPS, build=build, load=load, device=device
    )
    return TrainedAudio(recipe, net, schedule, losses, seconds, hit, data.note)
