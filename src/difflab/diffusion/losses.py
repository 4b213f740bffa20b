"""Training objectives: L_simple and the variational bound in bits/dim.

L_simple (Ho et al. 2020, Eq. 14) regresses the network on eps, x_0 or v. The
variational bound (Eq. 5) is L_T + sum_{t>1} L_{t-1} + L_0, with each L_{t-1} a KL
between Gaussians and L_0 the discretised Gaussian decoder of Sec. 3.3 (Eq. 13).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.core.cond import Cond
from difflab.core.tensors import randn_like
from difflab.diffusion.forward import q_mean_variance, q_posterior, q_sample
from difflab.diffusion.parameterization import EpsModel, target, x0_from_eps
from difflab.diffusion.schedules import Schedule, gather
from difflab.foundations.gaussians import (
    discretized_gaussian_log_likelihood,
    gaussian_kl,
)


def simple_loss(
    net,
    schedule: Schedule,
    x0: Tensor,
    *,
    cond: Cond | None = None,
    prediction: str = "eps",
    generator: torch.Generator | None = None,
) -> Tensor:
    """L_simple: E_{t, x_0, eps} || target - net(x_t, t, cond) ||^2 (Ho et al. 2020, Eq. 14).

    t is uniform over the T steps; the target is eps, x_0 or v (Salimans & Ho 2022).
    ``cond`` goes to the network unchanged (condition dropout is the caller's).
    Returns the mean over batch and pixels, in float32 even under autocast.
    """
    t = torch.randint(
        0, schedule.T, (x0.shape[0],), device=x0.device, generator=generator
    )
    eps = randn_like(x0, generator)
    x_t = q_sample(schedule, x0, t, eps)
    out = net(x_t, t.to(x0.dtype), cond)
    goal = target(prediction, x0, eps, gather(schedule.alpha_bar, t, x0))
    return F.mse_loss(out.float(), goal.float())


def model_log_variance(
    schedule: Schedule, t: Tensor, x: Tensor, variance: str
) -> Tensor:
    """log of the fixed reverse variance: ``"beta"`` (sigma_t^2 = beta_t) or ``"beta_tilde"``.

    Ho et al. 2020, Sec. 3.2; at t = 0 the "beta" choice uses beta_tilde_1 instead of
    beta_1, as in the authors' code, so that the decoder is not over-dispersed.
    """
    if variance == "beta_tilde":
        return gather(schedule.posterior_log_variance, t, x).expand_as(x)
    if variance == "beta":
        table = torch.cat([schedule.posterior_variance[1:2], schedule.betas[1:]]).log()
        return gather(table, t, x).expand_as(x)
    raise ValueError(f"Unknown variance {variance!r}; use 'beta' or 'beta_tilde'.")


@torch.no_grad()
def vlb_terms(
    eps_model: EpsModel,
    x0: Tensor,
    schedule: Schedule,
    *,
    variance: str = "beta_tilde",
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """Every term of the variational bound, per example, in bits/dim (Ho et al. 2020, Eq. 5).

    Column 0 is L_0 (the discretised decoder, Eq. 13), column t (1 <= t < T) is
    L_t = KL(q(x_t | x_{t+1}, x_0) || p(x_t | x_{t+1})) in the paper's indices, and the last
    column is the prior term L_T = KL(q(x_T | x_0) || N(0, I)). Their sum is the bound
    on -log2 p(x_0) per dimension. Costs T network evaluations.

    Returns:
        (B, T + 1) tensor in bits/dim.
    """
    from difflab.core.progress import tqdm

    B, dims = x0.shape[0], x0[0].numel()
    terms = x0.new_zeros(B, schedule.T + 1)
    for i in tqdm(range(schedule.T), disable=not progress, desc="bound"):
        t = torch.full((B,), i, device=x0.device, dtype=torch.long)
        eps = randn_like(x0, generator)
        x_t = q_sample(schedule, x0, t, eps)
        x0_hat = x0_from_eps(x_t, eps_model(x_t, t), gather(schedule.alpha_bar, t, x0))
        mean, _, _ = q_posterior(schedule, x0_hat, x_t, t)  # model mean (Eq. 11)
        log_var = model_log_variance(schedule, t, x0, variance)
        if i == 0:
            nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)
        else:
            true_mean, _, true_log_var = q_posterior(schedule, x0, x_t, t)
            nll = gaussian_kl(true_mean, true_log_var.exp(), mean, log_var.exp())
        terms[:, i] = nll.flatten(1).sum(1) / (dims * math.log(2))
    t_last = torch.full((B,), schedule.T - 1, device=x0.device, dtype=torch.long)
    mean_T, var_T = q_mean_variance(schedule, x0, t_last)
    prior = gaussian_kl(mean_T, var_T, torch.zeros_like(x0), torch.ones_like(x0))
    terms[:, -1] = prior.flatten(1).sum(1) / (dims * math.log(2))
    return terms


def vlb_bits_per_dim(
    eps_model: EpsModel, x0: Tensor, schedule: Schedule, **kwargs
) -> Tensor:
    """The variational bound on -log2 p(x_0) per dimension, per example (B,).

    The sum of :func:`vlb_terms` (Ho et al. 2020, Eq. 5 and Table 2's NLL);
    compare :func:`difflab.score.likelihood.ode_bits_per_dim`, the exact value
    through the probability-flow ODE.
    """
    return vlb_terms(eps_model, x0, schedule, **kwargs).sum(1)
