"""The project pages' helpers (difflab.notes.project): spreads, the loss check
against predicting zero, the paired sweep over sampling steps, the recipe table."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from difflab.data.images import ImageData
from difflab.diffusion.schedules import make_schedule
from difflab.notes import project
from difflab.pipelines import recipes
from difflab.pipelines.recipes import Trained, init_net


def test_mean_se_is_the_mean_and_the_standard_error_by_hand():
    m, se = project.mean_se([1.0, 2.0, 3.0, 6.0])
    # mean 3; squared deviations 4 + 1 + 0 + 9 = 14 over n - 1 = 3; / sqrt(4)
    assert m == pytest.approx(3.0)
    assert se == pytest.approx(math.sqrt(14 / 3) / 2)
    assert project.mean_se(x for x in (5.0, 5.0)) == (5.0, 0.0)  # a generator


def test_k_se_is_four_or_students_t_where_that_is_larger():
    assert project.k_se(3) == pytest.approx(4.303)  # 2 degrees of freedom
    assert project.k_se(4) == 4.0  # t = 3.182 < 4
    assert project.k_se(30) == 4.0
    with pytest.raises(ValueError, match="two seeds"):
        project.k_se(1)


def test_learnt_wants_the_mean_below_one_by_k_standard_errors():
    assert project.learnt([0.5] * 7 + [0.6])
    # mean 0.9, s.e. 0.05: 0.9 + 4 * 0.05 = 1.1 is not below 1, 0.9 + 1 * 0.05 is
    losses = [0.9 + 0.05 * math.sqrt(7) * s for s in (1, -1) * 4]  # s.e. 0.05
    m, se = project.mean_se(losses)
    assert m == pytest.approx(0.9) and se == pytest.approx(0.05)
    assert not project.learnt(losses) and project.learnt(losses, k=1.0)


# A world whose data are two fixed images, one per label: the exact x0 is known,
# so a network can predict eps (or v) perfectly from x_t, t and the label.


def _world(prediction="eps", conditional=False, latent=False, batch=16):
    r = recipes.get_recipe("ddpm", "quick")
    r = replace(
        r,
        T=100,
        conditional=conditional,
        unet=replace(r.unet, num_classes=2 if conditional else None),
        train=replace(r.train, batch_size=batch, prediction=prediction),
    )
    g = torch.Generator().manual_seed(1)
    # pixels of +-1: x0^2 = 1, so predicting zero costs 1 for eps and for v alike
    pair = torch.randint(0, 2, (2, 1, 8, 8), generator=g).float() * 2 - 1
    labels = torch.arange(32) % (2 if conditional else 1)  # one image if not
    data = ImageData(pair[labels], labels, "digits", "two images")
    ae = None
    if latent:  # a stand-in autoencoder: latents 3x the pixels
        ae = SimpleNamespace(encode_images=lambda x: 3.0 * x)
    schedule = make_schedule(r.schedule, r.T)
    trained = Trained(r, init_net(r), schedule, [], 0.0, False, autoencoder=ae)
    return trained, data, 3.0 * pair if latent else pair


class Perfect(nn.Module):
    """The exact denoiser of a point mass (per label): eps = (x_t - sqrt(a) x0) /
    sqrt(1 - a), and v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022)."""

    def __init__(self, schedule, points, prediction, conditional):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))  # for the device
        self.schedule, self.points = schedule, points
        self.prediction, self.conditional = prediction, conditional

    def forward(self, x_t, t, cond=None):
        x0 = self.points[cond["y"]] if self.conditional else self.points[0]
        a = self.schedule.alpha_bar[t.long()].to(x_t.dtype).view(-1, 1, 1, 1)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        if self.prediction == "v":
            return a.sqrt() * eps - (1 - a).sqrt() * x0
        return eps


@pytest.mark.parametrize(
    "prediction, conditional, latent",
    [("eps", False, False), ("v", True, False), ("eps", True, True)],
)
def test_the_exact_denoiser_passes_the_loss_check_and_the_untrained_net_fails_it(
    prediction, conditional, latent
):
    trained, data, points = _world(prediction, conditional, latent)
    perfect = Perfect(trained.schedule, points, prediction, conditional)
    exact = project.batch_losses(perfect, trained, data)
    assert len(exact) == 8 and max(exact) < 1e-8 and project.learnt(exact)
    untrained = project.batch_losses(trained.net, trained, data)
    assert not project.learnt(untrained)
    # the same batches at each call: the same losses
    assert project.batch_losses(trained.net, trained, data) == untrained


def test_the_loss_check_sees_the_label_and_the_latent():
    """The exact denoiser of the wrong world fails: the batches must carry the
    label (conditional) and be encoded (latent), or the check means nothing."""
    trained, data, points = _world("eps", conditional=True, latent=True)
    blind = Perfect(trained.schedule, points[:1], "eps", conditional=False)
    assert not project.learnt(project.batch_losses(blind, trained, data))
    pixels = Perfect(trained.schedule, points / 3.0, "eps", conditional=True)
    assert not project.learnt(project.batch_losses(pixels, trained, data))


def test_predicting_zero_costs_the_mean_square_of_the_noise():
    """The untrained UNet's output layer starts at zero: its eps loss is the mean
    of eps^2 over the batches, 1 within a few standard errors."""
    trained, data, _ = _world("eps", batch=64)
    zero = project.batch_losses(trained.net, trained, data)
    m, se = project.mean_se(zero)
    assert abs(m - 1.0) < 4 * se and se < 0.02


def _stub_sweep():
    """A scorer whose score is seed effect + steps effect, recorded in call order."""
    calls = []
    seed_part = {0: 0.30, 1: 0.10, 2: 0.50, 3: 0.20}
    steps_part = {5: 1.0, 10: 0.25, 50: 0.0}

    def draw(n, seed, ddim_steps):
        calls.append((ddim_steps, seed))
        value = seed_part[seed] + steps_part[ddim_steps]
        return torch.full((n, 1), value, dtype=torch.float64)

    def score(x, dataset):
        assert dataset == "digits"
        return {"fd": float(x[0, 0]), "n": len(x)}

    scores = project.steps_sweep(draw, "digits", 7, range(4), score=score)
    return scores, calls, seed_part, steps_part


def test_the_steps_sweep_draws_steps_then_seeds_and_pairs_the_differences():
    scores, calls, seed_part, steps_part = _stub_sweep()
    assert calls == [(s, seed) for s in (5, 10, 50) for seed in range(4)]
    assert scores[10, 2] == {"fd": pytest.approx(0.75), "n": 7}
    rows = project.step_rows(scores, floor=0.5)
    assert [row["steps"] for row in rows] == [5, 10, 50]
    seed_m, seed_se = project.mean_se(seed_part.values())
    for row in rows:
        s = row["steps"]
        # unpaired: the seeds' spread; paired: it cancels, exactly
        assert row["fd"] == pytest.approx(seed_m + steps_part[s])
        assert row["fd_se"] == pytest.approx(seed_se)
        assert row["ratio"] == pytest.approx(row["fd"] / 0.5)
        assert row["diff"] == pytest.approx(steps_part[s])
        assert row["diff_se"] == pytest.approx(0.0, abs=1e-12)


def test_gap_to_floor_is_the_difference_of_means_with_independent_errors(capsys):
    scores, *_ = _stub_sweep()
    gap = project.gap_to_floor(scores, [0.1, 0.2, 0.3, 0.2], 7)
    fd, fd_se = project.mean_se([0.30, 0.10, 0.50, 0.20])  # the seeds at 50 steps
    floor, floor_se = project.mean_se([0.1, 0.2, 0.3, 0.2])
    assert (gap.score, gap.floor) == (pytest.approx(fd), pytest.approx(floor))
    assert gap.gap == pytest.approx(fd - floor)
    assert gap.gap_se == pytest.approx(math.hypot(fd_se, floor_se))
    said = capsys.readouterr().out
    assert said.startswith("Frechet distance, DDIM 50 steps: 0.275 +- ")
    assert said.rstrip().endswith("(4 seeds of 7 images)")


def test_show_steps_prints_the_share_of_the_gap_only_when_there_is_one(capsys):
    noise = {0: 0.01, 1: -0.01, 2: 0.02, 3: -0.02}  # in the 5-step scores only
    scores = {
        (s, seed): {"fd": 0.5 + {5: 1.0, 10: 0.2, 50: 0.0}[s] + (s == 5) * noise[seed]}
        for s in (5, 10, 50)
        for seed in range(4)
    }
    _, five_se = project.mean_se(noise.values())
    for gap, says in (
        (project.Gap(0.5, 0.01, 0.1, 0.01), "+50% +- 2% of the gap between 50"),
        (project.Gap(0.5, 0.1, 0.3, 0.1), "within two standard errors"),
    ):
        rows = project.show_steps(scores, gap, 7)
        lines = capsys.readouterr().out.strip().splitlines()
        assert lines[-2] == (
            f"5 steps are worse than 50 by 1.000 +- {five_se:.3f} "
            f"({1 / five_se:.1f} standard errors)"
        )
        assert lines[-1].startswith("10 steps minus 50 steps: +0.200 +- 0.000")
        assert says in lines[-1]
        assert rows[1]["ratio"] == pytest.approx(0.7 / gap.floor)


def test_the_recipe_table_marks_differences_and_the_reduced_budget():
    quick, full = (
        recipes.get_recipe("mnist", "quick"),
        recipes.get_recipe("mnist", "full"),
    )
    rows = {(r["part"], r["field"]): r for r in project.recipe_rows(quick, full)}
    first_ae = next(
        r for r in project.recipe_rows(quick, full) if r["part"] == "autoencoder"
    )
    assert first_ae["field"].startswith("net.")  # the autoencoder's network first
    assert rows["autoencoder", "steps"]["full"] == "(none)"  # full: pixels
    assert rows["recipe", "conditional"] == {
        "part": "recipe", "field": "conditional", "quick": "True", "full": "True",
        "differs": "",
    }  # fmt: skip
    assert rows["train", "prediction"]["differs"] == "*"
    cifar = recipes.get_recipe("ddpm-cifar10", "quick")
    twin = recipes.get_recipe("ddpm-cifar10", "full")
    rows = project.recipe_rows(cifar, twin, steps=100, fields=("T",))
    by = {(r["part"], r["field"]): r["quick"] for r in rows}
    assert by["train", "steps"] == "100 (recipe: 300)"
    assert by["train", "ema_decay"] == f"{0.99**3:.5g} (recipe: 0.99)"  # 300 / 100
    assert by["train", "lr"] == "0.001" and rows[-1]["field"] == "T"


def test_as_typed_prints_the_command_and_its_lines_relative(tmp_path, capsys):
    os.environ.pop("DIFFLAB_DATASET", None)
    args = ["sample", "ddpm", *project.export_flags(tmp_path)]
    with project.as_typed(args, env="E=1 ", dataset="digits", folder=tmp_path):
        assert os.environ["DIFFLAB_DATASET"] == "digits"
        print(f"wrote {tmp_path / 'samples.png'}")
    assert "DIFFLAB_DATASET" not in os.environ
    assert capsys.readouterr().out.splitlines() == [
        "E=1 python -m difflab sample ddpm --out samples.png --png-dir png "
        "--npz samples.npz --no-progress",
        "wrote samples.png",
    ]
