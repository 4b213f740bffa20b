"""One sampling protocol: each pipeline samples with each solver at a tiny budget.

``pipeline.sample(n, solver=, nfe=, cond=, guidance=, generator=)`` for Stable
Diffusion and audio (the recipes' ``Trained.sample`` has its own tests in
``test_cli.py`` and ``test_solvers.py``): the shape, the same samples from the same
seed, and the network called exactly as often as the solver's budget says (one
batched call per evaluation, guidance included).
"""

from __future__ import annotations

import pytest
import torch

from difflab.diffusion import solvers
from difflab.diffusion.noise import DiscreteNoise
from difflab.diffusion.schedules import make_schedule
from difflab.pipelines import sampling
from difflab.tests.test_stable_diffusion import _tiny_model

BUDGET = {
    "ddpm": 0,
    "ddim": 3,
    "euler": 3,
    "dpm_solver_1": 3,
    "dpm_solver_pp_2m": 3,
    "heun": 5,
}


def test_every_solver_has_a_budget_here():
    assert set(BUDGET) == set(sampling.SOLVERS)


def expected_nfe(solver: str, nfe: int, schedule) -> int:
    if solver == "ddpm":
        return schedule.T
    if solver == "ddim":
        return nfe
    noise = DiscreteNoise(schedule)
    return solvers.solver_nfe(solver, solvers.default_grid(solver, noise, nfe), noise)


def _counted(module: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    forward = module.forward

    def counted(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    module.forward = counted
    return calls


@pytest.mark.parametrize("solver", sorted(BUDGET))
def test_stable_diffusion_samples_with_every_solver(solver):
    model = _tiny_model()
    calls = _counted(model.net)

    def draw(seed: int):
        return model.sample(
            2,
            solver=solver,
            nfe=BUDGET[solver] or 1,
            cond="a thin two",
            guidance=2.0,
            generator=torch.Generator().manual_seed(seed),
        )

    x = draw(0)
    assert x.shape[:2] == (2, 1) and torch.isfinite(x).all()
    assert len(calls) == expected_nfe(solver, BUDGET[solver], model.schedule)
    assert torch.equal(x, draw(0))
    assert not torch.equal(x, draw(1))


@pytest.fixture(scope="module")
def audio_model():
    from difflab.pipelines.audio import TrainedAudio, audio_recipe, init_net

    recipe = audio_recipe("spec", "quick")
    net = init_net(recipe).eval()
    return TrainedAudio(recipe, net, make_schedule("cosine", 16), [], 0.0, False, "")


@pytest.mark.parametrize("solver", sorted(BUDGET))
def test_audio_samples_with_every_solver(audio_model, solver):
    calls = _counted(audio_model.net)
    digits = torch.tensor([3, 7])

    def draw(seed: int):
        return audio_model.sample(
            2,
            solver=solver,
            nfe=BUDGET[solver] or 1,
            cond=digits,
            guidance=2.0,
            generator=torch.Generator().manual_seed(seed),
            gl_iters=2,
        )

    x = draw(0)
    assert x.shape == (2, audio_model.recipe.length) and torch.isfinite(x).all()
    assert len(calls) == expected_nfe(solver, BUDGET[solver], audio_model.schedule)
    assert torch.equal(x, draw(0))
    del audio_model.net.forward  # the instance's counter: back to the class's


@pytest.mark.parametrize(
    ("solver", "nfe", "message"),
    [
        ("dpm++3", 5, "unknown solver"),
        ("heun", 2, "at least 3"),
        ("ddim", 0, "1 to"),
        ("ddim", 2.5, "whole number"),
    ],
)
def test_a_bad_solver_or_budget_is_refused_before_any_work(solver, nfe, message):
    model = _tiny_model()
    calls = _counted(model.net)
    with pytest.raises(ValueError, match=message):
        model.sample(1, solver=solver, nfe=nfe, cond="a two")
    assert calls == []


def test_the_aliases_name_the_same_solver():
    assert sampling.solver_name("dpm++2m") == "dpm_solver_pp_2m"
    with pytest.raises(ValueError, match="choose from"):
        sampling.solver_name("dpm++3")
