# ---
# jupyter:
#   difflab:
#     cold_seconds: 13
#     cold_seconds_with_MNIST: 214
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
# - read the recipe (`mnist` on MNIST, `ddpm` on the 8x8 digits) of both
#   profiles, every hyper-parameter;
# - train it with `python -m difflab train`, and see the command line find the
#   model the page's Python trained;
# - sample and export with `python -m difflab sample`: the exported images are,
#   bit for bit, the ones the Python API draws from the same seed;
# - score samples against the test split beside the real-data floor, with a
#   spread over seeds, and measure the cheapest thing to change (sampling steps).

# %% tags=["fold"]
# Imports and set-up (the page's provenance box starts here)
import dataclasses
import math
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from difflab import cli
from difflab.data.images import load_images
from difflab.eval.metrics import evaluate_samples, min_samples, real_data_floor
from difflab.notes import page, project
from difflab.notes.project import mean_se
from difflab.notes.tables import show_table
from difflab.pipelines.recipes import get_recipe, load_or_train, resolve_data

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
project.show_data(data, test)  # the sizes of the splits, 64 training images
plt.show()

# %% [markdown]
# ## 2. The recipe
#
# A recipe (`difflab.pipelines.recipes`) is a frozen dataclass naming everything that
# decides the trained model: data, network, schedule, optimisation. On MNIST the
# page trains the recipe `mnist`, which has two profiles:
#
# - **quick**, the CPU default, is *latent diffusion* (the
#   [latent diffusion](../applications/latent-diffusion.py) chapter): a small
#   autoencoder squeezes each image, padded to 32x32, into a 4x8x8 latent (a
#   sixteenth of the pixels), and a 0.65M-parameter UNet learns the latents,
#   conditioned on the digit's label (dropped one time in ten, so that the same
#   network also learns the unconditional model and classifier-free guidance
#   can be used, [conditioning](../applications/conditioning.py)), with
#   v-prediction on the cosine schedule
#   ([better networks](better-networks.py)), 1,200 steps of batch 128. On a CPU
#   that does bf16 in hardware (Intel's AMX or AVX512-BF16) both parts train, and
#   the UNet samples, in bf16: about two minutes on one core of this project's
#   AMD EPYC (2026-12-07: autoencoder 500 steps in about 35 s, UNet 0.075 s a
#   step).
# - **full**, the GPU default, is the conditional pixel DDPM at 28x28: a
#   64-channel UNet with self-attention at 7x7, 6,000 steps of batch 256,
#   compiled.
#
# Until 2026-12-07 the quick UNet trained 2,000 steps. Measured on that EPYC
# core with Section 5's three seeds of 500 samples ($w = 2$, DDIM 50 steps), the
# Frechet distance sat on the floor (0.116 ± 0.018) at every length tried, while
# the confident fraction rose with the steps; 1,200 steps keep it above the real
# test images' 96.1% for 60% of the UNet's cost:
#
# | UNet steps | confident % | Frechet distance |
# | ---: | ---: | ---: |
# | 800 | 93.9 ± 0.8 | 0.113 ± 0.001 |
# | 1,000 | 96.1 ± 1.0 | 0.093 ± 0.004 |
# | 1,200 | 97.6 ± 0.5 | 0.101 ± 0.005 |
# | 1,500 | 98.3 ± 0.4 | 0.112 ± 0.004 |
# | 2,000 | 98.9 ± 0.3 | 0.112 ± 0.005 |
#
# Those runs used an autoencoder trained 1,500 steps. The same measurement with
# the 1,200-step UNet found the autoencoder's length hardly mattering, so since
# 2026-12-07 it trains 500 steps, a third of the cost (paired over the seeds, 500
# against 1,500 steps: +0.007 ± 0.002 in distance, far inside the floor's spread
# of 0.018, and +0.3 ± 0.4 points confident):
#
# | autoencoder steps | confident % | Frechet distance |
# | ---: | ---: | ---: |
# | 500 | 97.9 ± 0.3 | 0.109 ± 0.003 |
# | 750 | 97.7 ± 0.3 | 0.115 ± 0.005 |
# | 1,500 | 97.6 ± 0.5 | 0.101 ± 0.005 |
#
# Why latents on a laptop, measured: `python -m difflab bench laptop --only mnist`
# trains this recipe and the conditional pixel recipe `ddpm-cond` (a UNet on the
# 28x28 pixels) for the same wall-clock time on the real MNIST, the autoencoder's
# training counted inside, draws 1,000 samples of each (DDIM, 50 steps, guidance
# $w = 2$ for both) and scores them as Section 5 does. Run on this project's
# two-core CPU machine (Intel Xeon) on 2026-12-06, once, not by this build, in
# float32, with the autoencoder of 1,500 steps:
#
# | recipe (threads, training time) | Frechet distance (floor 0.04) | confident (real 0.96) | UNet steps |
# | --- | --- | --- | --- |
# | `mnist`, latents (1, 540 s) | 0.12 ± 0.03 | 0.991 ± 0.003 | 2,950 |
# | `ddpm-cond`, pixels (1, 540 s) | 0.31 ± 0.04 | 0.787 ± 0.013 | 1,025 |
# | `mnist`, latents (2, 600 s) | 0.12 ± 0.03 | 0.995 ± 0.002 | 6,125 |
# | `ddpm-cond`, pixels (2, 600 s) | 0.07 ± 0.03 | 0.947 ± 0.007 | 1,925 |
#
# On one thread for about this recipe's own time (the site build runs each page
# on one thread), the latent recipe wins on both measures: its distance to the
# floor is 3.4 ± 0.5 times smaller (a bootstrap over the samples), and four in
# five pixel samples are confidently classified against nearly all latent ones.
# Given twice the compute the pixel recipe, at almost twice the steps, comes
# closer to the floor than the latent one (0.47 ± 0.15 times its distance),
# while the latent samples stay the more often recognised; the latent recipe's
# distance did not move with twice the steps, which suggests that its
# autoencoder, not the UNet, is what limits it there (a guess that this page
# does not test). So the choice is the laptop's: on a GPU the full profile
# trains pixels. The recipe's docstring lists the earlier measurements that led
# to this recipe (five minutes of UNet training each on one thread: 18% of
# samples confidently classified with eps-prediction on the linear schedule,
# 56-69% with v on cosine, 83% with the label and 99% with the label and
# guidance); Section 5 shows the last step of that choice, conditioning and
# guidance, on this build's model.
#
# Without MNIST the page trains the `ddpm` recipe on the 8x8 digits instead
# (unconditional, in pixels, 1,000 steps: the model of the DDPM chapter). The
# table lists every field of both profiles of the recipe this build used; the
# ones that differ are marked.

# %%
NAME = "mnist" if MNIST else "ddpm"
# the network's input fitted to the data found, as training does
recipe, _ = resolve_data(dataclasses.replace(get_recipe(NAME), dataset=data.name))
other = "full" if quick else "quick"
twin = get_recipe(NAME, other)
project.show_recipe(recipe, twin)  # field by field, this build's profile first

# %% [markdown]
# ## 3. Training from the command line
#
# `python -m difflab train` trains a recipe, or finds it in the cache. The
# commands for the model of this page (printed from the recipe, so they match
# what was built):

# %%
env = "" if MNIST else f"DIFFLAB_DATASET={data.name} "
flags = f"--profile {run.profile}"
print(f"{env}python -m difflab train {NAME} {flags}")
print("python -m difflab cache list")

# %% [markdown]
# What happens when you run it:
#
# - **Progress.** A progress bar shows the step, the loss and the steps per
#   second (`--no-progress` hides it).
# - **Checkpoints.** Every `checkpoint_every` steps (the recipe's table above) the
#   model, the EMA, the optimiser and every random generator are written,
#   atomically, to `.cache/difflab/ddpm/<key>.pt` (the autoencoder of a latent
#   recipe is trained first and cached on its own); the key hashes the recipe and
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
#   difflab train mnist --profile full` trains on all of them.
#
# The page trains through the same function the command line calls,
# `load_or_train`, with the same recipe, so both reach the same cache entry: the
# command line run after it finds the model instead of training again.

# %%
trained = load_or_train(recipe, progress=False)
r = trained.recipe
loss_name = f"{r.train.prediction}-prediction loss"
project.describe_training(trained, loss_name)  # what was trained, its loss

# The command line, run in this kernel: it must find the model the page trained.
with project.dataset_env(data.name):
    status = cli.main(["train", NAME, *flags.split(), "--no-progress"])
assert status == 0

# %%
LOSS = {"eps": r"$L_\mathrm{simple}$", "v": "v-prediction loss"}[r.train.prediction]
project.loss_figure(trained, ylabel=LOSS)  # the logged loss, smoothed beside it
plt.show()

# %% [markdown]
# Has the network learnt anything? Predicting zero, which is what the untrained
# network does (its output layer starts at zero), costs the mean square of the
# target: 1 for the noise, and 1 or a little more for v on latents scaled to unit
# variance. The check below wants the loss of the trained (EMA) network, the one
# that samples, on a few training batches to be below 1 by more than four
# standard errors over the batches, and it must fail for the untrained network on
# the same batches.

# %%
# The loss on the same eight training batches (project.batch_losses), mean and s.e.
ema_losses, init_losses = project.losses_before_and_after(trained, data, loss_name)
# What this guarantees: the network predicts its target better than zero does.
# Not that the samples are good (Section 5 measures them), nor that training has
# converged, nor anything about images outside the training set.
assert project.learnt(ema_losses) and not project.learnt(init_losses)

# %% [markdown]
# ## 4. Sampling and exporting
#
# `python -m difflab sample` draws samples with DDIM (50 steps, $\eta = 0$, by
# default; `--sampler ddpm` runs all $T$ ancestral steps; a conditional recipe
# draws the digits 0-9 in turn, with guidance weight `--guidance`; a latent
# recipe decodes its latents) and writes a PNG grid
# (`--out`), one PNG per sample (`--png-dir`) and a compressed NumPy archive
# (`--npz`, uint8 images of shape (N, H, W, C) under `images`). The page runs that
# command and reads back what it wrote. The same samples come from the Python
# API, `Trained.sample`, with the same seed (the page's `draw` below, which
# Section 5 scores), to the last bit, and a different seed gives different
# images: the package's tests check both (`test_cli.py`, on a pixel recipe and
# on a guided latent one like this page's, each trained for a few steps).

# %%
out = Path(tempfile.mkdtemp(prefix="difflab-mnist-"))
# Classifier-free guidance weight of the conditional recipe (w = 1: the plain
# conditional model; Section 5 compares 0, 1 and this)
W = 2.0 if r.conditional else None
n_show, per_row = (80, 10) if r.conditional else (64, 8)  # a column per digit
guide = [] if W is None else ["--guidance", f"{W:g}"]
args = [
    "sample", NAME, *flags.split(), *guide,
    "--n", str(n_show), "--steps", "50", "--seed", "0",
    *project.export_flags(out),  # --out, --png-dir and --npz into out
]  # fmt: skip
with project.as_typed(args, env=env, dataset=data.name, folder=out):
    assert cli.main(args) == 0


# %% tags=["fold"]
# Helpers: the command line's labels, and samples drawn exactly as it draws them
device = next(trained.net.parameters()).device


def labels_of(n: int) -> torch.Tensor:
    """The command line's labels for ``n`` conditional samples: 0-9 in turn."""
    return torch.arange(n, device=device) % 10


def draw(n: int, seed: int, ddim_steps: int = 50, w: float | None = W) -> torch.Tensor:
    """``n`` DDIM samples from seed ``seed``, exactly as the command line draws
    (a conditional recipe: the digits 0-9 in turn, guidance weight ``w``; None:
    the conditional model alone)."""
    g = torch.Generator(device).manual_seed(seed)
    cond = {"y": labels_of(n)} if r.conditional else None
    return trained.sample(
        n, steps=ddim_steps, cond=cond, guidance=w, generator=g, progress=False
    )


# %%
exported, pngs = project.read_back(out)  # what the command wrote
assert len(pngs) == n_show and exported.shape[0] == n_show
guidance = "" if W is None else f", w = {W:g}"
project.image_figure(
    exported, per_row, f"Samples, DDIM 50 steps{guidance} ({r.profile}, {r.dataset})"
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
# covariance) and seeds.
N_EVAL, SEEDS = (500, range(3)) if MNIST else (500, range(4))
# A mean over n seeds has n - 1 degrees of freedom: four standard errors, or
# Student's t (two-sided 95%) where that is larger (4.30 for three seeds).
K_SE = project.k_se(len(SEEDS))
assert N_EVAL >= min_samples(data.name)
evaluate = ["evaluate", NAME, *flags.split(), *guide, "--n", str(N_EVAL)]
print(env + "python -m difflab " + " ".join(evaluate) + " --steps 50")

# Scores of 5, 10 and 50 DDIM steps from the same seeds: (steps, seed) -> scores
scores = project.steps_sweep(draw, data.name, N_EVAL, SEEDS)
floors = [real_data_floor(data.name, N_EVAL, seed=s) for s in SEEDS]
fd50 = project.gap_to_floor(scores, [f[0] for f in floors], N_EVAL)  # and prints it
conf, conf_se = mean_se(scores[50, s]["confident"] for s in SEEDS)
real_conf, real_conf_se = mean_se(f[1] for f in floors)
test_conf = evaluate_samples(test.images, data.name)["confident"]
test_conf_se = math.sqrt(test_conf * (1 - test_conf) / len(test))
print(
    f"confidently classified (top probability >= 0.9): samples {conf:.1%} +- "
    f"{conf_se:.1%}; real test images {test_conf:.1%} +- {test_conf_se:.1%} "
    f"(all {len(test):,}), real training images {real_conf:.1%} +- {real_conf_se:.1%}"
)

# %% [markdown]
# The **confident fraction** is the share of images to which the metric's
# classifier gives one digit a probability of at least 0.9: a sample a reader
# would recognise scores high, a blob low. Real images set its ceiling (the
# classifier is not perfect on them either). For a conditional recipe there is
# one more number, cheap to measure and the last step of the choice in Section 2:
# the same trained network sampled unconditionally ($w = 0$, the label replaced
# by the null label), conditionally ($w = 1$), and with guidance ($w = 2$). The
# samples start from the same noise in the three rows, so their differences are
# paired over seeds.

# %% tags=["fold"]
# Guidance weights compared (conditional recipe only): w = 0 and 1 beside w = W,
# with their table
if r.conditional:
    guided = {(W, s): scores[50, s] for s in SEEDS}  # (w, seed) -> scores
    for w in (0.0, 1.0):
        for seed in SEEDS:
            x = draw(N_EVAL, seed, 50, w=None if w == 1.0 else w)
            guided[w, seed] = evaluate_samples(x, data.name)
    guide_rows = []
    for w in (0.0, 1.0, W):
        row = {"w": w}
        for key in ("confident", "fd"):
            m, se = mean_se(guided[w, s][key] for s in SEEDS)
            d, d_se = mean_se(guided[w, s][key] - guided[W, s][key] for s in SEEDS)
            row.update({key: m, key + "_se": se, "d" + key: d, "d" + key + "_se": d_se})
        row["confident"] *= 100
        row["confident_se"] *= 100
        guide_rows.append(row)
    show_table(
        guide_rows,
        columns=["w", "confident", "fd", "dfd"],
        headers={
            "w": "guidance w",
            "confident": "confident %",
            "fd": "Frechet distance",
            "dfd": f"FD minus w = {W:g} (paired)",
        },
        digits={"w": 0, "confident": 1, "fd": 3, "dfd": 3},
        spread={"confident": "confident_se", "fd": "fd_se", "dfd": "dfd_se"},
        signed=["dfd"],
        caption=f"One trained network, three guidance weights ({len(SEEDS)} seeds "
        f"of {N_EVAL} samples, DDIM 50 steps; mean ± s.e. over seeds)",
    )
    uncond = guide_rows[0]
    print(
        f"unconditional (w = 0): {uncond['confident']:.1f}% +- "
        f"{uncond['confident_se']:.1f}% confident; with the label and w = {W:g}: "
        f"{100 * conf:.1f}% +- {100 * conf_se:.1f}%"
    )
    # The laptop recipe's promise: at least 80% of samples recognisable, by more
    # than K_SE standard errors over seeds.
    assert conf - K_SE * conf_se > 0.80, (conf, conf_se)

# %% [markdown]
# ## 6. What to change first
#
# The cheapest change is the number of sampling steps: it needs no retraining.
# The table compares 5, 10 and 50 DDIM steps on the same noise $x_T$ (the same
# seeds), so the difference to 50 steps is a *paired* difference, whose spread
# over seeds is much smaller than that of either score.

# %%
# The table (paired against 50 steps), then what 5 and 10 steps cost
step_rows = project.show_steps(scores, fd50, N_EVAL)
# Five DDIM steps are too coarse a solve of the probability-flow ODE: the paired
# difference must be positive by more than K_SE standard errors (over seeds).
five = step_rows[0]
assert five["diff"] > K_SE * five["diff_se"], five
# No assert on the 10-step difference against the gap: the gap's spread comes
# mostly from the floor's random subsets, and with four seeds the margin was as
# small as 2.6 standard errors in one run on the digits (other seeds: 5.5).

# %% [markdown]
# Read the table and the lines above for this build's numbers. Five steps are
# worse than fifty, and the assert checks it. How the step from ten to fifty
# compares with what remains between fifty steps and the real-data floor is
# printed, not checked, so this build does not show whether the network or the
# sampler limits the samples past ten steps. Runs made while writing this page,
# not checked by this build, found that step a fifth to two fifths of the gap on
# the 8x8 digits (the `ddpm` recipe); on MNIST with the latent recipe (one run
# of its 2,000-step UNet, three seeds of 500), fifty steps scored within the
# floor's spread (0.115 ± 0.007 against 0.118 ± 0.019) while ten steps were
# still measurably worse (+0.049 ± 0.002). A sharper verdict needs more samples,
# the floor's spread being the larger one. In order of cost, what to change next:
#
# 1. **Train longer.** `--steps N` on `train`, `sample` and `evaluate` sets the
#    UNet's budget (and fits the EMA to it); on a GPU, the full profile:
#    `python -m difflab train mnist --profile full`.
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
# profile (the default on a GPU) trains the conditional 28x28 pixel recipe of the
# table in Section 2 on MNIST for 6,000 steps of batch 256, with the network
# compiled.
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
# | train | `python -m difflab train mnist` | `load_or_train(get_recipe("mnist"))` |
# | resume | the same command again | the same call again |
# | sample, export | `python -m difflab sample mnist --guidance 2 --out --png-dir --npz` | `Trained.sample(n, cond=..., guidance=2)` |
# | score | `python -m difflab evaluate mnist --guidance 2 --n 1000` | `evaluate_samples(x, dataset)` |
#
# - The recipe fixes every hyper-parameter and keys the cache; the command line
#   and the Python API reach the same model and, from the same seed, the same
#   samples to the bit (the package's `test_cli.py` checks it).
# - A score is reported beside the real-data floor and with a spread over seeds;
#   comparisons are paired (same noise) where they can be.
# - Five DDIM steps cost quality, measurably; whether the network or the sampler
#   limits the samples past ten steps, this page prints but does not check.
#
# ## Exercises
#
# 1. Train with `--steps 1000` and `--steps 4000` and plot the Frechet
#    distance and the confident fraction against the number of training steps.
#    Where do they level off?
# 2. Interrupt a training run with Ctrl-C, run the command again, and check with
#    `python -m difflab evaluate` that the result equals an uninterrupted run's.
# 3. Sample with `--sampler ddpm` (all 1,000 ancestral steps). Is it better than
#    DDIM with 50 steps at this training budget?
# 4. Sample with `--guidance 4` and `--guidance 8`. How do the confident
#    fraction and the Frechet distance move, and what do the samples lose?
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
