"""Samplers for score-based models: reverse SDE, predictor-corrector, ODE, Langevin.

Every sampler is a plain function with one visible loop and the signature

    sampler(score_fn, x_T, grid, *, sde, cond=None, generator=None,
            callback=None, progress=True) -> x_0

where ``score_fn(x, t)`` (``score_fn(x, t, cond)`` when a condition is given,
passed unchanged) takes t as a float tensor of shape (B,) and returns
s_theta(x, t) ~ grad_x log p_t(x). ``grid`` is the decreasing time grid chosen by
the caller (steps + 1 times, e.g. ``uniform_grid(sde, steps)``, from T = 1 down
to ``sde.t_min`` as in Song et al. 2021, Appendix C; see
:mod:`difflab.diffusion.noise`). ``sde`` is any
:class:`~difflab.diffusion.noise.NoiseLevels`: an SDE or a discrete schedule.
``callback`` receives a dict with the step index ``i``, time ``t``, state ``x``
and ``nfe`` (score evaluations so far), so error can be plotted against
evaluations.

References: Song et al. 2021 (arXiv:2011.13456), Song & Ermon 2019
(arXiv:1907.05600), Welling & Teh 2011 (Langevin dynamics).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from difflab.core.cond import Cond
from difflab.core.models import ScoreModel, call
from difflab.core.ode import integrate
from difflab.core.progress import tqdm
from difflab.core.tensors import append_dims, randn_like
from difflab.diffusion.noise import NoiseLevels

Callback = Callable[[dict], None] | None


class CountedScore:
    """Wrap ``score_fn`` to count its evaluations in ``nfe`` (one per batched call)."""

    def __init__(self, score_fn: Callable[..., Tensor]):
        self.score_fn, self.nfe = score_fn, 0

    def __call__(self, *args: Tensor) -> Tensor:
        self.nfe += 1
        return self.score_fn(*args)


def _times(grid: Tensor) -> Tensor:
    """The grid as float64 on the CPU, checked to decrease."""
    ts = torch.as_tensor(grid, dtype=torch.float64).cpu()
    if ts.ndim != 1 or len(ts) < 2 or not (ts[1:] < ts[:-1]).all():
        raise ValueError("grid must be a 1-D tensor of at least 2 decreasing times")
    return ts


def _vec(t: float | Tensor, x: Tensor) -> Tensor:
    """The time t as a (B,) tensor on x's device and dtype."""
    return torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)


@torch.no_grad()
def reverse_sde_sample(
    score_fn: ScoreModel,
    x_T: Tensor,
    grid: Tensor,
    *,
    sde: NoiseLevels,
    cond: Cond | None = None,
    generator: torch.Generator | None = None,
    callback: Callback = None,
    progress: bool = True,
) -> Tensor:
    """Euler-Maruyama on the reverse-time SDE (Song et al. 2021, Eq. 6).

    x <- x - [f - g^2 s] dt + g sqrt(dt) z with dt = t_i - t_{i+1} > 0; the last
    step adds no noise. len(grid) - 1 score evaluations.
    """
    x, ts = x_T, _times(grid)
    steps = len(ts) - 1
    for i in tqdm(range(steps), disable=not progress, desc="reverse SDE"):
        t, dt = _vec(ts[i], x), float(ts[i] - ts[i + 1])  # dt > 0, time goes down
        f, g = sde.drift_diffusion(x, t)
        drift = f - append_dims(g**2, x) * call(score_fn, x, t, cond)
        x = x - drift * dt  # Euler step of the drift, backwards in time.
        if i < steps - 1:
            x = x + append_dims(g, x) * dt**0.5 * randn_like(
                x, generator
            )  # Brownian step.
        if callback is not None:
            callback({"i": i, "t": float(ts[i + 1]), "x": x, "nfe": i + 1})
    return x


@torch.no_grad()
def pc_sample(
    score_fn: ScoreModel,
    x_T: Tensor,
    grid: Tensor,
    *,
    sde: NoiseLevels,
    predictor: str = "reverse_diffusion",
    corrector_steps: int = 1,
    snr: float = 0.16,
    cond: Cond | None = None,
    generator: torch.Generator | None = None,
    callback: Callback = None,
    progress: bool = True,
) -> Tensor:
    """Predictor-corrector sampling (Song et al. 2021, Algorithms 4 and 5).

    At each t_i: ``corrector_steps`` Langevin steps at t_i whose step size makes
    the signal-to-noise ratio ||eps z|| / ||step * score|| equal ``snr``
    (Algorithm 5: step = 2 a_i (snr ||z|| / ||s||)^2, a_i = 1 - beta_i for VP),
    then one predictor step to t_{i+1}: ``"reverse_diffusion"`` (ancestral
    sampling of the discretised reverse SDE, Eq. 46) or ``"euler"``
    (Euler-Maruyama). As in the reference code the corrector comes first, so the
    final state is a noise-free predictor step. (len(grid) - 1) * (1 +
    corrector_steps) score evaluations.
    """
    if predictor not in ("reverse_diffusion", "euler"):
        raise ValueError(
            f"predictor must be 'reverse_diffusion' or 'euler', got {predictor!r}"
        )
    x, ts, nfe = x_T, _times(grid), 0
    steps = len(ts) - 1
    for i in tqdm(range(steps), disable=not progress, desc="PC"):
        t, dt = _vec(ts[i], x), float(ts[i] - ts[i + 1])
        # Corrector: Langevin MCMC targeting p_{t_i}.
        a, _ = sde.transition_coefs(t - dt, t)  # a_i^2 ~ 1 - beta_i (VP), 1 (VE)
        for _ in range(corrector_steps):
            grad, z = call(score_fn, x, t, cond), randn_like(x, generator)
            nfe += 1
            grad_norm = grad.reshape(len(x), -1).norm(dim=-1).mean()
            noise_norm = z.reshape(len(x), -1).norm(dim=-1).mean()
            step = 2 * a**2 * (snr * noise_norm / grad_norm) ** 2  # (B,)
            x = x + append_dims(step, x) * grad + append_dims((2 * step).sqrt(), x) * z
        # Predictor: one reverse step from t_i to t_{i+1}.
        s = call(score_fn, x, t, cond)
        nfe += 1
        if predictor == "reverse_diffusion":
            f, g = sde.discretize(x, t, dt)  # forward step t - dt -> t
            x = x - f + append_dims(g**2, x) * s
        else:
            f, g = sde.drift_diffusion(x, t)
            x = x - (f - append_dims(g**2, x) * s) * dt
            g = g * dt**0.5
        if i < steps - 1:
            x = x + append_dims(g, x) * randn_like(x, generator)
        if callback is not None:
            callback({"i": i, "t": float(ts[i + 1]), "x": x, "nfe": nfe})
    return x


@torch.no_grad()
def ode_sample(
    score_fn: ScoreModel,
    x_T: Tensor,
    grid: Tensor,
    *,
    sde: NoiseLevels,
    method: str = "heun",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    cond: Cond | None = None,
    generator: torch.Generator | None = None,
    callback: Callback = None,
    progress: bool = True,
) -> Tensor:
    """Integrate the probability-flow ODE (Song et al. 2021, Eq. 13) along ``grid``.

    ``method``: ``"euler"`` (len(grid) - 1 evaluations), ``"heun"`` (explicit
    trapezoid, Karras et al. 2022, Algorithm 1; twice as many) or ``"rk45"``
    (scipy's adaptive Dormand-Prince with ``rtol``/``atol`` from grid[0] to
    grid[-1], the points between ignored; the solver's evaluation count is
    reported to ``callback`` at the end). The ODE is deterministic;
    ``generator`` is accepted for a uniform signature.
    """
    ts = _times(grid)
    if method == "rk45":
        return _ode_rk45(
            score_fn, x_T, ts, sde, rtol=rtol, atol=atol, cond=cond, callback=callback
        )
    if method not in ("euler", "heun"):
        raise ValueError(f"method must be 'euler', 'heun' or 'rk45', got {method!r}")
    return integrate(
        lambda x, t: sde.ode_drift(x, t, score_fn, cond),
        x_T,
        ts,
        method=method,
        callback=callback,
        progress=progress,
    )


def _ode_rk45(
    score_fn: ScoreModel,
    x_T: Tensor,
    ts: Tensor,
    sde: NoiseLevels,
    *,
    rtol: float,
    atol: float,
    cond,
    callback,
) -> Tensor:
    shape, dtype, device = x_T.shape, x_T.dtype, x_T.device

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(y).reshape(shape).to(device=device, dtype=dtype)
        drift = sde.ode_drift(x, _vec(t, x), score_fn, cond)
        return drift.double().cpu().numpy().ravel()

    y0 = x_T.detach().double().cpu().numpy().ravel()
    span = (float(ts[0]), float(ts[-1]))
    sol = solve_ivp(fun, span, y0, method="RK45", rtol=rtol, atol=atol)
    x = torch.from_numpy(sol.y[:, -1]).reshape(shape).to(device=device, dtype=dtype)
    if callback is not None:
        callback({"i": len(sol.t) - 1, "t": span[1], "x": x, "nfe": int(sol.nfev)})
    return x


@torch.no_grad()
def langevin_sample(
    score_fn: Callable[[Tensor], Tensor],
    x_init: Tensor,
    *,
    steps: int = 1000,
    step_size: float = 1e-2,
    cond: Cond | None = None,
    generator: torch.Generator | None = None,
    callback: Callback = None,
    progress: bool = True,
) -> Tensor:
    """Unadjusted Langevin dynamics with a fixed score ``score_fn(x)``.

    x <- x + (eps / 2) grad_x log p(x) + sqrt(eps) z (Song & Ermon 2019, Eq. 4;
    Welling & Teh 2011). Converges to p as eps -> 0 and steps -> infinity; a
    finite eps leaves an O(eps) bias (e.g. a Gaussian's variance is inflated by
    1 / (1 - eps / (4 var))). ``cond``, if given, is passed as ``score_fn(x, cond)``.
    """
    x = x_init
    for i in tqdm(range(steps), disable=not progress, desc="Langevin"):
        s = score_fn(x) if cond is None else score_fn(x, cond)
        x = x + 0.5 * step_size * s + step_size**0.5 * randn_like(x, generator)
        if callback is not None:
            callback({"i": i, "x": x, "nfe": i + 1})
    return x


@torch.no_grad()
def annealed_langevin_sample(
    score_fn: Callable[[Tensor, Tensor], Tensor],
    x_init: Tensor,
    sigmas: Tensor,
    *,
    steps_per_sigma: int = 100,
    eps: float = 2e-5,
    denoise: bool = False,
    cond: Cond | None = None,
    generator: torch.Generator | None = None,
    callback: Callback = None,
    progress: bool = True,
) -> Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    For each noise level sigma_i (largest first), ``steps_per_sigma`` Langevin
    steps with step size alpha_i = eps * sigma_i^2 / sigma_L^2 on the
    noise-conditional score ``score_fn(x, sigma)`` (sigma a (B,) tensor). With
    ``denoise`` a final Tweedie step x + sigma_L^2 s(x, sigma_L) removes the
    smallest noise (Jolicoeur-Martineau et al. 2021). len(sigmas) *
    steps_per_sigma score evaluations (+1 with ``denoise``). ``sigmas`` is this
    sampler's grid, in NCSN noise levels; ``cond`` is passed as
    ``score_fn(x, sigma, cond)``.
    """
    x, nfe = x_init, 0
    sigma_last = float(sigmas[-1])
    for i in tqdm(range(len(sigmas)), disable=not progress, desc="annealed Langevin"):
        sigma = _vec(sigmas[i], x)
        alpha = eps * float(sigmas[i]) ** 2 / sigma_last**2
        for _ in range(steps_per_sigma):
            s = call(score_fn, x, sigma, cond)
            x = x + 0.5 * alpha * s + alpha**0.5 * randn_like(x, generator)
            nfe += 1
        if callback is not None:
            callback({"i": i, "sigma": float(sigmas[i]), "x": x, "nfe": nfe})
    if denoise:
        x = x + sigma_last**2 * call(score_fn, x, _vec(sigma_last, x), cond)
    return x
