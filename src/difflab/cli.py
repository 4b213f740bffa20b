"""The command line: ``python -m difflab COMMAND ...``, one subcommand per task.

Examples::

    python -m difflab train ddpm                    # train (or find in the cache)
    python -m difflab sample ddpm --n 64 --out samples.png --npz samples.npz
    python -m difflab sample ddpm --solver dpm++2m --nfe 10   # any solver, its budget
    python -m difflab sample sd --prompt "a thin two" --guidance 3 --out grid.png
    python -m difflab evaluate ddpm --n 1000 --steps 50
    python -m difflab sample audio --digit 7 --n 8 --out clips/   # spoken digits
    python -m difflab sample flow --solver heun --nfe 8            # flow matching
    python -m difflab sample consistency --nfe 1                  # one step
    python -m difflab bench train                   # difflab vs diffusers throughput
    python -m difflab bench quality                 # same wall-clock, both scored
    python -m difflab bench alloc                   # keeping freed memory, side by side
    python -m difflab bench laptop                  # the project pages' recipes vs before
    python -m difflab cache list                    # what the cache holds
    python -m difflab cache prune --dry-run         # what no current key reaches
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from difflab.core.memory import keep_freed_memory
from difflab.data.common import data_setting_problem
from difflab.data.images import IMAGE_NAMES, DatasetMissingError
from difflab.diffusion.noise import DiscreteNoise
from difflab.diffusion.solvers import MIN_NFE, default_grid, solver_nfe
from difflab.pipelines.recipes import (
    RECIPES,
    SAMPLE_SOLVERS,
    Recipe,
    Trained,
    get_recipe,
    load_or_train,
)
from difflab.pipelines.sampling import ALIASES, SOLVER_COST
from difflab.runtime import cache
from difflab.runtime.checkpoint import CheckpointError, DiskFullError
from difflab.runtime.device import default_device
from difflab.runtime.profiles import PROFILES, current_profile
from difflab.runtime.settings import SettingError
from difflab.train.loop import TrainingDiverged

# Upper limits of the counts: far above any use, low enough that a typo (an extra
# zero or three) is refused at once instead of filling the memory hours later.
MAX_SAMPLES = 100_000
MAX_SAMPLING_STEPS = 10_000  # and at most the recipe's T (checked with the recipe)
MAX_TRAIN_STEPS = 10_000_000
MAX_BUDGET_S = 7 * 24 * 3600.0
MAX_GUIDANCE = 100.0


class _Parser(argparse.ArgumentParser):
    """Errors in one line (``prog: error: ...``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# Models sampled by their own module (``sample`` only), not recipes of pipelines.recipes.
SAMPLE_ONLY = ("sd", "audio", "flow", "reflow", "consistency")


def _recipe(name: str) -> str:
    if name not in RECIPES and name not in SAMPLE_ONLY:
        known = ", ".join((*RECIPES, *SAMPLE_ONLY))
        raise argparse.ArgumentTypeError(
            f"Unknown recipe {name!r}; known recipes: {known}."
        )
    return name


def _count(high: int):
    """An argparse type: an int in [1, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not 1 <= value <= high:
            what = "is too large" if value and value > high else "is not a positive int"
            raise argparse.ArgumentTypeError(
                f"{text!r} {what} (allowed: 1 to {high:,})"
            )
        return value

    parse.__name__ = "count"
    return parse


def _real(low: float, high: float, *, open_low: bool = False):
    """An argparse type: a finite float in [low, high] (or (low, high])."""
    left = "(" if open_low else "["

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        inside = low < value if open_low else low <= value
        if not (math.isfinite(value) and inside and value <= high):
            kind = "positive float" if open_low and low == 0 else "finite number"
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {kind} in {left}{low:g}, {high:g}]"
            )
        return value

    parse.__name__ = "number"
    return parse


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a seed (allowed: an int from 0 to 2**63 - 1)"
        )
    return value


def _add_recipe(p: argparse.ArgumentParser) -> None:
    names = ", ".join(RECIPES)
    p.add_argument("recipe", type=_recipe, help=f"one of: {names}")
    _add_run_flags(p)


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """The profile, progress bars and the full profile on a CPU."""
    p.add_argument(
        "--profile", choices=PROFILES, help="default: quick on CPU, full on GPU"
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--yes",
        action="store_true",
        help="train the full profile on a CPU anyway (or DIFFLAB_ALLOW_SLOW=1)",
    )


#: Other names ``--solver`` takes, as readers of the fast-sampling page call them.
SOLVER_ALIASES = ALIASES  # the package's one table (difflab.pipelines.sampling)


SOLVER_HELP = "solvers (--solver NAME --nfe N) and what each costs:\n" + "\n".join(
    f"  {name:17s} {cost}" for name, cost in SOLVER_COST.items()
)


#: The Frontier pages' models: their solvers, default budget and one line of help.
FRONTIER = {
    "flow": (("euler", "heun"), 8, "flow matching on the ddpm recipe's network"),
    "reflow": (("euler", "heun"), 2, "flow matching, reflowed (straighter paths)"),
    "consistency": (("consistency",), 1, "the ddpm teacher's consistency student"),
}
FRONTIER_HELP = (
    "solvers of the Frontier models (--solver NAME --nfe N):\n"
    "  euler             nfe steps of the flow's ODE, one evaluation each (>= 1)\n"
    "  heun              nfe / 2 steps, two evaluations each (nfe even, >= 2)\n"
    "  consistency       nfe evaluations, re-noising between them (>= 1)"
)


def _solver_name(text: str) -> str:
    name = text.strip().lower().replace("-", "_")
    return SOLVER_ALIASES.get(text.strip().lower(), name)


def _add_sampling(p: argparse.ArgumentParser, n: int, most: int = MAX_SAMPLES) -> None:
    p.add_argument("--n", type=_count(most), default=n, help=f"samples ({n})")
    p.add_argument(
        "--solver",
        "--sampler",
        dest="sampler",
        type=_solver_name,
        choices=SAMPLE_SOLVERS,
        default="ddim",
        metavar="SOLVER",
        help=f"one of {', '.join(SAMPLE_SOLVERS)} (or dpm++2m); see the costs "
        "below (ddim)",
    )
    p.add_argument(
        "--steps",
        "--nfe",
        dest="steps",
        type=_count(MAX_SAMPLING_STEPS),
        default=None,  # 50; ddpm walks all T steps and refuses it
        help=f"the budget of model evaluations (DDIM's steps), at most the "
        f"model's T ({DDIM_STEPS}); not with ddpm",
    )
    p.add_argument(
        "--eta", type=_real(0, 1), default=0.0, help="DDIM eta in [0, 1] (0)"
    )
    p.add_argument(
        "--guidance",
        type=_real(0, MAX_GUIDANCE),
        help="classifier-free guidance weight w (conditional recipes; 1: none)",
    )
    p.add_argument("--seed", type=_seed, default=0)


def _sampling_parent(n: int, most: int = MAX_SAMPLES) -> argparse.ArgumentParser:
    """What every ``sample MODEL`` takes: the solver and its budget, the count,
    guidance, the seed, the profile."""
    p = argparse.ArgumentParser(add_help=False)
    _add_sampling(p, n, most)
    _add_run_flags(p)
    return p


def _frontier_parent(solvers: tuple[str, ...], nfe: int) -> argparse.ArgumentParser:
    """What ``sample flow|reflow|consistency`` takes: their own solvers and budget
    (unconditional: no guidance, no eta)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--n", type=_count(MAX_SAMPLES), default=64, help="samples (64)")
    p.add_argument(
        "--solver",
        "--sampler",
        dest="sampler",
        choices=solvers,
        default=solvers[0],
        help=f"one of {', '.join(solvers)} ({solvers[0]})",
    )
    p.add_argument(
        "--nfe",
        "--steps",
        dest="steps",
        type=_count(MAX_SAMPLING_STEPS),
        default=None,
        help=f"the budget of network evaluations ({nfe})",
    )
    p.add_argument("--seed", type=_seed, default=0)
    _add_run_flags(p)
    return p


def _images_parent() -> argparse.ArgumentParser:
    """Where ``sample`` writes images."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--out", type=Path, default=Path("samples.png"), help="PNG grid (.png)"
    )
    p.add_argument("--png-dir", type=Path, help="also write every sample as a PNG")
    p.add_argument(
        "--npz", type=Path, help="also write uint8 arrays (N, H, W, C) (.npz)"
    )
    return p


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
    t.set_defaults(func=_train)
    t.add_argument(
        "--steps",
        type=_count(MAX_TRAIN_STEPS),
        help="optimiser steps (fewer than the recipe's also shorten the EMA's memory)",
    )

    s = sub.add_parser(
        "sample",
        help="draw samples from a trained model (any solver, its budget)",
        description="Draw samples from a trained model, training it on first use.",
        epilog=SOLVER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models = s.add_subparsers(
        dest="recipe", required=True, metavar="MODEL", parser_class=_Parser
    )
    images = _images_parent()
    for name in RECIPES:
        m = models.add_parser(
            name,
            parents=[_sampling_parent(n=64), images],
            help=f"the {name} recipe",
            epilog=SOLVER_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        m.add_argument(
            "--train-steps",
            type=_count(MAX_TRAIN_STEPS),
            help="use the model trained this many steps (default: the recipe's)",
        )
        m.set_defaults(func=_sample, prompt=None)
    sd = models.add_parser(
        "sd",
        parents=[_sampling_parent(n=64), images],
        help='text to image: --prompt "a thin two"',
        epilog=SOLVER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sd.add_argument("--prompt", required=True, help='the caption, e.g. "a thin two"')
    sd.set_defaults(func=_sample, guidance=3.0, train_steps=None)
    au = models.add_parser(
        "audio",
        parents=[_sampling_parent(n=8, most=1000)],
        help="spoken digits as WAV files: --digit 7",
        description="Spoken digits as 16-bit PCM WAV files (trains on first use).",
        epilog=SOLVER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    au.add_argument("--digit", type=_digit, required=True, help="the digit, 0 to 9")
    au.add_argument("--out", type=Path, default=Path("clips"), help="a folder (clips)")
    au.add_argument(
        "--model",
        choices=["wave", "spec"],
        default="wave",
        help="waveform UNet or spectrogram UNet + Griffin-Lim (wave)",
    )
    au.set_defaults(func=_sample_audio, guidance=2.0, default_nfe=AUDIO_STEPS)
    for name, (solvers, nfe, what) in FRONTIER.items():
        f = models.add_parser(
            name,
            parents=[_frontier_parent(solvers, nfe), images],
            help=what,
            epilog=FRONTIER_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        f.set_defaults(func=_sample, default_nfe=nfe, prompt=None, train_steps=None)

    e = sub.add_parser(
        "evaluate",
        help="score samples against the test split",
        epilog=SOLVER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_recipe(e)
    _add_sampling(e, n=1000)
    e.add_argument(
        "--train-steps",
        type=_count(MAX_TRAIN_STEPS),
        help="use the model trained this many steps (default: the recipe's)",
    )
    e.set_defaults(func=_evaluate, prompt=None)

    b = sub.add_parser("bench", help="benchmarks (against diffusers; the allocator)")
    b.add_argument("which", choices=["train", "quality", "alloc", "laptop"])
    b.add_argument("--out", type=Path, help="write a JSON report here (.json)")
    b.add_argument(
        "--budget",
        type=_real(0, MAX_BUDGET_S, open_low=True),
        help="quality, laptop: seconds of training each (150; laptop: 600)",
    )
    b.add_argument(
        "--n", type=_count(MAX_SAMPLES), help="quality, laptop: samples scored"
    )
    b.add_argument(
        "--only", choices=["mnist", "cifar10"], help="laptop: one dataset only"
    )
    b.add_argument("--no-progress", action="store_true", help="hide progress bars")
    b.set_defaults(func=_bench)

    c = sub.add_parser("cache", help="list or prune the cache of trained models")
    c.set_defaults(func=_cache)
    c.add_argument("action", choices=["list", "prune"])
    c.add_argument("--dry-run", action="store_true", help="prune: only say what")
    c.add_argument(
        "--all",
        action="store_true",
        help="prune: every entry, reachable or not (all is trained again)",
    )
    return p


# --- checks made before any work ---------------------------------------------------


def _check_environment(command: str) -> None:
    """Every DIFFLAB_* variable the command reads, each named in its error."""
    cache.check_cache_dir()
    if command == "cache":
        return
    default_device()  # DIFFLAB_DEVICE: a name torch knows, available here
    current_profile()  # DIFFLAB_PROFILE
    dataset = os.environ.get("DIFFLAB_DATASET")
    if dataset and dataset not in IMAGE_NAMES:
        raise SettingError(
            f"DIFFLAB_DATASET={dataset!r} is not an image dataset; use one of "
            f"{', '.join(IMAGE_NAMES)}, or unset it."
        )
    data = os.environ.get("DIFFLAB_DATA")
    if data:
        folder = Path(data).expanduser()
        if folder.exists() and not folder.is_dir():
            raise SettingError(
                f"DIFFLAB_DATA={data!r} is a file; point it at the data folder "
                "(the one download-datasets.sh fills)."
            )
    if (problem := data_setting_problem()) is not None:
        raise SettingError(problem)


def _check_output(flag: str, path: Path, suffixes=(), folder: bool = False) -> None:
    """``path`` has a known suffix and can be written, before any work is done.

    Nothing is created: the nearest existing folder above ``path`` is probed with
    a temporary file (read-only, full and permission faults all show there).
    """
    if suffixes and path.suffix.lower() not in suffixes:
        raise SettingError(
            f"argument {flag}: {str(path)!r} must end in {' or '.join(suffixes)}"
        )
    if path.exists() and path.is_dir() != folder:
        what = "a folder" if path.is_dir() else "a file"
        want = "a folder" if folder else "a file name"
        raise SettingError(f"argument {flag}: {str(path)!r} is {what}; give {want}")
    found = path if folder and path.is_dir() else path.parent
    while not found.exists() and found != found.parent:
        found = found.parent
    if not found.is_dir():
        raise SettingError(f"argument {flag}: {str(found)!r} is a file, not a folder")
    try:
        cache.probe_write(found)
    except OSError as err:
        raise SettingError(
            f"argument {flag}: cannot write in {str(found)!r} ({err.strerror})"
        ) from None


def _check_budget(args, T: int) -> None:
    """``--nfe`` is a budget the solver can spend on a chain of ``T`` steps."""
    if args.sampler != "ddpm" and args.steps > T:
        raise SettingError(
            f"argument --steps: {args.steps} is more than the recipe's T = "
            f"{T} (allowed: 1 to {T})"
        )
    least = MIN_NFE.get(args.sampler, 1)
    if args.steps is not None and args.sampler != "ddpm" and args.steps < least:
        raise SettingError(
            f"argument --nfe: {args.sampler} needs at least {least} model "
            f"evaluations, not {args.steps} (allowed: {least} to {T})"
        )


def _check_recipe(args, recipe: Recipe, command: str) -> None:
    """The flags that depend on the recipe, before training or sampling starts."""
    _check_budget(args, recipe.T)
    if args.guidance is not None and not recipe.conditional:
        conditional = [n for n in RECIPES if get_recipe(n, recipe.profile).conditional]
        raise SettingError(
            f"argument --guidance: {recipe.name} is unconditional; guidance needs "
            f"a conditional recipe ({', '.join(conditional)})"
        )
    if command == "evaluate":
        from difflab.eval.metrics import min_samples

        need = min_samples(recipe.dataset)
        if args.n < need:
            raise SettingError(
                f"argument --n: {args.n} samples are too few for a Frechet "
                f"distance on {recipe.dataset} (allowed: {need} to {MAX_SAMPLES:,})"
            )


#: The exit status when a disk fills up during training (sysexits' EX_IOERR).
EXIT_DISK_FULL = 74
#: DDIM's steps when ``--steps`` is not given.
DDIM_STEPS = 50
#: ``sample audio``'s budget when ``--nfe`` is not given.
AUDIO_STEPS = 25
#: The longest caption ``sample sd --prompt`` takes, in characters.
MAX_PROMPT_CHARS = 200


def _check_sd(args) -> None:
    """``sample sd`` only, with a prompt the tokenizer takes (before any training)."""
    only = getattr(args, "recipe", None) in SAMPLE_ONLY
    sd = getattr(args, "recipe", None) == "sd"
    if only and args.command != "sample":
        raise SettingError(
            f"{args.recipe} can only be sampled: sample {args.recipe} ..."
        )
    if args.command != "sample":
        return
    if sd:
        from difflab.pipelines.stable_diffusion import (
            stable_diffusion_recipe,
            tokenizer,
        )

        if args.eta != 0:
            raise SettingError(
                "argument --eta: sample sd draws with eta 0 (drop --eta)"
            )
        _check_budget(
            args, stable_diffusion_recipe(args.profile or current_profile()).T
        )
        if len(args.prompt) > MAX_PROMPT_CHARS:
            raise SettingError(
                f"argument --prompt: {len(args.prompt):,} characters, more than "
                f"the {MAX_PROMPT_CHARS} a caption may have"
            )
        try:
            tokenizer().split(args.prompt)  # empty or too many words
        except ValueError as err:
            raise SettingError(f"argument --prompt: {err}") from None


def _check_steps(args) -> None:
    """``--steps`` is DDIM's (default 50); with ``--sampler ddpm`` it is refused."""
    if not hasattr(args, "sampler") or args.command == "train":
        return
    if args.steps is None:
        args.steps = getattr(args, "default_nfe", DDIM_STEPS)
    elif args.sampler == "ddpm":
        raise SettingError(
            "argument --steps: ddpm sampling walks all T steps of the chain; "
            "drop --steps, or use --sampler ddim for fewer"
        )


def _checks(args) -> None:
    _check_environment(args.command)
    if getattr(args, "yes", False):  # the training loop reads it too (any model)
        os.environ["DIFFLAB_ALLOW_SLOW"] = "1"
    _check_steps(args)
    _check_sd(args)
    if args.command == "sample" and args.recipe == "audio":
        from difflab.pipelines.audio import audio_recipe

        _check_output("--out", args.out, folder=True)
        _check_budget(args, audio_recipe(args.model, args.profile).T)
    elif args.command == "sample" and args.recipe in FRONTIER:
        from difflab.pipelines.frontier import TrainedFlow

        try:
            if args.recipe == "consistency":
                if not 1 <= args.steps <= 1000:
                    raise ValueError("consistency sampling needs 1 to 1000 steps")
            else:
                TrainedFlow.check_budget(args.sampler, args.steps)
        except ValueError as err:
            raise SettingError(f"argument --nfe: {err}") from None
    if args.command == "sample" and args.recipe != "audio":
        _check_output("--out", args.out, (".png",))
        if args.png_dir:
            _check_output("--png-dir", args.png_dir, folder=True)
        if args.npz:
            _check_output("--npz", args.npz, (".npz",))
    if args.command == "bench":
        if args.out:
            _check_output("--out", args.out, (".json",))
        if args.which == "quality" and args.n is not None:
            from difflab.eval.metrics import min_samples

            dataset = get_recipe("ddpm").dataset
            if args.n < min_samples(dataset):
                raise SettingError(
                    f"argument --n: {args.n} samples are too few for a Frechet "
                    f"distance on {dataset} (allowed: {min_samples(dataset)} to "
                    f"{MAX_SAMPLES:,})"
                )
    if args.command == "cache" and args.all and args.action != "prune":
        raise SettingError("argument --all: only with cache prune")


def _follower() -> bool:
    """True in a ``torchrun`` process other than rank 0 (its group is left here).

    Every process trains (or finds the model in the cache); rank 0 alone writes
    files and prints, so an output is written once and a cache hit said once.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank = torch.distributed.get_rank()
        torch.distributed.destroy_process_group()
        return rank != 0
    return int(os.environ.get("RANK", "0")) != 0


def _before_training(args, recipe: Recipe, steps: int | None) -> None:
    """Say what will be trained, for how long, on stderr; refuse a slow full run.

    Nothing is said when the model is in the cache. The estimate comes from a
    measured warm-up (:func:`difflab.pipelines.budget.seconds_per_step`: three steps of
    the real loop after three untimed ones, nothing saved). The full
    profile on a CPU (hours) needs ``--yes`` or ``DIFFLAB_ALLOW_SLOW=1``; without
    either it is one line with the estimate and exit status 2.
    """
    from difflab.pipelines.budget import seconds_per_step
    from difflab.pipelines.recipes import is_trained, plan
    from difflab.runtime.device import describe

    device = default_device()
    planned, data, path = plan(recipe, device=device, steps=steps)
    if is_trained(path) or int(os.environ.get("RANK", "0")) != 0:
        return
    cache.ensure_writable(path.parent)  # a cache that cannot take it: before any work
    per_step = seconds_per_step(planned, steps=3, repeats=1, device=device)
    n = planned.train.steps
    line = (
        f"training {planned.name} ({planned.profile}, {planned.dataset}): {n:,} "
        f"steps at about {per_step:.2f} s a step on {describe(device)}, about "
        f"{_duration(per_step * n)}"
        + (" (resuming its checkpoint)" if path.is_file() else "")
    )
    allowed = os.environ.get("DIFFLAB_ALLOW_SLOW", "").strip().lower()
    if (
        planned.profile == "full"
        and device.type == "cpu"
        and not args.yes
        and allowed not in ("1", "yes", "true")
    ):
        raise SettingError(
            f"{line}. The full profile is meant for a GPU: pass --yes (or set "
            f"DIFFLAB_ALLOW_SLOW=1) to train it here anyway, or use --profile quick."
        )
    print(line, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _train(args) -> int:
    t0 = time.perf_counter()
    recipe = get_recipe(args.recipe, args.profile)
    _before_training(args, recipe, args.steps)
    trained = load_or_train(recipe, progress=not args.no_progress, steps=args.steps)
    if _follower():  # under torchrun: report once
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
    _check_recipe(args, recipe, args.command)
    progress = not args.no_progress
    _before_training(args, recipe, args.train_steps)
    trained = load_or_train(recipe, progress=progress, steps=args.train_steps)
    device = next(trained.net.parameters()).device
    labels = None
    if recipe.conditional:
        labels = torch.arange(args.n, device=device) % recipe.unet.num_classes
    t0 = time.perf_counter()
    x = trained.sample(
        args.n,
        solver=args.sampler,
        nfe=args.steps,
        eta=args.eta,
        cond=None if labels is None else {"y": labels},
        guidance=args.guidance,
        generator=torch.Generator(device).manual_seed(args.seed),
        progress=progress,
    )
    if args.sampler == "ddpm":
        what = f"DDPM {trained.schedule.T} steps"
    elif args.sampler == "ddim":
        what = f"DDIM {args.steps} steps, eta {args.eta}"
    else:
        noise = DiscreteNoise(trained.schedule)
        grid = default_grid(args.sampler, noise, args.steps)
        what = f"{args.sampler}, {solver_nfe(args.sampler, grid, noise)} evaluations"
    if args.guidance is not None:
        what += f", guidance {args.guidance:g}"
    return trained, x, labels, f"{what}, {time.perf_counter() - t0:.1f} s"


def _image(array: np.ndarray, scale: int = 1):
    """A PIL image of a (H, W, C) uint8 array, upscaled by ``scale`` (nearest)."""
    from PIL import Image

    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if scale > 1:
        size = (image.width * scale, image.height * scale)
        image = image.resize(size, Image.NEAREST)
    return image


def _draw_sd(args) -> tuple[torch.Tensor, None, str]:
    from difflab.pipelines.stable_diffusion import sample_command

    if args.prompt is None:
        raise ValueError('sample sd needs --prompt, e.g. --prompt "a thin two"')
    x, what = sample_command(
        args.prompt,
        n=args.n,
        solver=args.sampler,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        profile=args.profile or current_profile(),
        progress=not args.no_progress,
    )
    return x, None, what


def _draw_frontier(args) -> tuple[torch.Tensor, None, str]:
    """``sample flow|reflow|consistency``: the Frontier pages' models."""
    from difflab.pipelines.frontier import (
        load_or_train_consistency,
        load_or_train_flow,
    )

    progress = not args.no_progress
    profile = args.profile or current_profile()
    if args.recipe == "consistency":
        model = load_or_train_consistency(profile, progress=progress)
    else:
        kind = "fm" if args.recipe == "flow" else "reflow"
        model = load_or_train_flow(kind, profile, progress=progress)
    t0 = time.perf_counter()
    x = model.sample(
        args.n,
        solver=args.sampler,
        nfe=args.steps,
        generator=torch.Generator().manual_seed(args.seed),
        progress=progress,
    )
    what = f"{args.recipe}, {args.sampler}, {args.steps} evaluations"
    return x, None, f"{what}, {time.perf_counter() - t0:.1f} s"


def _sample(args) -> int:
    from difflab.notes.plotting import image_grid, to_uint8

    if args.recipe == "sd":
        x, labels, what = _draw_sd(args)
    elif args.recipe in FRONTIER:
        x, labels, what = _draw_frontier(args)
    else:
        _, x, labels, what = _draw(args)
    if _follower():  # under torchrun: rank 0 alone writes and reports
        return 0
    # Every file goes to a temporary name first: an error or Ctrl-C while
    # writing leaves no half-written file.
    grid = _image(image_grid(x), scale=max(1, 64 // x.shape[-1]))
    cache.write_atomic(args.out, lambda f: grid.save(f, format="PNG"))
    print(f"{args.n} samples ({what}) -> {args.out}")
    arrays = to_uint8(x)
    if args.png_dir:
        for k, a in enumerate(arrays):
            image = _image(a)
            path = args.png_dir / f"{k:06d}.png"
            cache.write_atomic(path, lambda f, im=image: im.save(f, format="PNG"))
        print(f"{args.n} PNG files -> {args.png_dir}/")
    if args.npz:
        y = labels.cpu().numpy() if labels is not None else np.zeros(0)
        cache.write_atomic(
            args.npz, lambda f: np.savez_compressed(f, images=arrays, labels=y)
        )
        print(f"uint8 array {arrays.shape} -> {args.npz}")
    return 0


def _evaluate(args) -> int:
    from difflab.eval.metrics import evaluate_samples, format_scores

    trained, x, labels, what = _draw(args)
    if _follower():
        return 0
    r = trained.recipe
    scores = evaluate_samples(x, r.dataset, labels=labels)
    print(f"{r.name} ({r.profile}, {r.dataset}), {what}: {format_scores(scores)}")
    return 0


def _bench(args) -> int:
    if args.which == "train":
        from difflab.eval.bench import bench_train

        bench_train(args.out)
    elif args.which == "alloc":
        from difflab.eval.bench_alloc import bench_alloc

        bench_alloc()
    elif args.which == "laptop":
        from difflab.eval.bench_laptop import bench_laptop

        bench_laptop(
            budget=args.budget or 600.0,
            n=args.n or 1000,
            only=args.only,
            out=args.out,
            progress=not args.no_progress,
        )
    else:
        from difflab.eval.bench_quality import bench_quality

        bench_quality(
            budget=args.budget or 150.0,
            out=args.out,
            progress=not args.no_progress,
            n=args.n,
        )
    return 0


def _cache(args) -> int:
    from difflab.runtime.cache import cache_dir, list_entries, prune

    if args.action == "list":
        entries = list_entries()
        for e in entries:
            state = "reachable" if e.reachable else "stale"
            print(
                f"{e.kind:12s} {e.key}  {e.size / 1e6:9.2f} MB  {state}, {e.progress}"
            )
        total = sum(e.size for e in entries) / 1e6
        print(f"{len(entries)} entries, {total:.2f} MB in {cache_dir()}")
        return 0
    gone = prune(dry_run=args.dry_run, everything=args.all)
    verb = "would remove" if args.dry_run else "removed"
    for e in gone:
        print(f"{verb} {e.kind}/{e.key} ({e.size / 1e6:.2f} MB)")
    which = "" if args.all else "stale "
    total = sum(e.size for e in gone) / 1e6
    print(f"{verb} {len(gone)} {which}entries, {total:.2f} MB")
    return 0


def _digit(text: str) -> int:
    if text.strip() not in [str(d) for d in range(10)]:
        raise argparse.ArgumentTypeError(f"{text!r} is not a digit (allowed: 0 to 9)")
    return int(text)


def _sample_audio(args) -> int:
    """``sample audio``: write ``--n`` WAV files of ``--digit`` into ``--out``."""
    from difflab.data.signal import write_wav
    from difflab.pipelines.audio import audio_recipe, load_or_train_audio

    model = load_or_train_audio(audio_recipe(args.model, args.profile))
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    x = model.sample(
        args.n, solver=args.sampler, nfe=args.steps, guidance=args.guidance,
        cond=torch.full((args.n,), args.digit), generator=gen,
        progress=not args.no_progress,
    )  # fmt: skip
    if _follower():
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for k, clip in enumerate(x):
        write_wav(args.out / f"digit{args.digit}_{k:03d}.wav", clip, model.recipe.rate)
    print(
        f"{args.n} clips of the digit {args.digit} ({args.model}, {args.sampler}, "
        f"guidance {args.guidance:g}, {time.perf_counter() - t0:.1f} s) -> {args.out}/"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status (2: bad input, 1: a clear failure, 74: the
    disk filled up while training, 130: interrupted).

    Bad input (a flag, an environment variable, an output path, the cache folder)
    is reported in one line naming it, before any training or sampling starts.
    Ctrl-C or SIGTERM, in any command (``sample`` may train on first use), is one
    line and status 130; a training interrupted so keeps its last checkpoint.
    """
    try:
        with _sigterm_as_interrupt():
            return _main(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:
        print(
            "\ninterrupted: the last checkpoint is kept; run the same command to "
            "resume.",
            file=sys.stderr,
        )
        return 130


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (``kill``, a scheduler) ends a command as Ctrl-C does."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str]) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as stop:  # --help (0) or a bad argument (2)
        return stop.code if isinstance(stop.code, int) else 0
    prog = f"python -m difflab {args.command}"
    if args.command == "sample":
        prog += f" {args.recipe}"
    keep_freed_memory()  # faster CPU loops, same results (difflab.core.memory)
    try:
        _checks(args)
        return args.func(args)
    except SettingError as err:  # before ValueError: it is one
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except (DatasetMissingError, CheckpointError, TrainingDiverged, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except DiskFullError as err:  # the disk filled up while training
        print(f"error: {err.strerror}", file=sys.stderr)
        return EXIT_DISK_FULL
    except OSError as err:  # an output file that cannot be written, say
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
