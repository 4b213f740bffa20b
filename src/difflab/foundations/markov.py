"""Markov chains: discrete chains, and the Gaussian AR(1) chain of DDPM's forward.

A discrete chain on states 0..K-1 is a row-stochastic matrix ``P`` with
``P[i, j] = p(x_t = j | x_{t-1} = i)``; a distribution is a row vector ``p`` and
one step maps it to ``p @ P``. The stationary distribution ``pi = pi @ P`` is the
left eigenvector of ``P`` with eigenvalue 1 (Norris 1997, Sec. 1.7).

The Gaussian chain ``x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps_t`` is the
forward process of Ho et al. (2020), Eq. 2; its marginals have the closed form of
their Eq. 4, ``q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def stationary_distribution(P: Tensor) -> Tensor:
    """The stationary distribution ``pi = pi P`` of a row-stochastic matrix.

    Computed as the eigenvector of ``P^T`` whose eigenvalue is closest to 1,
    normalised to sum to one. Unique when the chain is irreducible.

    Args:
        P: (K, K) transition matrix, rows summing to 1.

    Returns:
        (K,) probabilities, dtype of ``P``.
    """
    evals, evecs = torch.linalg.eig(P.T.to(torch.float64))
    k = torch.argmin((evals - 1.0).abs())
    pi = evecs[:, k].real
    pi = pi / pi.sum()
    return pi.to(P.dtype)


def second_eigenvalue(P: Tensor) -> float:
    """Modulus of the second-largest eigenvalue of ``P``: the geometric mixing rate.

    For a reversible (or diagonalisable) chain the distance to ``pi`` after t steps
    decays like ``|lambda_2|^t`` (Levin, Peres & Wilmer 2017, Ch. 12).
    """
    mods = torch.linalg.eigvals(P.to(torch.float64)).abs().sort(descending=True).values
    return float(mods[1])


def distribution_after(P: Tensor, p0: Tensor, n_steps: int) -> Tensor:
    """Exact law of ``x_0, ..., x_n`` one at a time: row t is ``p0 P^t``.

    Args:
        P: (K, K) transition matrix; p0: (K,) initial distribution.

    Returns:
        (n_steps + 1, K) marginal distributions.
    """
    out = [p0]
    for _ in range(n_steps):
        out.append(out[-1] @ P)
    return torch.stack(out)


def simulate_chain(
    P: Tensor,
    x0: Tensor,
    n_steps: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Run many independent copies of a discrete chain.

    Args:
        P: (K, K) transition matrix.
        x0: (N,) long initial states of N chains.
        n_steps: number of transitions.
        generator: source of randomness (on the device of ``P``).

    Returns:
        (N, n_steps + 1) long tensor of states; column 0 is ``x0``.
    """
    states = [x0]
    x = x0
    for _ in range(n_steps):
        x = torch.multinomial(P[x], 1, generator=generator).squeeze(-1)
        states.append(x)
    return torch.stack(states, dim=1)


def total_variation(p: Tensor, q: Tensor) -> Tensor:
    """Total variation distance ``0.5 * sum |p - q|`` over the last axis."""
    return 0.5 * (p - q).abs().sum(-1)


def _betas(beta: float | Tensor, n_steps: int, like: Tensor) -> Tensor:
    beta = torch.as_tensor(beta, dtype=like.dtype, device=like.device)
    return beta.expand(n_steps) if beta.ndim == 0 else beta


def ar1_simulate(
    x0: Tensor,
    beta: float | Tensor,
    n_steps: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Simulate ``x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps_t``.

    The forward process of Ho et al. (2020), Eq. 2, for a single coordinate.

    Args:
        x0: (...) starting points (any shape: each entry is its own chain).
        beta: a constant ``beta`` in (0, 1) or a (n_steps,) schedule ``beta_1..beta_n``.
        n_steps: number of steps.
        generator: source of ``eps_t``.

    Returns:
        (n_steps + 1, ...) path; entry 0 is ``x0``.
    """
    betas = _betas(beta, n_steps, x0)
    path = [x0]
    x = x0
    for t in range(n_steps):
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = torch.sqrt(1.0 - betas[t]) * x + torch.sqrt(betas[t]) * eps
        path.append(x)
    return torch.stack(path)


def ar1_marginal(
    mean0: Tensor | float,
    var0: Tensor | float,
    beta: float | Tensor,
    n_steps: int,
) -> tuple[Tensor, Tensor]:
    """Closed-form mean and variance of the AR(1) chain at every step.

    Starting from ``x_0 ~ N(m_0, v_0)`` (``v_0 = 0`` for a fixed start) and with
    ``alpha_bar_t = prod_{s <= t} (1 - beta_s)``::

        m_t = sqrt(alpha_bar_t) m_0,   v_t = alpha_bar_t v_0 + 1 - alpha_bar_t

    which is Ho et al. (2020), Eq. 4 with a Gaussian x_0.

    Args:
        mean0, var0: initial mean and variance (scalars or tensors of one shape).
        beta: constant ``beta`` or (n_steps,) schedule.
        n_steps: number of steps.

    Returns:
        (means, variances), each (n_steps + 1, *mean0.shape), float64.
    """
    mean0 = torch.as_tensor(mean0, dtype=torch.float64)
    var0 = torch.as_tensor(var0, dtype=mean0.dtype, device=mean0.device)
    mean0, var0 = torch.broadcast_tensors(mean0, var0)
    betas = _betas(beta, n_steps, mean0)
    alpha_bar = torch.cat([betas.new_ones(1), torch.cumprod(1.0 - betas, 0)])
    shape = (-1,) + (1,) * mean0.ndim
    alpha_bar = alpha_bar.reshape(shape)
    return alpha_bar.sqrt() * mean0, alpha_bar * var0 + 1.0 - alpha_bar
