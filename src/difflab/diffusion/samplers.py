"""Samplers of the discrete process, each a plain function with one visible loop.

Every sampler has the signature ``(eps_model, x_T, schedule, ..., *, generator,
callback, progress) -> x_0``, where ``eps_model(x_t, t)`` predicts the noise (wrap
any network with :func:`difflab.diffusion.parameterization.as_eps_model`). ``callback``, if
given, is called after every step with a dict ``{"i", "t", "x", "x0_hat"}``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from difflab.core.progress import tqdm
from difflab.core.tensors import randn_like
from difflab.diffusion.forward import q_posterior
from difflab.diffusion.parameterization import EpsModel, eps_from_x0, x0_from_eps
from difflab.diffusion.schedules import Schedule, gather


@torch.no_grad()
def ddpm_sample(
    eps_model: EpsModel,
    x_T: Tensor,
    schedule: Schedule,
    *,
    variance: str = "beta",
    clip_x0: float | None = None,
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
        x0_hat = x0_from_eps(x, eps_model(x, t), gather(schedule.alpha_bar, t, x))
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
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> Tensor:
    """DDIM sampling over the subsequence ``timesteps`` (Song et al. 2021a, Eq. 12).

    x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps_hat + sigma z, with
    sigma = eta sqrt((1 - a_prev) / (1 - a)) sqrt(1 - a / a_prev) (Eq. 16): eta = 0 is
    the deterministic DDIM, eta = 1 over all T steps is DDPM with beta_tilde.

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
        eps = eps_model(x, t)
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
