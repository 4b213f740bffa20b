# ---
# jupyter:
#   difflab:
#     cold_seconds: 5
#     prerequisites:
#     - foundations/probability.py
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
# # Markov chains
#
# The forward process of a diffusion model is a Markov chain: each noisy image
# depends on the past only through the image one step before. This page builds the
# two ideas we need from Markov chain theory, the *stationary distribution* and
# *forgetting the start*, first for a chain on a few discrete states, then for the
# Gaussian chain that DDPM uses.
#
# **What you will learn**
#
# - how a transition matrix moves a distribution, and why the stationary
#   distribution is a left eigenvector with eigenvalue 1;
# - how fast a chain forgets where it started (the second eigenvalue);
# - the Gaussian AR(1) chain $x_t = \sqrt{1-\beta}\,x_{t-1} + \sqrt{\beta}\,\epsilon_t$,
#   its closed-form marginals, and why it converges to $\mathcal{N}(0, 1)$ from
#   any start: the DDPM forward process seen as a chain.

# %% tags=["fold"]
# Imports and set-up (the page's provenance box starts here)
import math

import matplotlib.pyplot as plt
import torch
from torch.testing import assert_close

from difflab.diffusion.schedules import linear_betas
from difflab.foundations import gaussians as G
from difflab.foundations import markov as M
from difflab.notes import page

run = page.start()
F64 = torch.float64

# %% [markdown]
# ## 1. Discrete chains and transition matrices
#
# A sequence of random states $x_0, x_1, \dots$ is a Markov chain when the next
# state depends on the history only through the current one:
#
# $$ p(x_t \mid x_{t-1}, x_{t-2}, \dots, x_0) = p(x_t \mid x_{t-1}). \tag{1} $$
#
# On $K$ states a time-homogeneous chain is a $K\times K$ matrix with
# $P_{ij} = p(x_t = j \mid x_{t-1} = i)$, whose rows sum to one. If the row
# vector $p_t$ holds the law of $x_t$, summing over the previous state gives
#
# $$ p_t(j) = \sum_i p_{t-1}(i)\,P_{ij}, \quad\text{i.e.}\quad p_t = p_{t-1}P = p_0 P^t. \tag{2} $$
#
# A distribution $\pi$ that one step leaves unchanged,
#
# $$ \pi = \pi P, \qquad \textstyle\sum_j \pi_j = 1, \tag{3} $$
#
# is *stationary*. Transposing, $P^\top\pi^\top = \pi^\top$: $\pi$ is an
# eigenvector of $P^\top$ (a left eigenvector of $P$) with eigenvalue 1. Such an
# eigenvalue always exists because $P\mathbf{1} = \mathbf{1}$ (rows sum to one),
# and $P$ and $P^\top$ share eigenvalues. When the chain is irreducible (every
# state reachable from every other) and aperiodic, the Perron-Frobenius theorem
# says that $\pi$ is unique with positive entries, all other eigenvalues have
# modulus $<1$, and $p_t \to \pi$ from any start. If $P$ is diagonalisable, writing
# $p_0 - \pi$ in the left eigenvectors shows the error shrinks like the largest
# remaining eigenvalue:
#
# $$ \|p_t - \pi\|_{\rm TV} \le C\,|\lambda_2|^t, \qquad
#    \|p - q\|_{\rm TV} = \tfrac12 \textstyle\sum_j |p_j - q_j|. \tag{4} $$
#
# `difflab.foundations.markov.stationary_distribution` takes the eigenvector of Eq. (3). From
# scratch, we can instead iterate Eq. (2) many times (power iteration); both must
# agree.

# %%
P = torch.tensor(
    [
        [0.6, 0.3, 0.1, 0.0],
        [0.2, 0.5, 0.2, 0.1],
        [0.0, 0.3, 0.5, 0.2],
        [0.1, 0.0, 0.4, 0.5],
    ],
    dtype=F64,
)
K = P.shape[0]
pi = M.stationary_distribution(P)

p = torch.eye(K, dtype=F64)[0]  # start in state 0
for _ in range(500):
    p = p @ P
assert_close(p, pi)  # power iteration = eigenvector
assert_close(pi @ P, pi)  # Eq. (3)
lam2 = M.second_eigenvalue(P)
print(
    "stationary distribution:",
    [round(v, 4) for v in pi.tolist()],
    f"|lambda_2| = {lam2:.3f}",
)

# %% [markdown]
# Now against simulation. `simulate_chain` runs many independent copies with an
# explicit `torch.Generator`; after enough steps the fraction of chains in each
# state must match $\pi$ (within Monte Carlo error), and the same holds for the
# time spent in each state along a single long run (the ergodic theorem).

# %%
g = torch.Generator().manual_seed(0)
n_chains, n_steps = 5000, 40
starts = torch.zeros(n_chains, dtype=torch.long)  # everyone starts in state 0
states = M.simulate_chain(P, starts, n_steps, g)  # (n_chains, n_steps + 1)
freq_end = torch.bincount(states[:, -1], minlength=K).to(F64) / n_chains
long_run = M.simulate_chain(P, torch.zeros(1, dtype=torch.long), 20_000, g)[0]
freq_time = torch.bincount(long_run, minlength=K).to(F64) / len(long_run)
print("across chains at t=40:", [round(v, 3) for v in freq_end.tolist()])
print("along one long run    :", [round(v, 3) for v in freq_time.tolist()])
assert M.total_variation(freq_end, pi) < 0.03
assert M.total_variation(freq_time, pi) < 0.03

# Empirical law at every t against the exact p_0 P^t of Eq. (2).
exact = M.distribution_after(P, torch.eye(K, dtype=F64)[0], n_steps)
emp = (
    torch.stack(
        [torch.bincount(states[:, t], minlength=K) for t in range(n_steps + 1)]
    ).to(F64)
    / n_chains
)
assert (M.total_variation(emp, exact) < 0.03).all()

# %% tags=["fold"]
# Plotting code for the figure
fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.6))
w = 0.25
axes[0].bar(torch.arange(K) - w, pi, w, label=r"$\pi$ (eigenvector, Eq. (3))")
axes[0].bar(torch.arange(K), freq_end, w, label="5000 chains at $t=40$")
axes[0].bar(torch.arange(K) + w, freq_time, w, label="one run, time average")
axes[0].set(xlabel="state", ylabel="probability", title="Stationary distribution")
axes[0].legend()
ts = torch.arange(n_steps + 1)
for s in range(K):
    tv = M.total_variation(
        M.distribution_after(P, torch.eye(K, dtype=F64)[s], n_steps), pi
    )
    axes[1].semilogy(ts, tv, label=f"start in state {s}")
axes[1].semilogy(ts, lam2**ts, "k--", label=r"$|\lambda_2|^t$, Eq. (4)")
axes[1].set(
    xlabel="$t$",
    ylabel=r"$\|p_t - \pi\|_{TV}$",
    title="Forgetting the start",
    ylim=(1e-12, 1),
)
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The distance to $\pi$ falls on a straight line on the log scale, with the slope
# $\log|\lambda_2|$ predicted by Eq. (4), whichever state the chain starts in.
#
# ## 2. A Gaussian chain: the DDPM forward process
#
# Now let the state be a real number and the transition kernel a Gaussian,
#
# $$ x_t = \sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\epsilon_t, \qquad
#    q(x_t\mid x_{t-1}) = \mathcal{N}\big(\sqrt{1-\beta_t}\,x_{t-1},\,\beta_t\big), \tag{5} $$
#
# with $\epsilon_t\sim\mathcal{N}(0,1)$ independent of the past. This is an
# autoregressive process of order one, AR(1), and with a schedule $\beta_1, \dots, \beta_T$
# it is exactly the forward process of DDPM [(Ho et al. 2020, Eq. 2)](https://arxiv.org/abs/2006.11239),
# applied to every pixel independently.
#
# **Marginals.** Start from $x_0\sim\mathcal{N}(m_0, v_0)$ ($v_0 = 0$ for a fixed
# point). Since $x_t$ is a linear function of $x_{t-1}$ plus independent noise,
# taking mean and variance of Eq. (5) gives the recursions
# $m_t = \sqrt{1-\beta_t}\,m_{t-1}$ and $v_t = (1-\beta_t)v_{t-1} + \beta_t$. With
# $\bar\alpha_t = \prod_{s=1}^t (1-\beta_s)$ they unroll to
#
# $$ m_t = \sqrt{\bar\alpha_t}\,m_0, \qquad v_t = \bar\alpha_t\,v_0 + 1 - \bar\alpha_t, \tag{6} $$
#
# (check: $1 - v_t = \bar\alpha_t(1 - v_0)$ satisfies $1 - v_t = (1-\beta_t)(1-v_{t-1})$).
# With $v_0 = 0$ this is DDPM's $q(x_t \mid x_0) = \mathcal{N}(\sqrt{\bar\alpha_t}x_0, 1-\bar\alpha_t)$.
#
# **Stationary law.** If $x_{t-1}\sim\mathcal{N}(0,1)$, Eq. (6) for one step
# gives mean $0$ and variance $(1-\beta_t) + \beta_t = 1$: the standard normal is
# stationary for *every* $\beta_t$, the continuous analogue of Eq. (3),
#
# $$ \int q(x_t\mid x_{t-1})\,\mathcal{N}(x_{t-1}; 0, 1)\,dx_{t-1} = \mathcal{N}(x_t; 0, 1). \tag{7} $$
#
# That is why the coefficients are $\sqrt{1-\beta}$ and $\sqrt\beta$ (variance
# preserving): shrinking the signal exactly compensates for the added noise.
#
# **Forgetting the start.** Two copies of the chain driven by the same noise
# differ by $x_t - x'_t = \sqrt{\bar\alpha_t}\,(x_0 - x'_0)$: the chain is a
# contraction, and the memory of $x_0$ decays like $\sqrt{\bar\alpha_t}$. For a
# constant $\beta$, $\bar\alpha_t = (1-\beta)^t$ decays geometrically. The distance
# to the stationary law has a closed form through the KL divergence between
# Gaussians (Eq. (12) of [Probability and Gaussians](probability.py)):
#
# $$ \mathrm{KL}\big(\mathcal{N}(m_t, v_t)\,\|\,\mathcal{N}(0,1)\big)
#    = \tfrac12\big(v_t + m_t^2 - 1 - \log v_t\big)
#    \approx \tfrac12\,\bar\alpha_t\,m_0^2 + O(\bar\alpha_t^2). \tag{8} $$
#
# And the start need not be Gaussian at all: for any $x_0$ with finite variance,
# $x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,\bar\epsilon$ with
# $\bar\epsilon\sim\mathcal{N}(0,1)$ independent of $x_0$, so $x_t \to \mathcal{N}(0,1)$
# as $\bar\alpha_t \to 0$.
#
# A from-scratch loop for Eq. (5) first, asserted equal to `ar1_simulate` with the
# same random numbers:

# %%
beta = 0.05
x0 = torch.tensor([-4.0, 0.0, 4.0], dtype=F64)
g = torch.Generator().manual_seed(1)
x, path_scratch = x0, [x0]
for _ in range(10):
    x = math.sqrt(1 - beta) * x + math.sqrt(beta) * torch.randn(
        x.shape, generator=g, dtype=F64
    )
    path_scratch.append(x)
path_pkg = M.ar1_simulate(x0, beta, 10, torch.Generator().manual_seed(1))
assert_close(torch.stack(path_scratch), path_pkg)

# %% [markdown]
# Now many chains from several starting points, including a non-Gaussian start
# (a two-point distribution at $\pm 3$), against the closed form of Eq. (6) and
# the stationarity of Eq. (7).

# %%
n_chains, n_steps = 20_000, 120
g = torch.Generator().manual_seed(2)
start_values = [-4.0, 0.0, 2.0, 4.0]
paths = {
    m0: M.ar1_simulate(torch.full((n_chains,), m0, dtype=F64), beta, n_steps, g)
    for m0 in start_values
}


def max_z(path, mean_t, var_t):
    """Largest error of the simulated mean and variance over t >= 1, in standard
    errors estimated from the simulation: sqrt(v/n) for a mean, v sqrt(2/(n-1))
    for the variance of a Gaussian sample."""
    n = path.shape[1]
    m_hat, v_hat = path.mean(1)[1:], path.var(1)[1:]
    z_m = (m_hat - mean_t[1:]).abs() / (v_hat / n).sqrt()
    z_v = (v_hat - var_t[1:]).abs() / (v_hat * math.sqrt(2 / (n - 1)))
    return max(z_m.max().item(), z_v.max().item())


# About 1000 comparisons in this cell: 5 standard errors each keeps the chance of a
# false alarm anywhere below 1e-3 (union bound, 5.7e-7 each).
z_sim = []
for m0, path in paths.items():
    mean_t, var_t = M.ar1_marginal(m0, 0.0, beta, n_steps)
    z_sim.append(max_z(path, mean_t, var_t))

signs = torch.randint(0, 2, (n_chains,), generator=g).to(F64) * 2 - 1
two_point = M.ar1_simulate(3.0 * signs, beta, n_steps, g)  # mean 0, variance 9

stationary = M.ar1_simulate(
    torch.randn(n_chains, generator=g, dtype=F64), beta, n_steps, g
)
ones = torch.ones(n_steps + 1, dtype=F64)
z_sim.append(max_z(stationary, 0 * ones, ones))  # Eq. (7)
# For the two-point start the Gaussian formula overstates the spread of the sample
# variance (its fourth moment is smaller), so the test is conservative there.
z_sim.append(max_z(two_point, *M.ar1_marginal(0.0, 9.0, beta, n_steps)))
print(
    "Eq. (6)-(7) against simulation: largest error per start "
    f"{[round(z, 1) for z in z_sim]} standard errors"
)
assert max(z_sim) < 5

# %% tags=["fold"]
# Plotting code for the figure
t = torch.arange(n_steps + 1)
fig, axes = plt.subplots(1, 3, figsize=(6.4, 2.6))
for i, (m0, path) in enumerate(paths.items()):
    mean_t, var_t = M.ar1_marginal(m0, 0.0, beta, n_steps)
    axes[0].plot(t, path.mean(1), color=f"C{i}", label=f"$x_0 = {m0:g}$")
    axes[0].plot(t, mean_t, "k--", lw=0.8)
    axes[1].plot(t, path.var(1), color=f"C{i}")
    axes[1].plot(t, var_t, "k--", lw=0.8)
    kl = G.gaussian_kl(mean_t[1:], var_t[1:], torch.zeros(()), torch.ones(()))
    axes[2].semilogy(t[1:], kl, color=f"C{i}", label=f"$x_0 = {m0:g}$")
axes[1].plot(t, two_point.var(1), color="C4", label=r"$x_0 = \pm 3$")
axes[1].plot(t, M.ar1_marginal(0.0, 9.0, beta, n_steps)[1], "k--", lw=0.8)
axes[2].semilogy(
    t,
    0.5 * 16 * (1 - beta) ** t,
    "k:",
    label=r"$\frac{1}{2}\bar\alpha_t m_0^2$, $m_0=4$",
)
axes[0].set(xlabel="$t$", title="mean (dashed: Eq. (6))")
axes[1].set(xlabel="$t$", title="variance (dashed: Eq. (6))")
axes[2].set(xlabel="$t$", title=r"KL to $\mathcal{N}(0,1)$, Eq. (8)")
axes[0].legend()
axes[1].legend()
axes[2].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# From $x_0 = 0$ the mean is already right and only the variance
# $v_t = 1 - \bar\alpha_t$ has to grow to 1. Its KL, $\tfrac12(v_t - 1 - \log v_t)
# = \tfrac12\big(-\bar\alpha_t - \log(1 - \bar\alpha_t)\big)
# = \tfrac14\bar\alpha_t^2 + O(\bar\alpha_t^3)$, decays like
# $(1-\beta)^{2t}$, **twice as fast on the log scale** as the starts with
# $m_0 \ne 0$, whose KL of Eq. (8) decays like $(1-\beta)^t$. The cell below fits
# the slope of $\log\mathrm{KL}$ on $t \in [60, 120]$ and checks both rates. The
# two-point start forgets its shape too; the histograms further below move from two
# spikes to the standard normal density.

# %%
# Slopes of log KL against t, from the closed forms of Eq. (6)-(8). Over this range
# the next-order terms change the slope by a relative (2/3) alpha_bar_60 = 0.03 at
# most, hence a 5% tolerance; the "same rate" claim for x_0 = 0 misses by 100%.
t_fit = torch.arange(60, n_steps + 1)
rate = math.log(1 - beta)
for m0, predicted in [(0.0, 2 * rate), (4.0, rate), (-4.0, rate), (2.0, rate)]:
    mean_t, var_t = M.ar1_marginal(m0, 0.0, beta, n_steps)
    log_kl = G.gaussian_kl(mean_t, var_t, torch.zeros(()), torch.ones(())).log()
    slope = ((log_kl[t_fit[-1]] - log_kl[t_fit[0]]) / (len(t_fit) - 1)).item()
    print(
        f"x_0 = {m0:+g}: slope {slope:.5f} per step, "
        f"predicted {predicted:.5f} = {predicted / rate:g} log(1 - beta)"
    )
    assert abs(slope / predicted - 1) < 0.05
    if m0 == 0.0:
        assert abs(slope / rate - 1) > 0.05  # the same rate as the others: wrong

# %% tags=["fold"]
# Plotting code for the figure
grid = torch.linspace(-5, 5, 400, dtype=F64)
fig, axes = plt.subplots(2, 2, figsize=(6.4, 4.4), sharey=True)
axes = axes.ravel()
for ax, s in zip(axes, [1, 10, 30, 120], strict=True):
    ax.hist(two_point[s].numpy(), bins=80, range=(-5, 5), density=True, alpha=0.6)
    ax.plot(grid, G.gaussian_log_prob(grid, torch.zeros(()), torch.ones(())).exp(), "k")
    ab = torch.tensor((1 - beta) ** s, dtype=F64)  # alpha_bar_t
    mix = 0.5 * sum(
        G.gaussian_log_prob(grid, c * ab.sqrt(), 1 - ab).exp() for c in (-3.0, 3.0)
    )
    ax.plot(grid, mix, "C3--", lw=1)
    ax.set(title=f"$t = {s}$", xlabel="$x_t$")
axes[0].legend(["$\\mathcal{N}(0,1)$", "exact mixture"], fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. The DDPM schedule
#
# DDPM uses $T = 1000$ steps and a linear schedule from $\beta_1 = 10^{-4}$ to
# $\beta_T = 0.02$. Eq. (6) says how much of $x_0$ survives: $\bar\alpha_T$. For the
# last step to be indistinguishable from $\mathcal{N}(0, I)$, the KL of Eq. (8)
# must be negligible for data in $[-1, 1]$, which the closed form confirms without
# simulating a single chain, and a short simulation double-checks.

# %%
betas = linear_betas(1000)
mean_T, var_T = M.ar1_marginal(torch.tensor([-1.0, 0.0, 1.0]), 0.0, betas, 1000)
alpha_bar_T = torch.prod(1 - betas)
kl_T = G.gaussian_kl(mean_T[-1], var_T[-1], torch.zeros(()), torch.ones(()))
print(
    f"alpha_bar_T = {alpha_bar_T.item():.2e}; KL(q(x_T | x_0) || N(0,1)) for x_0 = -1, 0, 1: "
    + ", ".join(f"{v:.1e}" for v in kl_T.tolist())
)
assert alpha_bar_T < 1e-4 and kl_T.max() < 1e-4
x_T = M.ar1_simulate(
    torch.ones(20_000, dtype=F64), betas, 1000, torch.Generator().manual_seed(3)
)[-1]
# x_T should be N(sqrt(alpha_bar_T), 1 - alpha_bar_T): 4 standard errors of the sample mean (1/sqrt(n)) and of
# the sample variance (sqrt(2/(n-1))).
se_m, se_v = 1 / math.sqrt(len(x_T)), math.sqrt(2 / (len(x_T) - 1))
print(
    f"x_T from x_0 = 1: mean {x_T.mean():.4f} ± {se_m:.4f}, "
    f"variance {x_T.var():.4f} ± {se_v:.4f}"
)
assert abs(x_T.mean() - alpha_bar_T.sqrt()) < 4 * se_m  # Eq. (6): sqrt(ab_T) x_0
assert abs(x_T.var() - (1 - alpha_bar_T)) < 4 * se_v

# %% [markdown]
# ## Summary
#
# | on paper | in code |
# | --- | --- |
# | $\pi = \pi P$, Eq. (3) | `stationary_distribution(P)` |
# | $p_0 P^t$, Eq. (2) | `distribution_after(P, p0, n_steps)` |
# | $\lvert\lambda_2\rvert$, Eq. (4) | `second_eigenvalue(P)` |
# | $\tfrac12\sum\lvert p - q\rvert$ | `total_variation(p, q)` |
# | Eq. (5) | `ar1_simulate(x0, beta, n_steps, generator)` (`beta` a float or a schedule) |
# | Eq. (6) | `ar1_marginal(mean0, var0, beta, n_steps)` |
#
# A chain with a unique stationary law forgets its start at a geometric rate.
# The DDPM forward process is such a chain, with stationary law $\mathcal{N}(0, I)$
# and closed-form marginals, which is what makes it possible to jump straight to
# any $x_t$ during training.
#
# ## Exercises
#
# 1. Make state 3 of $P$ absorbing ($P_{33} = 1$). What does
#    `stationary_distribution` return, and what happens to the simulation?
# 2. Build a periodic chain (e.g. $P = \begin{pmatrix}0&1\\1&0\end{pmatrix}$). It has a
#    stationary distribution; does $p_t$ converge to it? Which eigenvalue is to blame?
# 3. A chain is *reversible* when $\pi_i P_{ij} = \pi_j P_{ji}$. Check whether the
#    $P$ above is, and show that the AR(1) chain of Eq. (5) with constant $\beta$ is
#    reversible with respect to $\mathcal{N}(0,1)$.
# 4. Replace $\sqrt{1-\beta}$ by $1$ (add noise without shrinking, the
#    "variance exploding" chain). Derive $m_t$ and $v_t$; does it have a stationary law?
# 5. For the cosine schedule of [Nichol & Dhariwal (2021)](https://arxiv.org/abs/2102.09672)
#    (`difflab.diffusion.schedules.cosine_betas`), plot the KL of Eq. (8) against $t$ and
#    compare with the linear schedule.
#
# ## References
#
# - J. Ho, A. Jain, P. Abbeel. *Denoising Diffusion Probabilistic Models*. NeurIPS 2020.
#   [arXiv:2006.11239](https://arxiv.org/abs/2006.11239)
# - J. Sohl-Dickstein et al. *Deep Unsupervised Learning using Nonequilibrium
#   Thermodynamics*. ICML 2015. [arXiv:1503.03585](https://arxiv.org/abs/1503.03585)
# - J. R. Norris. *Markov Chains*. Cambridge University Press 1997.
#   [doi:10.1017/CBO9780511810633](https://doi.org/10.1017/CBO9780511810633)
# - D. A. Levin, Y. Peres, E. L. Wilmer. *Markov Chains and Mixing Times*, 2nd ed. AMS 2017.

# %%
run.finish(dataset="synthetic chains")
