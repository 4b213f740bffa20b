# ---
# jupyter:
#   difflab:
#     cold_seconds: 45
#     cold_seconds_with_CIFAR10: 590
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
# # Project: a CIFAR-10 DDPM, end to end
#
# The same project as the [MNIST page](mnist.py), on colour images: the
# 32x32 photographs of CIFAR-10, the dataset on which Ho et al. (2020) showed
# diffusion samples competitive with GANs. It is the whole job, as you would do
# it on your own machine: fetch the data, read the recipe, train
# from the command line (with progress, checkpoints, Ctrl-C and resume), draw
# samples, score them beside the real data, export them as PNG files and a NumPy
# archive, and decide what to change first. Every command below is printed by the
# page for the data and profile it was built with, so you can copy it as it is.
#
# **What you will do**
#
# - get CIFAR-10 with `download-datasets.sh`, and see which data the page found;
# - read the `cifar10` recipe of both profiles, every hyper-parameter (the quick
#   profile is latent diffusion chosen for a laptop, the full profile the
#   network of Ho et al.);
# - train it with `python -m difflab train`, and see the command line find the
#   model the page's Python trained;
# - sample and export with `python -m difflab sample`: the exported images are,
#   bit for bit, the ones the Python API draws from the same seed;
# - score samples against the test split beside the real-data floor, with a
#   spread over seeds, and measure the cheapest thing to change (sampling steps).

# %% tags=["fold"]
# Imports and set-up (the page's provenance box starts here)
import dataclasses
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from difflab import cli
from difflab.data.images import DatasetMissingError, load_images
from difflab.eval.metrics import min_samples, real_data_floor
from difflab.notes import page, project
from difflab.pipelines.recipes import get_recipe, load_or_train, resolve_data

run = page.start()
quick = run.profile == "quick"

# %% [markdown]
# ## 1. The data
#
# CIFAR-10 is 60,000 colour images of 32x32 pixels in ten classes (airplane,
# automobile, bird, cat, deer, dog, frog, horse, ship, truck): 50,000 to train on,
# 10,000 to test against. From the project folder,
#
# ```bash
# bash download-datasets.sh cifar10
# ```
#
# fetches the official archive from the University of Toronto, checks it and
# unpacks it into `data/cifar-10-batches-py/` (the layout torchvision reads);
# the loader also reads a folder of PNGs, `data/CIFAR10/{train,test}/<class>/`,
# which is how a subset is shipped for offline machines. Unlike MNIST, CIFAR-10
# has no embedded stand-in. So that the page still runs, and still shows every
# step, a build without CIFAR-10 runs the same project, same recipe and same
# commands, on scikit-learn's 8x8 digits, and says so in a notice at the top of
# the page: everything on the page, figures and numbers, comes from the data the
# cell below names.

# %%
try:
    data = load_images("cifar10")  # from data/, as download-datasets.sh leaves it
except DatasetMissingError:
    data = load_images("digits")
    run.data_notice(
        "CIFAR-10",
        "scikit-learn's 8x8 digits (the same project, recipe and commands)",
        "bash download-datasets.sh cifar10",
    )
test = load_images(data.name, split="test")
CIFAR = data.name == "cifar10"
print(data.note)
project.show_data(data, test)  # the sizes of the splits, 64 training images
plt.show()

# %% [markdown]
# ## 2. The recipe
#
# A recipe (`difflab.pipelines.recipes`) is a frozen dataclass naming everything that
# decides the trained model: data, network, schedule, optimisation. On CIFAR-10
# the page trains the recipe `cifar10`, which has two profiles.
#
# **quick**, for a laptop, spends a CPU's ten minutes the way the
# [latent diffusion](../applications/latent-diffusion.py) page teaches: an
# autoencoder compresses each 32x32 colour image to a 16x16x4 latent (factor 2;
# 1,500 steps), and a small UNet (1.1M parameters) learns those latents,
# predicting v on the cosine schedule, conditioned on the class with label dropout
# so that it samples with classifier-free guidance
# ([conditioning](../applications/conditioning.py)); the two parts train within
# ten minutes on two CPU cores. It was chosen by measurement, not by analogy with
# MNIST: `python -m difflab bench laptop` trains it and the pixel recipe this page
# used before (`ddpm-cifar10`'s quick profile, a 1.1M-parameter UNet on the 32x32
# pixels) for the same ten minutes on the same machine and scores both by the
# measure of Section 5. Its run on 2026-12-07, on this project's two-core CPU
# machine (an AMD EPYC, two threads), 1,000 samples each (DDIM, 50 steps; the
# latent recipe at guidance weight $w = 2$), spreads by bootstrap over the
# samples: the latent recipe (autoencoder 60 s, then 4,325 UNet steps) reached a
# Frechet distance of 0.78 +- 0.07 beside a floor of 0.14, the pixel recipe
# (1,825 steps) 2.24 +- 0.10. Their distances to the floor, 0.65 and 2.11, differ
# by a factor of 3.24 +- 0.31. Each ran as its recipe says on this CPU: the
# latent recipe in bf16 (below), the pixel recipe, which has no such setting, in
# float32. A first bench, on 2026-12-06 on the project's Intel Xeon machine, both
# recipes in float32 and scored with the metric classifier of before (Section 5),
# gave 1.09 +- 0.08 against 2.83 +- 0.11, a factor of 2.94 +- 0.26; with a
# factor-4 autoencoder to 8x8x8 latents (and a UNet fitted to them) in place of
# this one, only 1.60 +- 0.14, and that autoencoder alone, decoding 1,000 test
# images it had encoded, was at a distance of 1.0 already, the factor-2 one at
# 0.03. The latent recipe's samples are also classified with confidence (0.9 or
# more) more often than the pixel recipe's, 0.309 +- 0.015 against
# 0.196 +- 0.013 (real images: 0.48). This page's recipe trains 1,200 UNet steps
# on one thread, far fewer than the bench's two threads reach in ten minutes, so
# its samples in Section 5 sit further from the floor than the bench's.
#
# On a CPU that does bf16 arithmetic in hardware (Intel's AMX or AVX512-BF16;
# this project's machines have them), the recipe trains its autoencoder and UNet,
# and the page trains its metric classifier, under bf16 autocast, and the UNet
# samples in bf16 too (the solver's arithmetic stays in float32). Two real-data
# builds on the Xeon, on one thread each, measured this, first in float32 then in
# bf16 (2026-12-07): the autoencoder trained in 224 s, then 166 s; the UNet in
# 636 s, then 400 s; the distance at 50 steps was 1.37 ± 0.04, then 1.34 ± 0.04
# (with the classifier of before), the same within its spread.
#
# **full**, the GPU default, is the CIFAR-10 network of Ho et al. (2020,
# Appendix B) in pixels: a 35.7M-parameter UNet with four resolutions,
# self-attention at 16x16 and dropout 0.1, trained with Adam at
# $2 \times 10^{-4}$, batch 128, a 5,000-step warm-up and an EMA of 0.9999, as in
# the paper, but for 50,000 steps where the paper trained 800,000, and
# unconditional. The table lists every field of both; the ones that differ are
# marked.
#
# Without CIFAR-10 the page trains the pixel recipe `ddpm-cifar10` on the 8x8
# digits instead (its quick profile, the network shrunk to two resolutions for 8x8
# images), so that every step of the project still runs.

# %%
NAME = "cifar10" if CIFAR else "ddpm-cifar10"
# the network's input fitted to the data found (a latent recipe: to its latents)
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
env = "" if CIFAR else f"DIFFLAB_DATASET={data.name} "
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
#   difflab train cifar10` trains on all of them (the full profile's
#   global batch of 128 is split between them).
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
project.loss_figure(trained, ylabel=LOSS)  # logged, and smoothed
plt.show()

# %% [markdown]
# Has the network learnt anything? Predicting zero, which is what the untrained
# network does (its output layer starts at zero), costs the mean square of the
# target: 1 for the noise, and 1 or a little more for v on latents scaled to unit
# variance. The check below wants the loss of the trained (EMA) network, the one
# that samples, on a few training batches to be below 1 by more than four
# standard errors over the batches, and it must fail for the untrained network on
# the same batches. (Not the logged losses: those were measured on other batches
# while the network was still changing.)

# %%
# The loss on the same eight training batches (project.batch_losses), mean and s.e.
ema, untrained = project.losses_before_and_after(trained, data, loss=loss_name)
# What this guarantees: the network predicts the noise better than zero does.
# Not that the samples are good (Section 5 measures them), nor that training has
# converged, nor anything about images outside the training set.
assert project.learnt(ema) and not project.learnt(untrained)

# %% [markdown]
# ## 4. Sampling and exporting
#
# `python -m difflab sample` draws samples with DDIM (50 steps, $\eta = 0$, by
# default; `--sampler ddpm` runs all $T$ ancestral steps) and writes a PNG grid
# (`--out`), one PNG per sample (`--png-dir`) and a compressed NumPy archive
# (`--npz`, uint8 images of shape (N, H, W, C) under `images`). The page runs that
# command and shows what it wrote. The Python API, `Trained.sample` (the page's
# `draw` below), gives the same images from the same seed, to the last bit, and
# other images from another seed; the package's tests check both (`test_cli.py`,
# on a model trained for a few steps, with and without a reduced budget). A
# conditional recipe draws the ten classes in turn, with guidance weight
# $w = 2$ (`--guidance 2`), and the figure puts real test images of the same
# classes beside the samples, a column per class.

# %%
out = Path(tempfile.mkdtemp(prefix="difflab-cifar10-"))
W = 2.0 if r.conditional else None  # the guidance weight w of a conditional recipe
n_show, per_row = (80, 10) if r.conditional else (64, 8)  # a column per class
guide = [] if W is None else ["--guidance", f"{W:g}"]
args = ["sample", NAME, *flags.split(), *guide, "--n", str(n_show)]
args += ["--steps", "50", "--seed", "0", *project.export_flags(out)]
with project.as_typed(args, env=env, dataset=data.name, folder=out):
    assert cli.main(args) == 0
exported, pngs = project.read_back(out)  # what the command wrote
assert len(pngs) == n_show and exported.shape[0] == n_show
guidance = "" if W is None else f", w = {W:g}"
title = f"Samples, DDIM 50 steps{guidance} ({r.profile}, {r.dataset})"
project.samples_beside_real(exported, test, per_row, title)
plt.show()

device = next(trained.net.parameters()).device


def draw(n: int, seed: int, ddim_steps: int = 50) -> torch.Tensor:
    """``n`` DDIM samples from seed ``seed``, exactly as the command line draws
    (a conditional recipe: the classes 0-9 in turn, guidance weight ``W``)."""
    g = torch.Generator(device).manual_seed(seed)
    cond = {"y": torch.arange(n, device=device) % 10} if r.conditional else None
    return trained.sample(
        n, steps=ddim_steps, cond=cond, guidance=W, generator=g, progress=False
    )


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
# dataset (the DDPM chapter explains it; on CIFAR-10 it is a small network
# trained on random 24x24 windows of the training images, not the Inception
# network of published FIDs, so the numbers are not comparable with the papers';
# until 2026-12-07 it trained on whole images, and distances quoted from before
# are in that network's features), with the **real-data floor** beside it:
# the same distance for as many real *training* images, which is what a perfect
# model would reach at that sample size. One number has a spread, so the page
# scores several seeds of samples (and several random subsets of real images for
# the floor) and reports the mean with its standard error.

# %%
# Samples per seed (the metric needs at least min_samples: a full-rank feature
# covariance) and seeds.
N_EVAL, SEEDS = (500, range(3)) if CIFAR else (500, range(4))
assert N_EVAL >= min_samples(data.name)
evaluate = ["evaluate", NAME, *flags.split(), *guide, "--n", str(N_EVAL)]
print(env + "python -m difflab " + " ".join(evaluate) + " --steps 50")

# Frechet distances of 5, 10 and 50 DDIM steps from the same seeds, and the floor
scores = project.steps_sweep(draw, data.name, N_EVAL, SEEDS)  # (steps, seed)
fd50 = project.gap_to_floor(
    scores, [real_data_floor(data.name, N_EVAL, seed=s)[0] for s in SEEDS], N_EVAL
)

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
# difference must be positive by more than k_se standard errors (over seeds: four,
# or Student's t where that is larger).
five = step_rows[0]
assert five["diff"] > project.k_se(len(SEEDS)) * five["diff_se"], five
# No assert on the 10-step difference against the gap: the gap's spread comes
# mostly from the floor's random subsets, too wide at these sample sizes for a
# check that holds on every build.

# %% [markdown]
# Read the table and the lines above for this build's numbers. Five steps are
# worse than fifty, and the assert checks it. How the step from ten to fifty
# compares with what remains between fifty steps and the real-data floor is
# printed, not checked, so this page does not show whether the network or the
# sampler limits the samples past ten steps. In order of cost, what to change
# next:
#
# 1. **Train longer, on more images.** The quick recipe is what ten minutes of a
#    laptop buy, on a subset of 5,000 training images; Ho et al. trained a 35.7M
#    network on all 50,000 for 800,000 steps. Start with the full profile on a
#    GPU, `python -m difflab train cifar10 --profile full`; for a longer run pass
#    a larger `--steps` (a new step count is a new recipe, trained from the
#    start, not an extension of a finished run).
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
# profile (the default on a GPU) trains the 35.7M-parameter network of the table
# in Section 2 on CIFAR-10 for 50,000 steps of batch 128, with the network
# compiled: about thirty times the parameters of the quick UNet, in pixels rather
# than in an autoencoder's latents (so no reconstruction error bounds it), on the
# whole dataset. What that adds, in training time, samples and Frechet distance,
# is **not yet measured**: no GPU run of this page has been recorded, and this
# page does not estimate it. To build the site with it:
# `DIFFLAB_PROFILE=full make build` on a machine with a GPU and CIFAR-10 in
# `data/`.
#
# ## Summary
#
# | step | command | in Python |
# | --- | --- | --- |
# | data | `bash download-datasets.sh cifar10` | `load_images("cifar10")` |
# | train | `python -m difflab train cifar10` | `load_or_train(get_recipe("cifar10"))` |
# | resume | the same command again | the same call again |
# | sample, export | `python -m difflab sample cifar10 --guidance 2 --out --png-dir --npz` | `Trained.sample(n, cond=..., guidance=2)` |
# | score | `python -m difflab evaluate cifar10 --guidance 2 --n 1000` | `evaluate_samples(x, dataset)` |
#
# - The same project as MNIST, and on a laptop the same kind of recipe: latent
#   diffusion with guidance, with three input channels; nothing in the code path
#   changes but the recipe's name.
# - The command line and the Python API reach the same model and, from the same
#   seed, the same samples to the bit (the package's `test_cli.py` checks it);
#   scores come with the real-data floor and a spread over seeds.
# - On a CPU the quick recipe's samples are blurry and far from the floor
#   (Section 5 prints how far); sharper ones need the full profile on a GPU,
#   not yet measured here.
#
# ## Exercises
#
# 1. With CIFAR-10 downloaded, train the quick recipe with `--steps 600` (half
#    the recipe's budget) and `--steps 2400`. How far does the Frechet distance
#    move towards the floor, and towards the autoencoder's own distance?
# 2. Interrupt a full-profile run on a GPU with Ctrl-C and resume it. How long
#    does the resumed run take to reach the loss it had?
# 3. Sample the same model with `--sampler ddpm` and with `--steps 50`. Which is
#    closer to the floor at this training budget?
# 4. Ho et al. flip the training images horizontally at random. Add the flip to
#    the training batches and compare the Frechet distance at equal steps.
#
# ## References
#
# - J. Ho, A. Jain, P. Abbeel. *Denoising Diffusion Probabilistic Models*.
#   NeurIPS 2020. [arXiv:2006.11239](https://arxiv.org/abs/2006.11239)
# - A. Krizhevsky. *Learning Multiple Layers of Features from Tiny Images*.
#   Technical report, University of Toronto, 2009 (the CIFAR-10 dataset).
# - J. Song, C. Meng, S. Ermon. *Denoising Diffusion Implicit Models*. ICLR 2021.
#   [arXiv:2010.02502](https://arxiv.org/abs/2010.02502)
# - M. Heusel, H. Ramsauer, T. Unterthiner, B. Nessler, S. Hochreiter. *GANs
#   Trained by a Two Time-Scale Update Rule Converge to a Local Nash
#   Equilibrium* (the Frechet distance). NeurIPS 2017.
#   [arXiv:1706.08500](https://arxiv.org/abs/1706.08500)

# %%
run.finish(dataset=data.name)
