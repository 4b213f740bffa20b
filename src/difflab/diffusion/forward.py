"""The forward process q and its posterior, in closed form (Ho et al. 2020, Sec. 2)."""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.diffusion.schedules import Schedule, gather


def q_step(schedule: Schedule, x_prev: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """One step of the chain, x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps (Ho et al. 2020, Eq. 2)."""
    beta = gather(schedule.betas, t, x_prev)
    return (1 - beta).sqrt() * x_prev + beta.sqrt() * eps


def q_mean_variance(schedule: Schedule, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Mean sqrt(alpha_bar_t) x_0 and variance 1 - alpha_bar_t of q(x_t | x_0) (Eq. 4)."""
    alpha_bar = gather(schedule.alpha_bar, t, x0)
    return alpha_bar.sqrt() * x0, (1 - alpha_bar).expand_as(x0)


def q_sample(schedule: Schedule, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """Draw x_t ~ q(x_t | x_0) by reparameterisation (Ho et al. 2020, Eq. 4).

    Args:
        x0: clean data (B, ...). t: (B,) long step indices. eps: standard normal, like x0.
    """
    alpha_bar = gather(schedule.alpha_bar, t, x0)
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps


def q_posterior(
    schedule: Schedule, x0: Tensor, x_t: Tensor, t: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, variance and log-variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, Eqs. 6-7).

    mu_tilde = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
               + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t,
    beta_tilde = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t.
    """
    mean = (
        gather(schedule.posterior_coef_x0, t, x_t) * x0
        + gather(schedule.posterior_coef_xt, t, x_t) * x_t
    )
    var = gather(schedule.posterior_variance, t, x_t).expand_as(x_t)
    log_var = gather(schedule.posterior_log_variance, t, x_t).expand_as(x_t)
    return mean, var, log_var


def gaussian_eps_model(mean: Tensor, cov: Tensor, schedule: Schedule):
    """The exact (Bayes-optimal) noise predictor for data x_0 ~ N(mean, cov) in R^D.

    With x_t = sqrt(a) x_0 + sqrt(1 - a) eps (a = alpha_bar_t), x_t is Gaussian with
    covariance S_t = a cov + (1 - a) I, and E[eps | x_t] = sqrt(1 - a) S_t^{-1}
    (x_t - sqrt(a) mean). A sampler fed this model must reproduce N(mean, cov).

    Returns:
        ``eps_model(x_t, t)`` over x_t of shape (B, D) and continuous t (B,) (step
        index n at t = (n + 1) / T, as every model of the package).
    """
    mean = mean.to(torch.float64)
    evals, U = torch.linalg.eigh(cov.to(torch.float64))  # cov = U diag(evals) U^T

    def eps_model(x_t: Tensor, t: Tensor) -> Tensor:
        a = schedule.alpha_bar[schedule.index(t.cpu())].unsqueeze(1)  # (B, 1)
        r = (x_t.cpu().to(torch.float64) - a.sqrt() * mean) @ U  # (B, D), eigenbasis
        eps = (
            (1 - a).sqrt() * r / (a * evals + 1 - a)
        ) @ U.T  # S_t^{-1} is diagonal there
        return eps.to(device=x_t.device, dtype=x_t.dtype)

    return eps_model
