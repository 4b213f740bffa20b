"""How a sampler's output changes with its number of steps, told apart from noise.

Two tools for experiments of the kind "quality against steps S":

* :func:`coupled_ddim` runs DDIM (Song et al. 2021a, Eq. 12) from one x_T on the
  full chain of T steps and on coarser grids, with *coupled* noise for eta > 0: the
  fresh noise of a coarse step from tau_k down to tau_{k-1} is the combination of
  the full chain's noises over the steps it spans that the full chain itself
  accumulates. The distance between the S-step and the T-step output from the
  same x_T is then discretisation error alone, with no sampling noise in it. For
  eta = 1 the coupling is exact: with a model that knows x_0 both chains pass
  through the same states (the composed posteriors of the Markov chain are the
  eta = 1 jump, Ho et al. 2020 Eq. 7; Song et al. 2021a Eq. 16).
* :func:`bootstrap_frechet` resamples the sample and reference features with
  replacement, with the same indices for every setting, so that the spread of a
  difference between settings (same x_T, paired) is measured as well as the
  spread of each Frechet distance (Heusel et al. 2017, Eq. 6).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from difflab.core.models import EpsModel
from difflab.core.tensors import randn_like
from difflab.diffusion.parameterization import eps_from_x0, x0_from_eps
from difflab.diffusion.samplers import ddim_timesteps
from difflab.diffusion.schedules import Schedule, gather
from difflab.eval.metrics import frechet_distance, gaussian_stats


def _sigma(ab_t: Tensor, ab_s: Tensor, eta: float) -> Tensor:
    """Eq. 16 of Song et al. (2021a): std of the fresh noise from t down to s."""
    return eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)).sqrt()


def bridge_weights(schedule: Schedule, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Per-step noise std s_j and x_t coefficient b_j of the full DDIM chain.

    With a model that knows x_0, one full step from index j to j - 1 maps the
    deviation d_j = x_j - sqrt(alpha_bar_j) x_0 to d_{j-1} = b_j d_j + s_j z_j with
    b_j = sqrt(1 - alpha_bar_{j-1} - s_j^2) / sqrt(1 - alpha_bar_j) (Eq. 12). Over
    the steps t, ..., s + 1 the noise z_j enters x_s with the weight
    c_j = s_j prod_{s < i < j} b_i. Index 0 (the step to the clean image) adds none.

    Returns:
        (s, b), each (T,) float64, with s[0] = 0.
    """
    ab = schedule.alpha_bar
    ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
    s = _sigma(ab, ab_prev, eta)
    s[0] = 0.0
    b = (1 - ab_prev - s**2).clamp(min=0).sqrt() / (1 - ab).sqrt()
    return s, b


def coarse_noise_weights(
    schedule: Schedule, timesteps: Tensor, eta: float = 1.0
) -> Tensor:
    """c_j of :func:`bridge_weights`, for the coarse step that spans index j, (T,).

    The coarse step from tau_k down to tau_{k-1} spans the full steps
    j = tau_{k-1} + 1, ..., tau_k; the sum of c_j^2 over them is the variance the
    full chain adds over that stretch (for eta = 1 it equals Eq. 16 at eta = 1 for
    the jump, which the tests check). Entries outside every span are 0.
    """
    s, b = bridge_weights(schedule, eta)
    c = torch.zeros_like(s)
    taus = timesteps.tolist()
    for k in range(1, len(taus)):
        lo, hi = taus[k - 1], taus[k]
        prod = 1.0
        for j in range(lo + 1, hi + 1):  # c_j = s_j * b_{lo+1} ... b_{j-1}
            c[j] = s[j] * prod
            prod = prod * b[j]
    return c


@torch.no_grad()
def coupled_ddim(
    eps_model: EpsModel,
    x_T: Tensor,
    schedule: Schedule,
    step_counts: Sequence[int],
    *,
    eta: float = 0.0,
    spacing: str = "uniform",
    clip_x0: float | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
) -> dict[int, Tensor]:
    """DDIM from the same x_T on the full chain and on S-step grids, noise coupled.

    Each step is Eq. 12 of Song et al. (2021a), as in
    :func:`~difflab.diffusion.samplers.ddim_sample` (which it equals at eta = 0).
    The full chain (all T steps) draws z_j in the order j = T - 1, ..., 1; a coarse
    step from tau_k to tau_{k-1} uses sum_j c_j z_j / sqrt(sum_j c_j^2) over the
    full steps it spans (:func:`coarse_noise_weights`), a standard normal, so both
    runs see the same Brownian path. Exact for eta in {0, 1}; for other eta the
    coarse noise is the normalised combination (maximally correlated).

    Args:
        step_counts: the S to run besides T (grids from ``ddim_timesteps``).
        callback: called after every step with ``{"S", "t", "x"}`` (t the index
            reached, -1 for the clean image).

    Returns:
        {S: x_0} for every S in ``step_counts`` and for T.
    """
    T = schedule.T
    grids = {S: ddim_timesteps(T, S, spacing) for S in step_counts if S != T}
    weights = {S: coarse_noise_weights(schedule, g, eta) for S, g in grids.items()}
    # span[S][j] = k: full step j (from j to j - 1) lies in the coarse step from tau_k
    span = {S: torch.searchsorted(g, torch.arange(T)) for S, g in grids.items()}
    acc = {S: [torch.zeros_like(x_T) for _ in range(len(g))] for S, g in grids.items()}

    def step(x, t, t_prev, z):  # Eq. 12 from index t to t_prev (-1: clean)
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        a = gather(schedule.alpha_bar, tt, x)
        if t_prev >= 0:
            a_prev = gather(schedule.alpha_bar, torch.full_like(tt, t_prev), x)
        else:
            a_prev = torch.ones_like(a)
        eps = eps_model(x, schedule.time(tt).to(x.device, x.dtype))
        x0_hat = x0_from_eps(x, eps, a)
        if clip_x0 is not None:
            x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
            eps = eps_from_x0(x, x0_hat, a)
        sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()
        x = a_prev.sqrt() * x0_hat + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
        return x if z is None else x + sigma * z

    out = {}
    x = x_T
    for j in range(T - 1, -1, -1):  # the full chain, accumulating coarse noises
        z = randn_like(x, generator) if eta > 0 and j > 0 else None
        if z is not None:
            for S in grids:
                acc[S][int(span[S][j])].add_(weights[S][j].to(x.dtype) * z)
        x = step(x, j, j - 1, z)
        if callback is not None:
            callback({"S": T, "t": j - 1, "x": x})
    out[T] = x
    for S, g in grids.items():
        taus = g.tolist()
        x = x_T
        for k in range(len(taus) - 1, -1, -1):
            z = None
            if eta > 0 and k > 0:
                lo, hi = taus[k - 1] + 1, taus[k] + 1
                norm = weights[S][lo:hi].pow(2).sum().sqrt().to(x.dtype)
                z = acc[S][k] / norm
            x = step(x, taus[k], taus[k - 1] if k > 0 else -1, z)
            if callback is not None:
                callback({"S": S, "t": taus[k - 1] if k > 0 else -1, "x": x})
        out[S] = x
    return out


def bootstrap_frechet(
    features: Mapping[object, Tensor],
    reference: Tensor,
    *,
    n_boot: int = 200,
    resample_reference: bool = True,
    generator: torch.Generator | None = None,
) -> dict[object, Tensor]:
    """Frechet distances of resampled features, paired across settings.

    Every replicate draws one set of row indices for the samples (shared by all
    settings, which must have the same number of rows N: sample i of every setting
    started from the same x_T) and one for the reference (M rows), both with
    replacement, and scores every setting against the resampled reference.

    Args:
        features: {setting: (N, F)} features of the samples.
        reference: (M, F) features of the reference images.
        resample_reference: also resample the reference rows (the spread then
            includes the finite reference set); False keeps it fixed, so the
            spread is that of the samples alone, which more samples shrink.

    Returns:
        {setting: (n_boot,) float64} bootstrap replicates of the distance; their
        std is the spread of one distance, the std of a difference of two
        settings' replicates is the spread of that difference.
    """
    sizes = {f.shape[0] for f in features.values()}
    if len(sizes) != 1:
        raise ValueError(f"all settings need the same number of rows, got {sizes}")
    n, m = sizes.pop(), reference.shape[0]
    out = {key: torch.empty(n_boot, dtype=torch.float64) for key in features}
    for r in range(n_boot):
        i = torch.randint(n, (n,), generator=generator)
        j = torch.randint(m, (m,), generator=generator)
        mu_ref, cov_ref = gaussian_stats(
            (reference[j] if resample_reference else reference).double()
        )
        for key, f in features.items():
            out[key][r] = frechet_distance(
                *gaussian_stats(f[i].double()), mu_ref, cov_ref
            )
    return out
