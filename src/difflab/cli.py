"""The command line: ``python -m difflab COMMAND ...``, one subcommand per task.

Examples::

    python -m difflab train ddpm                    # train (or find in the cache)
    python -m difflab sample ddpm --n 64 --out samples.png --npz samples.npz
    python -m difflab evaluate ddpm --n 1000 --steps 50
    python -m difflab bench train                   # difflab vs diffusers throughput
    python -m difflab bench quality                 # same wall-clock, both scored
    python -m difflab cache list                    # what the cache holds
    python -m difflab cache prune --dry-run         # what no current key reaches
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
from difflab.train.profiles import PROFILES
from difflab.train.recipes import RECIPES, Recipe, Trained, get_recipe, load_or_train


class _Parser(argparse.ArgumentParser):
    """Errors in one line (``prog: error: ...``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _recipe(name: str) -> str:
    if name not in RECIPES:
        raise argparse.ArgumentTypeError(
            f"Unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}."
        )
    return name


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value <= 0:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a positive {kind.__name__}"
            )
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _add_recipe(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", type=_recipe, help=f"one of: {', '.join(RECIPES)}")
    p.add_argument(
        "--profile", choices=PROFILES, help="default: quick on CPU, full on GPU"
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_sampling(p: argparse.ArgumentParser, n: int) -> None:
    p.add_argument("--n", type=_positive(int), default=n, help=f"samples ({n})")
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    p.add_argument("--steps", type=_positive(int), default=50, help="DDIM steps (50)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0: deterministic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train-steps",
        type=_positive(int),
        help="use the model trained this many steps (default: the recipe's)",
    )


def parser() -> argparse.ArgumentParser:
    """The parser of ``python -m difflab`` and its subcommands."""
    p = _Parser(
        prog="python -m difflab",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a recipe (or find it in the cache)")
    _add_recipe(t)
    t.add_argument("--steps", type=_positive(int), help="optimiser steps")

    s = sub.add_parser("sample", help="draw samples from a trained recipe")
    _add_recipe(s)
    _add_sampling(s, n=64)
    s.add_argument("--out", type=Path, default=Path("samples.png"), help="PNG grid")
    s.add_argument("--png-dir", type=Path, help="also write every sample as a PNG")
    s.add_argument("--npz", type=Path, help="also write uint8 arrays (N, H, W, C)")

    e = sub.add_parser("evaluate", help="score samples against the test split")
    _add_recipe(e)
    _add_sampling(e, n=1000)

    b = sub.add_parser("bench", help="benchmarks against diffusers")
    b.add_argument("which", choices=["train", "quality"])
    b.add_argument("--out", type=Path, help="write a JSON report here")
    b.add_argument(
        "--budget",
        type=_positive(float),
        default=150.0,
        help="quality: seconds of training each (150)",
    )
    b.add_argument("--n", type=_positive(int), help="quality: samples scored")
    b.add_argument("--no-progress", action="store_true", help="hide progress bars")

    c = sub.add_parser("cache", help="list or prune the cache of trained models")
    c.add_argument("action", choices=["list", "prune"])
    c.add_argument("--dry-run", action="store_true", help="prune: only say what")
    return p


def _train(args) -> int:
    t0 = time.perf_counter()
    recipe = get_recipe(args.recipe, args.profile)
    trained = load_or_train(recipe, progress=not args.no_progress, steps=args.steps)
    if torch.distributed.is_initialized():  # under torchrun: report once
        rank = torch.distributed.get_rank()
        torch.distributed.destroy_process_group()
        if rank != 0:
            return 0
    r = trained.recipe
    how = "found in the cache" if trained.from_cache else "trained"
    print(
        f"{r.name} ({r.profile}, {r.dataset}): {how}; {r.train.steps} steps, "
        f"final loss {trained.losses[-1]:.4f}, training took "
        f"{trained.train_seconds:.0f} s (this call {time.perf_counter() - t0:.0f} s)"
    )
    return 0


def _draw(args) -> tuple[Trained, torch.Tensor, torch.Tensor | None, str]:
    recipe: Recipe = get_recipe(args.recipe, args.profile)
    progress = not args.no_progress
    trained = load_or_train(recipe, progress=progress, steps=args.train_steps)
    device = next(trained.net.parameters()).device
    labels = None
    if recipe.conditional:
        labels = torch.arange(args.n, device=device) % recipe.unet.num_classes
    t0 = time.perf_counter()
    x = trained.sample(
        args.n,
        sampler=args.sampler,
        steps=args.steps,
        eta=args.eta,
        cond=None if labels is None else {"y": labels},
        generator=torch.Generator(device).manual_seed(args.seed),
        progress=progress,
    )
    if args.sampler == "ddpm":
        what = f"DDPM {trained.schedule.T} steps"
    else:
        what = f"DDIM {args.steps} steps, eta {args.eta}"
    return trained, x, labels, f"{what}, {time.perf_counter() - t0:.1f} s"


def _sample(args) -> int:
    from difflab.notes.plotting import save_grid, to_uint8

    trained, x, labels, what = _draw(args)
    scale = max(1, 64 // trained.recipe.unet.image_size)
    out = save_grid(x, args.out, scale=scale)
    print(f"{args.n} samples ({what}) -> {out}")
    arrays = to_uint8(x) if args.png_dir or args.npz else None
    if args.png_dir:
        from PIL import Image

        args.png_dir.mkdir(parents=True, exist_ok=True)
        for k, a in enumerate(arrays):
            image = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
            image.save(args.png_dir / f"{k:06d}.png")
        print(f"{args.n} PNG files -> {args.png_dir}/")
    if args.npz:
        args.npz.parent.mkdir(parents=True, exist_ok=True)
        y = labels.cpu().numpy() if labels is not None else np.zeros(0)
        np.savez_compressed(args.npz, images=arrays, labels=y)
        print(f"uint8 array {arrays.shape} -> {args.npz}")
    return 0


def _evaluate(args) -> int:
    from difflab.eval.metrics import evaluate_samples, format_scores

    trained, x, labels, what = _draw(args)
    r = trained.recipe
    scores = evaluate_samples(x, r.dataset, labels=labels)
    print(f"{r.name} ({r.profile}, {r.dataset}), {what}: {format_scores(scores)}")
    return 0


def _bench(args) -> int:
    if args.which == "train":
        from difflab.eval.bench import bench_train

        bench_train(args.out)
    else:
        from difflab.eval.bench_quality import bench_quality

        bench_quality(
            budget=args.budget, out=args.out, progress=not args.no_progress, n=args.n
        )
    return 0


def _cache(args) -> int:
    from difflab.train.cache import cache_dir, list_entries, prune

    if args.action == "list":
        entries = list_entries()
        for e in entries:
            state = "reachable" if e.reachable else "stale"
            print(f"{e.kind:12s} {e.key}  {e.size / 1e6:9.2f} MB  {state}")
        total = sum(e.size for e in entries) / 1e6
        print(f"{len(entries)} entries, {total:.2f} MB in {cache_dir()}")
        return 0
    gone = prune(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for e in gone:
        print(f"{verb} {e.kind}/{e.key} ({e.size / 1e6:.2f} MB)")
    print(f"{verb} {len(gone)} stale entries, {sum(e.size for e in gone) / 1e6:.2f} MB")
    return 0


COMMANDS = {
    "train": _train,
    "sample": _sample,
    "evaluate": _evaluate,
    "bench": _bench,
    "cache": _cache,
}


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status (2: bad arguments, 1: a clear failure)."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as stop:  # --help (0) or a bad argument (2)
        return stop.code if isinstance(stop.code, int) else 0
    try:
        return COMMANDS[args.command](args)
    except (DatasetMissingError, CheckpointError, TrainingDiverged, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "\ninterrupted: the last checkpoint is kept; run the same command to "
            "resume.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
