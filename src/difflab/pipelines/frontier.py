"""The frontier's trained pipelines: flow matching, its reflow, the consistency student.

All three work on the ``ddpm`` recipe's data and network (the flows also on the latent
``mnist-latent`` recipe's), trained as the Frontier
pages train them (the pages call these functions, so the command line samples the
pages' own models from the cache):

- :func:`load_or_train_flow` ``("fm")``: the recipe's UNet trained on the straight
  path's velocity (Lipman et al. 2023; Liu et al. 2023), with the recipe's steps,
  batch and EMA; ``("reflow")``: fine-tuned on pairs from the FM model's own ODE
  (Liu et al. 2023), half as many steps again;
- :func:`load_or_train_consistency`: the DDPM teacher distilled into a consistency
  model (Song et al. 2023, Algorithm 2) on a 20-step grid.

Each returns a pipeline with the site's sampling protocol,
``sample(n, *, solver, nfe, generator, progress)``: the flow models integrate
their ODE with ``"euler"`` (``nfe`` steps) or ``"heun"`` (two evaluations a step,
``nfe`` even), the consistency model samples with ``"consistency"``
(Algorithm 1, one evaluation a step), all unconditional and unguided.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from difflab.core.models import VelocityModel
from difflab.data.images import load_images
from difflab.diffusion.noise import DiscreteNoise
from difflab.diffusion.samplers import ddim_timesteps
from difflab.flow.consistency import ConsistencyModel, DistillConfig, distill
from difflab.flow.consistency import consistency_sample as _consistency_sample
from difflab.flow.rectified import (
    FlowTrainConfig,
    flow_sample,
    reflow_pairs,
    time_grid,
    train_velocity,
    velocity_model,
)
from difflab.pipelines.autoencoder import (
    TrainedAutoencoder,
    dataset_latents,
    train_autoencoder,
)
from difflab.pipelines.recipes import DEPS as RECIPE_DEPS
from difflab.pipelines.recipes import (
    Recipe,
    Trained,
    get_recipe,
    init_net,
    load_or_train,
    resolve_data,
)
from difflab.pipelines.sampling import in_batches
from difflab.runtime.cache import cached

FLOW_KINDS = ("fm", "reflow")
FLOW_SOLVERS = ("euler", "heun")
CONSISTENCY_SOLVERS = ("consistency",)
#: The network's time input: t in [0, 1] scaled to the DDPM chain's last index.
TIME_SCALE = 999.0
FLOW_DEPS = (
    "difflab.flow.rectified",
    "difflab.nets.unet",
    "difflab.data.images",
    "difflab.pipelines.recipes",
    "difflab.pipelines.frontier",
)
CONSISTENCY_DEPS = (
    "difflab.flow.consistency",
    "difflab.pipelines.frontier",
    *RECIPE_DEPS,
)


def _unconditional(name: str, cond, guidance) -> None:
    if cond is not None or guidance is not None:
        raise ValueError(f"{name} is unconditional: no cond, no guidance")


def _noise(recipe: Recipe, n: int, generator: torch.Generator | None) -> Tensor:
    u = recipe.unet
    return torch.randn(
        n, u.in_channels, u.image_size, u.image_size, generator=generator
    )


# --- flow matching -----------------------------------------------------------------


@dataclass
class TrainedFlow:
    """A velocity field on the straight path, t in [0, 1] (t = 1 is noise)."""

    kind: str  # "fm" or "reflow"
    recipe: Recipe
    net: nn.Module
    losses: list[float]
    steps: int  # optimiser steps in all (reflow: FM's and its own)
    from_cache: bool
    autoencoder: TrainedAutoencoder | None = None  # a latent recipe's
    image_size: int | None = None  # of the data (a latent recipe's decoded images)

    def velocity(self) -> VelocityModel:
        return velocity_model(self.net, TIME_SCALE)

    @staticmethod
    def check_budget(solver: str, nfe: int) -> None:
        """Refuse what the flow's solvers cannot spend (before any work)."""
        if solver not in FLOW_SOLVERS:
            raise ValueError(
                f"unknown solver {solver!r} for a flow; choose from "
                f"{', '.join(FLOW_SOLVERS)}"
            )
        least = 1 if solver == "euler" else 2
        if int(nfe) != nfe or nfe < least or (solver == "heun" and nfe % 2):
            need = "a whole number >= 1" if solver == "euler" else "an even number >= 2"
            raise ValueError(
                f"{solver} on a flow needs {need} of evaluations, not {nfe}"
            )

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        solver: str = "euler",
        nfe: int = 8,
        cond=None,
        guidance: float | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        batch_size: int = 500,
    ) -> Tensor:
        """``n`` images in [-1, 1]: the ODE from noise at t = 1 to t = 0 on a
        uniform grid, ``nfe`` Euler steps or ``nfe / 2`` Heun steps."""
        _unconditional(f"the {self.kind} flow", cond, guidance)
        self.check_budget(solver, nfe)
        steps = nfe if solver == "euler" else nfe // 2
        grid = time_grid(steps)

        def one(b: int, rows: slice) -> Tensor:
            z = _noise(self.recipe, b, generator)
            x = flow_sample(self.velocity(), z, grid, method=solver, progress=progress)
            return self.decode(x).clamp(-1, 1)

        return in_batches(n, batch_size, one)

    def decode(self, x: Tensor) -> Tensor:
        """The ODE's end as images: a latent recipe's latents decoded to the data's
        size; a pixel recipe's images as they are."""
        ae = self.autoencoder
        if ae is None:
            return x
        return ae.decode_images(x, self.image_size)


def flow_config(recipe: Recipe) -> FlowTrainConfig:
    """The recipe's budget (steps, batch, EMA) for flow matching."""
    t = recipe.train
    return FlowTrainConfig(
        steps=t.steps,
        batch_size=t.batch_size,
        lr=2e-3,
        ema_decay=t.ema_decay,
        time_scale=TIME_SCALE,
    )


def reflow_config(recipe: Recipe) -> tuple[FlowTrainConfig, int]:
    """Reflow's fine-tuning budget and its number of (noise, image) pairs."""
    cfg = replace(flow_config(recipe), steps=recipe.train.steps // 2, lr=5e-4)
    return cfg, (2048 if recipe.profile == "quick" else 8192)


def _cached_net(name: str, config, train_fn, recipe: Recipe):
    def build(path):
        net, losses = train_fn()
        return {"net": net.state_dict(), "losses": losses}

    def load(state):
        net = init_net(recipe)
        net.load_state_dict(state["net"])
        return net.eval(), state["losses"]

    (net, losses), hit = cached(
        "flow", (name, config), deps=FLOW_DEPS, build=build, load=load
    )
    return net, losses, hit


def load_or_train_flow(
    kind: str = "fm",
    profile: str | None = None,
    *,
    progress: bool = False,
    recipe: str = "ddpm",
) -> TrainedFlow:
    """The network of ``recipe`` (``ddpm``, or the latent ``mnist-latent``) trained
    by flow matching (``"fm"``) or fine-tuned by reflow (``"reflow"``) on the
    recipe's data (a latent recipe's scaled latents), from the cache or trained now.
    """
    if kind not in FLOW_KINDS:
        raise ValueError(f"unknown flow {kind!r}; choose from {', '.join(FLOW_KINDS)}")
    recipe_, data = resolve_data(get_recipe(recipe, profile))
    ae = train_autoencoder(recipe_.autoencoder) if recipe_.autoencoder else None

    def training_data(images: Tensor = data.images) -> Tensor:
        """What the flow learns (encoded only when a network is trained)."""
        return images if ae is None else dataset_latents(ae, images)

    prefix = "digits" if recipe == "ddpm" else recipe
    cfg = flow_config(recipe_)
    fm, fm_losses, fm_hit = _cached_net(
        f"{prefix}-fm",
        (recipe_, cfg),
        lambda: train_velocity(
            init_net(recipe_), training_data(), cfg, progress=progress
        ),
        recipe_,
    )
    if kind == "fm":
        return TrainedFlow(
            "fm", recipe_, fm, fm_losses, cfg.steps, fm_hit, ae, data.image_size
        )
    rf_cfg, pairs = reflow_config(recipe_)

    def train_reflow():
        shape = training_data(data.images[:1]).shape[1:]
        z = torch.randn(pairs, *shape, generator=torch.Generator().manual_seed(3))
        x_end, _ = reflow_pairs(velocity_model(fm, TIME_SCALE), z, steps=8, batch=512)
        if ae is None:  # pixels are bounded; scaled latents are not
            x_end = x_end.clamp(-1, 1)
        return train_velocity(
            copy.deepcopy(fm).train(), x_end, rf_cfg, noise=z, progress=progress
        )

    rf, rf_losses, rf_hit = _cached_net(
        f"{prefix}-reflow", (recipe_, cfg, rf_cfg, pairs), train_reflow, recipe_
    )
    steps = cfg.steps + rf_cfg.steps
    return TrainedFlow(
        "reflow", recipe_, rf, rf_losses, steps, rf_hit, ae, data.image_size
    )


# --- consistency distillation --------------------------------------------------------


@dataclass
class TrainedConsistency:
    """A consistency student distilled from the ``ddpm`` teacher."""

    model: ConsistencyModel
    teacher: Trained
    config: DistillConfig
    losses: list[float]
    from_cache: bool

    @property
    def noise(self) -> DiscreteNoise:
        return self.model.noise

    def times(self, nfe: int) -> Tensor:
        """The ``nfe`` times of multistep sampling: the teacher's steps N j / k - 1
        ("trailing" spacing), from the last down."""
        T = self.teacher.schedule.T
        steps = torch.arange(1, nfe + 1) * T // nfe - 1
        return self.noise.grid(steps)[:-1]

    def check_budget(self, solver: str, nfe: int) -> None:
        if solver not in CONSISTENCY_SOLVERS:
            raise ValueError(
                f"unknown solver {solver!r} for a consistency model; use consistency"
            )
        T = self.teacher.schedule.T
        if int(nfe) != nfe or not 1 <= nfe <= T:
            raise ValueError(f"consistency sampling needs 1 to {T} steps, not {nfe}")

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        solver: str = "consistency",
        nfe: int = 1,
        cond=None,
        guidance: float | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        batch_size: int = 500,
    ) -> Tensor:
        """``n`` images in [-1, 1]: one evaluation of the student, or ``nfe`` with
        re-noising between them (Song et al. 2023, Algorithm 1)."""
        _unconditional("the consistency model", cond, guidance)
        self.check_budget(solver, nfe)
        times = self.times(nfe)

        def one(b: int, rows: slice) -> Tensor:
            x_T = self.teacher.noise(b, generator)
            x = _consistency_sample(self.model, x_T, times, generator=generator)
            return x.clamp(-1, 1)

        return in_batches(n, batch_size, one)


def distill_config(teacher: Trained, grid_steps: int = 20) -> DistillConfig:
    """The page's distillation: the teacher's steps at a uniform ``grid_steps``-step
    DDIM's times, plus t_0 = 0; a longer run on the full profile."""
    T = teacher.schedule.T
    taus = ddim_timesteps(T, grid_steps)
    quick = teacher.recipe.profile == "quick"
    return DistillConfig(
        grid=(0.0, *((taus + 1) / T).tolist()),
        steps=300 if quick else 3000,
        batch_size=64 if quick else 256,
        lr=4e-4 if quick else 2e-4,
        mu=0.95,
    )


def load_or_train_consistency(
    profile: str | None = None, *, progress: bool = False
) -> TrainedConsistency:
    """The ``ddpm`` teacher distilled into a consistency model (the student starts
    from the teacher's weights), from the cache or trained now."""
    teacher = load_or_train(get_recipe("ddpm", profile), progress=progress)
    noise = DiscreteNoise(teacher.schedule)
    T = teacher.schedule.T
    config = distill_config(teacher)
    data = load_images(teacher.recipe.dataset)

    def t_input(t: Tensor) -> Tensor:  # continuous t -> the UNet's step index
        return t * T - 1

    def make_student() -> ConsistencyModel:
        net = copy.deepcopy(teacher.net)
        return ConsistencyModel(net, noise, 0.0, kind="ddim", t_input=t_input)

    def build(path):
        student = make_student().train()
        teacher_eps = teacher.eps_model()
        target, losses = distill(
            student, teacher_eps, data.images, config, progress=progress
        )
        return {"net": target.net.state_dict(), "losses": losses}

    def load(state):
        model = make_student()
        model.net.load_state_dict(state["net"])
        return model.eval(), state["losses"]

    (student, losses), hit = cached(
        "consistency",
        (teacher.recipe, config),
        deps=CONSISTENCY_DEPS,
        build=build,
        load=load,
    )
    return TrainedConsistency(student, teacher, config, losses, hit)
