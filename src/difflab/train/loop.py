"""One readable training loop for every diffusion model of the site.

Read it top to bottom: pick a batch, noise it, regress, clip, step, update the EMA,
now and then write an atomic checkpoint. Everything random (batches, t, eps,
dropout) comes from generators whose state goes into the checkpoint, so a run that
is interrupted and resumed ends with exactly the weights of one that was not.
On a GPU: bf16 autocast, ``channels_last``, optional ``torch.compile``; under
``torchrun`` the network is wrapped in DistributedDataParallel.
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

from difflab.core.progress import tqdm
from difflab.diffusion.losses import simple_loss
from difflab.diffusion.schedules import Schedule
from difflab.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from difflab.train.device import autocast_dtype


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (Ho et al. 2020, App. B: Adam 2e-4, EMA 0.9999, clip 1).

    Attributes:
        steps: optimiser steps. batch_size: images per step (over all GPUs).
        lr, weight_decay, warmup: AdamW with a linear warm-up, then constant.
        grad_clip: max global gradient norm. ema_decay: of the weights' moving average.
        prediction: what the network regresses ("eps", "x0" or "v").
        class_dropout: probability of replacing a label by the null label, for
            classifier-free guidance (Ho & Salimans 2022); 0 for unconditional nets.
        checkpoint_every: steps between checkpoints. log_every: steps between loss
            records (and the NaN/Inf check). seed: of every generator in the run.
        compile: wrap the network in ``torch.compile`` (GPU). amp: bf16 autocast
            where supported. channels_last: memory format on CUDA.
    """

    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    prediction: str = "eps"
    class_dropout: float = 0.0
    checkpoint_every: int = 500
    log_every: int = 25
    seed: int = 0
    compile: bool = False
    amp: bool = True
    channels_last: bool = True


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


def train(
    net: nn.Module,
    images: Tensor,
    schedule: Schedule,
    config: TrainConfig,
    *,
    labels: Tensor | None = None,
    checkpoint: str | Path | None = None,
    meta: dict | None = None,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
    time_budget: float | None = None,
) -> TrainResult:
    """Train ``net`` with L_simple on ``images`` (N, C, H, W) in [-1, 1].

    Args:
        net: network ``net(x_t, t, y=None)``; trained in place on its own device.
        labels: (N,) long class labels for a class-conditional network.
        checkpoint: where to save every ``checkpoint_every`` steps and at the end
            (atomically); if a checkpoint is there, training resumes from it.
        meta: extra JSON-like data stored in the checkpoint (the recipe, say).
        callback: ``callback(step, loss)`` after each logged step; raising
            ``KeyboardInterrupt`` there (or Ctrl-C) saves a checkpoint, then stops.
        time_budget: stop (and save) after this many seconds of training.

    Raises:
        TrainingDiverged: if the loss turns NaN/Inf; the last good checkpoint stays.
    """
    cfg = config
    rank, world, ddp_device = setup_distributed()
    if ddp_device is not None:
        net.to(ddp_device)
    device = next(net.parameters()).device
    on_cuda = device.type == "cuda"
    if on_cuda and cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator(device).manual_seed(cfg.seed + 1000 * rank)
    images = images.to(device)
    labels = labels.to(device) if labels is not None else None
    result = TrainResult(net=net, ema=ema)
    ckpt = Path(checkpoint) if checkpoint else None

    with torch.random.fork_rng(devices=[device] if on_cuda else []):
        torch.manual_seed(cfg.seed + 1000 * rank)  # dropout; restored on exit
        if ckpt is not None and ckpt.exists():
            state = load_checkpoint(ckpt, map_location=device)
            if state.get("train_config") != asdict(cfg):
                raise CheckpointError(
                    f"{ckpt} was written by another configuration; delete it to retrain."
                )
            net.load_state_dict(state["net"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["opt"])
            _set_rng_state(gen, state["rng"])
            result.step, result.losses = state["step"], list(state["losses"])
            result.seconds = state["seconds"]
            running_restored = state.get("running", 0.0)
        else:
            running_restored = 0.0

        def save(done: bool) -> None:
            if ckpt is None or rank != 0:
                return
            save_checkpoint(
                {
                    "net": net.state_dict(),
                    "ema": ema.state_dict(),
                    "opt": opt.state_dict(),
                    "rng": _rng_state(gen),
                    "step": result.step,
                    "losses": result.losses,
                    "seconds": result.seconds,
                    "done": done,
                    "running": running.item(),
                    "train_config": asdict(cfg),
                    "meta": meta or {},
                },
                ckpt,
            )

        model = net
        if world > 1:
            model = nn.parallel.DistributedDataParallel(net)
        if cfg.compile:
            model = torch.compile(model)
        amp_dtype = autocast_dtype(device) if cfg.amp else None
        null = getattr(getattr(net, "config", None), "num_classes", None)
        ema_params = list(ema.parameters())
        net_params = list(net.parameters())
        local_batch = cfg.batch_size // world
        running = torch.full((), running_restored, device=device)
        bar = tqdm(
            total=cfg.steps,
            initial=result.step,
            disable=not progress or rank != 0,
            desc="train",
            dynamic_ncols=True,
        )
        t_start = time.perf_counter() - result.seconds
        try:
            while result.step < cfg.steps:
                # Batch: random images (and labels, some dropped to the null class).
                idx = torch.randint(
                    len(images), (local_batch,), device=device, generator=gen
                )
                x0 = images[idx]
                if on_cuda and cfg.channels_last:
                    x0 = x0.contiguous(memory_format=torch.channels_last)
                y = None
                if labels is not None:
                    y = labels[idx]
                    if cfg.class_dropout > 0:
                        drop = torch.rand(y.shape, device=device, generator=gen)
                        y = torch.where(drop < cfg.class_dropout, null, y)
                # Loss (Ho et al. 2020, Algorithm 1), under bf16 autocast on a GPU.
                with torch.autocast(
                    device.type,
                    dtype=amp_dtype or torch.float32,
                    enabled=amp_dtype is not None,
                ):
                    loss = simple_loss(
                        model,
                        x0,
                        schedule,
                        prediction=cfg.prediction,
                        y=y,
                        generator=gen,
                    )
                # Step: warm-up learning rate, clipped gradients, AdamW, EMA.
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * min(
                        1.0, (result.step + 1) / max(cfg.warmup, 1)
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(net_params, cfg.grad_clip)
                opt.step()
                torch._foreach_lerp_(ema_params, net_params, 1 - cfg.ema_decay)
                running += loss.detach()
                result.step += 1
                bar.update(1)
                if result.step % cfg.log_every == 0 or result.step == cfg.steps:
                    n = (result.step - 1) % cfg.log_every + 1
                    mean = running.item() / n  # one host sync per log_every steps
                    running.zero_()
                    if not math.isfinite(mean):
                        last = (
                            f"the last good checkpoint {ckpt} is kept"
                            if ckpt
                            else "no checkpoint was written"
                        )
                        raise TrainingDiverged(
                            f"The loss became {mean} by step {result.step}; {last}. "
                            "Lower the learning rate or check the data."
                        )
                    result.losses.append(mean)
                    result.seconds = time.perf_counter() - t_start
                    bar.set_postfix(loss=f"{mean:.4f}")
                    if callback is not None:
                        callback(result.step, mean)
                    if time_budget is not None and result.seconds >= time_budget:
                        break
                if result.step % cfg.checkpoint_every == 0 and result.step < cfg.steps:
                    save(done=False)
        except KeyboardInterrupt:
            result.seconds = time.perf_counter() - t_start
            if len(result.losses) and math.isfinite(result.losses[-1]):
                save(done=False)  # nothing is lost: the next run resumes here
            bar.close()
            raise
        bar.close()
        result.seconds = time.perf_counter() - t_start
        save(done=result.step >= cfg.steps)
    return result
