"""Consistency models by distillation of a probability-flow ODE (Song et al. 2023).

A consistency function maps any point x_t of a probability-flow ODE trajectory
to the trajectory's point at the smallest time eps: f(x_t, t) = x_eps for every
t in [eps, T] (Song et al. 2023, Sec. 3). It needs the boundary condition
f(x, eps) = x, which their parameterisation builds in:

    f_theta(x, t) = c_skip(t) x + c_out(t) F_theta(x, t),
    c_skip(eps) = 1,  c_out(eps) = 0.

Written on the noise interface: with the data-scale noise level
s(t) = sigma(t) / alpha(t) = exp(-lambda(t)) and y = x / alpha(t), the
probability-flow ODE is dy/ds = eps*(x, t) (Song et al. 2021a, Eq. 14; DDIM is
its Euler step). Two choices of coefficients are provided, both functions of
s - s_min, s_min = s(eps), so both vanish exactly at the boundary:

- ``"edm"``: the choice of Song et al. 2023 (from Karras et al. 2022):
  c_skip = sigma_data^2 / ((s - s_min)^2 + sigma_data^2),
  c_out = sigma_data (s - s_min) / sqrt(sigma_data^2 + s^2);
- ``"ddim"``: c_skip = 1, c_out = -(s - s_min) with F_theta an eps prediction,
  so f_theta is one DDIM step from t to eps. A network initialised from the
  teacher's weights then starts as the teacher's one-step sampler.

In the VP state the result is carried back to time eps by alpha(eps):
f = alpha(eps) (c_skip y + c_out F), written with the ratio alpha(eps) /
alpha(t), which is exactly 1 at t = eps, so f(x, eps) = x holds to the bit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from difflab.core.optim import adam, clip_grad_norm
from difflab.core.progress import tqdm
from difflab.core.tensors import append_dims, randn_like
from difflab.diffusion.noise import NoiseLevels

COEFS = ("edm", "ddim")


def consistency_coefs(
    s: Tensor, s_min: Tensor | float, kind: str = "edm", sigma_data: float = 0.5
) -> tuple[Tensor, Tensor]:
    """(c_skip, c_out) at noise levels s (B,), boundary s_min (module docstring)."""
    d = s - s_min
    if kind == "edm":
        c_skip = sigma_data**2 / (d**2 + sigma_data**2)
        return c_skip, sigma_data * d / (sigma_data**2 + s**2).sqrt()
    if kind == "ddim":
        return torch.ones_like(s), -d
    raise ValueError(f"Unknown coefficients {kind!r}; use one of {COEFS}.")


class ConsistencyModel(nn.Module):
    """f_theta(x, t) = alpha(eps) [c_skip y + c_out F_theta(x, t)], y = x / alpha(t).

    Args:
        net: F_theta, called as ``net(x, t_input(t), cond)``.
        noise: the noise levels of the ODE being distilled.
        t_eps: the boundary time eps.
        kind: ``"edm"`` or ``"ddim"`` coefficients (:func:`consistency_coefs`).
        sigma_data: the data standard deviation of the ``"edm"`` coefficients.
        t_input: maps t (B,) to the network's time input (default: identity).
    """

    def __init__(
        self,
        net: nn.Module,
        noise: NoiseLevels,
        t_eps: float = 0.0,
        *,
        kind: str = "ddim",
        sigma_data: float = 0.5,
        t_input: Callable[[Tensor], Tensor] | None = None,
    ):
        super().__init__()
        if kind not in COEFS:
            raise ValueError(f"Unknown coefficients {kind!r}; use one of {COEFS}.")
        self.net, self.noise, self.t_eps = net, noise, float(t_eps)
        self.kind, self.sigma_data = kind, sigma_data
        self.t_input = t_input or (lambda t: t)

    def forward(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        t = t.to(torch.float64)
        e = torch.full_like(t, self.t_eps)
        alpha_t, sigma_t = self.noise.marginal_coefs(t)
        alpha_e, sigma_e = self.noise.marginal_coefs(e)
        s, s_min = sigma_t / alpha_t, sigma_e / alpha_e
        c_skip, c_out = consistency_coefs(s, s_min, self.kind, self.sigma_data)
        out = self.net(x, self.t_input(t).to(x.dtype), cond)
        skip = append_dims(c_skip * (alpha_e / alpha_t), x)
        return skip * x + append_dims(c_out * alpha_e, x) * out


@dataclass(frozen=True)
class DistillConfig:
    """Consistency distillation (Song et al. 2023, Algorithm 2); a cache key.

    ``grid``: the N + 1 increasing times t_0 = eps < ... < t_N of the
    discretisation (a tuple, so the config stays hashable); ``mu``: the decay of
    the target network theta^-; ``lr`` decays by a cosine.
    """

    grid: tuple[float, ...]
    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-4
    mu: float = 0.95
    seed: int = 0


def ddim_step(
    eps_model, noise: NoiseLevels, x: Tensor, t: Tensor, s: Tensor, cond=None
) -> Tensor:
    """One deterministic DDIM step of the teacher's ODE from t to s (both (B,))."""
    alpha_t, sigma_t = (append_dims(v, x) for v in noise.marginal_coefs(t))
    alpha_s, sigma_s = (append_dims(v, x) for v in noise.marginal_coefs(s))
    eps = eps_model(x, t.to(x.dtype)) if cond is None else eps_model(x, t, cond)
    return alpha_s * (x - sigma_t * eps) / alpha_t + sigma_s * eps


def distill(
    student: ConsistencyModel,
    teacher_eps,
    data: Tensor,
    cfg: DistillConfig,
    *,
    progress: bool = False,
) -> tuple[ConsistencyModel, list[float]]:
    """Consistency distillation with a DDIM teacher step and the squared L2 distance.

    Each step: n ~ U{0..N-1}, x_{t_{n+1}} = alpha x0 + sigma z, the teacher's ODE
    step to t_n gives x_hat_{t_n}, and the loss is
    ||f_theta(x_{t_{n+1}}, t_{n+1}) - f_theta^-(x_hat_{t_n}, t_n)||^2 (weight
    lambda = 1, d = squared L2); theta^- <- mu theta^- + (1 - mu) theta.
    Returns (theta^-, per-step losses).
    """
    noise = student.noise
    grid = torch.tensor(cfg.grid, dtype=torch.float64)
    gen = torch.Generator().manual_seed(cfg.seed)
    target = copy.deepcopy(student).requires_grad_(False).eval()
    opt = adam(student.net.parameters(), lr=cfg.lr)
    losses = []
    for step in tqdm(range(cfg.steps), disable=not progress, desc="distil"):
        lr = 0.5 * cfg.lr * (1 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        x0 = data[torch.randint(len(data), (cfg.batch_size,), generator=gen)]
        z = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
        n = torch.randint(len(grid) - 1, (cfg.batch_size,), generator=gen)
        t_next, t_n = grid[n + 1], grid[n]
        alpha, sigma = (append_dims(v, x0) for v in noise.marginal_coefs(t_next))
        x_next = alpha * x0 + sigma * z
        with torch.no_grad():
            x_hat = ddim_step(teacher_eps, noise, x_next, t_next, t_n)
            goal = target(x_hat, t_n)
        loss = (student(x_next, t_next) - goal).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(student.net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for pt, p in zip(target.parameters(), student.parameters(), strict=True):
                pt.lerp_(p, 1 - cfg.mu)
        losses.append(loss.item())
    return target, losses


@torch.no_grad()
def consistency_sample(
    model: ConsistencyModel,
    x_T: Tensor,
    times: Tensor,
    *,
    cond=None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1).

    x = f(x_T, times[0]); then for each later time tau (decreasing), re-noise
    x_eps to tau with the forward transition q(x_tau | x_eps) and apply f again.
    len(times) evaluations.
    """
    ts = torch.as_tensor(times, dtype=torch.float64).cpu()
    b = x_T.shape[0]
    x = model(x_T, torch.full((b,), float(ts[0]), dtype=torch.float64), cond)
    for tau in ts[1:].tolist():
        t = torch.full((b,), tau, dtype=torch.float64)
        a, std = model.noise.transition_coefs(torch.full_like(t, model.t_eps), t)
        x_tau = append_dims(a, x) * x + append_dims(std, x) * randn_like(x, generator)
        x = model(x_tau, t, cond)
    return x
