"""One way to sample every trained pipeline: a solver by name and a budget.

Every pipeline of this package (pixel and latent recipes, the conditional ones,
Stable Diffusion, audio) is a network trained on the DDPM chain, so each samples
through :func:`draw`: ``solver`` is any of :data:`SOLVERS` and ``nfe`` its budget
of network evaluations, on the solver's default grid (the fast-sampling page's
choice, :func:`difflab.diffusion.solvers.default_grid`); ``guidance`` is the
classifier-free guidance weight w (the conditioning page's w: 1 is the
conditional model, 0 the unconditional one). The pipelines add what is their own:
the shape of x_T, decoding latents, turning spectrograms into sound.

:data:`SOLVER_COST` is what each solver spends, for ``--help`` and errors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from difflab.core.cond import Cond, NullCond
from difflab.core.models import EpsModel
from difflab.diffusion import solvers
from difflab.diffusion.guidance import guided
from difflab.diffusion.noise import DiscreteNoise
from difflab.diffusion.samplers import ddim_sample, ddim_timesteps, ddpm_sample
from difflab.diffusion.schedules import Schedule

SOLVERS = ("ddpm", "ddim", *solvers.SOLVERS)
# Short names as k-diffusion and diffusers spell them.
ALIASES = {
    "dpm++2m": "dpm_solver_pp_2m",
    "dpm++": "dpm_solver_pp_2m",
    "dpmpp_2m": "dpm_solver_pp_2m",
}
SOLVER_COST = {
    "ddpm": "all T steps of the chain, one evaluation each (nfe is ignored)",
    "ddim": "nfe evaluations, one per step (eta = 0: deterministic)",
    "euler": "nfe evaluations, one per step of the probability-flow ODE (>= 1)",
    "dpm_solver_1": "nfe evaluations, one per step (equals DDIM, eta = 0) (>= 1)",
    "dpm_solver_pp_2m": "nfe evaluations, one per step, second order (>= 2)",
    "heun": "2 a step, 1 on the last: nfe, or nfe - 1 when even (>= 3)",
}


def solver_name(name: str) -> str:
    """The package's name of solver ``name`` (aliases such as ``dpm++2m`` too).

    Raises:
        ValueError: for a name that is no solver.
    """
    name = ALIASES.get(name, name)
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; choose from {', '.join(SOLVERS)}")
    return name


def check_budget(solver: str, nfe: int, schedule: Schedule) -> None:
    """Refuse a budget ``solver`` cannot spend, before any work.

    Raises:
        ValueError: ``nfe`` not a whole number of at least the solver's minimum
            (or, for ddim, more steps than the chain has).
    """
    solver = solver_name(solver)
    if solver == "ddpm":
        return
    if solver == "ddim":
        T = schedule.T
        if int(nfe) != nfe or not 1 <= nfe <= T:
            raise ValueError(f"ddim needs a whole number of 1 to {T} steps, not {nfe}")
        return
    solvers.default_grid(solver, DiscreteNoise(schedule), nfe)  # raises if it cannot


@torch.no_grad()
def draw(
    eps: EpsModel,
    schedule: Schedule,
    x_T: Tensor,
    *,
    solver: str = "ddim",
    nfe: int = 50,
    eta: float = 0.0,
    cond: Cond | None = None,
    guidance: float | None = None,
    null_cond: NullCond | None = None,
    clip: float | None = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """x_0 from ``x_T`` with solver ``solver`` spending ``nfe`` evaluations.

    ``eps(x_t, t, cond)`` is the network as a noise predictor in continuous time
    (``as_eps_model(net, schedule, prediction)``). With ``guidance`` (w) it is
    guided with ``null_cond`` (classifier-free guidance). ``clip`` bounds the x0
    estimate of every step (None for latents, which are not bounded).

    Raises:
        ValueError: unknown solver, a budget it cannot spend, or guidance without
            a null condition.
    """
    solver = solver_name(solver)
    if guidance is not None:
        if null_cond is None:
            raise ValueError("guidance needs the model's null condition")
        eps = guided(eps, guidance, null_cond)
    if solver in solvers.SOLVERS:
        noise = DiscreteNoise(schedule)
        grid = solvers.default_grid(solver, noise, nfe)
        return solvers.SOLVERS[solver](
            eps,
            x_T,
            grid,
            noise=noise,
            cond=cond,
            x0_threshold=clip,
            progress=progress,
        )
    kw = dict(clip_x0=clip, cond=cond, generator=generator, progress=progress)
    if solver == "ddpm":
        return ddpm_sample(eps, x_T, schedule, **kw)
    check_budget("ddim", nfe, schedule)
    return ddim_sample(
        eps, x_T, schedule, ddim_timesteps(schedule.T, nfe), eta=eta, **kw
    )


def in_batches(n: int, batch_size: int, one: Callable[[int, slice], Tensor]) -> Tensor:
    """``one(b, rows)`` for consecutive batches of at most ``batch_size`` rows,
    concatenated (each batch on the CPU)."""
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        out.append(one(b, slice(start, start + b)).cpu())
    return torch.cat(out)
