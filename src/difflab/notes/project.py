"""What the project pages (MNIST, CIFAR-10) share: the recipe table, the loss
check, the command line's surroundings and the sweep of sampling steps.

A project page keeps the code that teaches: the data it loads, the recipe, the
training call, the commands, the sampling call and the verdicts. The plumbing
both pages need the same way is here::

    from difflab.notes import project

    project.show_recipe(recipe, twin)       # every field of both profiles
    ema, init = project.losses_before_and_after(trained, data, "L_simple")
    assert project.learnt(ema) and not project.learnt(init)
    with project.as_typed(args, env=env, dataset=data.name, folder=out):
        assert cli.main(args) == 0          # the command, as a reader types it
    scores = project.steps_sweep(draw, data.name, 500, range(4))
    fd50 = project.gap_to_floor(scores, floors, 500)  # beside the floor, printed
    rows = project.show_steps(scores, fd50, 500)      # paired against 50 steps

A spread is a standard error over seeds (or batches), :func:`mean_se`; a
difference between two settings sampled from the same seeds is *paired*, so what
the seed adds to both cancels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from difflab.data.images import ImageData
from difflab.diffusion.losses import simple_loss
from difflab.eval.metrics import evaluate_samples
from difflab.notes.page import FIGURE_WIDTH_IN
from difflab.notes.plotting import show_grid, smooth
from difflab.notes.tables import show_table
from difflab.pipelines.recipes import Recipe, Trained, init_net, with_steps

#: Standard errors by which a trained network must beat predicting zero. Eight
#: batches give 7 degrees of freedom (Student's t, two-sided 95%: 2.36): four is safe.
K_LOSS = 4.0
#: The DDIM step counts a project page compares; the last is the reference.
STEPS = (5, 10, 50)
# Student's t, two-sided 95%, by degrees of freedom, where it exceeds four.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182}


def mean_se(values: Iterable[float]) -> tuple[float, float]:
    """The mean of ``values`` and its standard error, s / sqrt(n) (s with n - 1)."""
    v = torch.tensor(list(values), dtype=torch.float64)
    return v.mean().item(), (v.std() / math.sqrt(len(v))).item()


def k_se(n_seeds: int) -> float:
    """Standard errors a verdict over ``n_seeds`` seeds asks for: four, or Student's
    t (two-sided 95%, ``n_seeds - 1`` degrees of freedom) where that is larger.

    Raises:
        ValueError: for fewer than two seeds (no standard error).
    """
    if n_seeds < 2:
        raise ValueError(f"a standard error needs two seeds or more, not {n_seeds}")
    return max(4.0, _T95.get(n_seeds - 1, 0.0))


def image_figure(images: Tensor | np.ndarray, nrow: int, title: str) -> plt.Figure:
    """A grid of images, at least 28 px each: (N, C, H, W) in [-1, 1], or
    (N, H, W, C) uint8 as the command line exports them."""
    if isinstance(images, np.ndarray):  # uint8 (N, H, W, C) -> [-1, 1] (N, C, H, W)
        images = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    fig, ax = plt.subplots(figsize=(3.8, 3.8))
    show_grid(ax, images, nrow=nrow, title=title)
    return fig


def samples_beside_real(
    samples: Tensor | np.ndarray, real: ImageData, nrow: int, title: str
) -> plt.Figure:
    """The samples (left) beside as many real images of ``real`` (right), in the
    same layout. With ``nrow`` equal to the number of classes (a conditional
    recipe's samples, the classes in turn), column c of the real grid holds images
    of class c, so each sample stands beside real images of the class it was asked
    for; otherwise the real grid is the first images of ``real``."""
    if isinstance(samples, np.ndarray):  # uint8 (N, H, W, C) -> [-1, 1] (N, C, H, W)
        samples = torch.from_numpy(samples).permute(0, 3, 1, 2).float() / 127.5 - 1
    n = len(samples)
    if nrow == real.num_classes:
        queues = [(real.labels == c).nonzero().flatten().tolist() for c in range(nrow)]
        idx = [queues[k % nrow][k // nrow] for k in range(n)]
        what = "real, a column per class"
    else:
        idx = list(range(n))
        what = f"real, the first {n}"
    rows = math.ceil(n / nrow)
    fig, axes = plt.subplots(
        1, 2, figsize=(FIGURE_WIDTH_IN, 0.7 + FIGURE_WIDTH_IN / 2 * rows / nrow)
    )
    fig.suptitle(title)
    show_grid(axes[0], samples, nrow=nrow, title="samples")
    show_grid(axes[1], real.images[idx], nrow=nrow, title=what)
    fig.subplots_adjust(left=0.01, right=0.99, wspace=0.04, bottom=0.01, top=0.8)
    return fig


def show_data(data: ImageData, test: ImageData) -> plt.Figure:
    """Print the sizes of the training and test splits; draw 64 training images."""
    print(
        f"train {len(data):,} images, test {len(test):,}; each "
        f"{data.channels}x{data.image_size}x{data.image_size} in [-1, 1]"
    )
    return image_figure(data.images[:64], 8, f"64 training images ({data.name})")


def _fields(cfg) -> list[str]:
    """A config's field names; an autoencoder's network fields first, as ``net.*``."""
    names = [f.name for f in dataclasses.fields(cfg)]
    if "net" in names and dataclasses.is_dataclass(cfg.net):
        names.remove("net")
        names = [f"net.{f.name}" for f in dataclasses.fields(cfg.net)] + names
    return names


def _value(cfg, name: str):
    if cfg is None:
        return "(none)"
    if name.startswith("net."):
        return getattr(cfg.net, name[4:])
    return getattr(cfg, name)


def recipe_rows(
    recipe: Recipe,
    twin: Recipe,
    *,
    steps: int | None = None,
    fields: Sequence[str] = ("dataset", "schedule", "T", "conditional"),
) -> list[dict]:
    """The recipe field by field, ``recipe`` (this build) beside ``twin`` (its other
    profile): part, field, one column per profile, and ``differs`` ("*" or "").

    The parts are the UNet, the training and, for a latent recipe, the autoencoder
    (its network's fields first); then the recipe's own ``fields``. ``steps``: the
    reduced budget this build trains, shown with the recipe's value beside each
    training field it changes (:func:`difflab.pipelines.recipes.with_steps`).
    """
    ours_name, theirs_name = recipe.profile, twin.profile
    rows = []
    parts = ["unet", "train"] + (["autoencoder"] if recipe.autoencoder else [])
    for part in parts:
        ours, theirs = getattr(recipe, part), getattr(twin, part)
        for name in _fields(ours):
            a, b = _value(ours, name), _value(theirs, name)
            if part == "train" and steps:  # the reduced budget, the EMA fitted to it
                c = getattr(with_steps(ours, steps), name)
                if c != a:
                    a = f"{c:.5g} (recipe: {a})"
            rows.append({"part": part, "field": name, ours_name: a, theirs_name: b})
    for name in fields:
        a, b = getattr(recipe, name), getattr(twin, name)
        rows.append({"part": "recipe", "field": name, ours_name: a, theirs_name: b})
    for row in rows:
        a, b = row[ours_name], row[theirs_name]
        row.update({ours_name: str(a), theirs_name: str(b)})
        row["differs"] = "*" if a != b else ""
    return rows


def show_recipe(recipe: Recipe, twin: Recipe, **kwargs) -> None:
    """Show :func:`recipe_rows` as a table (the same arguments)."""
    ours, theirs = recipe.profile, twin.profile
    show_table(
        recipe_rows(recipe, twin, **kwargs),
        columns=["part", "field", ours, theirs, "differs"],
        caption=f"The {recipe.name} recipe: {ours} (this build) and {theirs}",
    )


def _how(from_cache: bool) -> str:
    return "loaded from the cache" if from_cache else "trained now"


def describe_training(trained: Trained, loss: str) -> None:
    """Print what was trained (the autoencoder first, for a latent recipe), how it
    was obtained, and ``loss`` (its name) over the first and last logged steps."""
    r, ae = trained.recipe, trained.autoencoder
    if ae is not None:
        print(
            f"autoencoder: {sum(p.numel() for p in ae.net.parameters()) / 1e3:.0f}k "
            f"parameters, {ae.recipe.steps} steps of batch {ae.recipe.batch_size}, "
            f"{_how(ae.from_cache)}, training took {ae.seconds:.0f} s"
        )
    n_params = sum(p.numel() for p in trained.net.parameters())
    print(
        f"{r.name} ({r.profile}, {r.dataset}): {n_params / 1e6:.2f}M parameters, "
        f"{r.train.steps} steps of batch {r.train.batch_size}; "
        f"{_how(trained.from_cache)}, training took {trained.train_seconds:.0f} s"
    )
    every = r.train.log_every
    print(
        f"{loss}: first {every} steps {trained.losses[0]:.3f}, "
        f"last {every} steps {trained.losses[-1]:.3f}"
    )


def loss_figure(trained: Trained, ylabel: str) -> plt.Figure:
    """The logged training loss (each point a mean over ``log_every`` steps),
    smoothed beside it, on a log scale."""
    r = trained.recipe
    every = r.train.log_every
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH_IN, 3.0))
    logged = [every * (k + 1) for k in range(len(trained.losses))]
    ax.plot(logged, trained.losses, alpha=0.35, label=f"mean over {every} steps")
    ax.plot(logged, smooth(trained.losses, 9), label="smoothed")
    ax.set(xlabel="step", ylabel=ylabel, yscale="log")
    ax.set_title(f"Training loss ({r.profile} profile, {r.dataset})")
    ax.legend()
    fig.tight_layout()
    return fig


@torch.no_grad()
def batch_losses(
    net: torch.nn.Module, trained: Trained, data: ImageData, n_batches: int = 8
) -> list[float]:
    """The training loss of ``net`` (Ho et al. 2020, Eq. 14, with the recipe's
    prediction target) on ``n_batches`` batches of ``data``'s training images.

    The same images, times and noise at every call (generators seeded 0), so two
    networks are compared on the same batches. A latent recipe scores the scaled
    latents of the images; a conditional one passes their labels as ``{"y": ...}``.
    ``net`` runs on the device of ``trained.net``.
    """
    r, ae = trained.recipe, trained.autoencoder
    device = next(trained.net.parameters()).device
    pick, g = torch.Generator().manual_seed(0), torch.Generator(device).manual_seed(0)
    out = []
    for _ in range(n_batches):
        idx = torch.randint(len(data), (r.train.batch_size,), generator=pick)
        x0 = data.images[idx]
        if ae is not None:  # the UNet's data are the scaled latents
            x0 = ae.encode_images(x0)
        cond = {"y": data.labels[idx].to(device)} if r.conditional else None
        loss = simple_loss(
            net.eval(),
            trained.schedule,
            x0.to(device),
            cond=cond,
            prediction=r.train.prediction,
            generator=g,
        )
        out.append(loss.item())
    return out


def learnt(losses: Iterable[float], k: float = K_LOSS, zero: float = 1.0) -> bool:
    """Whether the mean loss is below ``zero``, the loss of predicting zero (the
    target's mean square), by more than ``k`` standard errors."""
    m, se = mean_se(losses)
    return m + k * se < zero


def losses_before_and_after(
    trained: Trained, data: ImageData, loss: str, n_batches: int = 8
) -> tuple[list[float], list[float]]:
    """:func:`batch_losses` of the trained (EMA) network and of the untrained one
    (the recipe's initial weights) on the same batches, each printed with its mean
    and standard error and how far below 1 that is; ``loss`` names the loss."""
    device = next(trained.net.parameters()).device
    ema = batch_losses(trained.net, trained, data, n_batches)
    init = batch_losses(init_net(trained.recipe, device), trained, data, n_batches)
    for name, losses in (("trained (EMA)", ema), ("untrained", init)):
        m, se = mean_se(losses)
        print(
            f"{name} network, {loss} on {len(losses)} training batches: "
            f"{m:.3f} +- {se:.3f} ({(1 - m) / se:.1f} standard errors below 1)"
        )
    return ema, init


@contextlib.contextmanager
def dataset_env(name: str) -> Iterator[None]:
    """``DIFFLAB_DATASET=name`` for the commands run inside the block."""
    old = os.environ.get("DIFFLAB_DATASET")
    os.environ["DIFFLAB_DATASET"] = name
    try:
        yield
    finally:
        if old is None:
            del os.environ["DIFFLAB_DATASET"]
        else:
            os.environ["DIFFLAB_DATASET"] = old


def export_flags(folder: Path) -> list[str]:
    """``sample``'s flags that write into ``folder``: a PNG grid, one PNG a sample,
    an npz archive (the names :func:`read_back` reads), without a progress bar."""
    folder = Path(folder)
    return [
        "--out", str(folder / "samples.png"),
        "--png-dir", str(folder / "png"),
        "--npz", str(folder / "samples.npz"),
        "--no-progress",
    ]  # fmt: skip


@contextlib.contextmanager
def as_typed(
    args: Sequence[str], *, env: str, dataset: str, folder: Path
) -> Iterator[None]:
    """Print ``env python -m difflab args`` and run the block as that command runs.

    The block runs with ``DIFFLAB_DATASET=dataset`` and its printed lines are
    shown after it; in the command and in those lines, the paths under ``folder``
    (a temporary folder) are shown relative to it, as if it were the reader's.
    """
    cut = str(folder) + os.sep
    print(env + "python -m difflab " + " ".join(args).replace(cut, ""))
    said = io.StringIO()
    try:
        with dataset_env(dataset), contextlib.redirect_stdout(said):
            yield
    finally:
        print(said.getvalue().replace(cut, "").rstrip())


def read_back(folder: Path) -> tuple[np.ndarray, list[Path]]:
    """The images of :func:`export_flags`' archive, (N, H, W, C) uint8, and the
    PNG files, in order; prints what was found."""
    folder = Path(folder)
    exported = np.load(folder / "samples.npz")["images"]
    pngs = sorted((folder / "png").glob("*.png"))
    print(f"read back: {exported.shape} {exported.dtype} array, {len(pngs)} PNG files")
    return exported, pngs


def steps_sweep(
    draw: Callable[[int, int, int], Tensor],
    dataset: str,
    n: int,
    seeds: Iterable[int],
    steps: Sequence[int] = STEPS,
    score: Callable[[Tensor, str], dict] = evaluate_samples,
) -> dict[tuple[int, int], dict]:
    """``score`` of ``n`` samples ``draw(n, seed, ddim_steps)`` for every step count
    and seed, keyed ``(ddim_steps, seed)``.

    Each seed's samples start from the same noise x_T at every step count, so
    differences between step counts are paired over seeds (:func:`step_rows`).
    Draws in the order step counts, then seeds.
    """
    seeds = list(seeds)
    return {
        (ddim_steps, seed): score(draw(n, seed, ddim_steps), dataset)
        for ddim_steps in steps
        for seed in seeds
    }


def _keys(scores: dict[tuple[int, int], dict]) -> tuple[list[int], list[int]]:
    """The step counts and the seeds of a sweep, in the order drawn."""
    steps = list(dict.fromkeys(s for s, _ in scores))
    return steps, list(dict.fromkeys(seed for _, seed in scores))


@dataclasses.dataclass(frozen=True)
class Gap:
    """A mean score over seeds beside the real-data floor (each with its standard
    error), and the gap between them."""

    score: float
    score_se: float
    floor: float
    floor_se: float

    @property
    def gap(self) -> float:
        return self.score - self.floor

    @property
    def gap_se(self) -> float:
        """The gap's standard error, the two means independent (other images)."""
        return math.hypot(self.score_se, self.floor_se)


def gap_to_floor(
    scores: dict[tuple[int, int], dict],
    floors: Iterable[float],
    n: int,
    ddim_steps: int = STEPS[-1],
) -> Gap:
    """The Frechet distance of a sweep's ``n`` samples at ``ddim_steps`` against
    the real-data floor (one distance per random subset in ``floors``); printed."""
    _, seeds = _keys(scores)
    fd, fd_se = mean_se(scores[ddim_steps, s]["fd"] for s in seeds)
    floor, floor_se = mean_se(floors)
    g = Gap(fd, fd_se, floor, floor_se)
    print(
        f"Frechet distance, DDIM {ddim_steps} steps: {fd:.3f} +- {fd_se:.3f}; "
        f"real-data floor {floor:.3f} +- {floor_se:.3f}; ratio {fd / floor:.2f}; gap "
        f"{g.gap:.3f} = {g.gap / g.gap_se:.1f} standard errors ({len(seeds)} seeds "
        f"of {n} images)"
    )
    return g


def step_rows(
    scores: dict[tuple[int, int], dict],
    floor: float,
    *,
    reference: int = STEPS[-1],
) -> list[dict]:
    """One row per step count of a sweep: ``steps``, the Frechet distance's mean
    over seeds ``fd`` (± ``fd_se``), ``ratio`` to ``floor``, and ``diff`` (± ``diff_se``), the
    paired difference to ``reference`` steps: the mean over seeds of each seed's
    difference, whose spread leaves out what the seed adds to both."""
    steps, seeds = _keys(scores)
    rows = []
    for ddim_steps in steps:
        fd, fd_se = mean_se(scores[ddim_steps, s]["fd"] for s in seeds)
        d, d_se = mean_se(
            scores[ddim_steps, s]["fd"] - scores[reference, s]["fd"] for s in seeds
        )
        rows.append(
            {
                "steps": ddim_steps,
                "fd": fd,
                "fd_se": fd_se,
                "ratio": fd / floor,
                "diff": d,
                "diff_se": d_se,
            }
        )
    return rows


def show_steps(
    scores: dict[tuple[int, int], dict], gap: Gap, n: int, reference: int = STEPS[-1]
) -> list[dict]:
    """Show :func:`step_rows` of a sweep as a table and return them; print how
    much worse the fewest steps are than ``reference``, and the second step
    count's difference as a share of ``gap``, the gap between ``reference`` steps
    and the floor (its standard error to first order, the two errors
    independent). With that gap within two standard errors the distance does not
    tell the samples from real images, and no share is printed."""
    rows = step_rows(scores, gap.floor, reference=reference)
    show_table(
        rows,
        columns=["steps", "fd", "ratio", "diff"],
        headers={
            "steps": "DDIM steps",
            "fd": "Frechet distance",
            "ratio": "/ floor",
            "diff": f"minus {reference} steps (paired)",
        },
        spread={"fd": "fd_se", "diff": "diff_se"},
        caption=f"Sampling steps ({len(_keys(scores)[1])} seeds of {n} samples, "
        "mean ± s.e.)",
    )
    few, mid, ref = rows[0], rows[1], reference
    print(
        f"{few['steps']} steps are worse than {ref} by {few['diff']:.3f} +- "
        f"{few['diff_se']:.3f} ({few['diff'] / few['diff_se']:.1f} standard errors)"
    )
    head = (
        f"{mid['steps']} steps minus {ref} steps: {mid['diff']:+.3f} +- "
        f"{mid['diff_se']:.3f}"
    )
    if gap.gap > 2 * gap.gap_se:
        share = mid["diff"] / gap.gap
        share_se = math.hypot(mid["diff_se"], share * gap.gap_se) / gap.gap
        print(
            f"{head}, {share:+.0%} +- {share_se:.0%} of the gap between {ref} steps "
            f"and the floor ({gap.gap:.3f} +- {gap.gap_se:.3f}); not checked"
        )
    else:  # no gap to compare with: the most steps are within noise of the floor
        print(
            f"{head}; {ref} steps minus the floor: {gap.gap:+.3f} +- "
            f"{gap.gap_se:.3f}, within two standard errors: at {n} samples the "
            f"distance does not tell {ref}-step samples from real images"
        )
    return rows
