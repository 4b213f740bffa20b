"""Samplers of the discrete process, each a plain function with one visible loop.

Every sampler has the signature ``(eps_model, x_T, schedule or grid, ..., *, cond,
generator, callback, progress) -> x_0``, where ``eps_model(x_t, t)`` predicts the
noise at continuous time t (the package's one model convention,
:mod:`difflab.core.models`; wrap any network with
:func:`difflab.diffusion.parameterization.as_eps_model`); ``cond``, if given, is
passed unchanged as ``eps_model(x_t, t, cond)``. ``callback``, if given, is called
after every step with a dict ``{"i", "t", "x", "x0_hat"}``.

:func:`ddpm_sample` and :func:`ddim_sample` speak the DDPM chapter's variables
(integer steps, alpha_bar): they loop over step indices n and call the model at
n's time, ``schedule.time(n)`` = (n + 1) / T, the paper's step over T (their
callback's ``"t"`` is the index n); :func:`ddim_grid_sample` is the same DDIM
update written on the noise interface (alpha(t), sigma(t), lambda(t) of
:mod:`difflab.diffusion.noise`) over any time grid the caller chooses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from difflab.core.cond import Cond
from difflab.core.models import EpsModel, call
from difflab.core.progress import tqdm
from difflab.core.tensors import append_dims, randn_like
from difflab.diffusion.forward import q_posterior
from difflab.diffusion.noise import NoiseLevels
from difflab.diffusion.parameterization import eps_from_x0, x0_from_eps
from difflab.diffusion.schedules import Schedule, gather


@torch.no_grad()
def ddpm_sample(
    eps_model: EpsModel,
    x_T: Tensor,
    schedule: Schedule,
    *,
    variance: str = "beta",
    clip_x0: float | None = None,
    cond: Cond | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> Tensor:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2).

    x_{t-1} = mu_theta(x_t, t) + sigma_t z, with mu_theta the posterior mean at
    x0_hat (Eq. 11 written through Eq. 7) and sigma_t^2 = beta_t (``"beta"``) or
    beta_tilde_t (``"beta_tilde"``); no noise is added at the last step.

    Args:
        x_T: pure noise (B, ...). clip_x0: clamp x0_hat to [-clip_x0, clip_x0]
            (images in [-1, 1]: 1.0), None for unbounded data.
    """
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f"Unknown variance {variance!r}; use 'beta' or 'beta_tilde'.")
    var_table = schedule.betas if variance == "beta" else schedule.posterior_variance
    x = x_T
    for i in tqdm(
        reversed(range(schedule.T)), total=schedule.T, disable=not progress, desc="DDPM"
    ):
        t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        eps = call(eps_model, x, _time(schedule, t, x), cond)
        x0_hat = x0_from_eps(x, eps, gather(schedule.alpha_bar, t, x))
        if clip_x0 is not None:
            x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
        mean, _, _ = q_posterior(schedule, x0_hat, x, t)
        # Denoising step; the last one returns the mean.
        x = (
            mean + gather(var_table, t, x).sqrt() * randn_like(x, generator)
            if i > 0
            else mean
        )
        if callback is not None:
            callback({"i": schedule.T - 1 - i, "t": i, "x": x, "x0_hat": x0_hat})
    return x


def _time(schedule: Schedule, n: Tensor, x: Tensor) -> Tensor:
    """The continuous time of step indices ``n``, in ``x``'s dtype and device."""
    return schedule.time(n).to(device=x.device, dtype=x.dtype)


def ddim_timesteps(T: int, steps: int, spacing: str = "uniform") -> Tensor:
    """An increasing subsequence tau of 0..T-1 of length ``steps`` (Song et al. 2021a, App. D.2).

    ``"uniform"`` spaces tau evenly; ``"quadratic"`` spaces sqrt(tau) evenly, so that
    more steps fall at low noise. Always starts at 0 and ends at T - 1.
    """
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in [1, {T}], got {steps}.")
    if steps == 1:
        return torch.tensor([T - 1])
    u = torch.linspace(0, 1, steps, dtype=torch.float64)
    if spacing == "uniform":
        tau = (u * (T - 1)).round().long()
    elif spacing == "quadratic":
        tau = (u**2 * (T - 1)).round().long()
        for k in range(1, steps):  # keep it strictly increasing where squares bunch up
            tau[k] = max(tau[k], tau[k - 1] + 1)
        for k in range(steps - 2, -1, -1):
            tau[k] = min(tau[k], tau[k + 1] - 1)
    else:
        raise ValueError(f"Unknown spacing {spacing!r}; use 'uniform' or 'quadratic'.")
    return tau


@torch.no_grad()
def ddim_sample(
    eps_model: EpsModel,
    x_T: Tensor,
    schedule: Schedule,
    timesteps: Tensor | None = None,
    *,
    eta: float = 0.0,
    clip_x0: float | None = None,
    cond: Cond | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> Tensor:
    """DDIM sampling over the subsequence ``timesteps`` (Song et al. 2021a, Eq. 12).

    x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps_hat + sigma z, with
    sigma = eta sqrt((1 - a_prev) / (1 - a)) sqrt(1 - a / a_prev) (Eq. 16): eta = 0 is
    the deterministic DDIM, eta = 1 over all T steps is DDPM with beta_tilde.

    It is written in the DDPM chapter's variables (alpha_bar, the step index) and is
    a view of :func:`ddim_grid_sample`, the same update on any noise interface: on
    ``DiscreteNoise(schedule)`` with the grid of ``timesteps`` the two agree to
    1e-10 (``tests/test_noise.py``).

    Args:
        timesteps: increasing step indices (default: all of 0..T-1); see
            :func:`ddim_timesteps`.
    """
    if timesteps is None:
        timesteps = torch.arange(schedule.T)
    taus = timesteps.tolist()
    x = x_T
    for k in tqdm(range(len(taus) - 1, -1, -1), disable=not progress, desc="DDIM"):
        t = torch.full((x.shape[0],), taus[k], device=x.device, dtype=torch.long)
        a = gather(schedule.alpha_bar, t, x)
        if k > 0:
            a_prev = gather(schedule.alpha_bar, torch.full_like(t, taus[k - 1]), x)
        else:
            a_prev = torch.ones_like(a)  # alpha_bar_0 = 1: the clean image
        eps = call(eps_model, x, _time(schedule, t, x), cond)
        x0_hat = x0_from_eps(x, eps, a)
        if clip_x0 is not None:
            x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
            eps = eps_from_x0(x, x0_hat, a)  # keep eps consistent with the clipped x0
        sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()
        # Eq. 12: predicted x0, direction pointing to x_t, and fresh noise.
        x = a_prev.sqrt() * x0_hat + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0 and k > 0:
            x = x + sigma * randn_like(x, generator)
        if callback is not None:
            callback({"i": len(taus) - 1 - k, "t": taus[k], "x": x, "x0_hat": x0_hat})
    return x


@torch.no_grad()
def ddim_grid_sample(
    eps_model: EpsModel,
    x_T: Tensor,
    grid: Tensor,
    *,
    noise: NoiseLevels,
    eta: float = 0.0,
    clip_x0: float | None = None,
    cond: Cond | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> Tensor:
    """DDIM (Song et al. 2021a, Eq. 12) on the noise interface, over a time grid.

    From t to the next time s of ``grid`` (decreasing, e.g. from
    :func:`~difflab.diffusion.noise.karras_grid`):
    x0_hat = (x - sigma_t eps_hat) / alpha_t and
    x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z, with
    c = eta sigma_s sqrt(1 - exp(2 (lambda_t - lambda_s))), the std of
    q(x_s | x_t, x_0) at eta = 1 (Eq. 16 written with lambda = log(alpha / sigma);
    for the VP case it is Eq. 16 exactly). eta = 0 is the deterministic DDIM, the
    first-order DPM-Solver (Lu et al. 2022, Sec. 4.1). ``eps_model`` takes the
    continuous t of ``noise``, as every model does. The last step adds no noise.
    len(grid) - 1 model evaluations.
    """
    ts = torch.as_tensor(grid, dtype=torch.float64).cpu()
    x = x_T
    n = len(ts) - 1
    for i in tqdm(range(n), disable=not progress, desc="DDIM"):
        t = torch.full((x.shape[0],), float(ts[i]), dtype=torch.float64)
        s = torch.full_like(t, float(ts[i + 1]))
        alpha_t, sigma_t = (append_dims(v, x) for v in noise.marginal_coefs(t))
        alpha_s, sigma_s = (append_dims(v, x) for v in noise.marginal_coefs(s))
        eps = call(eps_model, x, t.to(x.device, x.dtype), cond)
        x0_hat = (x - sigma_t * eps) / alpha_t
        if clip_x0 is not None:
            x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
            eps = (x - alpha_t * x0_hat) / sigma_t  # keep eps consistent with x0
        dlam = noise.half_log_snr(t) - noise.half_log_snr(s)  # < 0
        c = eta * sigma_s * append_dims((-torch.expm1(2 * dlam)).sqrt(), x)
        # Eq. 12: predicted x0, direction pointing to x_t, and fresh noise.
        x = alpha_s * x0_hat + (sigma_s**2 - c**2).clamp(min=0).sqrt() * eps
        if eta > 0 and i < n - 1:
            x = x + c * randn_like(x, generator)
        if callback is not None:
            callback({"i": i, "t": float(ts[i + 1]), "x": x, "x0_hat": x0_hat})
    return x
