"""``python -m difflab bench quality``: difflab's DDPM against a diffusers baseline.

Both train for the same wall-clock budget on the same machine and data, and both are
scored with :func:`difflab.eval.metrics.evaluate_samples` (DDIM 50 and 10 steps, DDPM
1000 steps). The baseline follows diffusers' unconditional training example: a
``UNet2DModel`` with channels (64, 128, 256), attention at the lowest resolution,
batch 256, AdamW 2e-4 and an EMA, sampled with ``DDIMScheduler``/``DDPMScheduler``.
On a CPU the same comparison runs on the 8x8 digits with small networks.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from difflab.diffusion.schedules import make_schedule
from difflab.eval.metrics import evaluate_samples, format_scores
from difflab.pipelines.recipes import Trained, get_recipe, init_net, resolve_data
from difflab.runtime.cache import write_atomic
from difflab.runtime.device import autocast_dtype, default_device, describe
from difflab.train.loop import train


def _baseline_net(size: int, channels: int, gpu: bool):
    import diffusers

    if size % 4:  # 28 -> 14 -> 7: three levels, attention at 7x7
        ch, down, up = (
            (64, 128, 256),
            ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        )
    else:  # 8 -> 4: two levels, attention at 4x4
        ch, down, up = (
            (32, 64),
            ("DownBlock2D", "AttnDownBlock2D"),
            ("AttnUpBlock2D", "UpBlock2D"),
        )
    return diffusers.UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=ch,
        layers_per_block=2 if gpu else 1,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=32 if gpu else 16,
    )


def _train_baseline(net, images, budget: float, device, batch: int, progress: bool):
    """diffusers-style loop: DDPMScheduler.add_noise, MSE on eps, AdamW 2e-4, EMA 0.999."""
    import diffusers

    from difflab.core.progress import tqdm

    sched = diffusers.DDPMScheduler(num_train_timesteps=1000)
    net = net.to(device).train()
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-4)
    amp = autocast_dtype(device)
    fwd = torch.compile(net) if device.type == "cuda" else net
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last)
    g = torch.Generator(device).manual_seed(0)
    images = images.to(device)
    t0, steps = time.perf_counter(), 0
    bar = tqdm(disable=not progress, desc="diffusers baseline")
    while time.perf_counter() - t0 < budget:
        x0 = images[torch.randint(len(images), (batch,), device=device, generator=g)]
        noise = torch.randn(x0.shape, device=device, generator=g)
        t = torch.randint(0, 1000, (batch,), device=device, generator=g)
        x_t = sched.add_noise(x0, noise, t)
        with torch.autocast(
            device.type, dtype=amp or torch.float32, enabled=amp is not None
        ):
            loss = F.mse_loss(fwd(x_t, t).sample.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 0.001)
        steps += 1
        bar.update(1)
    bar.close()
    return ema, steps


@torch.no_grad()
def _sample_baseline(
    ema, n: int, shape, device, scheduler: str, steps: int, g
) -> torch.Tensor:
    import diffusers

    cls = diffusers.DDIMScheduler if scheduler == "ddim" else diffusers.DDPMScheduler
    sched = cls(num_train_timesteps=1000)
    sched.set_timesteps(steps)
    out = []
    for start in range(0, n, 500):
        b = min(500, n - start)
        x = torch.randn(b, *shape, device=device, generator=g)
        for t in sched.timesteps:
            eps = ema(x, t.to(device).expand(b)).sample
            x = sched.step(eps, t, x, generator=g).prev_sample
        out.append(x.clamp(-1, 1).float().cpu())
    return torch.cat(out)


def bench_quality(
    budget: float = 150.0, out=None, progress: bool = True, n: int | None = None
):
    device = default_device()
    gpu = device.type == "cuda"
    recipe, data = resolve_data(get_recipe("ddpm"))
    n = n or (10_000 if gpu and data.name == "mnist" else 1000)
    print(
        f"device: {describe(device)}; data: {data.name}; budget {budget:.0f} s each; {n} samples"
    )
    # difflab: the recipe's network and loop, stopped by the same budget.
    recipe = replace(recipe, train=replace(recipe.train, steps=10**9, compile=gpu))
    net = init_net(recipe, device)
    schedule = make_schedule(recipe.schedule, recipe.T)
    res = train(
        net, data.images, schedule, recipe.train, progress=progress, time_budget=budget
    )
    ours = Trained(recipe, res.ema.eval(), schedule, res.losses, res.seconds, False)
    base, base_steps = _train_baseline(
        _baseline_net(data.image_size, data.channels, gpu),
        data.images,
        budget,
        device,
        256 if gpu else 64,
        progress,
    )
    count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6
    print(
        f"difflab {count(net):.1f}M params, {res.step} steps; "
        f"diffusers {count(base):.1f}M params, {base_steps} steps"
    )
    rows = []
    shape = (data.channels, data.image_size, data.image_size)
    for sampler, steps in [("ddim", 50), ("ddim", 10), ("ddpm", 1000)]:
        g = torch.Generator(device).manual_seed(0)
        x = ours.sample(n, sampler=sampler, steps=steps, generator=g, progress=False)
        a = evaluate_samples(x, data.name)
        x = _sample_baseline(base, n, shape, device, sampler, steps, g)
        b = evaluate_samples(x, data.name)
        for who, s in (("difflab", a), ("diffusers", b)):
            rows.append({"model": who, "sampler": sampler, "steps": steps, **s})
            print(f"{who:9s} {sampler.upper()} {steps:4d} steps: {format_scores(s)}")
    if out:
        text = json.dumps({"device": describe(device), "rows": rows}, indent=2)
        write_atomic(out, lambda f: f.write(text.encode()))
    return rows
