"""Equal training time for the variants of a recipe, as calibrated step counts.

An ablation compares variants given the same wall-clock budget. Stopping each
run after a fixed number of seconds would tie the result to how busy the
machine was, so no two builds (and no cache entry) would agree. Instead each
variant gets a fixed number of optimiser steps: its share of the budget at its
own cost per step, measured on this machine,

    steps_i = budget / seconds_per_step_i, rounded to a multiple of ``multiple``.

The step count, not the seconds, goes into the recipe and its cache key, so a
rebuild on the same machine retrains nothing unless the measured cost moved
across a rounding boundary. Variants whose networks cost the same per step (a
different schedule, prediction target, EMA or loss weight) need no timing.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import torch

from difflab.diffusion.schedules import make_schedule
from difflab.pipelines.recipes import Recipe, init_net, resolve_data
from difflab.runtime.device import default_device
from difflab.train.loop import train


def seconds_per_step(
    recipe: Recipe,
    *,
    steps: int = 20,
    repeats: int = 3,
    device: torch.device | None = None,
) -> float:
    """Seconds per optimiser step of ``recipe``, the least over ``repeats`` runs.

    Each run trains a fresh copy of the recipe's initial network for ``steps``
    steps (no checkpoint, no progress bar) after one untimed warm-up run. The
    least time is taken because other work on the machine only ever slows a
    run down, so the fastest run is the best estimate of the network's own cost.
    """
    device = device or default_device()
    recipe, data = resolve_data(recipe)
    schedule = make_schedule(recipe.schedule, recipe.T)
    cfg = replace(
        recipe.train,
        steps=steps,
        log_every=steps,
        checkpoint_every=steps,
        warmup=0,
        compile=recipe.train.compile and device.type == "cuda",
    )
    net = init_net(recipe, device)
    best = math.inf
    for run in range(repeats + 1):
        result = train(copy.deepcopy(net), data.images, schedule, cfg, progress=False)
        if run > 0:  # run 0 warms up the allocator and the kernels
            best = min(best, result.seconds / steps)
    return best


def equal_time_steps(budget: float, seconds_per_step: float, multiple: int = 10) -> int:
    """The steps that fill ``budget`` seconds at ``seconds_per_step``.

    Rounded to the nearest multiple of ``multiple`` (at least one multiple), so
    that a few per cent of timing noise rarely changes the count.

    Raises:
        ValueError: if a time is not positive or ``multiple`` is below 1.
    """
    if not (budget > 0 and seconds_per_step > 0 and multiple >= 1):
        raise ValueError(
            "budget and seconds_per_step must be > 0 and multiple >= 1, not "
            f"{budget!r}, {seconds_per_step!r}, {multiple!r}."
        )
    return max(multiple, round(budget / seconds_per_step / multiple) * multiple)
