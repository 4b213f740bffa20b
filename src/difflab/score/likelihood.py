"""Exact log-likelihood through the probability-flow ODE, and bits/dim.

The probability-flow ODE dx/dt = f_tilde(x, t) = f(x, t) - 1/2 g(t)^2 s(x, t)
(Song et al. 2021, Eq. 13) is a continuous normalising flow, so the
instantaneous change of variables (Chen et al. 2018, Theorem 1) gives

    d log p_t(x_t) / dt = -div_x f_tilde(x_t, t),
    log p_0(x_0) = log p_T(x_T) + int_0^T div_x f_tilde(x_t, t) dt    (Eq. 39)

(Song et al. 2021, Appendix D.2). We integrate the flattened state [x, delta]
with ``delta(t) = int_{t_min}^t div f_tilde`` from t_min to T with scipy's
adaptive RK45 (``solve_ivp``). The divergence is exact (one backward pass per
dimension: low-dimensional data) or Hutchinson's unbiased estimate
E_v[v^T (grad f_tilde) v] with a probe v fixed along the trajectory (Grathwohl
et al. 2019, FFJORD, Eq. 7), one vector-Jacobian product per evaluation.

bits/dim: an 8-bit image has 256 levels per dimension. Stored in [-1, 1] each
level is a bin of width 2/256, so with uniform dequantisation (noise within the
bin, Theis et al. 2016) the discrete log-probability is bounded below by
log p(y) + D log(2/256), and

    bits/dim = -log p(y) / (D ln 2) + log2(256 / 2) = -log p(y) / (D ln 2) + 7.

Data scaled to [0, 1) instead has bins 1/256 wide and offset 8: the change of
variable y = 2 u - 1 adds D ln 2 to -log p, one bit per dimension, exactly
cancelled by the offset. ``dequantized_bits_per_dim`` takes the data range to get
this right.

The discrete DDPM schedules have a probability-flow ODE too: through
:class:`~difflab.diffusion.noise.DiscreteNoise` (the one place where integer
steps meet continuous t) their eps models become score functions of t.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from difflab.core.models import ScoreModel
from difflab.diffusion.noise import DiscreteNoise, NoiseLevels
from difflab.foundations.gaussians import nats_to_bits_per_dim


@dataclass
class LikelihoodResult:
    """log p_0(x) in nats (B,), the latent z = x_T, log p_T(z) and the evaluations."""

    log_p: Tensor
    z: Tensor
    prior_log_p: Tensor
    nfe: int


def _divergence(
    drift: Tensor, x: Tensor, probe: Tensor | None, create_graph: bool = False
) -> Tensor:
    """div_x drift per sample (B,): exact if probe is None, else v^T J v."""
    b = x.shape[0]
    if probe is not None:
        (vjp,) = torch.autograd.grad(
            (drift * probe).sum(), x, create_graph=create_graph
        )
        return (vjp * probe).reshape(b, -1).sum(-1)
    flat = drift.reshape(b, -1)
    div = torch.zeros(b, dtype=x.dtype, device=x.device)
    for d in range(flat.shape[1]):  # one backward pass per dimension
        (grad,) = torch.autograd.grad(flat[:, d].sum(), x, retain_graph=True)
        div = div + grad.reshape(b, -1)[:, d]
    return div


def ode_log_likelihood(
    score_fn: ScoreModel,
    x: Tensor,
    sde: NoiseLevels,
    *,
    trace: str = "exact",
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
    t_min: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    prior_log_prob: Callable[[Tensor], Tensor] | None = None,
) -> LikelihoodResult:
    """log p_0(x) through the probability-flow ODE (Song et al. 2021, Eq. 39, App. D.2).

    Args:
        score_fn: s(x, t) with t (B,); must be differentiable in x.
        x: (B, ...) data, taken as the state at ``t_min``.
        sde: the forward SDE (any ``NoiseLevels``) whose probability-flow ODE is
            integrated.
        trace: ``"exact"`` (D backward passes per evaluation) or ``"hutchinson"``.
        probe: ``"rademacher"`` or ``"gaussian"`` Hutchinson probe (one per sample,
            fixed along the trajectory, drawn from ``generator``).
        t_min: start time; 1e-5 as in Song et al. 2021 for likelihoods.
        rtol, atol: RK45 tolerances.
        prior_log_prob: log p_T(z) (B,); default ``sde.prior_log_prob``. In the
            sandbox the exact p_T can be passed to remove the prior mismatch.

    Returns:
        LikelihoodResult with log_p (B,) in nats, in x's dtype.
    """
    if trace not in ("exact", "hutchinson"):
        raise ValueError(f"trace must be 'exact' or 'hutchinson', got {trace!r}")
    shape, dtype, device = x.shape, x.dtype, x.device
    b, n = shape[0], x[0].numel()
    v = None
    if trace == "hutchinson":
        if probe == "rademacher":
            v = torch.randint(0, 2, shape, generator=generator).to(dtype) * 2 - 1
        elif probe == "gaussian":
            v = torch.randn(shape, generator=generator, dtype=dtype)
        else:
            raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
        v = v.to(device)
    nfe = 0

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        nonlocal nfe
        nfe += 1
        xt = torch.from_numpy(y[: b * n]).reshape(shape).to(device=device, dtype=dtype)
        tt = torch.full((b,), t, dtype=dtype, device=device)
        with torch.enable_grad():
            xt.requires_grad_(True)
            drift = sde.ode_drift(xt, tt, score_fn)
            div = _divergence(drift, xt, v)
        out = torch.cat([drift.detach().reshape(-1), div.detach()])
        return out.double().cpu().numpy()

    y0 = np.concatenate([x.detach().double().cpu().numpy().ravel(), np.zeros(b)])
    sol = solve_ivp(fun, (t_min, sde.T), y0, method="RK45", rtol=rtol, atol=atol)
    y_T = torch.from_numpy(sol.y[:, -1]).to(device=device, dtype=dtype)
    z, delta = y_T[: b * n].reshape(shape), y_T[b * n :]
    prior = (prior_log_prob or sde.prior_log_prob)(z)
    return LikelihoodResult(log_p=prior + delta, z=z, prior_log_p=prior, nfe=nfe)


def dequantized_bits_per_dim(
    log_likelihood_nats: Tensor | float,
    dims: int,
    *,
    data_range: tuple[float, float] = (-1.0, 1.0),
    n_bins: int = 256,
) -> Tensor | float:
    """Bits per dimension of a continuous density on dequantised n_bins-level data.

    bits/dim = -log p / (D ln 2) + log2(n_bins / (hi - lo)): offset 7 for 8-bit
    data in [-1, 1], 8 for data in [0, 1) (Ho et al. 2020, Sec. 4; Song et al.
    2021, App. D.2). ``data_range=(0, n_bins)`` gives offset 0 (plain nats to bits).
    """
    lo, hi = data_range
    offset = math.log2(n_bins / (hi - lo))
    return nats_to_bits_per_dim(log_likelihood_nats, dims) + offset


def dequantize(
    images: Tensor,
    generator: torch.Generator | None = None,
    *,
    data_range: tuple[float, float] = (-1.0, 1.0),
    n_bins: int = 256,
) -> Tensor:
    """Uniform dequantisation: level k (stored as lo + k (hi - lo) / (n_bins - 1))
    becomes lo + (k + u) (hi - lo) / n_bins with u ~ U[0, 1) (Theis et al. 2016)."""
    lo, hi = data_range
    k = torch.round((images - lo) / (hi - lo) * (n_bins - 1))
    u = torch.rand(images.shape, generator=generator, dtype=images.dtype).to(
        images.device
    )
    return lo + (k + u) * (hi - lo) / n_bins


def ode_bits_per_dim(
    score_fn: ScoreModel,
    images: Tensor,
    sde: NoiseLevels,
    *,
    generator: torch.Generator | None = None,
    hutchinson: bool = True,
    dequantize_data: bool = True,
    t_min: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> tuple[Tensor, LikelihoodResult]:
    """Bits/dim of 8-bit images in [-1, 1] under the probability-flow ODE.

    Args:
        score_fn: s(x, t) of ``sde``. For a DDPM eps model over step indices use
            ``score_model_from_eps(DiscreteNoise(schedule).continuous(eps_model), noise)``
            (:mod:`difflab.diffusion.noise`).
        images: (B, C, H, W) in [-1, 1].
        sde: an SDE or a ``DiscreteNoise``; its probability-flow ODE is used.
        generator: for dequantisation noise and Hutchinson probes.
        hutchinson: Rademacher Hutchinson trace (else exact, small D only).
        dequantize_data: add uniform noise within each 8-bit bin first.
        t_min: start of integration; defaults to ``sde.t_min`` = 1/N for a
            ``DiscreteNoise`` (its model knows no noise level below step 1),
            else 1e-5 (Song et al. 2021, App. D.2).

    Returns:
        bits/dim per image (B,) and the underlying ``LikelihoodResult``.
    """
    if t_min is None:
        t_min = sde.t_min if isinstance(sde, DiscreteNoise) else 1e-5
    x = dequantize(images, generator) if dequantize_data else images
    result = ode_log_likelihood(
        score_fn,
        x,
        sde,
        trace="hutchinson" if hutchinson else "exact",
        generator=generator,
        t_min=t_min,
        rtol=rtol,
        atol=atol,
    )
    return dequantized_bits_per_dim(result.log_p, x[0].numel()), result
