"""``python -m difflab bench laptop``: each project page's laptop recipe against the
recipe the page used before, trained for the same wall-clock time on this machine.

For each showcase dataset that is present (MNIST; the CIFAR-10 subset): the page's
recipe (latent diffusion with the site's autoencoder, v-prediction on the cosine
schedule, class-conditional with classifier-free guidance) and the pixel-space
recipe the page trained before are trained for ``budget`` seconds each; the
autoencoder's training counts inside the new recipe's budget. Each draws ``n``
samples (DDIM, 50 steps; the conditional recipe with ten classes in turn) and is
scored by the page's metric classifier: the Frechet distance with its bootstrap
standard error over the samples, the real-data floor for ``n`` real training images,
the confident fraction (top probability at least 0.9), and the ratio of the two
distances to the floor with its spread (a bootstrap over the samples, the same
row indices for both recipes in each replicate, the test split's statistics fixed).

It trains with the threads torch has (two on the project's CPU machine), so its
timings are this machine's; run it on an idle machine.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import torch

from difflab.data.images import DatasetMissingError, load_images
from difflab.diffusion.schedules import make_schedule
from difflab.eval.convergence import bootstrap_frechet
from difflab.eval.metrics import (
    CONFIDENT,
    frechet_distance,
    gaussian_stats,
    metric_features,
    real_data_floor,
)
from difflab.pipelines.autoencoder import train_autoencoder
from difflab.pipelines.recipes import Trained, get_recipe, resolve_data, train_net
from difflab.runtime.cache import write_atomic
from difflab.runtime.device import default_device, describe

#: dataset -> (the page's laptop recipe, the recipe the page used before)
SHOWCASES = {"mnist": ("mnist", "ddpm-cond"), "cifar10": ("cifar10", "ddpm-cifar10")}
GUIDANCE = 2.0  # the project pages' w for the conditional recipes
BOOT = 200  # bootstrap replicates


def _train_for(name: str, dataset: str, budget: float, device, progress: bool):
    """Recipe ``name`` on ``dataset`` trained for ``budget`` seconds in all (its
    autoencoder's training included), as a :class:`Trained`; and the steps run."""
    recipe = get_recipe(name, "quick")
    recipe = replace(recipe, dataset=dataset)
    if recipe.autoencoder is not None:
        recipe = replace(
            recipe, autoencoder=replace(recipe.autoencoder, dataset=dataset)
        )
    recipe, data = resolve_data(recipe)
    recipe = replace(recipe, train=replace(recipe.train, steps=10**9, compile=False))
    ae, spent = None, 0.0
    if recipe.autoencoder is not None:
        ae = train_autoencoder(recipe.autoencoder, device, progress=progress)
        spent = ae.seconds  # the cached entry keeps its training time
        if ae.from_cache:
            print(
                f"{name}: autoencoder from the cache, its {spent:.0f} s as recorded "
                "when it was trained (with whatever threads that run had; set "
                "DIFFLAB_CACHE to an empty folder to time it here)"
            )
    schedule = make_schedule(recipe.schedule, recipe.T)
    res = train_net(
        recipe, data, ae, schedule, device, progress,
        time_budget=max(budget - spent, 1.0),
    )  # fmt: skip
    model = Trained(
        recipe, res.ema.eval(), schedule, res.losses, spent + res.seconds, False,
        data.note, ae, data.image_size,
    )  # fmt: skip
    return model, res.step, spent


def _draw(model: Trained, n: int, seed: int) -> tuple[torch.Tensor, float]:
    """``n`` DDIM samples (50 steps; a conditional recipe: the classes in turn at
    guidance weight GUIDANCE) and the seconds they took."""
    g = torch.Generator(next(model.net.parameters()).device).manual_seed(seed)
    kw = {}
    if model.recipe.conditional:
        kw = {"cond": {"y": torch.arange(n) % 10}, "guidance": GUIDANCE}
    t0 = time.perf_counter()
    x = model.sample(n, solver="ddim", nfe=50, generator=g, progress=False, **kw)
    return x, time.perf_counter() - t0


def bench_laptop(
    budget: float = 600.0,
    n: int = 1000,
    only: str | None = None,
    out=None,
    progress: bool = True,
) -> list[dict]:
    device = default_device()
    print(
        f"device: {describe(device)}, {torch.get_num_threads()} threads; "
        f"{budget:.0f} s of training each; {n} samples each (DDIM 50)"
    )
    rows = []
    for dataset, (new, old) in SHOWCASES.items():
        if only and dataset != only:
            continue
        try:
            load_images(dataset, split="test")
        except DatasetMissingError as err:
            print(f"{dataset}: skipped, {err}")
            continue
        floor, floor_conf = real_data_floor(dataset, n)
        ref, _ = metric_features(load_images(dataset, split="test").images, dataset)
        ref_stats = gaussian_stats(ref)
        scores, feats = {}, {}
        for name in (new, old):
            print(f"{dataset}: training {name} for {budget:.0f} s", flush=True)
            model, steps, ae_s = _train_for(name, dataset, budget, device, progress)
            print(f"{dataset}: sampling {n} from {name} ({steps} steps)", flush=True)
            x, seconds = _draw(model, n, seed=0)
            feats[name], probs = metric_features(x, dataset)
            conf = float((probs.max(1).values >= CONFIDENT).double().mean())
            scores[name] = {
                "recipe": name, "steps": steps, "train_seconds": model.train_seconds,
                "autoencoder_seconds": ae_s, "sample_seconds": seconds,
                "fd": frechet_distance(*gaussian_stats(feats[name]), *ref_stats),
                "confident": conf, "confident_se": math.sqrt(conf * (1 - conf) / n),
            }  # fmt: skip
        # bootstrap over the samples (the test split's statistics fixed), the same
        # row indices for both recipes in each replicate
        boot = bootstrap_frechet(
            feats,
            ref,
            n_boot=BOOT,
            resample_reference=False,
            generator=torch.Generator().manual_seed(1),
        )
        for name, s in scores.items():
            s["fd_se"] = float(boot[name].std())
            print(
                f"{dataset} {name:13s} {s['train_seconds']:5.0f} s ({s['steps']} UNet "
                "steps"
                + (
                    f", autoencoder {s['autoencoder_seconds']:.0f} s"
                    if name == new
                    else ""
                )
                + f"): FD {s['fd']:.2f} +- {s['fd_se']:.2f} (floor {floor:.2f}), "
                f"confident {s['confident']:.3f} +- {s['confident_se']:.3f} "
                f"(real {floor_conf:.3f})"
            )
        a, b = scores[old], scores[new]
        ratio = (a["fd"] - floor) / (b["fd"] - floor)
        ratio_se = float(((boot[old] - floor) / (boot[new] - floor)).std())
        print(
            f"{dataset}: distance to the floor {a['fd'] - floor:.2f} ({old}) / "
            f"{b['fd'] - floor:.2f} ({new}) = {ratio:.2f} +- {ratio_se:.2f} "
            f"({(ratio - 2) / ratio_se:+.1f} s.e. from 2)"
        )
        rows.append({
            "dataset": dataset, "floor": floor, "floor_confident": floor_conf,
            "ratio": ratio, "ratio_se": ratio_se, "recipes": scores,
        })  # fmt: skip
    if out:
        text = json.dumps(
            {"device": describe(device), "threads": torch.get_num_threads(),
             "budget": budget, "n": n, "rows": rows}, indent=2,
        )  # fmt: skip
        write_atomic(out, lambda f: f.write(text.encode()))
    return rows
