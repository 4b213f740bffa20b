# ---
# jupyter:
#   difflab:
#     cold_seconds: 7
#     prerequisites:
#     - diffusion/ddpm.py
#     - foundations/sdes.py
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
# # Score matching and Langevin dynamics
#
# A diffusion model is, underneath, a model of the **score** $\nabla_x \log p(x)$:
# the direction in which the data density grows fastest. This page shows how a score
# can be learned without ever knowing $p$, and how samples are drawn from a score
# alone.
#
# **What you will learn**
#
# - the Fisher divergence (explicit score matching) and why it cannot be computed;
# - Hyvarinen's integration-by-parts trick (implicit score matching) and its sliced
#   version;
# - denoising score matching, and a numerical check that it differs from explicit
#   score matching by a constant that does not depend on the model;
# - Langevin dynamics, why it fails on well-separated modes, and how annealing over
#   noise levels (Song & Ermon 2019) repairs it.
#
# Everything runs on a Gaussian mixture whose density and score are known exactly
# (`difflab.toy.mixtures`), so every claim is checked against the truth.

# %% tags=["fold"]
# Imports and set-up (the page's provenance box starts here)
import math

import matplotlib.pyplot as plt
import torch
from torch.testing import assert_close

from difflab.notes import page
from difflab.score.matching import (
    denoising_score_matching_loss,
    explicit_score_matching_loss,
    implicit_score_matching_loss,
    sliced_score_matching_loss,
)
from difflab.score.samplers import annealed_langevin_sample, langevin_sample
from difflab.toy.mixtures import GaussianMixture, two_blobs

torch.set_num_threads(1)  # 2D toys: threads only add overhead
run = page.start()
F64 = torch.float64
gen = torch.Generator().manual_seed(0)

# %% [markdown]
# ## 1. The score and the Fisher divergence
#
# For a model $s_\theta(x)$ of the score, the natural loss is the Fisher divergence
# to the data density,
# $$ J_{\mathrm{ESM}}(\theta) = \mathbb{E}_{p(x)} \big\| s_\theta(x) - \nabla_x \log p(x) \big\|^2 . \tag{1} $$
# It needs $\nabla_x \log p$, the very thing we do not know. Hyvarinen (2005) integrates
# by parts (assuming $p\,s_\theta \to 0$ at infinity) to remove it:
# $$ J_{\mathrm{ESM}}(\theta) = \mathbb{E}_{p(x)} \Big[ \|s_\theta(x)\|^2 + 2\,\mathrm{tr}\big(\nabla_x s_\theta(x)\big) \Big] + \mathbb{E}_{p}\|\nabla_x \log p\|^2 . \tag{2} $$
# The bracket is the implicit score matching loss $J_{\mathrm{ISM}}$; the last term is a
# constant. The trace costs one backward pass per dimension, which is why sliced
# score matching (Song et al. 2019) replaces it by $v^\top (\nabla_x s_\theta) v$ for a
# random $v$ with $\mathbb{E}[v v^\top] = I$.
#
# (All losses on this page omit the customary factor $\tfrac12$, so they compare
# directly.) First the data: a mixture of two correlated Gaussians, and its score field.

# %%
mix = two_blobs()
x = mix.sample(100_000, gen, dtype=F64)

grid = (
    torch.stack(
        torch.meshgrid(
            torch.linspace(-4, 3.5, 25), torch.linspace(-3, 3, 21), indexing="xy"
        ),
        dim=-1,
    )
    .reshape(-1, 2)
    .double()
)
s = mix.score(grid)
s = s / s.norm(dim=1, keepdim=True).clamp_min(1e-9) ** 0.5  # shrink long arrows

fig, ax = plt.subplots(1, 2, figsize=(6.4, 2.6))
ax[0].scatter(*x[:3000].T, s=2, alpha=0.4)
ax[0].set_title("samples of p(x)")
ax[1].quiver(*grid.T, *s.T, color="C3")
ax[1].set_title(r"score $\nabla_x \log p(x)$ (arrow length $\|s\|^{1/2}$)")
for a in ax:
    a.set_aspect("equal")
plt.show()

# %% [markdown]
# Check Eq. (2) on a linear model $s(x) = A x + b$, for which
# $\mathrm{tr}(\nabla_x s) = \mathrm{tr}(A)$: implicit plus the Fisher constant
# equals explicit, and the sliced loss averages to the implicit one. Both sides are
# means over the same $N$ samples, so each check is a per-sample difference whose mean
# must be zero; its standard error (s.e.) is the spread of that difference over
# $\sqrt N$, and we require the mean within 4 s.e. (a correct identity fails this about
# once in 16,000 runs). The check has teeth: forgetting the factor 2 in front of the
# trace shifts the implicit side by $\mathrm{tr}(A) = -3$, dozens of standard errors.

# %%
A = torch.tensor([[-1.0, 0.4], [0.2, -2.0]], dtype=F64)
linear = lambda x: x @ A.T + 0.3
true_score = mix.score(x)
fisher = float((true_score**2).sum(-1).mean())
esm = explicit_score_matching_loss(linear, x, true_score).item()
ism = implicit_score_matching_loss(linear, x).item()
state = gen.get_state()  # to replay the projections v the sliced loss draws
ssm = sliced_score_matching_loss(linear, x, 1, gen).item()
v = torch.randn(x.shape, generator=torch.Generator().set_state(state), dtype=F64)


def mean_se(per_sample):
    """Mean and standard error of a per-sample quantity (N,)."""
    return per_sample.mean().item(), per_sample.std().item() / math.sqrt(
        len(per_sample)
    )


s_x = linear(x)
tr_A = A.trace()
gap_ism = (s_x - true_score).pow(2).sum(-1) - s_x.pow(2).sum(-1) - 2 * tr_A
gap_ism = gap_ism - true_score.pow(2).sum(-1)  # ESM - (ISM + Fisher), per sample
gap_ssm = 2 * (((v @ A.T) * v).sum(-1) - tr_A)  # SSM - ISM, per sample
assert_close(gap_ssm.mean().item(), ssm - ism)  # the replayed v are the ones used
(m1, se1), (m2, se2) = mean_se(gap_ism), mean_se(gap_ssm)
print(f"ESM = {esm:.4f}   ISM + E||grad log p||^2 = {ism + fisher:.4f}")
print(f"ESM - (ISM + Fisher) = {m1:+.4f} +- {se1:.4f}")
print(f"SSM - ISM            = {m2:+.4f} +- {se2:.4f}")
print(f"with the trace's factor 2 dropped: {m1 + tr_A.item():+.4f}")
assert abs(m1) < 4 * se1 and abs(m2) < 4 * se2
assert abs(m1 + tr_A.item()) > 4 * se1  # the wrong Eq. (2) is caught

# %% [markdown]
# ## 2. Denoising score matching
#
# Vincent (2011) noticed a second way round. Perturb the data,
# $\tilde x = x + \sigma \epsilon$ with $\epsilon \sim \mathcal N(0, I)$, so that
# $\tilde x \sim p_\sigma = p * \mathcal N(0, \sigma^2 I)$. The conditional score is
# known: $\nabla_{\tilde x} \log q(\tilde x \mid x) = -\epsilon / \sigma$. Then
# $$ J_{\mathrm{DSM}}(\theta) = \mathbb{E}_{x, \epsilon} \big\| s_\theta(\tilde x) + \epsilon / \sigma \big\|^2 \tag{3} $$
# and, expanding both squares and using
# $\mathbb{E}[\nabla \log q(\tilde x \mid x) \mid \tilde x] = \nabla \log p_\sigma(\tilde x)$,
# $$ J_{\mathrm{ESM}}(\theta; p_\sigma) = J_{\mathrm{DSM}}(\theta) + \mathbb{E}\|\nabla \log p_\sigma(\tilde x)\|^2 - \frac{D}{\sigma^2} . \tag{4} $$
# The constant does not involve $\theta$: minimising the tractable Eq. (3) minimises the
# Fisher divergence to the *noisy* density. Written with $\epsilon_\theta = -\sigma s_\theta$,
# $\sigma^2 J_{\mathrm{DSM}}$ is exactly DDPM's noise-prediction loss.
#
# A from-scratch Eq. (3), checked against the package, then Eq. (4) for three very
# different models on the same noise, each as a per-sample difference within 4
# standard errors of zero, as in Section 1. The check has teeth: the derivation needs
# the score of the *noisy* density $p_\sigma$; measuring the Fisher divergence to the
# clean $p$ instead leaves a gap of tens of standard errors that changes from model to
# model, so no constant could absorb it.

# %%
sigma = 0.5
eps = torch.randn(x.shape, generator=gen, dtype=F64)
x_noisy = x + sigma * eps
by_hand = ((linear(x_noisy) + eps / sigma) ** 2).sum(-1).mean()
assert_close(by_hand, denoising_score_matching_loss(linear, x, sigma, eps=eps))

p_sigma = mix.perturb(1.0, sigma)
score_sigma = p_sigma.score(x_noisy)
const_i = (score_sigma**2).sum(-1) - x.shape[1] / sigma**2  # per sample
const = const_i.mean().item()
models = {"-x": lambda x: -x, "Ax + b": linear, "exact score of p_sigma": p_sigma.score}
rows = []
for name, model in models.items():
    s_n = model(x_noisy)
    e = explicit_score_matching_loss(model, x_noisy, score_sigma).item()
    d = denoising_score_matching_loss(model, x, sigma, eps=eps).item()
    e_i = (s_n - score_sigma).pow(2).sum(-1)
    d_i = (s_n + eps / sigma).pow(2).sum(-1)
    gap, se = mean_se(e_i - d_i - const_i)  # ESM - DSM - constant: zero by Eq. (4)
    e_clean = (s_n - mix.score(x_noisy)).pow(2).sum(-1)  # Fisher divergence to p
    wrong, wrong_se = mean_se(e_clean - d_i - const_i)
    rows.append((name, e, d, gap, se, wrong, wrong_se))
    print(
        f"{name:>24}: ESM = {e:7.4f}  DSM = {d:7.4f}  "
        f"ESM - DSM - const = {gap:+.4f} +- {se:.4f}   "
        f"same with the score of p = {wrong:+6.2f} +- {wrong_se:.2f}"
    )
print(f"{'Eq. (4) constant':>24}: {const:.4f}")
for _, _, _, gap, se, wrong, wrong_se in rows:
    assert abs(gap) < 4 * se  # Eq. (4) within 4 standard errors
    assert abs(wrong) > 4 * wrong_se  # the clean density's score misses by far more
wrongs = [(r[5], r[6]) for r in rows]  # ... by an amount that depends on the model
assert abs(wrongs[0][0] - wrongs[2][0]) > 4 * math.hypot(wrongs[0][1], wrongs[2][1])
assert rows[2][1] < 1e-20  # the exact score has zero Fisher divergence ...
assert rows[2][2] > 0  # ... yet a positive DSM loss: the constant is the floor

# %% [markdown]
# The exact score of $p_\sigma$ has $J_{\mathrm{ESM}} = 0$ but
# $J_{\mathrm{DSM}} = D/\sigma^2 - \mathbb{E}\|\nabla\log p_\sigma\|^2 > 0$: a denoising
# loss never reaches zero, and its floor says nothing about the model. This is why
# training curves of diffusion models flatten at a positive value.
#
# ## 3. Langevin dynamics
#
# Given a score, Langevin dynamics draws samples: with step $\varepsilon$,
# $$ x_{k+1} = x_k + \frac{\varepsilon}{2} \nabla_x \log p(x_k) + \sqrt{\varepsilon}\, z_k, \quad z_k \sim \mathcal N(0, I), \tag{5} $$
# whose law tends to $p$ as $\varepsilon \to 0$ and $k \to \infty$ (Welling & Teh
# 2011). The catch, shown by Song & Ermon (2019, Fig. 3): with two well separated modes
# the chain almost never crosses between them, so the **mode weights** come from where
# the chains started, not from $p$. Their example: weights 0.2 and 0.8.

# %%
far = GaussianMixture(
    torch.tensor([[-4.0, -4.0], [4.0, 4.0]]),
    torch.eye(2).expand(2, 2, 2).clone(),
    torch.tensor([0.2, 0.8]),
)
x_init = 16 * torch.rand(4000, 2, generator=gen, dtype=F64) - 8  # uniform on [-8, 8]^2
x_langevin = langevin_sample(
    far.score, x_init, steps=1000, step_size=0.1, generator=gen, progress=False
)


def weight_of_first_mode(x):
    """Fraction of points in the lower-left half-plane, and its binomial s.e."""
    w = float((x.sum(-1) < 0).double().mean())
    return w, math.sqrt(w * (1 - w) / len(x))


w_plain, se_plain = weight_of_first_mode(x_langevin)
print(f"plain Langevin: weight of the lower-left mode {w_plain:.3f} +- {se_plain:.3f}")
print("(true 0.2; a uniform start puts about half the chains on each side)")

# %% [markdown]
# ## 4. Annealed Langevin dynamics
#
# Song & Ermon's fix (their Algorithm 1): run Langevin on a sequence of noisy densities
# $p_{\sigma_1}, \dots, p_{\sigma_L}$ with $\sigma_1$ large enough to merge the modes
# and $\sigma_L$ small, with step sizes
# $$ \alpha_i = \varepsilon\, \sigma_i^2 / \sigma_L^2 , \tag{6} $$
# which keeps the signal-to-noise ratio of each update about constant. At large
# $\sigma$ the chains move freely between modes and settle in the right proportions;
# the later levels only sharpen. Here the noise-conditional score
# $\nabla \log p_\sigma$ is exact (`GaussianMixture.perturbed_score`), so what is
# left is the error of finite steps: with 100 steps per level, runs of 20,000 chains
# put the weight at about 0.215, off by five of their standard errors; 300 steps per
# level bring it to within about half a point of 0.2, below the standard error of the
# 4,000 chains here. The weight is a binomial proportion, printed with its standard
# error $\sqrt{w(1-w)/n}$; we require it within 4 of them of the truth, and plain
# Langevin to miss by more than 4 of its own.

# %%
sigmas = torch.logspace(math.log10(20.0), math.log10(0.1), 10, dtype=F64)
x_annealed = annealed_langevin_sample(
    lambda x, sig: far.perturbed_score(x, 1.0, sig),
    x_init,
    sigmas,
    steps_per_sigma=300,
    eps=5e-3,
    generator=gen,
    progress=False,
)
w, se = weight_of_first_mode(x_annealed)
print(
    f"annealed Langevin: weight of the lower-left mode {w:.3f} +- {se:.3f} (true 0.2)"
)
assert abs(w - 0.2) < 4 * se  # right weights, to 4 binomial standard errors
assert abs(w_plain - 0.2) > 4 * se_plain  # plain Langevin misses by far more

fig, ax = plt.subplots(1, 3, figsize=(6.4, 2.6), sharex=True, sharey=True)
truth = far.sample(4000, gen)
for a, pts, title in zip(
    ax,
    (truth, x_langevin, x_annealed),
    ("exact samples", "Langevin, Eq. (5)", "annealed Langevin, Eq. (6)"),
    strict=True,
):
    a.scatter(*pts.T, s=2, alpha=0.4)
    a.set_title(
        f"{title}\nweight of lower-left mode {weight_of_first_mode(pts)[0]:.2f}"
    )
    a.set_aspect("equal")
plt.show()

# %% [markdown]
# ## Summary
#
# | on paper | in code |
# | --- | --- |
# | $J_{\mathrm{ESM}}$, Eq. (1) | `explicit_score_matching_loss(score_fn, x, true_score)` |
# | $J_{\mathrm{ISM}}$, Eq. (2) | `implicit_score_matching_loss(score_fn, x)` |
# | sliced score matching | `sliced_score_matching_loss(score_fn, x, n_projections, generator)` |
# | $J_{\mathrm{DSM}}$, Eq. (3) | `denoising_score_matching_loss(score_fn, x0, sigma)`; over SDE time: `dsm_loss` |
# | Langevin, Eq. (5) | `langevin_sample(score_fn, x_init, steps=, step_size=)` |
# | annealed Langevin, Eq. (6) | `annealed_langevin_sample(score_fn, x_init, sigmas, ...)` |
#
# Denoising score matching learns the score of a noisy density at the price of a
# constant floor; Langevin dynamics turns a score into samples but cannot weigh
# separated modes; noise at many levels fixes both. The next page,
# [score SDEs](score-sdes.py), takes the number of noise levels to infinity.
#
# ## Exercises
#
# 1. Prove Eq. (4): expand both squares and show the cross terms have equal
#    expectations.
# 2. Repeat the check of Section 2 with $\sigma = 0.05$. How does the Monte Carlo error
#    of $J_{\mathrm{DSM}}$ change, and why does this make small-$\sigma$ training noisy?
# 3. For a Gaussian target $\mathcal N(0, v)$, Eq. (5) is an AR(1) chain. Show its
#    stationary variance is $v / (1 - \varepsilon / (4v))$ and check it numerically.
# 4. In Section 4, drop the largest noise levels (start at $\sigma_1 = 2$). When do the
#    mode weights go wrong again?
#
# ## References
#
# - A. Hyvarinen. *Estimation of Non-Normalized Statistical Models by Score Matching*.
#   JMLR 2005. [jmlr.org/papers/v6/hyvarinen05a](https://jmlr.org/papers/v6/hyvarinen05a.html)
# - P. Vincent. *A Connection Between Score Matching and Denoising Autoencoders*.
#   Neural Computation 2011. [PDF](https://www.iro.umontreal.ca/~vincentp/Publications/smdae_techreport.pdf)
# - Y. Song, S. Garg, J. Shi, S. Ermon. *Sliced Score Matching*. UAI 2019.
#   [arXiv:1905.07088](https://arxiv.org/abs/1905.07088)
# - Y. Song, S. Ermon. *Generative Modeling by Estimating Gradients of the Data
#   Distribution*. NeurIPS 2019. [arXiv:1907.05600](https://arxiv.org/abs/1907.05600)
# - M. Welling, Y. W. Teh. *Bayesian Learning via Stochastic Gradient Langevin
#   Dynamics*. ICML 2011.

# %%
run.finish(dataset="synthetic Gaussian mixtures (exact score)")
