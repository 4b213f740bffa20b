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


# --- the Frontier models: flow matching and the consistency student ---------------


@pytest.fixture(scope="module")
def ddpm_parts():
    from difflab.pipelines.recipes import get_recipe, init_net

    recipe = get_recipe("ddpm", "quick")
    return recipe, init_net(recipe).eval()


@pytest.mark.parametrize(("solver", "nfe", "calls"), [("euler", 3, 3), ("heun", 4, 4)])
def test_a_flow_samples_with_its_solvers(ddpm_parts, solver, nfe, calls):
    from difflab.pipelines.frontier import TrainedFlow

    recipe, net = ddpm_parts
    flow = TrainedFlow("fm", recipe, net, [], 0, False)
    counter = _counted(net)

    def draw(seed: int):
        g = torch.Generator().manual_seed(seed)
        return flow.sample(2, solver=solver, nfe=nfe, generator=g)

    x = draw(0)
    u = recipe.unet
    assert x.shape == (2, u.in_channels, u.image_size, u.image_size)
    assert len(counter) == calls and x.abs().max() <= 1
    assert torch.equal(x, draw(0)) and not torch.equal(x, draw(1))
    del net.forward
    with pytest.raises(ValueError, match="even number"):
        flow.sample(1, solver="heun", nfe=3)
    with pytest.raises(ValueError, match="unconditional"):
        flow.sample(1, guidance=2.0)


def test_a_latent_flow_returns_its_latents_decoded_at_the_data_size(ddpm_parts):
    """A flow on a latent recipe (mnist-latent) hands back images: the ODE's end
    through the autoencoder's decoder, brought to the data's size. With a field
    that never moves, the ODE's end is its starting noise, so the expected images
    are known exactly."""
    from types import SimpleNamespace

    import torch.nn.functional as F

    from difflab.pipelines.autoencoder import TrainedAutoencoder
    from difflab.pipelines.frontier import TrainedFlow

    class Still(torch.nn.Module):
        def forward(self, x, t, cond=None):
            return torch.zeros_like(x)

    class Identity(torch.nn.Module):  # a decoder that returns its (unscaled) input
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def decode(self, z):
            return z

    recipe, _ = ddpm_parts
    fit = SimpleNamespace(fit="resize")
    ae = TrainedAutoencoder(fit, Identity(), scale=3.0, seconds=0.0)  # z / 3
    flow = TrainedFlow("fm", recipe, Still(), [], 0, False, ae, 4)
    x = flow.sample(2, nfe=2, generator=torch.Generator().manual_seed(0))
    u = recipe.unet
    z = torch.randn(2, u.in_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    decoded = (z / 3).clamp(-1, 1)  # the decoder's images are clamped, then resized
    want = F.interpolate(decoded, size=(4, 4), mode="bilinear", antialias=True)
    assert x.shape == (2, u.in_channels, 4, 4)
    torch.testing.assert_close(x, want.clamp(-1, 1))
    pixels = TrainedFlow("fm", recipe, Still(), [], 0, False)  # no decoder: the end
    z8 = pixels.sample(2, nfe=2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z8, z.clamp(-1, 1))


@pytest.mark.parametrize("nfe", [1, 3])
def test_the_consistency_student_samples_with_one_evaluation_a_step(ddpm_parts, nfe):
    import copy

    from difflab.diffusion.noise import DiscreteNoise
    from difflab.diffusion.schedules import make_schedule
    from difflab.flow.consistency import ConsistencyModel
    from difflab.pipelines.frontier import TrainedConsistency, distill_config
    from difflab.pipelines.recipes import Trained

    recipe, net = ddpm_parts
    schedule = make_schedule(recipe.schedule, recipe.T)
    teacher = Trained(recipe, net, schedule, [], 0.0, False)
    student_net = copy.deepcopy(net)
    noise = DiscreteNoise(schedule)
    model = ConsistencyModel(
        student_net, noise, 0.0, kind="ddim", t_input=lambda t: t * recipe.T - 1
    )
    cm = TrainedConsistency(model, teacher, distill_config(teacher), [], False)
    counter = _counted(student_net)
    g = torch.Generator().manual_seed(0)
    x = cm.sample(2, nfe=nfe, generator=g)
    assert x.shape[0] == 2 and len(counter) == nfe
    assert torch.equal(
        x, cm.sample(2, nfe=nfe, generator=torch.Generator().manual_seed(0))
    )
    with pytest.raises(ValueError, match="use consistency"):
        cm.sample(1, solver="ddim")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "flow", "--solver", "heun", "--nfe", "3"], "even number"),
        (["sample", "reflow", "--solver", "ddim"], "invalid choice"),
        (["sample", "consistency", "--guidance", "2"], "unrecognized arguments"),
        (["sample", "consistency", "--nfe", "1001"], "1 to 1000"),
        (["train", "flow"], "can only be sampled"),
        (["sample", "audio", "--digit", "3", "--solver", "heun", "--nfe", "2"], "3"),
    ],
)
def test_the_command_line_refuses_a_bad_frontier_or_audio_budget(
    argv, message, tmp_path, capsys
):
    """Exit status 2 and one line, before any model is loaded or trained."""
    from difflab.cli import main

    out = ["--out", str(tmp_path / ("clips" if "audio" in argv else "grid.png"))]
    assert main([*argv, *(out if argv[0] == "sample" else [])]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
