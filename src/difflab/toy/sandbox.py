"""The exact-score sandbox: every sampler, driven by the true score, measured.

With a Gaussian mixture as data the score of every noisy marginal is known in
closed form (:mod:`difflab.toy.mixtures`), so a sampler's error is its own
discretisation error, never the network's. ``run_sandbox`` runs the discrete
DDPM and DDIM samplers (Ho et al. 2020; Song et al. 2021a) and the continuous
reverse-SDE, predictor-corrector and probability-flow ODE samplers (Song et al.
2021b) at a range of score evaluations (NFE) and measures

* the sliced Wasserstein-2 distance to fresh samples of the true distribution
  (Rabin et al. 2011; Bonneel et al. 2015), with its floor: the distance between
  two independent true samples of the same size;
* the true negative log-likelihood -E log p(x) of the samples, to compare with
  the entropy H(p) = -E_p log p. The gap NLL - H is not a divergence: a sampler
  that over-concentrates on the modes scores *below* H, so read it with SW.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from difflab.core.models import ScoreModel
from difflab.diffusion.noise import (
    DiscreteNoise,
    NoiseLevels,
    eps_model_from_score,
    uniform_grid,
)
from difflab.diffusion.samplers import ddim_grid_sample, ddim_timesteps
from difflab.diffusion.schedules import make_schedule
from difflab.score.samplers import (
    CountedScore,
    ode_sample,
    pc_sample,
    reverse_sde_sample,
)
from difflab.score.sde import SDE, VPSDE
from difflab.toy.mixtures import GaussianMixture, eight_gaussians

SAMPLERS = ("ddpm", "ddim", "reverse_sde", "pc", "ode_euler", "ode_heun", "rk45")


def sliced_wasserstein(
    x: Tensor, y: Tensor, n_proj: int = 128, generator: torch.Generator | None = None
) -> Tensor:
    """Sliced Wasserstein-2 distance between two samples x (N, D) and y (M, D).

    SW_2^2 = E_theta W_2^2(theta^T x, theta^T y) over directions theta uniform on
    the sphere; each 1D W_2 compares sorted projections (quantile functions,
    evaluated on a common grid of min(N, M) levels when N != M).
    """
    theta = torch.randn(n_proj, x.shape[1], generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=1, keepdim=True)
    px = (x.double().cpu() @ theta.T).sort(dim=0).values  # (N, P)
    py = (y.double().cpu() @ theta.T).sort(dim=0).values  # (M, P)
    if px.shape[0] != py.shape[0]:
        m = min(px.shape[0], py.shape[0])
        q = (torch.arange(m, dtype=torch.float64) + 0.5) / m
        px, py = torch.quantile(px, q, dim=0), torch.quantile(py, q, dim=0)
    return (px - py).pow(2).mean().sqrt()


def exact_score_fn(mixture: GaussianMixture, noise: NoiseLevels) -> ScoreModel:
    """s(x, t) = grad log p_t(x) of the mixture carried by ``noise`` to time t (B,).

    ``noise`` is any :class:`~difflab.diffusion.noise.NoiseLevels`: an SDE or a
    discrete schedule (``DiscreteNoise``). Its eps model, the minimiser of
    L_simple (Ho et al. 2020, Eq. 14), is ``eps_model_from_score(score_fn, noise)``.
    """

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = noise.marginal_coefs(t)
        return mixture.perturbed_score(x, alpha, sigma)

    return score_fn


def class_score_fn(
    mixture: GaussianMixture, noise: NoiseLevels
) -> Callable[..., Tensor]:
    """Exact class-conditional scores, the class being the mixture component.

    ``score_fn(x, t, cond)`` with ``cond["y"]`` (B,) long: label k < K gives
    grad log p_t(x | y = k) (component k carried to time t), label K (the null
    class) gives the score of the whole mixture, grad log p_t(x). The ideal
    network of classifier-free guidance (Ho & Salimans 2022) for these data.
    """
    k_null = mixture.n_components
    parts = [mixture.component(k) for k in range(k_null)] + [mixture]

    def score_fn(x: Tensor, t: Tensor, cond) -> Tensor:
        alpha, sigma = noise.marginal_coefs(t)
        y = cond["y"].to(x.device)
        out = torch.zeros_like(x)
        for k, part in enumerate(parts):
            rows = y == k
            if rows.any():
                out[rows] = part.perturbed_score(x[rows], alpha[rows], sigma[rows])
        return out

    return score_fn


def class_log_posterior_fn(
    mixture: GaussianMixture, noise: NoiseLevels
) -> Callable[..., Tensor]:
    """The exact noise-aware classifier: ``log_prob_fn(x, t, cond)`` = log p_t(y | x).

    The class is the mixture component, as in :func:`class_score_fn`;
    ``cond["y"]`` (B,) holds labels in 0..K-1. Its gradient in x is
    grad log p_t(x | y) - grad log p_t(x), what classifier guidance adds
    (Dhariwal & Nichol 2021, Sec. 4.1).
    """

    def log_prob_fn(x: Tensor, t: Tensor, cond) -> Tensor:
        alpha, sigma = noise.marginal_coefs(t)
        log_post = mixture.perturbed_log_posterior(x, alpha, sigma)  # (B, K)
        return log_post.gather(1, cond["y"].to(x.device).view(-1, 1)).squeeze(1)

    return log_prob_fn


def noise_conditional_score(
    mixture: GaussianMixture,
) -> Callable[[Tensor, Tensor], Tensor]:
    """s(x, sigma) = grad log (p * N(0, sigma^2 I))(x): the ideal NCSN (Song 2019)."""
    return lambda x, sigma: mixture.perturbed_score(x, 1.0, sigma)


def _run_one(name: str, nfe: int, mixture, sde, schedule, x_T, generator, rtol):
    """Run sampler ``name`` at about ``nfe`` evaluations; returns (x0, nfe used)."""
    if name in ("ddpm", "ddim"):
        noise = DiscreteNoise(schedule)
        eps = CountedScore(eps_model_from_score(exact_score_fn(mixture, noise), noise))
        grid = noise.grid(ddim_timesteps(schedule.T, nfe))
        eta = 1.0 if name == "ddpm" else 0.0  # eta = 1: DDPM on a respaced chain
        x0 = ddim_grid_sample(
            eps, x_T, grid, noise=noise, eta=eta, generator=generator, progress=False
        )
        return x0, eps.nfe
    score = CountedScore(exact_score_fn(mixture, sde))
    kw = {"sde": sde, "progress": False}
    if name == "reverse_sde":
        x0 = reverse_sde_sample(
            score, x_T, uniform_grid(sde, nfe), generator=generator, **kw
        )
    elif name == "pc":
        grid = uniform_grid(sde, max(nfe // 2, 1))
        x0 = pc_sample(score, x_T, grid, generator=generator, **kw)
    elif name == "ode_euler":
        x0 = ode_sample(score, x_T, uniform_grid(sde, nfe), method="euler", **kw)
    elif name == "ode_heun":
        grid = uniform_grid(sde, max(nfe // 2, 1))
        x0 = ode_sample(score, x_T, grid, method="heun", **kw)
    elif name == "rk45":
        grid = uniform_grid(sde, 1)
        x0 = ode_sample(score, x_T, grid, method="rk45", rtol=rtol, atol=rtol, **kw)
    else:
        raise ValueError(f"unknown sampler {name!r}; choose from {SAMPLERS}")
    return x0, score.nfe


def run_sandbox(
    mixture: GaussianMixture | None = None,
    *,
    sde: SDE | None = None,
    samplers: Sequence[str] = SAMPLERS,
    nfes: Sequence[int] = (10, 20, 50, 100, 200, 500, 1000),
    rk45_tols: Sequence[float] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5),
    n_samples: int = 2000,
    n_proj: int = 128,
    seed: int = 0,
) -> list[dict]:
    """Every sampler with the exact score, error against evaluations.

    The discrete samplers use the linear DDPM schedule (T = 1000) that the VP SDE
    (beta_min = 0.1, beta_max = 20) is the limit of; "ddpm" is ancestral sampling
    on a respaced chain (DDIM with eta = 1), "ddim" is eta = 0. The adaptive
    "rk45" sweeps ``rk45_tols`` instead of ``nfes``. All samplers start from the
    same prior draw x_T.

    Returns:
        A list of dicts, one per (sampler, budget): ``sampler``, ``nfe`` (score
        evaluations used), ``sw`` (sliced W2 to fresh true samples), ``nll``
        (-mean log p(x)), ``nll_gap`` (nll minus the entropy), ``seconds``, and
        the reference values ``entropy`` and ``sw_floor``.
    """
    mixture = mixture or eight_gaussians()
    sde = sde or VPSDE()
    schedule = make_schedule("linear", 1000)
    gen = torch.Generator().manual_seed(seed)
    x_T = sde.prior_sample((n_samples, mixture.dim), gen, dtype=torch.float64)
    reference = mixture.sample(n_samples, gen, dtype=torch.float64)
    proj_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    entropy, _ = mixture.entropy(100_000, gen)
    floor = sliced_wasserstein(
        mixture.sample(n_samples, gen, dtype=torch.float64),
        reference,
        n_proj,
        torch.Generator().manual_seed(proj_seed),
    )
    rows = []
    for name in samplers:
        budgets = rk45_tols if name == "rk45" else nfes
        for budget in budgets:
            t0 = time.perf_counter()
            x0, used = _run_one(
                name,
                int(budget) if name != "rk45" else 0,
                mixture,
                sde,
                schedule,
                x_T,
                gen,
                float(budget),
            )
            seconds = time.perf_counter() - t0
            sw = sliced_wasserstein(
                x0, reference, n_proj, torch.Generator().manual_seed(proj_seed)
            )
            neg_log_p = -mixture.log_prob(x0).double()
            nll = float(neg_log_p.mean())
            nll_se = float(neg_log_p.std() / len(neg_log_p) ** 0.5)
            rows.append(
                {
                    "sampler": name,
                    "nfe": used,
                    "budget": budget,
                    "sw": float(sw),
                    "nll": nll,
                    "nll_gap": nll - entropy,
                    "nll_se": nll_se,
                    "seconds": seconds,
                    "entropy": entropy,
                    "sw_floor": float(floor),
                }
            )
    return rows


def best_by_budget(
    rows: list[dict], budgets: Sequence[int] = (10, 20, 50, 100, 1000)
) -> dict:
    """For each budget, the sampler with the lowest SW among runs with nfe <= budget."""
    best = {}
    for b in budgets:
        within = [r for r in rows if 0 < r["nfe"] <= b]
        if within:
            r = min(within, key=lambda r: r["sw"])
            best[b] = (r["sampler"], r["nfe"], r["sw"])
    return best


ODE_SAMPLERS = ("ddim", "ode_euler", "ode_heun", "rk45")


def ode_errors(
    mixture: GaussianMixture | None = None,
    *,
    sde: SDE | None = None,
    nfes: Sequence[int] = (10, 20, 50, 100, 200, 500),
    rk45_tols: Sequence[float] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5),
    n_samples: int = 1000,
    ref_tol: float = 1e-10,
    seed: int = 0,
) -> tuple[list[dict], Tensor]:
    """Pathwise error of the deterministic samplers against a tight solve, same x_T.

    Every sampler integrates the probability-flow ODE of ``sde`` (Song et al.
    2021b, Eq. 13) from one prior draw x_T down to ``sde.t_min`` with the exact
    mixture score; the reference is scipy's RK45 at ``rtol = atol = ref_tol``.
    "ddim" is DDIM (eta = 0) on the SDE's own noise levels (the first-order
    DPM-Solver, Lu et al. 2022, Sec. 4.1), so all four solve the same ODE. The
    error has no sampling noise: the spread printed with it, the standard error
    over the x_T, only says how typical these x_T are.

    Returns:
        (rows, reference): one dict per (sampler, budget) with ``sampler``,
        ``budget``, ``nfe`` (evaluations used), ``err`` (mean over samples of
        ||x - x_ref||), ``err_se`` (its standard error) and ``errors`` (N,);
        ``reference`` (N, D) is the tight solve.
    """
    mixture = mixture or eight_gaussians()
    sde = sde or VPSDE()
    gen = torch.Generator().manual_seed(seed)
    x_T = sde.prior_sample((n_samples, mixture.dim), gen, dtype=torch.float64)
    score = exact_score_fn(mixture, sde)
    one = uniform_grid(sde, 1)
    kw = {"sde": sde, "progress": False}
    reference = ode_sample(
        score, x_T, one, method="rk45", rtol=ref_tol, atol=ref_tol, **kw
    )
    eps = eps_model_from_score(score, sde)
    rows = []
    for name in ODE_SAMPLERS:
        for budget in rk45_tols if name == "rk45" else nfes:
            counted = CountedScore(eps if name == "ddim" else score)
            if name == "ddim":
                grid = uniform_grid(sde, int(budget))
                x = ddim_grid_sample(counted, x_T, grid, noise=sde, progress=False)
            elif name == "ode_euler":
                grid = uniform_grid(sde, int(budget))
                x = ode_sample(counted, x_T, grid, method="euler", **kw)
            elif name == "ode_heun":
                grid = uniform_grid(sde, max(int(budget) // 2, 1))
                x = ode_sample(counted, x_T, grid, method="heun", **kw)
            else:
                rtol = float(budget)
                x = ode_sample(
                    counted, x_T, one, method="rk45", rtol=rtol, atol=rtol, **kw
                )
            errors = (x - reference).norm(dim=1)
            rows.append(
                {
                    "sampler": name,
                    "budget": budget,
                    "nfe": counted.nfe,
                    "err": float(errors.mean()),
                    "err_se": float(errors.std() / len(errors) ** 0.5),
                    "errors": errors,
                }
            )
    return rows, reference
