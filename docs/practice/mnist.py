# ---
# jupyter:
#   difflab:
#     cold_seconds: 31
#     prerequisites:
#     - diffusion/ddpm.py
#     - deeper/ddim.py
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Project: generate MNIST digits, end to end
#
# The earlier chapters built a DDPM piece by piece. This page is the whole job,
# as you would do it on your own machine: fetch the data, read the recipe, train
# from the command line (with progress, checkpoints, Ctrl-C and resume), draw
# samples, score them beside the real data, export them as PNG files and a NumPy
# archive, and decide what to change first. Every command below is printed by the
# page for the data and profile it was built with, so you can copy it as it is.
#
# **What you will do**
#
# - get MNIST with `download-datasets.sh`, and see which data the page found;
# - read the `ddpm` recipe of both profiles, every hyper-parameter;
# - train it with `python -m difflab train`, and check that the command line and
#   the page's Python reach the same cached model;
# - sample and export with `python -m difflab sample`, and check that the
#   exported images are, bit for bit, the ones the Python API draws;
# - score samples against the test split beside the real-data floor, with a
#   spread over seeds, and measure the cheapest thing to change (sampling steps).

# %% tags=["fold"]
# Imports and set-up (the page's provenance box starts here)
import contextlib
import dataclasses
import io
import math
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from difflab import cli
from difflab.data.images import load_images
from difflab.eval.metrics import evaluate_samples, min_samples, real_data_floor
from difflab.notes import page
from difflab.notes.page import FIGURE_WIDTH_IN
from difflab.notes.plotting import show_grid, smooth, to_uint8
from difflab.notes.tables import show_table
from difflab.train.recipes import (
    get_recipe,
    load_or_train,
    resolve_data,
    with_steps,
)

run = page.start()
quick = run.profile == "quick"

# %% [markdown]
# ## 1. The data
#
# MNIST is 70,000 handwritten digits of 28x28 grey pixels (60,000 to train on,
# 10,000 to test against). From the project folder,
#
# ```bash
# bash download-datasets.sh mnist
# ```
#
# fetches the four IDX files, checks their checksums and writes them to
# `data/MNIST/raw/` (set `DIFFLAB_DATA=/some/folder` to keep them elsewhere; a
# second run downloads nothing). The loaders look for `data/` there, and
# `load_images("auto")` returns MNIST if it is present and scikit-learn's
# embedded 8x8 digits otherwise, so that every page runs offline. The cell below
# says which one this build found: everything on the page, figures and numbers,
# comes from that data.

# %%
data = load_images("auto")  # MNIST from data/ if downloaded, else the 8x8 digits
test = load_images(data.name, split="test")
MNIST = data.name == "mnist"
print(data.note)
if not MNIST:
    run.data_notice(
        "MNIST", "scikit-learn's 8x8 digits", "bash download-datasets.sh mnist"
    )
print(
    f"train {len(data):,} images, test {len(test):,}; each "
    f"{data.channels}x{data.image_size}x{data.image_size} in [-1, 1]"
)

fig, ax = plt.subplots(figsize=(FIGURE_WIDTH_IN / 2, FIGURE_WIDTH_IN / 2))
show_grid(ax, data.images[:64], nrow=8, title=f"64 training images ({data.name})")
plt.show()

# %% [markdown]
# ## 2. The recipe
#
# A recipe (`difflab.train.recipes`) is a frozen dataclass naming everything that
# decides the trained model: data, network, schedule, optimisation. `ddpm` has two
# profiles. **quick** is the CPU default: a 0.16M-parameter UNet, 1,000 steps;
# it was sized for the 8x8 digits, where it trains in about two minutes on two
# cores. **full** is the GPU default: MNIST at 28x28 with a 64-channel UNet,
# self-attention at 7x7, 6,000 steps of batch 256, compiled. The table lists
# every field of both (the network, then the optimisation); the ones that differ
# are marked.
#
# A 28x28 image has twelve times the pixels of an 8x8 one, and the quick UNet
# runs at about one step a second on it on a CPU. So when this page is built on a
# CPU *with* MNIST, it trains the quick recipe at 28x28 for a **reduced budget**
# of `QUICK_MNIST_STEPS` steps instead of 1,000 (the `--steps` flag below); on the
# digits it trains the recipe unchanged, and the model is the one the DDPM
# chapter uses. A shorter run also gets an EMA with a shorter memory: an
# average with decay $d$ still holds $d^n$ of the untrained network after $n$
# steps, so `--steps` (`train.recipes.with_steps`) raises the decay to
# $d^{1000/n}$, and after 200 steps the average holds as little of it as the
# recipe's does after 1,000 (0.7%). Without that it would hold 37%, and the
# samples would be noise (the [better-networks](better-networks.py) page
# measures this). The table marks both changes.

# %%
QUICK_MNIST_STEPS = 200  # the quick profile's budget at 28x28 on a CPU
steps = QUICK_MNIST_STEPS if (quick and MNIST) else None  # None: the recipe's own
# the network's input fitted to the data found, as training does
recipe, _ = resolve_data(dataclasses.replace(get_recipe("ddpm"), dataset=data.name))
other = "full" if quick else "quick"
twin = get_recipe("ddpm", other)

rows = []
for part in ("unet", "train"):
    ours, theirs = getattr(recipe, part), getattr(twin, part)
    for f in dataclasses.fields(ours):
        a, b = getattr(ours, f.name), getattr(theirs, f.name)
        if part == "train" and steps:  # the reduced budget, and the EMA fitted to it
            c = getattr(with_steps(ours, steps), f.name)
            if c != a:
                a = f"{c:.5g} (recipe: {a})"
        rows.append(
            {
                "part": part,
                "field": f.name,
                run.profile: str(a),
                other: str(b),
                "differs": "*" if a != b else "",
            }
        )
for f in ("dataset", "schedule", "T"):
    a, b = getattr(recipe, f), getattr(twin, f)
    rows.append(
        {
            "part": "recipe",
            "field": f,
            run.profile: str(a),
            other: str(b),
            "differs": "*" if a != b else "",
        }
    )
show_table(
    rows,
    columns=["part", "field", run.profile, other, "differs"],
    caption=f"The ddpm recipe: {run.profile} (this build) and {other}",
)

# %% [markdown]
# ## 3. Training from the command line
#
# `python -m difflab train` trains a recipe, or finds it in the cache. The
# commands for the model of this page (printed from the recipe, so they match
# what was built):

# %%
env = f"DIFFLAB_DATASET={data.name} "
flags = f"--profile {run.profile}"
train_steps = [] if steps is None else ["--steps", str(steps)]
model_steps = [] if steps is None else ["--train-steps", str(steps)]
print(f"{env}python -m difflab train ddpm {flags} {' '.join(train_steps)}".rstrip())
print("python -m difflab cache list")

# %% [markdown]
# What happens when you run it:
#
# - **Progress.** A progress bar shows the step, the loss and the steps per
#   second (`--no-progress` hides it).
# - **Checkpoints.** Every `checkpoint_every` steps (the recipe's table above) the
#   model, the EMA, the optimiser and every random generator are written,
#   atomically, to `.cache/difflab/ddpm/<key>.pt`; the key hashes the recipe and
#   the source of the modules training depends on, so a changed recipe never
#   picks up the wrong checkpoint.
# - **Ctrl-C and resume.** Ctrl-C (or SIGTERM, or a time limit on a cluster)
#   saves the last finished step and prints *interrupted: the last checkpoint is
#   kept; run the same command to resume.* Running the same command again
#   continues from there; because the random generators are restored too, the
#   resumed run ends with the same weights as an uninterrupted one (the package's
#   tests check this).
# - **Finished.** A finished model is cached; the next `train`, `sample` or
#   `evaluate` with the same recipe loads it in a second. `python -m difflab cache
#   list` shows what is stored, `cache prune` removes what no current recipe
#   reaches. On a machine with several GPUs, `torchrun --nproc_per_node=N -m
#   difflab train ddpm` trains on all of them.
#
# The page trains through the same function the command line calls,
# `load_or_train`, with the same recipe, so both reach the same cache entry: the
# command line run after it finds the model instead of training again.

# %%
t0 = time.perf_counter()
trained = load_or_train(recipe, steps=steps, progress=False)
r = trained.recipe
n_params = sum(p.numel() for p in trained.net.parameters())
print(
    f"{r.name} ({r.profile}, {r.dataset}): {n_params / 1e6:.2f}M parameters, "
    f"{r.train.steps} steps of batch {r.train.batch_size}; "
    f"{'loaded from the cache' if trained.from_cache else 'trained now'}, "
    f"training took {trained.train_seconds:.0f} s"
)
every = r.train.log_every
print(
    f"L_simple: first {every} steps {trained.losses[0]:.3f}, "
    f"last {every} steps {trained.losses[-1]:.3f}"
)


# The command line, run in this kernel: it must find the model the page trained.
@contextlib.contextmanager
def dataset_env(name: str):
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


with dataset_env(data.name):
    status = cli.main(["train", "ddpm", *flags.split(), "--no-progress", *train_steps])
assert status == 0

fig, ax = plt.subplots(figsize=(FIGURE_WIDTH_IN, 3.0))
logged = [every * (k + 1) for k in range(len(trained.losses))]
ax.plot(logged, trained.losses, alpha=0.35, label=f"mean over {every} steps")
ax.plot(logged, smooth(trained.losses, 9), label="smoothed")
ax.set(xlabel="step", ylabel=r"$L_\mathrm{simple}$", yscale="log")
ax.set_title(f"Training loss ({r.profile} profile, {r.dataset})")
ax.legend()
plt.tight_layout()
plt.show()
# The noise-prediction loss starts near 1 (the variance of the noise) and must
# fall well below it for the network to have learnt anything.
assert trained.losses[-1] < 0.5 * trained.losses[0]

# %% [markdown]
# ## 4. Sampling and exporting
#
# `python -m difflab sample` draws samples with DDIM (50 steps, $\eta = 0$, by
# default; `--sampler ddpm` runs all $T$ ancestral steps) and writes a PNG grid
# (`--out`), one PNG per sample (`--png-dir`) and a compressed NumPy archive
# (`--npz`, uint8 images of shape (N, H, W, C) under `images`). The page runs that
# command and reads back what it wrote; then it draws the same samples through the
# Python API, `Trained.sample`, with the same seed, and checks that the two agree
# to the last bit. A different seed must give different images, so the check is
# not vacuous.

# %%
out = Path(tempfile.mkdtemp(prefix="difflab-mnist-"))
n_show = 64
args = [
    "sample", "ddpm", *flags.split(), *model_steps,
    "--n", str(n_show), "--steps", "50", "--seed", "0",
    "--out", str(out / "samples.png"),
    "--png-dir", str(out / "png"),
    "--npz", str(out / "samples.npz"),
    "--no-progress",
]  # fmt: skip
print(env + "python -m difflab " + " ".join(args).replace(str(out) + "/", ""))
said = io.StringIO()  # the command's own lines, printed without the temporary folder
with dataset_env(data.name), contextlib.redirect_stdout(said):
    assert cli.main(args) == 0
print(said.getvalue().replace(str(out) + os.sep, "").rstrip())

exported = np.load(out / "samples.npz")["images"]  # (N, H, W, C) uint8
pngs = sorted((out / "png").glob("*.png"))
print(f"read back: {exported.shape} {exported.dtype} array, {len(pngs)} PNG files")

device = next(trained.net.parameters()).device


def draw(n: int, seed: int, ddim_steps: int = 50) -> torch.Tensor:
    """``n`` DDIM samples from seed ``seed``, exactly as the command line draws."""
    g = torch.Generator(device).manual_seed(seed)
    return trained.sample(n, steps=ddim_steps, generator=g, progress=False)


same = to_uint8(draw(n_show, seed=0))
other_seed = to_uint8(draw(n_show, seed=1))
print(
    f"command line vs Python, seed 0: {np.mean(same != exported):.1%} of pixels "
    f"differ; seed 1 instead: {np.mean(other_seed != exported):.1%}"
)
assert len(pngs) == n_show and exported.shape == same.shape
assert np.array_equal(same, exported)
assert not np.array_equal(other_seed, exported)

fig, ax = plt.subplots(figsize=(FIGURE_WIDTH_IN / 2, FIGURE_WIDTH_IN / 2))
show_grid(
    ax,
    torch.from_numpy(exported).permute(0, 3, 1, 2).float() / 127.5 - 1,
    nrow=8,
    title=f"Samples, DDIM 50 steps ({r.profile}, {r.dataset})",
)
plt.show()

# %% [markdown]
# To use the samples elsewhere: `np.load("samples.npz")["images"]` is an
# (N, H, W, C) uint8 array, the layout of PIL, matplotlib and most metrics
# libraries; the PNG folder is what tools that take a folder of images (an FID
# implementation, say) read.
#
# ## 5. Evaluating beside the floor
#
# `python -m difflab evaluate` samples and scores in one step. The score is a
# Frechet distance in the features of a small classifier trained on the same
# dataset (the DDPM chapter explains it), with the **real-data floor** beside it:
# the same distance for as many real *training* images, which is what a perfect
# model would reach at that sample size. One number has a spread, so the page
# scores several seeds of samples (and several random subsets of real images for
# the floor) and reports the mean with its standard error.

# %%
# Samples per seed (the metric needs at least min_samples: a full-rank feature
# covariance) and seeds; fewer at 28x28, where each sample costs more on a CPU.
N_EVAL, SEEDS = (200, range(3)) if MNIST else (500, range(4))
assert N_EVAL >= min_samples(data.name)
print(
    f"{env}python -m difflab evaluate ddpm {flags} {' '.join(model_steps)} "
    f"--n {N_EVAL} --steps 50".replace("  ", " ")
)


def mean_se(values) -> tuple[float, float]:
    v = torch.tensor(list(values), dtype=torch.float64)
    return v.mean().item(), (v.std() / math.sqrt(len(v))).item()


scores = {}  # (ddim steps, seed) -> Frechet distance
for ddim_steps in (5, 10, 50):
    for seed in SEEDS:
        x = draw(N_EVAL, seed, ddim_steps)
        scores[ddim_steps, seed] = evaluate_samples(x, data.name)["fd"]
floors = [real_data_floor(data.name, N_EVAL, seed=s)[0] for s in SEEDS]
floor, floor_se = mean_se(floors)
fd50, fd50_se = mean_se(scores[50, s] for s in SEEDS)
gap, gap_se = fd50 - floor, math.hypot(fd50_se, floor_se)
print(
    f"Frechet distance, DDIM 50 steps: {fd50:.3f} +- {fd50_se:.3f}; real-data "
    f"floor {floor:.3f} +- {floor_se:.3f}; ratio {fd50 / floor:.2f}; gap "
    f"{gap:.3f} = {gap / gap_se:.1f} standard errors ({len(SEEDS)} seeds of "
    f"{N_EVAL} images)"
)

# %% [markdown]
# ## 6. What to change first
#
# The cheapest change is the number of sampling steps: it needs no retraining.
# The table compares 5, 10 and 50 DDIM steps on the same noise $x_T$ (the same
# seeds), so the difference to 50 steps is a *paired* difference, whose spread
# over seeds is much smaller than that of either score.

# %%
step_rows = []
for ddim_steps in (5, 10, 50):
    fd, fd_se = mean_se(scores[ddim_steps, s] for s in SEEDS)
    d, d_se = mean_se(scores[ddim_steps, s] - scores[50, s] for s in SEEDS)
    step_rows.append(
        {
            "steps": ddim_steps,
            "fd": fd,
            "fd_se": fd_se,
            "ratio": fd / floor,
            "diff": d,
            "diff_se": d_se,
        }
    )
show_table(
    step_rows,
    columns=["steps", "fd", "ratio", "diff"],
    headers={
        "steps": "DDIM steps",
        "fd": "Frechet distance",
        "ratio": "/ floor",
        "diff": "minus 50 steps (paired)",
    },
    spread={"fd": "fd_se", "diff": "diff_se"},
    caption=f"Sampling steps ({len(SEEDS)} seeds of {N_EVAL} samples, mean ± s.e.)",
)
five = step_rows[0]
print(
    f"5 steps are worse than 50 by {five['diff']:.3f} +- {five['diff_se']:.3f} "
    f"({five['diff'] / five['diff_se']:.1f} standard errors)"
)
ten = step_rows[1]
print(
    f"10 steps minus 50 steps: {ten['diff']:+.3f} +- {ten['diff_se']:.3f}, "
    f"{ten['diff'] / gap:+.0%} of the gap between 50 steps and the floor ({gap:.3f})"
)
# Five DDIM steps are too coarse a solve of the probability-flow ODE: the paired
# difference must be positive by more than four standard errors (over seeds).
assert five["diff"] > 4 * five["diff_se"], five
# No assert on the 10-step difference against the gap: the gap's spread comes
# mostly from the floor's random subsets, and with four seeds the margin was as
# small as 2.6 standard errors in one run on the digits (other seeds: 5.5).

# %% [markdown]
# Read the table and the lines below it for this build's numbers. Five steps are
# clearly worse than fifty. Between ten and fifty steps the difference is
# smaller than what remains between fifty steps and the real-data floor (about
# a fifth of it at most in the runs made while writing this page), so past a few
# tens of steps the sampler is not what limits the samples most: the network and
# its training are. In order of cost, what to change next:
#
# 1. **Train longer.** In the quick profile on MNIST the budget is a fifth of the
#    recipe's: `--steps 1000` (a quarter of an hour or more on two CPU cores, at
#    the rate quoted in Section 2) is the first thing to try; on the digits the
#    recipe's budget is already spent, and the levers below come first. On a GPU, the
#    full profile: `python -m difflab train ddpm --profile full`.
# 2. **A faster sampler** at the same quality: DPM-Solver++ and Heun's method
#    reach in 10 to 20 steps what DDIM needs more for
#    ([fast sampling](fast-sampling.py)).
# 3. **A better network**: width, attention, the schedule, the prediction target
#    and the EMA, each measured at equal training time in
#    [better networks](better-networks.py).
#
# ## 7. The other profile
#
# This build used the profile in the box at the top of the page. The **full**
# profile (the default on a GPU) trains the 28x28 recipe of the table in
# Section 2 on MNIST for 6,000 steps of batch 256, with the network compiled.
# Its training time and scores come from a GPU run and are not shown
# here: a CPU build does not produce them, and this page does not estimate them. To
# build the site with it: `DIFFLAB_PROFILE=full make build` on a machine with a
# GPU and MNIST in `data/`.
#
# ## Summary
#
# | step | command | in Python |
# | --- | --- | --- |
# | data | `bash download-datasets.sh mnist` | `load_images("auto")` |
# | train | `python -m difflab train ddpm` | `load_or_train(get_recipe("ddpm"))` |
# | resume | the same command again | the same call again |
# | sample, export | `python -m difflab sample ddpm --out --png-dir --npz` | `Trained.sample(n, steps=50, generator=g)` |
# | score | `python -m difflab evaluate ddpm --n 1000` | `evaluate_samples(x, dataset)` |
#
# - The recipe fixes every hyper-parameter and keys the cache; the command line
#   and the Python API reach the same model and, from the same seed, the same
#   samples to the bit.
# - A score is reported beside the real-data floor and with a spread over seeds;
#   comparisons are paired (same noise) where they can be.
# - Few sampling steps cost quality, but past a few tens of DDIM steps the
#   trained network, not the sampler, limits the samples.
#
# ## Exercises
#
# 1. Train with `--steps 400` and `--steps 800` and plot the Frechet distance
#    against the number of training steps. Where does it level off?
# 2. Interrupt a training run with Ctrl-C, run the command again, and check with
#    `python -m difflab evaluate` that the result equals an uninterrupted run's.
# 3. Sample with `--sampler ddpm` (all 1,000 ancestral steps). Is it better than
#    DDIM with 50 steps at this training budget?
# 4. Train the conditional recipe `ddpm-cond` and sample with `--guidance 3`.
#    How do the confident fraction and the Frechet distance move?
#
# ## References
#
# - J. Ho, A. Jain, P. Abbeel. *Denoising Diffusion Probabilistic Models*.
#   NeurIPS 2020. [arXiv:2006.11239](https://arxiv.org/abs/2006.11239)
# - J. Song, C. Meng, S. Ermon. *Denoising Diffusion Implicit Models*. ICLR 2021.
#   [arXiv:2010.02502](https://arxiv.org/abs/2010.02502)
# - M. Heusel, H. Ramsauer, T. Unterthiner, B. Nessler, S. Hochreiter. *GANs
#   Trained by a Two Time-Scale Update Rule Converge to a Local Nash
#   Equilibrium* (the Frechet distance). NeurIPS 2017.
#   [arXiv:1706.08500](https://arxiv.org/abs/1706.08500)

# %%
run.finish(dataset=data.name)
