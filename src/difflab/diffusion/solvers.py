"""Fast deterministic samplers: ODE solvers on the noise interface.

Every solver integrates the probability-flow ODE of a model
x_t = alpha(t) x_0 + sigma(t) eps (Song et al. 2021b, Eq. 13) from ``grid[0]`` down
to ``grid[-1]``, with the signature

    solver(eps_model, x_T, grid, *, noise, cond=None, x0_threshold=None,
           callback=None, progress=True) -> x

``eps_model(x, t)`` takes continuous t (B,) (wrap an index-based network with
:meth:`~difflab.diffusion.noise.DiscreteNoise.continuous`); ``noise`` is any
:class:`~difflab.diffusion.noise.NoiseLevels`; ``grid`` is a decreasing 1-D tensor
of times chosen by the caller (``uniform_grid``, ``half_log_snr_grid``,
``karras_grid``, ``DiscreteNoise.grid``). The grid may end at a time with
sigma = 0 (the clean data, t = 0 of ``DiscreteNoise``): no solver evaluates the
model there. ``callback`` gets ``{"i", "t", "x", "x0_hat", "nfe"}`` after each step.

``x0_threshold`` (off by default, as in diffusers) bounds the data prediction
x0_hat = (x - sigma eps) / alpha at every evaluation: a number c clamps it to
[-c, c] (images in [-1, 1]: 1.0), :func:`dynamic_threshold` is the thresholding of
Saharia et al. (2022), and any function of x0_hat (B, ...) works. The solver then
steps with the thresholded x0_hat and the eps consistent with it,
eps = (x - alpha x0_hat) / sigma, so DPM-Solver++ thresholds its data prediction
directly (Lu et al. 2022b, Sec. 3-4) and DDIM with a clamp is the classic
``clip_x0`` of :func:`~difflab.diffusion.samplers.ddim_sample`.

Notation (Lu et al. 2022a, Sec. 3): lambda = log(alpha / sigma), decreasing in t;
on a step from t_{i-1} to t_i, h_i = lambda(t_i) - lambda(t_{i-1}) > 0. The
evaluations each solver spends on a grid of n steps are :func:`solver_nfe`;
:func:`default_grid` is each solver's grid for a budget of evaluations (the
fast-sampling page's choices).

- :func:`euler`: Euler's method in t on the ODE as written (first order).
- :func:`dpm_solver_1`: the exponential integrator in lambda, first order; it is
  DDIM (eta = 0) written differently (Lu et al. 2022a, Sec. 4.1).
- :func:`dpm_solver_pp_2m`: DPM-Solver++(2M), the multistep second-order solver in
  data prediction (Lu et al. 2022b, Algorithm 2).
- :func:`heun`: Heun's method in Karras et al.'s (2022) sigma = sigma/alpha,
  Algorithm 1 with S_churn = 0 (second order; use it on ``karras_grid``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from difflab.core.cond import Cond
from difflab.core.models import EpsModel, call
from difflab.core.progress import tqdm
from difflab.diffusion.noise import (
    DiscreteNoise,
    NoiseLevels,
    half_log_snr_grid,
    karras_grid,
    uniform_grid,
)
from difflab.diffusion.samplers import ddim_timesteps

Callback = Callable[[dict], None] | None
Threshold = float | Callable[[Tensor], Tensor] | None


def dynamic_threshold(
    ratio: float = 0.995, max_value: float | None = None
) -> Callable[[Tensor], Tensor]:
    """Dynamic thresholding of x0_hat (Saharia et al. 2022, Sec. 2.3).

    Per sample, s is the ``ratio`` quantile of |x0_hat| over its pixels, at least 1
    (and at most ``max_value`` if given); x0_hat is clamped to [-s, s] and divided
    by s. Where every |x0_hat| <= 1 it changes nothing; where pixels saturate it
    pulls them inside [-1, 1] instead of flattening them at the edge.
    """

    def threshold(x0_hat: Tensor) -> Tensor:
        work = torch.promote_types(x0_hat.dtype, torch.float32)  # quantile's dtypes
        flat = x0_hat.abs().flatten(1).to(work)
        s = torch.quantile(flat, ratio, dim=1).clamp(min=1.0)
        if max_value is not None:
            s = s.clamp(max=max_value)
        s = s.to(x0_hat.dtype).view(-1, *([1] * (x0_hat.ndim - 1)))
        return torch.maximum(torch.minimum(x0_hat, s), -s) / s

    return threshold


def _predict(x: Tensor, eps: Tensor, alpha: float, sigma: float, threshold: Threshold):
    """x0_hat from eps, thresholded if asked, and the eps consistent with it."""
    x0_hat = (x - sigma * eps) / alpha
    if threshold is None:
        return x0_hat, eps
    if callable(threshold):
        x0_hat = threshold(x0_hat)
    else:
        x0_hat = x0_hat.clamp(-float(threshold), float(threshold))
    return x0_hat, (x - alpha * x0_hat) / sigma


def _times(grid: Tensor) -> Tensor:
    """The grid as float64 on the CPU, checked to decrease."""
    ts = torch.as_tensor(grid, dtype=torch.float64).cpu()
    if ts.ndim != 1 or len(ts) < 2 or not (ts[1:] < ts[:-1]).all():
        raise ValueError("grid must be a 1-D tensor of at least 2 decreasing times")
    return ts


def _levels(noise: NoiseLevels, ts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """alpha, sigma and lambda at every grid time (float64; lambda = +inf at sigma=0)."""
    alpha, sigma = noise.marginal_coefs(ts)
    return alpha, sigma, alpha.log() - sigma.log()


def _vec(t: float, x: Tensor) -> Tensor:
    """The time t as a (B,) tensor on x's device and dtype."""
    return torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)


def _report(callback: Callback, i: int, t: Tensor, x: Tensor, x0_hat, nfe: int):
    """Call ``callback`` (if any) after step ``i``: the shared per-step record."""
    if callback is not None:
        callback({"i": i, "t": float(t), "x": x, "x0_hat": x0_hat, "nfe": nfe})


def solver_nfe(name: str, grid: Tensor, noise: NoiseLevels) -> int:
    """Model evaluations that solver ``name`` spends on ``grid``.

    One per step for "euler", "dpm_solver_1" and "dpm_solver_pp_2m"; two per step
    for "heun", less one if the grid ends at sigma = 0 (no correction there).
    """
    n = len(grid) - 1
    if name == "heun":
        end = torch.as_tensor(grid, dtype=torch.float64)[-1:]
        return 2 * n - int(float(noise.sigma(end)) == 0.0)
    if name in SOLVERS:
        return n
    raise ValueError(f"unknown solver {name!r}; choose from {tuple(SOLVERS)}")


#: The fewest evaluations each solver's default grid can spend.
MIN_NFE = {"euler": 1, "dpm_solver_1": 1, "dpm_solver_pp_2m": 2, "heun": 3}


def default_grid(name: str, noise: NoiseLevels, nfe: int) -> Tensor:
    """Solver ``name``'s grid for a budget of ``nfe`` model evaluations, ending at
    t = 0 (sigma = 0), as the fast-sampling page measures them:

    - ``"euler"``: uniform in t, ``nfe - 1`` steps, then the step to 0;
    - ``"dpm_solver_1"``: on a :class:`DiscreteNoise`, DDIM's ``nfe`` evenly spaced
      steps (so it is DDIM, eta = 0); otherwise uniform in lambda;
    - ``"dpm_solver_pp_2m"``: uniform in lambda, ``nfe - 1`` steps, then to 0;
    - ``"heun"``: Karras et al.'s grid with ``(nfe + 1) // 2 - 1`` steps, then to 0
      (two evaluations a step, one on the last): it spends ``nfe`` or ``nfe - 1``.

    :func:`solver_nfe` of the result is at most ``nfe``.

    Raises:
        ValueError: for an unknown solver, or ``nfe`` below its :data:`MIN_NFE`.
    """
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; choose from {tuple(SOLVERS)}")
    if int(nfe) != nfe or nfe < MIN_NFE[name]:
        raise ValueError(
            f"{name} needs a whole number of at least {MIN_NFE[name]} evaluations, "
            f"not {nfe}"
        )
    zero = torch.zeros(1, dtype=torch.float64)
    if name == "dpm_solver_1" and isinstance(noise, DiscreteNoise):
        return noise.grid(ddim_timesteps(noise.schedule.T, nfe))
    if name == "heun":
        return torch.cat([karras_grid(noise, (nfe + 1) // 2 - 1), zero])
    if name in ("dpm_solver_pp_2m", "dpm_solver_1") and nfe > 1:
        return torch.cat([half_log_snr_grid(noise, nfe - 1), zero])
    return torch.cat([uniform_grid(noise, nfe - 1), zero])


@torch.no_grad()
def euler(
    eps_model: EpsModel,
    x_T: Tensor,
    grid: Tensor,
    *,
    noise: NoiseLevels,
    cond: Cond | None = None,
    x0_threshold: Threshold = None,
    callback: Callback = None,
    progress: bool = True,
) -> Tensor:
    """Euler's method on the probability-flow ODE in t (Song et al. 2021b, Eq. 13).

    With the score s = -eps / sigma (see
    :func:`~difflab.diffusion.noise.score_model_from_eps`) the ODE is
    dx/dt = f(t) x + g(t)^2 / (2 sigma(t)) eps(x, t), and one step is
    x_i = x_{i-1} + (t_i - t_{i-1}) dx/dt at t_{i-1}: first order in the step,
    one evaluation a step.
    """
    x, ts = x_T, _times(grid)
    for i in tqdm(range(1, len(ts)), disable=not progress, desc="Euler"):
        t = ts[i - 1 : i]
        t_b = _vec(float(t), x)
        eps = call(eps_model, x, t_b, cond)
        f, g, sigma = noise.f(t), noise.g(t), noise.sigma(t)
        x0_hat, eps = _predict(
            x, eps, float(noise.alpha(t)), float(sigma), x0_threshold
        )
        drift = float(f) * x + float(g**2 / (2 * sigma)) * eps
        x = x + float(ts[i] - ts[i - 1]) * drift  # Euler step, dt < 0.
        _report(callback, i - 1, ts[i], x, x0_hat, i)
    return x


@torch.no_grad()
def dpm_solver_1(
    eps_model: EpsModel,
    x_T: Tensor,
    grid: Tensor,
    *,
    noise: NoiseLevels,
    cond: Cond | None = None,
    x0_threshold: Threshold = None,
    callback: Callback = None,
    progress: bool = True,
) -> Tensor:
    """DPM-Solver-1 (Lu et al. 2022a, Sec. 3.3): first order in lambda.

    The exact solution of the ODE from t_{i-1} to t_i (Lu et al. 2022a, Prop. 3.1),
    x_i = (alpha_i / alpha_{i-1}) x_{i-1}
          - alpha_i int_{lambda_{i-1}}^{lambda_i} e^{-lambda} eps dlambda,
    with eps held at its value at t_{i-1} gives
    x_i = (alpha_i / alpha_{i-1}) x_{i-1} - sigma_i (e^{h_i} - 1) eps_{i-1},
    which is DDIM with eta = 0 (Song et al. 2021a, Eq. 12). At sigma_i = 0
    (h_i = inf) the coefficient sigma_i (e^{h_i} - 1) takes its limit
    alpha_i e^{-lambda_{i-1}}. One evaluation a step.
    """
    x, ts = x_T, _times(grid)
    alpha, sigma, lam = _levels(noise, ts)
    for i in tqdm(range(1, len(ts)), disable=not progress, desc="DPM-Solver-1"):
        eps = call(eps_model, x, _vec(float(ts[i - 1]), x), cond)
        x0_hat, eps = _predict(
            x, eps, float(alpha[i - 1]), float(sigma[i - 1]), x0_threshold
        )
        h = lam[i] - lam[i - 1]
        if sigma[i] > 0:
            c_eps = sigma[i] * torch.expm1(h)
        else:
            c_eps = alpha[i] * torch.exp(-lam[i - 1])
        x = float(alpha[i] / alpha[i - 1]) * x - float(c_eps) * eps
        _report(callback, i - 1, ts[i], x, x0_hat, i)
    return x


@torch.no_grad()
def dpm_solver_pp_2m(
    eps_model: EpsModel,
    x_T: Tensor,
    grid: Tensor,
    *,
    noise: NoiseLevels,
    cond: Cond | None = None,
    x0_threshold: Threshold = None,
    callback: Callback = None,
    progress: bool = True,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2), multistep, data prediction.

    In the data prediction x0_hat = (x - sigma eps) / alpha the exact solution is
    x_i = (sigma_i / sigma_{i-1}) x_{i-1}
          + sigma_i int_{lambda_{i-1}}^{lambda_i} e^{lambda} x0_hat dlambda.
    The first step holds x0_hat constant (first order):
    x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (e^{-h_i} - 1) x0_hat_{i-1}.
    Every later step replaces x0_hat_{i-1} by
    D_i = (1 + 1 / (2 r_i)) x0_hat_{i-1} - 1 / (2 r_i) x0_hat_{i-2},
    r_i = h_{i-1} / h_i, a backward difference that reuses the previous
    evaluation, so the method is second order at one evaluation a step. A last
    step to sigma = 0 (h = inf, r = 0) is taken first-order: there the update is
    x = alpha D, and D's weight 1 / (2 r) diverges, so D is set to the last
    prediction x0_hat_{i-1} and the step returns x = alpha x0_hat_{i-1}.
    """
    x, ts = x_T, _times(grid)
    alpha, sigma, lam = _levels(noise, ts)
    x0_prev = None
    for i in tqdm(range(1, len(ts)), disable=not progress, desc="DPM-Solver++(2M)"):
        eps = call(eps_model, x, _vec(float(ts[i - 1]), x), cond)
        x0_hat, _ = _predict(
            x, eps, float(alpha[i - 1]), float(sigma[i - 1]), x0_threshold
        )
        h = lam[i] - lam[i - 1]
        if x0_prev is None or sigma[i] == 0:
            d = x0_hat  # first-order step
        else:
            r = float((lam[i - 1] - lam[i - 2]) / h)
            d = (1 + 1 / (2 * r)) * x0_hat - 1 / (2 * r) * x0_prev
        x = float(sigma[i] / sigma[i - 1]) * x - float(alpha[i] * torch.expm1(-h)) * d
        x0_prev = x0_hat
        _report(callback, i - 1, ts[i], x, x0_hat, i)
    return x


@torch.no_grad()
def heun(
    eps_model: EpsModel,
    x_T: Tensor,
    grid: Tensor,
    *,
    noise: NoiseLevels,
    cond: Cond | None = None,
    x0_threshold: Threshold = None,
    callback: Callback = None,
    progress: bool = True,
) -> Tensor:
    """Heun's method of Karras et al. (2022), Algorithm 1 with S_churn = 0.

    Karras et al. write the ODE for y = x / alpha against s = sigma / alpha =
    e^{-lambda} (their sigma; Eq. 4 with s(t) = alpha): dy/ds = eps(alpha y, t(s)).
    One step from s_{i-1} to s_i: an Euler step y' = y + (s_i - s_{i-1}) d with
    d = eps at the start, then, unless s_i = 0, the trapezoidal correction
    y_i = y + (s_i - s_{i-1}) (d + d') / 2 with d' = eps at (y', s_i). Second order;
    two evaluations a step, one on a last step to s = 0 (their sigma_N = 0).
    Use it on ``karras_grid`` (their Eq. 5, rho = 7) to be their sampler.
    """
    ts = _times(grid)
    alpha, sigma, _ = _levels(noise, ts)
    s = sigma / alpha  # Karras et al.'s sigma
    y, nfe = x_T / float(alpha[0]), 0
    for i in tqdm(range(1, len(ts)), disable=not progress, desc="Heun"):
        ds = float(s[i] - s[i - 1])
        x = float(alpha[i - 1]) * y
        d = call(eps_model, x, _vec(float(ts[i - 1]), y), cond)
        x0_hat, d = _predict(
            x, d, float(alpha[i - 1]), float(sigma[i - 1]), x0_threshold
        )
        nfe += 1
        y_next = y + ds * d  # Euler step.
        if s[i] > 0:  # 2nd order correction.
            x_next = float(alpha[i]) * y_next
            d2 = call(eps_model, x_next, _vec(float(ts[i]), y), cond)
            _, d2 = _predict(x_next, d2, float(alpha[i]), float(sigma[i]), x0_threshold)
            nfe += 1
            y_next = y + ds * 0.5 * (d + d2)
        y = y_next
        if callback is not None:  # x = alpha y is only formed when reported
            _report(callback, i - 1, ts[i], float(alpha[i]) * y, x0_hat, nfe)
    return float(alpha[-1]) * y


SOLVERS: dict[str, Callable[..., Tensor]] = {
    "euler": euler,
    "dpm_solver_1": dpm_solver_1,
    "dpm_solver_pp_2m": dpm_solver_pp_2m,
    "heun": heun,
}
