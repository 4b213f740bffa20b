"""The command line: ``python -m difflab train|sample|evaluate|bench RECIPE``.

Examples::

    python -m difflab train ddpm                    # train (or find in the cache)
    python -m difflab sample ddpm --n 64 --out samples.png --npz samples.npz
    python -m difflab evaluate ddpm --n 1000 --steps 50
    python -m difflab bench train                   # difflab vs diffusers throughput
    python -m difflab bench quality                 # same wall-clock, both scored
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from difflab.data.images import DatasetMissingError
from difflab.train.checkpoint import CheckpointError
from difflab.train.loop import TrainingDiverged
from difflab.train.recipes import RECIPES, UnknownRecipe, get_recipe, load_or_train


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m difflab",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Recipes: {', '.join(RECIPES)}. Benchmarks: train, quality.",
    )
    p.add_argument("command", choices=["train", "sample", "evaluate", "bench"])
    p.add_argument("recipe", help="a recipe name (or, for bench, 'train' or 'quality')")
    p.add_argument(
        "--profile",
        choices=["quick", "full"],
        help="default: quick on CPU, full on GPU",
    )
    p.add_argument(
        "--steps",
        type=int,
        help="train: optimiser steps; sample/evaluate: DDIM steps (default 50)",
    )
    p.add_argument(
        "--out", type=Path, help="sample: PNG grid path; bench: a JSON report"
    )
    p.add_argument(
        "--n", type=int, help="number of samples (sample: 64, evaluate: 1000)"
    )
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0: deterministic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--png-dir", type=Path, help="sample: also write every sample as a PNG here"
    )
    p.add_argument(
        "--npz",
        type=Path,
        help="sample: also write all samples as uint8 arrays (N, H, W, C)",
    )
    p.add_argument(
        "--train-steps",
        type=int,
        help="sample/evaluate: use the model trained this long",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=150.0,
        help="bench quality: seconds of training each",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def _generator(trained, seed: int) -> torch.Generator:
    return torch.Generator(next(trained.net.parameters()).device).manual_seed(seed)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    progress = not args.no_progress
    try:
        if args.command == "bench":
            from . import bench

            return bench.main(args)
        recipe = get_recipe(args.recipe, args.profile)
        if args.command == "train":
            t0 = time.perf_counter()
            trained = load_or_train(recipe, progress=progress, steps=args.steps)
            r = trained.recipe
            if torch.distributed.is_initialized():  # under torchrun: report once
                rank = torch.distributed.get_rank()
                torch.distributed.destroy_process_group()
                if rank != 0:
                    return 0
            how = "found in the cache" if trained.from_cache else "trained"
            print(
                f"{r.name} ({r.profile}, {r.dataset}): {how}; {r.train.steps} steps, "
                f"final loss {trained.losses[-1]:.4f}, training took {trained.train_seconds:.0f} s "
                f"(this call {time.perf_counter() - t0:.0f} s)"
            )
            return 0
        trained = load_or_train(recipe, progress=progress, steps=args.train_steps)
        steps = args.steps or 50
        g = _generator(trained, args.seed)
        n = args.n or (64 if args.command == "sample" else 1000)
        labels = None
        if recipe.conditional:
            labels = torch.arange(n, device=next(trained.net.parameters()).device) % 10
        t0 = time.perf_counter()
        x = trained.sample(
            n,
            sampler=args.sampler,
            steps=steps,
            eta=args.eta,
            y=labels,
            generator=g,
            progress=progress,
        )
        took = time.perf_counter() - t0
        what = (
            "DDPM 1000 steps"
            if args.sampler == "ddpm"
            else f"DDIM {steps} steps, eta {args.eta}"
        )
        if args.command == "sample":
            from difflab.notes.plotting import save_grid, to_uint8

            out = save_grid(
                x,
                args.out or Path("samples.png"),
                scale=max(1, 64 // trained.recipe.unet.image_size),
            )
            print(f"{n} samples ({what}, {took:.1f} s) -> {out}")
            if args.png_dir or args.npz:
                arrays = to_uint8(x)
            if args.png_dir:
                from PIL import Image

                args.png_dir.mkdir(parents=True, exist_ok=True)
                for k, a in enumerate(arrays):
                    Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(
                        args.png_dir / f"{k:06d}.png"
                    )
                print(f"{n} PNG files -> {args.png_dir}/")
            if args.npz:
                args.npz.parent.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(
                    args.npz,
                    images=arrays,
                    labels=(
                        labels.cpu().numpy() if labels is not None else np.zeros(0)
                    ),
                )
                print(f"uint8 array {arrays.shape} -> {args.npz}")
            return 0
        from difflab.eval.metrics import evaluate_samples, format_scores

        scores = evaluate_samples(x, trained.recipe.dataset, labels=labels)
        print(
            f"{trained.recipe.name} ({trained.recipe.profile}, {trained.recipe.dataset}), "
            f"{what}: {format_scores(scores)}"
        )
        return 0
    except UnknownRecipe as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (DatasetMissingError, CheckpointError, TrainingDiverged, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "\ninterrupted: the last checkpoint is kept; run the same command to resume.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
