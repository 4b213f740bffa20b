"""Every recipe's ``full`` profile, the GPU configuration, run for two steps on the CPU.

No full recipe trains in ``pytest src`` or in the CPU build of the site, so this is
what keeps them from rotting unseen: each is built as it would be on a GPU
(compile off, the CPU has no use for it), trained for two optimiser steps at
batch 2 on synthetic images of the recipe's shape (no dataset needed), and
sampled with two DDIM steps.
"""

from dataclasses import replace

import pytest
import torch

from difflab.diffusion.schedules import make_schedule
from difflab.pipelines.recipes import RECIPES, Trained, init_net
from difflab.train.loop import learning_rate, train


@pytest.mark.parametrize("name", list(RECIPES))
def test_full_recipe_two_steps(name):
    recipe = RECIPES[name]("full")
    cfg = replace(
        recipe.train, steps=2, batch_size=2, compile=False, checkpoint_every=10**9
    )
    recipe = replace(recipe, train=cfg)
    u = recipe.unet
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, u.in_channels, u.image_size, u.image_size, generator=g)
    images = images * 2 - 1  # in [-1, 1], as the loaders give
    cond = {"y": torch.tensor([0, 1, 2, 3])} if recipe.conditional else None

    net = init_net(recipe)
    before = [p.detach().clone() for p in net.parameters()]
    schedule = make_schedule(recipe.schedule, recipe.T)
    result = train(net, images, schedule, cfg, cond=cond, progress=False)

    assert result.step == 2
    assert all(torch.isfinite(torch.tensor(result.losses))), result.losses
    # AdamW's first steps move each weight by lr * m_hat / sqrt(v_hat), at most
    # about lr a step (|m_hat| <= sqrt(v_hat)); weight decay adds lr * wd * |w|.
    # Many tensors do not move at all: behind the zero-initialised output
    # convolutions their gradient is 0 at the first step.
    moves = torch.stack(
        [
            (p.detach() - b).abs().max()
            for p, b in zip(result.net.parameters(), before, strict=True)
        ]
    )
    bound = sum(learning_rate(s, cfg) for s in range(2)) * (1 + cfg.weight_decay)
    assert moves.max() > 0, "two optimiser steps left every weight unchanged"
    assert moves.max() <= 1.01 * bound, (float(moves.max()), bound)

    trained = Trained(recipe, result.ema, schedule, result.losses, 0.0, False)
    kw = {"steps": 2, "progress": False, "generator": g}
    if recipe.conditional:
        labels = {"y": torch.tensor([3, 7])}
        x = trained.sample(2, cond=labels, guidance=2.0, **kw)
    else:
        x = trained.sample(2, **kw)
    assert x.shape == (2, u.in_channels, u.image_size, u.image_size)
    assert torch.isfinite(x).all() and x.abs().max() <= 1
