# ---
# jupyter:
#   difflab:
#     cold_seconds: 102
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
# - read the `ddpm-cifar10` recipe of both profiles, every hyper-parameter (the
#   full profile is the network of Ho et al.);
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
# decides the trained model: data, network, schedule, optimisation.
# `ddpm-cifar10` has two profiles. **full**, the GPU default, is the CIFAR-10
# network of Ho et al. (2020, Appendix B): a 35.7M-parameter UNet with four
# resolutions, self-attention at 16x16 and dropout 0.1, trained with Adam at
# $2 \times 10^{-4}$, batch 128, a 5,000-step warm-up and an EMA of 0.9999, as in
# the paper, but for 50,000 steps where the paper trained 800,000. **quick** is a
# 1.1M-parameter smoke test of the same pipeline for a CPU. The table lists every
# field of both; the ones that differ are marked.
#
# On a CPU even the quick network takes a few seconds a step at 32x32 on a busy
# machine, so when this page is built on a CPU *with* CIFAR-10 it trains for a
# **reduced budget** of `QUICK_CIFAR_STEPS` steps instead of the recipe's 300
# (the `--steps` flag below), with the EMA's decay raised to the power 300/100
# so that the average holds as little of the untrained network as the recipe's
# does (`pipelines.recipes.with_steps`; the MNIST project explains it): enough to
# see the pipeline work and the loss fall, not enough for recognisable objects. On the digits it trains the recipe
# unchanged (the network shrinks to two resolutions for 8x8 images).

# %%
QUICK_CIFAR_STEPS = 100  # the quick profile's budget at 32x32 on a CPU
steps = QUICK_CIFAR_STEPS if (quick and CIFAR) else None  # None: the recipe's own
# the network's input fitted to the data found, as training does
recipe, _ = resolve_data(
    dataclasses.replace(get_recipe("ddpm-cifar10"), dataset=data.name)
)
other = "full" if quick else "quick"
twin = get_recipe("ddpm-cifar10", other)
# field by field, this build's profile first (the reduced budget beside the recipe's)
project.show_recipe(recipe, twin, steps=steps, fields=("dataset", "schedule", "T"))

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
print(
    f"{env}python -m difflab train ddpm-cifar10 {flags} {' '.join(train_steps)}".rstrip()
)
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
#   difflab train ddpm-cifar10` trains on all of them (the full profile's
#   global batch of 128 is split between them).
#
# The page trains through the same function the command line calls,
# `load_or_train`, with the same recipe, so both reach the same cache entry: the
# command line run after it finds the model instead of training again.

# %%
trained = load_or_train(recipe, steps=steps, progress=False)
r = trained.recipe
project.describe_training(trained, loss="L_simple")  # what was trained, its loss

# The command line, run in this kernel: it must find the model the page trained.
with project.dataset_env(data.name):
    status = cli.main(
        ["train", "ddpm-cifar10", *flags.split(), "--no-progress", *train_steps]
    )
assert status == 0

# %%
project.loss_figure(trained, ylabel=r"$L_\mathrm{simple}$")  # logged, and smoothed
plt.show()

# %% [markdown]
# Has the network learnt anything? Predicting zero, which is what the untrained
# network does (its output layer starts at zero), costs the mean square of the
# noise, 1. The check below wants the loss of the trained (EMA) network, the one
# that samples, on a few training batches to be below 1 by more than four
# standard errors over the batches, and it must fail for the untrained network on
# the same batches. (Not the logged losses: the reduced budget on a CPU with
# CIFAR-10 logs too few of them for a standard error.)

# %%
# The loss on the same eight training batches (project.batch_losses), mean and s.e.
ema, untrained = project.losses_before_and_after(trained, data, loss="L_simple")
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
# on a model trained for a few steps, with and without a reduced budget).

# %%
out = Path(tempfile.mkdtemp(prefix="difflab-cifar10-"))
n_show = 64
args = ["sample", "ddpm-cifar10", *flags.split(), *model_steps, "--n", str(n_show)]
args += ["--steps", "50", "--seed", "0", *project.export_flags(out)]
with project.as_typed(args, env=env, dataset=data.name, folder=out):
    assert cli.main(args) == 0
exported, pngs = project.read_back(out)  # what the command wrote
assert len(pngs) == n_show and exported.shape[0] == n_show
project.image_figure(exported, 8, f"Samples, DDIM 50 steps ({r.profile}, {r.dataset})")
plt.show()

device = next(trained.net.parameters()).device


def draw(n: int, seed: int, ddim_steps: int = 50) -> torch.Tensor:
    """``n`` DDIM samples from seed ``seed``, exactly as the command line draws."""
    g = torch.Generator(device).manual_seed(seed)
    return trained.sample(n, steps=ddim_steps, generator=g, progress=False)


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
# trained on CIFAR-10, not the Inception network of published FIDs, so the
# numbers are not comparable with the papers'), with the **real-data floor** beside it:
# the same distance for as many real *training* images, which is what a perfect
# model would reach at that sample size. One number has a spread, so the page
# scores several seeds of samples (and several random subsets of real images for
# the floor) and reports the mean with its standard error.

# %%
# Samples per seed (the metric needs at least min_samples: a full-rank feature
# covariance) and seeds; fewer at 32x32, where each sample costs more on a CPU.
N_EVAL, SEEDS = (200, range(3)) if CIFAR else (500, range(4))
assert N_EVAL >= min_samples(data.name)
print(
    f"{env}python -m difflab evaluate ddpm-cifar10 {flags} {' '.join(model_steps)} "
    f"--n {N_EVAL} --steps 50".replace("  ", " ")
)

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
# 1. **Train longer.** The quick profile is a smoke test: on CIFAR-10 its
#    budget is a few hundred images seen per class. Ho et al. trained for 800,000
#    steps; start with the full profile on a GPU,
#    `python -m difflab train ddpm-cifar10 --profile full`; for a longer run pass
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
# compiled. Its training time, samples and scores come from a GPU run and are not
# shown here: a CPU build does not produce them, and this page does not estimate
# them. To build the site with it: `DIFFLAB_PROFILE=full make build` on a machine
# with a GPU and CIFAR-10 in `data/`.
#
# ## Summary
#
# | step | command | in Python |
# | --- | --- | --- |
# | data | `bash download-datasets.sh cifar10` | `load_images("cifar10")` |
# | train | `python -m difflab train ddpm-cifar10` | `load_or_train(get_recipe("ddpm-cifar10"))` |
# | resume | the same command again | the same call again |
# | sample, export | `python -m difflab sample ddpm-cifar10 --out --png-dir --npz` | `Trained.sample(n, steps=50, generator=g)` |
# | score | `python -m difflab evaluate ddpm-cifar10 --n 1000` | `evaluate_samples(x, dataset)` |
#
# - The same project as MNIST with three input channels and a bigger network:
#   nothing in the code path changes but the recipe's name.
# - The command line and the Python API reach the same model and, from the same
#   seed, the same samples to the bit (the package's `test_cli.py` checks it);
#   scores come with the real-data floor and a spread over seeds.
# - On a CPU the quick profile only proves the pipeline; the samples worth
#   looking at come from the full profile on a GPU.
#
# ## Exercises
#
# 1. With CIFAR-10 downloaded, train the quick recipe with `--steps 300` (the
#    recipe's budget) and `--steps 1000`. How far does the Frechet distance move
#    towards the floor?
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
