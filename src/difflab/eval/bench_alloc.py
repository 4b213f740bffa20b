"""Benchmark (not a test): :func:`difflab.core.memory.keep_freed_memory` side by side.

``python -m difflab bench alloc`` times, in fresh processes that alternate between
glibc's default allocator settings and :func:`keep_freed_memory`, the two loops
the site's build spends its time in: a forward pass of the ``ddpm`` recipe's
8x8-digit UNet at batch 1000 (sampling), and a training step at batch 128. Each
process uses one thread (a build worker's share of two cores). It prints the
median of each side, their ratio, and whether the outputs agree to the bit.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

CHILD = "from difflab.eval.bench_alloc import _child; _child({keep})"


def _child(keep: bool) -> None:
    """One measurement in this process: print a JSON line."""
    if keep:
        from difflab.core.memory import keep_freed_memory

        keep_freed_memory()
    import torch

    from difflab.nets.unet import UNet
    from difflab.pipelines.recipes import get_recipe

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = UNet(get_recipe("ddpm", "quick").unet)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1000, 1, 8, 8, generator=g)
    t = torch.randint(0, 1000, (1000,), generator=g).float()

    def forward():
        with torch.no_grad():
            return net(x, t, None)

    def train_step():
        loss = (net(x[:128], t[:128], None) - x[:128]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    out = {}
    for name, fn, reps in (("forward", forward, 10), ("train_step", train_step, 40)):
        fn(), fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            y = fn()
        out[name] = (time.perf_counter() - t0) / reps
        out[name + "_sum"] = float(y.double().sum())
    print(json.dumps(out))


def bench_alloc(rounds: int = 3) -> dict:
    """Alternate default/kept processes ``rounds`` times; the medians and ratios."""
    runs = {False: [], True: []}
    for _ in range(rounds):
        for keep in (False, True):
            done = subprocess.run(
                [sys.executable, "-c", CHILD.format(keep=keep)],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            runs[keep].append(json.loads(done.stdout.strip().splitlines()[-1]))
    report = {}
    for name in ("forward", "train_step"):
        default = statistics.median(r[name] for r in runs[False])
        kept = statistics.median(r[name] for r in runs[True])
        same = len({r[name + "_sum"] for r in runs[False] + runs[True]}) == 1
        report[name] = {
            "default_ms": 1000 * default,
            "kept_ms": 1000 * kept,
            "ratio": default / kept,
            "same_result": same,
        }
        print(
            f"{name:10s}: {1000 * default:7.1f} ms with glibc's defaults, "
            f"{1000 * kept:7.1f} ms keeping freed memory, ratio {default / kept:.2f} "
            f"(median of {rounds} processes each; results identical: {same})"
        )
    return report
