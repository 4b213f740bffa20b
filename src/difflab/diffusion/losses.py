"""Training objectives: L_simple and the variational bound in bits/dim.

L_simple (Ho et al. 2020, Eq. 14) regresses the network on eps, x_0 or v,
optionally with the Min-SNR-gamma weight of each step (Hang et al. 2023). The
variational bound (Eq. 5) is L_T + sum_{t>1} L_{t-1} + L_0, with each L_{t-1} a KL
between Gaussians and L_0 the discretised Gaussian decoder of Sec. 3.3 (Eq. 13).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.core.cond import Cond
from difflab.core.models import EpsModel
from difflab.core.tensors import randn_like
from difflab.diffusion.forward import q_mean_variance, q_posterior, q_sample
from difflab.diffusion.parameterization import (
    PREDICTIONS,
    target,
    x0_from_eps,
)
from difflab.diffusion.schedules import Schedule, gather
from difflab.foundations.gaussians import (
    discretized_gaussian_log_likelihood,
    gaussian_kl,
)


def min_snr_weight(prediction: str, snr: Tensor, gamma: float) -> Tensor:
    """The Min-SNR-gamma weight of a step's squared error (Hang et al. 2023).

    With x_t = sqrt(a) x_0 + sqrt(1 - a) eps and SNR = a / (1 - a), the error of
    each target is a fixed multiple of the error of the implied x_0:
    ||eps - eps_hat||^2 = SNR ||x_0 - x0_hat||^2 and
    ||v - v_hat||^2 = (SNR + 1) ||x_0 - x0_hat||^2. Min-SNR-gamma weights the x_0
    error by min(SNR, gamma), so the weight of the network's own error is

    - x0: min(SNR, gamma),
    - eps: min(SNR, gamma) / SNR,
    - v: min(SNR, gamma) / (SNR + 1).

    Args:
        prediction: what the network regresses, ``"eps"``, ``"x0"`` or ``"v"``.
        snr: SNR of each sample's step, any shape.
        gamma: the clamp (the paper's default: 5).

    Returns:
        The weights, shaped like ``snr``.
    """
    if not gamma > 0:
        raise ValueError(f"min_snr_gamma must be > 0, not {gamma!r}.")
    clamped = snr.clamp(max=gamma)
    if prediction == "x0":
        return clamped
    if prediction == "eps":
        return clamped / snr
    if prediction == "v":
        return clamped / (snr + 1)
    raise ValueError(f"Unknown prediction {prediction!r}; use one of {PREDICTIONS}.")


def simple_loss(
    net,
    schedule: Schedule,
    x0: Tensor,
    *,
    cond: Cond | None = None,
    prediction: str = "eps",
    generator: torch.Generator | None = None,
    min_snr_gamma: float | None = None,
) -> Tensor:
    """L_simple: E_{t, x_0, eps} || target - net(x_t, t, cond) ||^2 (Ho et al. 2020, Eq. 14).

    t is uniform over the T steps; the target is eps, x_0 or v (Salimans & Ho 2022).
    ``cond`` goes to the network unchanged (condition dropout is the caller's).
    ``min_snr_gamma``: if set, each sample's squared error is multiplied by
    :func:`min_snr_weight` of its step (Hang et al. 2023); None: uniform weights.
    Returns the mean over batch and pixels, in float32 even under autocast.
    """
    t = torch.randint(
        0, schedule.T, (x0.shape[0],), device=x0.device, generator=generator
    )
    eps = randn_like(x0, generator)
    x_t = q_sample(schedule, x0, t, eps)
    out = net(x_t, t.to(x0.dtype), cond)
    goal = target(prediction, x0, eps, gather(schedule.alpha_bar, t, x0))
    if min_snr_gamma is None:
        return F.mse_loss(out.float(), goal.float())
    snr = schedule.snr().to(x0.device)[t]  # float64 table, (B,)
    weight = min_snr_weight(prediction, snr, min_snr_gamma).float()
    per_sample = (out.float() - goal.float()).pow(2).flatten(1).mean(1)  # (B,)
    return (weight * per_sample).mean()


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
        eps_hat = eps_model(x_t, schedule.time(t).to(x0.device, x0.dtype))
        x0_hat = x0_from_eps(x_t, eps_hat, gather(schedule.alpha_bar, t, x0))
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
