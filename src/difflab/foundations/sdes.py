"""Stochastic differential equations from scratch: Brownian motion, Euler-Maruyama,
the Ornstein-Uhlenbeck process, Fokker-Planck and time reversal in 1D.

An SDE ``dx = f(x, t) dt + g(x, t) dW`` is given by two plain functions ``f(x, t)``
and ``g(x, t)`` (``t`` a float; diagonal noise, so ``g`` is broadcast against
``x``). The VP/VE SDE classes used by score models live in ``difflab.score.sde``; this
module is the stage-1 toolbox those build on.

References:
    Kloeden & Platen (1992), Numerical Solution of Stochastic Differential
    Equations, Springer, doi:10.1007/978-3-662-12616-5 (the Euler scheme and
    its strong order 0.5, Sec. 10.2).
    Higham (2001), An algorithmic introduction to numerical simulation of SDEs,
    SIAM Review 43(3), doi:10.1137/S0036144500378302.
    Anderson (1982), Reverse-time diffusion equation models, Stochastic Processes
    and their Applications 12(3), doi:10.1016/0304-4149(82)90051-5.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Drift = Callable[[Tensor, float], Tensor]
Diffusion = Callable[[Tensor, float], Tensor | float]


def brownian_increments(
    t_grid: Tensor,
    shape: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Independent increments ``dW_n ~ N(0, |t_{n+1} - t_n|)`` on a time grid.

    Args:
        t_grid: (N,) increasing (or decreasing) times.
        shape: shape of one increment (e.g. ``(n_paths,)``).
        generator: source of randomness (on the device of ``t_grid``).

    Returns:
        (N - 1, *shape) increments, dtype and device of ``t_grid``.
    """
    dt = (t_grid[1:] - t_grid[:-1]).abs()
    z = torch.randn(
        (len(dt), *shape), generator=generator, device=t_grid.device, dtype=t_grid.dtype
    )
    return dt.reshape((-1,) + (1,) * len(shape)).sqrt() * z


def brownian_motion(
    t_grid: Tensor,
    shape: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Paths of standard Brownian motion ``W_t`` on ``t_grid`` with ``W_{t_0} = 0``.

    Returns:
        (N, *shape) values, the cumulative sum of :func:`brownian_increments`.
    """
    dW = brownian_increments(t_grid, shape, generator)
    return torch.cat([torch.zeros_like(dW[:1]), dW.cumsum(0)])


def euler_maruyama(
    f: Drift,
    g: Diffusion,
    x0: Tensor,
    t_grid: Tensor,
    generator: torch.Generator | None = None,
    dW: Tensor | None = None,
) -> Tensor:
    """Integrate ``dx = f(x, t) dt + g(x, t) dW`` with the Euler-Maruyama scheme.

    ``x_{n+1} = x_n + f(x_n, t_n) h_n + g(x_n, t_n) dW_n`` with ``h_n = t_{n+1} - t_n``
    (Kloeden & Platen 1992, Sec. 10.2). A decreasing ``t_grid`` integrates
    backwards in time (``h_n < 0``, ``dW_n`` still has variance ``|h_n|``), which is
    how the reverse-time SDE of Anderson (1982) is run.

    Args:
        f: drift ``f(x, t) -> (*x.shape)``.
        g: diffusion ``g(x, t)``, broadcastable to ``x`` (a float is fine).
        x0: (...) initial state.
        t_grid: (N,) times.
        generator: used when ``dW`` is not given.
        dW: optional (N - 1, *x0.shape) Brownian increments, to drive several
            schemes with the same path.

    Returns:
        (N, *x0.shape) path; entry 0 is ``x0``.
    """
    if dW is None:
        dW = brownian_increments(t_grid.to(x0.dtype), x0.shape, generator)
    path = [x0]
    x = x0
    ts = t_grid.tolist()
    for n in range(len(ts) - 1):
        h = ts[n + 1] - ts[n]
        x = x + f(x, ts[n]) * h + g(x, ts[n]) * dW[n]
        path.append(x)
    return torch.stack(path)


def coarsen_increments(dW: Tensor, factor: int) -> Tensor:
    """Sum ``factor`` consecutive increments: the same Brownian path on a coarser grid.

    Args:
        dW: (N, ...) increments with N divisible by ``factor``.

    Returns:
        (N // factor, ...) increments.
    """
    return dW.reshape(dW.shape[0] // factor, factor, *dW.shape[1:]).sum(1)


def gbm_exact(x0: Tensor, mu: float, sigma: float, t: float, W_t: Tensor) -> Tensor:
    """Exact solution of ``dx = mu x dt + sigma x dW`` (geometric Brownian motion).

    ``x(t) = x0 exp((mu - sigma^2 / 2) t + sigma W_t)``, by Ito's formula on ``log x``.
    """
    return x0 * torch.exp((mu - 0.5 * sigma**2) * t + sigma * W_t)


def strong_error(
    f: Drift,
    g: Diffusion,
    exact: Callable[[Tensor, float, Tensor], Tensor],
    x0: Tensor,
    T: float,
    n_fine: int,
    factors: Sequence[int],
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Strong error ``E|x_T^h - x(T)|`` of Euler-Maruyama for several step sizes.

    One fine Brownian path per entry of ``x0`` drives both the exact solution
    ``exact(x0, T, W_T)`` and every coarse EM run (increments summed in blocks of
    ``factor``), so the error measures the scheme, not two different noises
    (Higham 2001).

    Args:
        f, g: the SDE.
        exact: ``exact(x0, T, W_T) -> x(T)``.
        x0: (n_paths,) initial states, one per independent path.
        T: final time.
        n_fine: number of fine steps (divisible by every factor).
        factors: coarsening factors; step size is ``factor * T / n_fine``.
        generator: source of the Brownian paths.

    Returns:
        (h, err): step sizes and mean absolute errors, each (len(factors),) float64.
    """
    t_fine = torch.linspace(0.0, T, n_fine + 1, dtype=x0.dtype, device=x0.device)
    dW = brownian_increments(t_fine, x0.shape, generator)
    x_T = exact(x0, T, dW.sum(0))
    hs, errs = [], []
    for factor in factors:
        grid = t_fine[::factor]
        x_em = euler_maruyama(f, g, x0, grid, dW=coarsen_increments(dW, factor))[-1]
        hs.append(factor * T / n_fine)
        errs.append((x_em - x_T).abs().mean().item())
    return torch.tensor(hs, dtype=torch.float64), torch.tensor(
        errs, dtype=torch.float64
    )


def fit_order(h: Tensor, err: Tensor) -> float:
    """Least-squares slope of ``log err`` against ``log h``: the observed order."""
    x, y = torch.log(h), torch.log(err)
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x**2).sum())


def ou_marginal(
    mean0: Tensor | float,
    var0: Tensor | float,
    t: Tensor | float,
    theta: float = 1.0,
    mu: float = 0.0,
    sigma: float = math.sqrt(2.0),
) -> tuple[Tensor, Tensor]:
    """Mean and variance at time ``t`` of ``dx = theta (mu - x) dt + sigma dW``.

    From ``x_0 ~ N(m_0, v_0)``::

        m_t = mu + (m_0 - mu) e^{-theta t}
        v_t = v_0 e^{-2 theta t} + sigma^2 / (2 theta) (1 - e^{-2 theta t})

    The defaults (theta = 1, sigma = sqrt 2) have N(0, 1) as stationary law. All
    arguments broadcast (e.g. per-component means of a mixture against times).

    Returns:
        (mean, variance), float64 tensors.
    """
    t = torch.as_tensor(t, dtype=torch.float64)
    mean0 = torch.as_tensor(mean0, dtype=torch.float64)
    var0 = torch.as_tensor(var0, dtype=torch.float64)
    decay = torch.exp(-theta * t)
    mean = mu + (mean0 - mu) * decay
    var = var0 * decay**2 + sigma**2 / (2.0 * theta) * (1.0 - decay**2)
    return mean, var


def mixture_1d_log_prob(
    x: Tensor, weights: Tensor, means: Tensor, variances: Tensor
) -> Tensor:
    """log p(x) of a 1D Gaussian mixture. x: (...); weights, means, variances: (K,)."""
    x = x.unsqueeze(-1)
    log_comp = -0.5 * (
        math.log(2 * math.pi) + variances.log() + (x - means) ** 2 / variances
    )
    return torch.logsumexp(weights.log() + log_comp, -1)


def mixture_1d_score(
    x: Tensor, weights: Tensor, means: Tensor, variances: Tensor
) -> Tensor:
    """Score d/dx log p(x) of a 1D Gaussian mixture: sum_k r_k(x) (m_k - x) / v_k."""
    x = x.unsqueeze(-1)
    log_comp = -0.5 * (variances.log() + (x - means) ** 2 / variances)
    resp = torch.softmax(weights.log() + log_comp, -1)  # (..., K)
    return (resp * (means - x) / variances).sum(-1)


def reverse_drift(f: Drift, g: Diffusion, score: Drift) -> Drift:
    """Drift ``f(x, t) - g(t)^2 score(x, t)`` of the reverse-time SDE (Anderson 1982).

    Run it with :func:`euler_maruyama` on a decreasing time grid.
    """
    return lambda x, t: f(x, t) - g(x, t) ** 2 * score(x, t)


def fokker_planck_rhs(p: Tensor, x: Tensor, f: Tensor, g2: Tensor | float) -> Tensor:
    """Right side of the Fokker-Planck equation by central differences.

    ``dp/dt = -d/dx (f p) + 1/2 d^2/dx^2 (g^2 p)`` on a uniform grid.

    Args:
        p: (..., M) density values on the grid ``x``.
        x: (M,) uniform grid.
        f: (..., M) drift values on the grid.
        g2: squared diffusion on the grid (broadcastable).

    Returns:
        (..., M - 2) values at the interior points ``x[1:-1]``.
    """
    dx = float(x[1] - x[0])
    fp = f * p
    gp = g2 * p
    d_fp = (fp[..., 2:] - fp[..., :-2]) / (2 * dx)
    d2_gp = (gp[..., 2:] - 2 * gp[..., 1:-1] + gp[..., :-2]) / dx**2
    return -d_fp + 0.5 * d2_gp
