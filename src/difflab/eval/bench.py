"""Benchmarks (not tests): difflab against diffusers, side by side in one run.

``python -m difflab bench train``: training throughput (images/s) of difflab's UNet
and diffusers' ``UNet2DModel`` at the DDPM CIFAR-10 configuration (batch 128), in
fp32 and in bf16 autocast + channels_last + torch.compile, and their ratios.
On a CPU both run a tiny configuration, so the command stays a smoke test.

``python -m difflab bench quality``: trains difflab's ``ddpm`` recipe and a
diffusers ``UNet2DModel`` + ``DDPMScheduler``/``DDIMScheduler`` baseline for the same
wall-clock budget, then scores both with :mod:`difflab.eval.metrics`.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from difflab.nets.unet import UNet, ddpm_cifar10_config
from difflab.runtime.cache import write_atomic
from difflab.runtime.device import autocast_dtype, default_device, describe


def _diffusers():
    try:
        import diffusers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise SystemExit(
            "The benchmarks compare against diffusers: pip install -e '.[bench]'"
        ) from err
    return diffusers


def diffusers_ddpm_cifar10(tiny: bool = False):
    """diffusers' UNet2DModel laid out as the DDPM CIFAR-10 net (attention at 16x16)."""
    d = _diffusers()
    ch = (32, 64, 64, 64) if tiny else (128, 256, 256, 256)
    return d.UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=ch,
        layers_per_block=1 if tiny else 2,
        dropout=0.1,
        norm_num_groups=32 if not tiny else 8,
        down_block_types=(
            "DownBlock2D",
            "AttnDownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    )


def _throughput(
    net,
    forward,
    device,
    batch: int,
    size: int,
    steps: int,
    warmup: int,
    amp: bool,
    compile: bool,
) -> float:
    """Images per second of full training steps (forward, MSE, backward, AdamW)."""
    net = copy.deepcopy(net).to(device).train()
    if amp and device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    fn = torch.compile(forward) if compile else forward
    dtype = autocast_dtype(device) if amp else None
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device, generator=g)
    if amp and device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, 1000, (batch,), device=device, generator=g)

    def step():
        with torch.autocast(
            device.type, dtype=dtype or torch.float32, enabled=dtype is not None
        ):
            loss = F.mse_loss(fn(net, x, t).float(), x.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def bench_train(out=None) -> dict:
    device = default_device()
    gpu = device.type == "cuda"
    batch, steps, warmup = (128, 50, 15) if gpu else (8, 3, 1)
    cfg = (
        ddpm_cifar10_config()
        if gpu
        else replace(ddpm_cifar10_config(), channels=32, num_res_blocks=1)
    )
    ours = UNet(cfg)
    theirs = diffusers_ddpm_cifar10(tiny=not gpu)
    count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6
    print(
        f"device: {describe(device)}; batch {batch}; difflab UNet {count(ours):.1f}M "
        f"params, diffusers UNet2DModel {count(theirs):.1f}M params"
    )
    f_ours = lambda m, x, t: m(x, t.float())
    f_theirs = lambda m, x, t: m(x, t).sample
    settings = [("fp32", False, False)]
    if gpu:  # autocast and channels_last only change anything on a GPU
        settings += [
            ("bf16+channels_last", True, False),
            ("bf16+channels_last+compile", True, True),
        ]
    rows = []
    for name, amp, comp in settings:
        a = _throughput(ours, f_ours, device, batch, 32, steps, warmup, amp, comp)
        b = _throughput(theirs, f_theirs, device, batch, 32, steps, warmup, amp, comp)
        rows.append({"setting": name, "difflab": a, "diffusers": b, "ratio": a / b})
        print(
            f"{name:28s} difflab {a:8.1f} img/s   diffusers {b:8.1f} img/s   ratio {a / b:.2f}x"
        )
    best_theirs = max(r["diffusers"] for r in rows)
    best_ours = max(r["difflab"] for r in rows)
    print(f"best difflab / best diffusers: {best_ours / best_theirs:.2f}x")
    report = {
        "device": describe(device),
        "batch": batch,
        "rows": rows,
        "best_ratio": best_ours / best_theirs,
    }
    if out:
        write_atomic(out, lambda f: f.write(json.dumps(report, indent=2).encode()))
    return report
