"""Sampling a velocity field, Liu et al.'s straightness, and rectified flow's reflow.

A velocity model v(x, t) carries noise at t = 1 to data at t = 0 by the ODE
dx/dt = v(x, t) (the site's direction of time: integration runs *down*).
:func:`flow_sample` integrates it on a caller's grid (Euler, or Heun's explicit
trapezoid, Karras et al. 2022, Algorithm 1).

Straightness (Liu et al. 2023): for a path x_t from x_1 = z to x_0,

    S = int_0^1 E || (x_1 - x_0) - dx_t/dt ||^2 dt  >= 0,

zero exactly when every path is a straight line at constant speed, so one Euler
step is exact. Reflow (Liu et al. 2023, Algorithm 1): sample z, solve the ODE to
x_0, and train a new velocity field by flow matching on the *coupled* pairs
(x_0, z) with the straight path. The paper proves that no convex transport
cost E c(x_0 - z) of the coupling increases, and, for straightness, only that
the sum of S over K successive reflows is at most E ||x_1 - x_0||^2 of the
coupling they start from (so the straightest of the K has S <= that / K); it
does not prove that S falls at every reflow, which is for a measurement to show.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from difflab.core.models import VelocityModel, call
from difflab.core.ode import integrate
from difflab.core.optim import adam, clip_grad_norm
from difflab.core.progress import tqdm
from difflab.flow.paths import (
    StraightPath,
    conditional_sample,
    fm_loss,
)


def time_grid(steps: int, t_max: float = 1.0, t_min: float = 0.0) -> Tensor:
    """``steps + 1`` times evenly spaced from t_max down to t_min (float64)."""
    return torch.linspace(t_max, t_min, steps + 1, dtype=torch.float64)


@torch.no_grad()
def flow_sample(
    velocity: VelocityModel,
    x_1: Tensor,
    grid: Tensor,
    *,
    method: str = "euler",
    cond=None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> Tensor:
    """Integrate dx/dt = v(x, t) from grid[0] down to grid[-1].

    ``method``: ``"euler"`` (len(grid) - 1 evaluations) or ``"heun"`` (twice as
    many; Karras et al. 2022, Algorithm 1, with the correction on every step).
    ``callback`` gets ``{"i", "t", "x", "v", "dt", "nfe"}`` after each step, ``v``
    the slope used and ``dt`` < 0 the step (:func:`difflab.core.ode.integrate`, the
    integrator the probability-flow sampler uses too).
    """
    ts = torch.as_tensor(grid, dtype=torch.float64).cpu()
    return integrate(
        lambda x, t: call(velocity, x, t, cond),
        x_1,
        ts,
        method=method,
        callback=callback,
        progress=progress,
        desc="flow",
    )


@torch.no_grad()
def straightness(
    velocity: VelocityModel, x_1: Tensor, steps: int = 100, *, cond=None
) -> tuple[Tensor, Tensor]:
    """Liu et al.'s straightness of each path from x_1, and its end point.

    The path is integrated with ``steps`` Euler steps on [1, 0]; S is the
    time-average of ||(x_1 - x_0) - v||^2 over the steps (the left Riemann sum of
    the integral; with Euler it is exactly the spread of the step slopes around
    their mean). Returns (S per path (B,), x_0 (B, ...)).
    """
    slopes = []
    x_0 = flow_sample(
        velocity,
        x_1,
        time_grid(steps),
        cond=cond,
        callback=lambda info: slopes.append(info["v"]),
    )
    chord = x_1 - x_0  # dx/dt averaged over t in [0, 1]
    dims = tuple(range(1, x_1.ndim))
    s = sum((chord - v).pow(2).sum(dims) for v in slopes) / steps
    return s, x_0


@torch.no_grad()
def reflow_pairs(
    velocity: VelocityModel,
    z: Tensor,
    steps: int = 50,
    *,
    method: str = "heun",
    batch: int = 1024,
) -> tuple[Tensor, Tensor]:
    """The coupling (x_0, z) of a flow: noise z (N, ...) carried to data by the ODE.

    Liu et al. 2023, Algorithm 1, step 2 (the "reflow" pairs). Solved in chunks
    of ``batch`` with ``steps`` steps of ``method``.
    """
    grid = time_grid(steps)
    x0 = [flow_sample(velocity, zb, grid, method=method) for zb in z.split(batch)]
    return torch.cat(x0), z


@dataclass(frozen=True)
class FlowTrainConfig:
    """How a velocity network is trained (a cache key: its repr is its content).

    ``time_scale`` multiplies t in [0, 1] before the network sees it (1000 for a
    UNet made for DDPM indices). ``lr`` decays by a cosine to zero. t is drawn
    uniformly on [t_min, 1]. ``prediction``: ``"velocity"`` (flow matching) or
    ``"eps"`` (the same path trained as a diffusion model, L_simple; its output
    is a velocity through Eq. 2 of :mod:`difflab.flow.paths`).
    """

    steps: int = 2000
    batch_size: int = 256
    lr: float = 2e-3
    ema_decay: float = 0.0
    time_scale: float = 1.0
    t_min: float = 0.0
    prediction: str = "velocity"
    seed: int = 0


def velocity_model(net: nn.Module, time_scale: float = 1.0) -> VelocityModel:
    """``net(x, t * time_scale, cond)`` as ``v(x, t, cond=None)``."""

    def velocity(x: Tensor, t: Tensor, cond=None) -> Tensor:
        return net(x, t.to(x.dtype) * time_scale, cond)

    return velocity


def train_velocity(
    net: nn.Module,
    data: Tensor,
    cfg: FlowTrainConfig,
    *,
    noise: Tensor | None = None,
    path=None,
    progress: bool = False,
) -> tuple[nn.Module, list[float]]:
    """Flow matching on ``data`` (N, ...), or reflow on the pairs (data, noise).

    Each step draws a batch of indices; without ``noise`` each x0 meets fresh
    Gaussian noise (Lipman et al. 2023), with it the stored partner
    (Liu et al. 2023). ``path`` defaults to :class:`StraightPath`. Adam,
    cosine-decayed learning rate, gradients clipped at norm 1; returns (the EMA
    network if ``cfg.ema_decay`` > 0 else the trained one, losses).
    """
    path = path or StraightPath()
    if cfg.prediction not in ("velocity", "eps"):
        raise ValueError(f"prediction must be 'velocity' or 'eps': {cfg.prediction!r}")
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = adam(net.parameters(), lr=cfg.lr)
    ema = copy.deepcopy(net).requires_grad_(False) if cfg.ema_decay > 0 else None
    model = velocity_model(net, cfg.time_scale)
    losses = []
    for step in tqdm(range(cfg.steps), disable=not progress, desc="flow matching"):
        lr = 0.5 * cfg.lr * (1 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(data), (cfg.batch_size,), generator=gen)
        x0 = data[idx]
        eps = noise[idx] if noise is not None else None
        if eps is None:
            eps = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
        u = torch.rand(cfg.batch_size, generator=gen, dtype=torch.float64)
        t = cfg.t_min + (1 - cfg.t_min) * u
        if cfg.prediction == "eps":  # L_simple (Ho et al. 2020, Eq. 14) on the path
            x_t = conditional_sample(path, x0, eps, t)
            loss = (model(x_t, t.to(x0.dtype)) - eps).pow(2).mean()
        else:
            loss = fm_loss(model, path, x0, eps=eps, t=t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(net.parameters(), 1.0)
        opt.step()
        if ema is not None:
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), net.parameters(), strict=True):
                    pe.lerp_(p, 1 - cfg.ema_decay)
        losses.append(loss.item())
    return (ema if ema is not None else net).eval(), losses
