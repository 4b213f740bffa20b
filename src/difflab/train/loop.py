"""One readable training loop for every diffusion model of the site.

:func:`train` is Algorithm 1 of Ho et al. (2020) with the engineering around it
as small named steps: :func:`resume` from a checkpoint, :func:`get_batch`
(images and their condition, some rows replaced by the null condition),
:func:`backward` (L_simple and its gradients), :func:`optimise` (clipped
gradients, AdamW with warm-up), :func:`update_ema`, :func:`log` (with the NaN
guard) and :func:`save`. Everything that changes lives in one :class:`TrainState`.
Every random draw (batches, dropped conditions, t, eps, dropout) comes from
generators whose state goes into the checkpoint, so a run that is interrupted
and resumed ends with exactly the weights of one that was not.

Ctrl-C or SIGTERM at any moment saves the last *completed* step: an interrupt
during the draws, forward or backward puts the generators back as they were
before the step (nothing else has changed yet); one during the optimiser step
and the EMA update waits for them to finish (:mod:`difflab.train.interrupts`).
Under DDP a checkpoint holds every process's random state, gathered at the
periodic checkpoints; an interrupt keeps the last of those.
On a GPU: bf16 autocast, ``channels_last``, optional ``torch.compile``; under
``torchrun``, DistributedDataParallel.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from difflab.core import cond as conds
from difflab.core.cond import Cond, NullCond
from difflab.core.optim import adam, clip_grad_norm
from difflab.core.progress import tqdm
from difflab.diffusion.losses import simple_loss
from difflab.diffusion.schedules import Schedule
from difflab.runtime.checkpoint import (
    CheckpointError,
    load_checkpoint,
    restore,
    save_checkpoint,
    unreadable,
)
from difflab.runtime.device import autocast_dtype
from difflab.train.interrupts import Interrupts


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (Ho et al. 2020, App. B: Adam 2e-4, EMA 0.9999, clip 1).

    Attributes:
        steps: optimiser steps. batch_size: images per step (over all GPUs).
        lr, weight_decay, warmup: AdamW with a linear warm-up, then constant.
        grad_clip: max global gradient norm. ema_decay: of the weights' moving average.
        prediction: what the network regresses ("eps", "x0" or "v").
        min_snr_gamma: if set, weight each step's error by Min-SNR-gamma (Hang
            et al. 2023; :func:`difflab.diffusion.losses.min_snr_weight`); None:
            the uniform weights of L_simple.
        cond_drop: probability of replacing a row's condition by ``null_cond``
            (condition dropout for classifier-free guidance, Ho & Salimans 2022,
            Algorithm 1); 0 for unconditional training.
        null_cond: the null condition; needed when ``cond_drop > 0``.
        checkpoint_every: steps between checkpoints. log_every: steps between loss
            records (and the NaN/Inf check). seed: of every generator in the run.
        compile: wrap the network in ``torch.compile`` (GPU). amp: bf16 autocast
            where supported (CUDA). cpu_amp: also on a CPU that does bf16 in
            hardware (:func:`difflab.runtime.device.native_cpu_bf16`), for the
            networks that gain from it. channels_last: memory format on CUDA.
    """

    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    prediction: str = "eps"
    min_snr_gamma: float | None = None
    cond_drop: float = 0.0
    null_cond: NullCond | None = None
    checkpoint_every: int = 500
    log_every: int = 25
    seed: int = 0
    compile: bool = False
    amp: bool = True
    cpu_amp: bool = False
    channels_last: bool = True

    def __post_init__(self) -> None:
        """Refuse a setting no run can use, before any work (ValueError, one line)."""

        def refuse(name: str, allowed: str) -> None:
            value = getattr(self, name)
            raise ValueError(f"TrainConfig.{name} must be {allowed}, not {value!r}.")

        def number(x: object) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool)

        def finite(x: object) -> bool:
            return number(x) and math.isfinite(x)

        def whole(x: object) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            if not (whole(getattr(self, name)) and getattr(self, name) >= 1):
                refuse(name, "a positive whole number")
        if not (whole(self.warmup) and self.warmup >= 0):
            refuse("warmup", "a whole number of steps >= 0")
        if not (finite(self.lr) and self.lr > 0):
            refuse("lr", "a finite number > 0")
        if not (number(self.grad_clip) and self.grad_clip > 0):
            refuse("grad_clip", "a number > 0 (inf: no clipping)")
        if not (finite(self.weight_decay) and self.weight_decay >= 0):
            refuse("weight_decay", "a finite number >= 0")
        for name in ("ema_decay", "cond_drop"):
            if not (finite(getattr(self, name)) and 0 <= getattr(self, name) <= 1):
                refuse(name, "a number in [0, 1]")
        if self.prediction not in ("eps", "x0", "v"):
            refuse("prediction", "'eps', 'x0' or 'v'")
        gamma = self.min_snr_gamma
        if gamma is not None and not (finite(gamma) and gamma > 0):
            refuse("min_snr_gamma", "None or a finite number > 0")
        if self.cond_drop > 0 and self.null_cond is None:
            raise ValueError("TrainConfig.cond_drop > 0 needs TrainConfig.null_cond")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What :func:`train` returns: the EMA network is the one to sample from."""

    net: nn.Module
    ema: nn.Module
    losses: list[float] = field(default_factory=list)  # one mean per log_every steps
    step: int = 0
    seconds: float = 0.0


@dataclass
class TrainState:
    """Everything a run changes; what a checkpoint holds.

    ``running`` is the sum of the losses since the last log, kept on the device so
    that the loop syncs with the host once per ``log_every`` steps only.
    """

    net: nn.Module
    ema: nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    running: Tensor
    step: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @classmethod
    def start(cls, net: nn.Module, cfg: TrainConfig, seed: int) -> TrainState:
        """Step 0: the EMA starts as a copy of the network."""
        device = next(net.parameters()).device
        opt = adam(
            net.parameters(), lr=cfg.lr, decoupled=True, weight_decay=cfg.weight_decay
        )
        return cls(
            net=net,
            ema=copy.deepcopy(net).eval().requires_grad_(False),
            opt=opt,
            gen=torch.Generator(device).manual_seed(seed),
            running=torch.zeros((), device=device),
        )


def setup_distributed() -> tuple[int, int, torch.device | None]:
    """Join the process group that ``torchrun`` describes; (rank, world, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, None
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, local = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def _rng_state(gen: torch.Generator) -> dict:
    state = {"gen": gen.get_state(), "cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(gen: torch.Generator, state: dict) -> None:
    gen.set_state(state["gen"])
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_rng_states(gen: torch.Generator, world: int) -> list[dict]:
    """The random state of every process, gathered (a collective under DDP)."""
    mine = _rng_state(gen)
    if world == 1:
        return [mine]
    states: list = [None] * world
    dist.all_gather_object(states, mine)
    return states


def resume(
    state: TrainState, ckpt: Path, cfg: TrainConfig, rank: int = 0, world: int = 1
) -> None:
    """Load weights, optimiser, generators and counters from ``ckpt``.

    Each of the ``world`` processes takes back its own random state.

    Raises:
        CheckpointError: if ``ckpt`` is unreadable, of another configuration or
            number of processes, or of another network (one line naming the file
            and the fix).
    """
    keys = ("net", "ema", "opt", "rng", "step", "losses", "seconds")
    saved = load_checkpoint(ckpt, map_location=state.running.device, keys=keys)
    if saved.get("train_config") != asdict(cfg):
        raise CheckpointError(
            f"{ckpt} was written by another configuration; delete it to retrain."
        )
    if saved.get("world", 1) != world:
        raise CheckpointError(
            f"{ckpt} was written by {saved.get('world', 1)} processes, not {world}; "
            "delete it to retrain."
        )
    restore(state.net, saved["net"], ckpt)
    restore(state.ema, saved["ema"], ckpt)
    restore(state.opt, saved["opt"], ckpt)
    try:
        _set_rng_state(state.gen, saved["rng"] if world == 1 else saved["rngs"][rank])
        state.step, state.losses = int(saved["step"]), list(saved["losses"])
        state.seconds = float(saved["seconds"])
        state.running.fill_(saved.get("running", 0.0))
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise unreadable(ckpt, err) from err


def save(
    state: TrainState,
    ckpt: Path,
    cfg: TrainConfig,
    meta: dict,
    done: bool,
    rngs: list[dict] | None = None,
) -> None:
    """Write the whole state to ``ckpt`` atomically (``done``: training finished).

    ``rngs``: the random state of every process (:func:`all_rng_states`); by
    default that of this one alone.
    """
    rngs = rngs or [_rng_state(state.gen)]
    save_checkpoint(
        {
            "net": state.net.state_dict(),
            "ema": state.ema.state_dict(),
            "opt": state.opt.state_dict(),
            "rng": rngs[0],
            "rngs": rngs,
            "world": len(rngs),
            "step": state.step,
            "losses": state.losses,
            "seconds": state.seconds,
            "done": done,
            "running": state.running.item(),
            "train_config": asdict(cfg),
            "meta": meta,
        },
        ckpt,
    )


def get_batch(
    images: Tensor, cond: Cond | None, state: TrainState, cfg: TrainConfig, n: int
) -> tuple[Tensor, dict[str, Tensor] | None]:
    """``n`` random images x_0 (n, C, H, W) and their condition, some rows nulled."""
    idx = torch.randint(len(images), (n,), device=images.device, generator=state.gen)
    x0 = images[idx]
    if x0.is_cuda and cfg.channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    else:  # a batch of strided data (channels-last latents, HWC images seen
        x0 = x0.contiguous()  # through a permute) keeps its strides; bf16
        # convolutions on those ran 1.8x slower on the CPU (CIFAR-10's latent UNet)
    c = conds.select(cond, idx)
    if c is not None and cfg.cond_drop > 0:
        c = conds.drop(c, cfg.cond_drop, cfg.null_cond, state.gen)
    return x0, c


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``cfg.warmup`` steps, then constant."""
    return cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))


def backward(
    model: nn.Module,
    schedule: Schedule,
    x0: Tensor,
    cond: Cond | None,
    state: TrainState,
    cfg: TrainConfig,
) -> Tensor:
    """L_simple and its gradient (Ho et al. 2020, Algorithm 1, lines 2-5); the loss.

    Changes only the generators and the ``.grad`` fields, so an interrupted call
    is undone by putting the generators back.
    """
    device = x0.device
    amp_dtype = autocast_dtype(device, cpu=cfg.cpu_amp) if cfg.amp else None
    with torch.autocast(
        device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
    ):
        loss = simple_loss(
            model,
            schedule,
            x0,
            cond=cond,
            prediction=cfg.prediction,
            generator=state.gen,
            min_snr_gamma=cfg.min_snr_gamma,
        )
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    return loss.detach()


def optimise(state: TrainState, cfg: TrainConfig) -> None:
    """The gradient step: clip the global norm, then AdamW at the warm-up rate."""
    for group in state.opt.param_groups:
        group["lr"] = learning_rate(state.step, cfg)
    clip_grad_norm(state.net.parameters(), cfg.grad_clip)
    state.opt.step()


@torch.no_grad()
def update_ema(state: TrainState, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * net, for every parameter."""
    ema_params, net_params = list(state.ema.parameters()), list(state.net.parameters())
    torch._foreach_lerp_(ema_params, net_params, 1 - decay)


def log(state: TrainState, cfg: TrainConfig, ckpt: Path | None) -> float:
    """Record the mean loss since the last log; stop if it is NaN or infinite.

    Raises:
        TrainingDiverged: naming the last good checkpoint, which is kept.
    """
    n = (state.step - 1) % cfg.log_every + 1
    mean = state.running.item() / n  # the one host sync per log_every steps
    state.running.zero_()
    if not math.isfinite(mean):
        kept = f"the last good checkpoint {ckpt} is kept" if ckpt else "no checkpoint"
        raise TrainingDiverged(
            f"The loss became {mean} by step {state.step}; {kept}. "
            "Lower the learning rate or check the data."
        )
    state.losses.append(mean)
    return mean


#: After this many steps of a run, the loop says on stderr what it trains and how
#: long the rest will take at the rate measured so far (a terminal or not).
ANNOUNCE_AFTER = 3


def _refuse_slow(meta: dict | None, device: torch.device, line: str) -> None:
    """The full profile on a CPU (hours) goes on only when asked to.

    Raises:
        SettingError: with the estimate, unless ``DIFFLAB_ALLOW_SLOW`` is 1 (the
            command line's ``--yes`` sets it); nothing is saved of the run.
    """
    import os

    from difflab.runtime.settings import SettingError

    full = "profile='full'" in str((meta or {}).get("recipe", ""))
    allowed = os.environ.get("DIFFLAB_ALLOW_SLOW", "").strip().lower()
    if full and device.type == "cpu" and allowed not in ("1", "yes", "true"):
        raise SettingError(
            f"{line}. The full profile is meant for a GPU: pass --yes (or set "
            f"DIFFLAB_ALLOW_SLOW=1) to train it here anyway, or use the quick profile."
        )


def _announce(
    meta: dict | None,
    cfg: TrainConfig,
    step: int,
    seconds: float,
    say: bool = True,
    time_budget: float | None = None,
) -> str:
    """One line: what is trained, its steps, the measured rate, the time left
    (under a time budget, the budget and the steps it buys at that rate)."""
    import re
    import sys

    found = re.match(r"(\w+)\(name='([^']*)'", str((meta or {}).get("recipe", "")))
    what = f"{found[2]} ({found[1]})" if found else "a model"
    rate = seconds / ANNOUNCE_AFTER
    left = rate * (cfg.steps - step)
    if time_budget is not None and time_budget < left + seconds:
        line = (
            f"training {what} for {time_budget:.3g} s (a time budget): about "
            f"{time_budget / rate:,.0f} steps at about {rate:.2f} s a step here "
            f"(the first {ANNOUNCE_AFTER} of this run)"
        )
        if say:
            print(line, file=sys.stderr, flush=True)
        return line
    when = f"{left:.0f} s" if left < 90 else f"{left / 60:.0f} min"
    if left >= 5400:
        when = f"{left / 3600:.1f} h"
    line = (
        f"training {what}: {cfg.steps:,} steps at about {rate:.2f} s a step here "
        f"(the first {ANNOUNCE_AFTER} of this run), about {when} to go"
    )
    if say:
        print(line, file=sys.stderr, flush=True)
    return line


def train(
    net: nn.Module,
    images: Tensor,
    schedule: Schedule,
    config: TrainConfig,
    *,
    cond: Cond | None = None,
    checkpoint: str | Path | None = None,
    meta: dict | None = None,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
    time_budget: float | None = None,
) -> TrainResult:
    """Train ``net`` with L_simple on ``images`` (N, C, H, W) in [-1, 1].

    Args:
        net: network ``net(x_t, t, cond)``; trained in place on its own device.
        cond: the condition of every image, a mapping of (N, ...) tensors (for
            example ``{"y": labels}``), or None for an unconditional network.
        checkpoint: where to save every ``checkpoint_every`` steps and at the end
            (atomically); if a checkpoint is there, training resumes from it.
        meta: extra JSON-like data stored in the checkpoint (the recipe, say).
        callback: ``callback(step, loss)`` after each logged step; raising
            ``KeyboardInterrupt`` there (or Ctrl-C, or SIGTERM, at any moment)
            saves the last completed step to ``checkpoint``, then stops.
        time_budget: stop (and save) after this many seconds of training.

    Raises:
        TrainingDiverged: if the loss turns NaN/Inf; the last good checkpoint stays.
        ValueError: if ``config.batch_size`` is smaller than the number of
            processes.
        KeyboardInterrupt: on Ctrl-C or SIGTERM, once the checkpoint is written.
    """
    cfg = config
    rank, world, ddp_device = setup_distributed()
    if cfg.batch_size < world:
        raise ValueError(
            f"TrainConfig.batch_size {cfg.batch_size} is smaller than the {world} "
            "processes; give each at least one image."
        )
    if ddp_device is not None:
        net.to(ddp_device)
    device = next(net.parameters()).device
    if device.type == "cuda" and cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    images, cond = images.to(device), conds.to(cond, device)
    ckpt = Path(checkpoint) if checkpoint and rank == 0 else None
    state = TrainState.start(net, cfg, seed=cfg.seed + 1000 * rank)
    interrupts = Interrupts()

    def checkpoint_now(done: bool) -> None:
        """Every process calls this at the same step; rank 0 writes."""
        if not checkpoint:
            return
        rngs = all_rng_states(state.gen, world)
        if ckpt is not None:
            with interrupts.deferred():  # a second Ctrl-C does not lose this one
                save(state, ckpt, cfg, meta or {}, done, rngs)

    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked), interrupts.installed():
        torch.manual_seed(cfg.seed + 1000 * rank)  # dropout; restored on exit
        if checkpoint and Path(checkpoint).exists():
            resume(state, Path(checkpoint), cfg, rank, world)
        model = nn.parallel.DistributedDataParallel(net) if world > 1 else net
        model = torch.compile(model) if cfg.compile else model
        bar = tqdm(
            total=cfg.steps,
            initial=state.step,
            disable=not progress or rank != 0,
            desc="train",
            dynamic_ncols=True,
        )
        t0 = time.perf_counter() - state.seconds
        first, t_run = state.step, time.perf_counter()
        try:
            while state.step < cfg.steps:
                step, before = state.step, _rng_state(state.gen)
                try:
                    x0, c = get_batch(images, cond, state, cfg, cfg.batch_size // world)
                    loss = backward(model, schedule, x0, c, state, cfg)
                    with interrupts.deferred():  # the step completes, or never began
                        optimise(state, cfg)
                        update_ema(state, cfg.ema_decay)
                        state.running += loss
                        state.step += 1
                except KeyboardInterrupt:
                    if state.step == step:  # stopped in the first half: undo its draws
                        with interrupts.deferred():
                            _set_rng_state(state.gen, before)
                    raise
                bar.update(1)
                if state.step == first + ANNOUNCE_AFTER < cfg.steps:
                    seconds = time.perf_counter() - t_run
                    line = _announce(
                        meta, cfg, state.step, seconds, rank == 0, time_budget
                    )
                    _refuse_slow(meta, device, line)
                if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                    state.seconds = time.perf_counter() - t0
                    loss = log(state, cfg, ckpt)
                    bar.set_postfix(loss=f"{loss:.4f}")
                    if callback is not None:
                        callback(state.step, loss)
                    if time_budget is not None and state.seconds >= time_budget:
                        break
                if state.step % cfg.checkpoint_every == 0 and state.step < cfg.steps:
                    checkpoint_now(done=False)
        except KeyboardInterrupt:
            state.seconds = time.perf_counter() - t0
            healthy = bool(torch.isfinite(state.running)) and all(
                math.isfinite(x) for x in state.losses[-1:]
            )
            # Under DDP the other processes' random states cannot be gathered
            # now; the last periodic checkpoint, which has them, is kept.
            if state.step > 0 and healthy and world == 1:
                checkpoint_now(done=False)  # nothing is lost: the next run resumes
            raise
        finally:
            bar.close()
        state.seconds = time.perf_counter() - t0
        checkpoint_now(done=state.step >= cfg.steps)
    return TrainResult(net, state.ema, state.losses, state.step, state.seconds)
