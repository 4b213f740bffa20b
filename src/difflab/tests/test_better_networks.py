"""Min-SNR-gamma weights, the UNet's middle attention switch and equal-time budgets."""

from dataclasses import replace

import pytest
import torch
from torch.testing import assert_close

from difflab.diffusion.losses import min_snr_weight, simple_loss
from difflab.diffusion.parameterization import PREDICTIONS, target, to_eps, x0_from_eps
from difflab.diffusion.schedules import make_schedule
from difflab.nets.unet import SelfAttention, UNet, UNetConfig
from difflab.pipelines.budget import equal_time_steps, seconds_per_step
from difflab.pipelines.recipes import get_recipe
from difflab.train.loop import TrainConfig

GAMMA = 5.0


def _snr_grid() -> torch.Tensor:
    # Both sides of gamma and far out on each: every branch of the clamp.
    return torch.tensor(
        [1e-4, 0.1, 1.0, 4.999, 5.0, 5.001, 50.0, 1e4], dtype=torch.float64
    )


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_min_snr_weight_matches_its_closed_form(prediction):
    # Hang et al. 2023: the x0 error gets min(SNR, gamma); written here as a
    # piecewise function, not as the clamp the library uses.
    snr = _snr_grid()
    below = snr <= GAMMA
    closed = {
        "x0": torch.where(below, snr, torch.full_like(snr, GAMMA)),
        "eps": torch.where(below, torch.ones_like(snr), GAMMA / snr),
        "v": torch.where(below, snr / (snr + 1), GAMMA / (snr + 1)),
    }[prediction]
    assert_close(min_snr_weight(prediction, snr, GAMMA), closed, rtol=1e-15, atol=0)


def _errors(prediction, x0, eps, ab, out):
    """(weighted error of the network's own target, the implied x0 error), per row."""
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    own = (out - target(prediction, x0, eps, ab)).pow(2).flatten(1).sum(1)
    x0_hat = x0_from_eps(x_t, to_eps(prediction, out, x_t, ab), ab)
    return own, (x0 - x0_hat).pow(2).flatten(1).sum(1)


def test_every_prediction_weights_the_x0_error_by_min_snr_gamma():
    # The defining property: for any network output, the weighted error of eps, v
    # or x0 equals min(SNR, gamma) ||x0 - x0_hat||^2 (an identity in float64).
    g = torch.Generator().manual_seed(0)
    ab = torch.rand(64, 1, 1, 1, generator=g, dtype=torch.float64) * 0.998 + 0.001
    snr = (ab / (1 - ab)).flatten()
    x0, eps, out = (
        torch.randn(64, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(3)
    )
    for prediction in PREDICTIONS:
        own, x0_err = _errors(prediction, x0, eps, ab, out)
        weighted = min_snr_weight(prediction, snr, GAMMA) * own
        assert_close(weighted, snr.clamp(max=GAMMA) * x0_err, rtol=1e-10, atol=1e-12)
    # A wrong formula fails the same check: the eps weight applied to v's error
    # (it misses by the factor SNR / (SNR + 1), far from 1 at low SNR).
    own, x0_err = _errors("v", x0, eps, ab, out)
    wrong = min_snr_weight("eps", snr, GAMMA) * own
    with pytest.raises(AssertionError):
        assert_close(wrong, snr.clamp(max=GAMMA) * x0_err, rtol=1e-3, atol=0)


def test_min_snr_loss_is_the_weighted_mean_of_the_per_sample_errors():
    schedule = make_schedule("linear", 1000)
    x0 = torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(1))

    def net(x, t, cond):
        return 0.3 * x + 1e-3 * t[:, None, None, None]

    for prediction in PREDICTIONS:
        got = simple_loss(
            net,
            schedule,
            x0,
            prediction=prediction,
            min_snr_gamma=GAMMA,
            generator=torch.Generator().manual_seed(2),
        )
        # The same draws, by hand: t first, then eps (the order simple_loss uses).
        g = torch.Generator().manual_seed(2)
        t = torch.randint(0, 1000, (16,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        ab = schedule.alpha_bar[t].float()[:, None, None, None]
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        err = (net(x_t, t.float(), None) - target(prediction, x0, eps, ab)).pow(2)
        w = min_snr_weight(prediction, schedule.snr()[t], GAMMA).float()
        assert_close(got, (w * err.mean((1, 2, 3))).mean(), rtol=1e-5, atol=0)
    # gamma above every SNR of the schedule: the eps weight is 1, plain L_simple.
    plain, huge = (
        simple_loss(
            net,
            schedule,
            x0,
            min_snr_gamma=gamma,
            generator=torch.Generator().manual_seed(3),
        )
        for gamma in (None, 1e9)
    )
    assert schedule.snr().max() < 1e9
    assert_close(huge, plain, rtol=1e-6, atol=0)


@pytest.mark.parametrize("gamma", [0.0, -1.0, float("nan"), float("inf")])
def test_train_config_refuses_a_bad_gamma(gamma):
    with pytest.raises(ValueError, match="min_snr_gamma"):
        TrainConfig(min_snr_gamma=gamma)


def test_middle_attention_off_removes_only_the_attention():
    on_cfg = UNetConfig(image_size=8, channels=16, channel_mult=(1, 2))
    off_cfg = replace(on_cfg, mid_attention=False)
    torch.manual_seed(0)
    on, off = UNet(on_cfg), UNet(off_cfg)
    assert any(isinstance(m, SelfAttention) for m in on.modules())
    assert not any(isinstance(m, SelfAttention) for m in off.modules())
    missing, unexpected = off.load_state_dict(on.state_dict(), strict=False)
    assert not missing and all(k.startswith("mid1.attn.") for k in unexpected)
    with torch.no_grad():  # a non-zero output layer, so the outputs mean something
        for net in (on, off):
            net.conv_out.weight.copy_(0.1 * torch.ones_like(net.conv_out.weight))
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([0.0, 10.0, 500.0, 999.0])
    # The attention's output projection starts at zero: the block is the identity,
    # so the two networks agree exactly until the attention has learned something.
    assert_close(on(x, t), off(x, t))
    with torch.no_grad():
        on.mid1.attn.proj.bias.fill_(0.5)
    assert (on(x, t) - off(x, t)).abs().max() > 1e-3


def test_equal_time_steps_fill_the_budget_to_half_a_multiple():
    for budget in (3.0, 7.0, 11.5):
        for sps in (0.01, 0.037, 0.09):
            for multiple in (1, 10, 25):
                steps = equal_time_steps(budget, sps, multiple)
                assert steps % multiple == 0 and steps >= multiple
                if budget / sps >= multiple:  # otherwise the floor of one multiple
                    assert abs(steps * sps - budget) <= multiple * sps / 2 + 1e-12
    assert equal_time_steps(1.0, 0.5, 10) == 10  # never zero steps
    with pytest.raises(ValueError):
        equal_time_steps(0.0, 0.1)


def test_seconds_per_step_is_a_positive_time_that_grows_with_width():
    base = get_recipe("ddpm", "quick")
    base = replace(base, unet=replace(base.unet, channels=8))
    wide = replace(base, unet=replace(base.unet, channels=64))
    narrow_s = seconds_per_step(base, steps=3, repeats=2, device=torch.device("cpu"))
    wide_s = seconds_per_step(wide, steps=3, repeats=2, device=torch.device("cpu"))
    # 64 channels cost about 40x the multiply-adds of 8 on the convolutions; even
    # with per-step overheads and a busy machine the wide net is slower.
    assert 0 < narrow_s < wide_s
