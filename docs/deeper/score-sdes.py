# ---
# jupyter:
#   difflab:
#     prerequisites:
#     - deeper/score-matching.py
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
# # Score SDEs: VP, VE, sub-VP, the reverse SDE and predictor-corrector sampling
#
# Song et al. (2021) unified DDPM and noise-conditional score networks by taking the
# number of noise levels to infinity: the forward process becomes a stochastic
# differential equation, and generation runs that SDE backwards in time, driven by
# the score.
#
# **What you will learn**
#
# - the three forward SDEs (variance preserving, variance exploding, sub-VP) and
#   their closed-form marginals, checked by simulation;
# - why DDPM's discrete chain *is* the VP SDE sampled on a grid, shown numerically;
# - the reverse-time SDE (Anderson 1982) and its Euler-Maruyama sampler;
# - predictor-corrector sampling with a Langevin corrector and its signal-to-noise
#   ratio.
#
# Scores are exact throughout (a Gaussian mixture, `difflab.toy.mixtures`), so what you see is
# the SDE and the sampler, never a network's error.

# %% tags=["fold"]
# Imports and set-up (the page's provenance box starts here)
import math

import matplotlib.pyplot as plt
import torch
from torch.testing import assert_close

from difflab.diffusion.noise import uniform_grid
from difflab.diffusion.schedules import linear_betas
from difflab.notes import page
from difflab.score.samplers import CountedScore, pc_sample, reverse_sde_sample
from difflab.score.sde import VESDE, VPSDE, SubVPSDE
from difflab.toy.mixtures import eight_gaussians
from difflab.toy.sandbox import exact_score_fn, sliced_wasserstein

torch.set_num_threads(1)  # 2D toys: threads only add overhead
run = page.start()
F64 = torch.float64
gen = torch.Generator().manual_seed(0)

# %% [markdown]
# ## 1. Forward SDEs
#
# A forward SDE on $t \in [0, T]$, $T = 1$,
# $$ \mathrm{d}x = f(x, t)\,\mathrm{d}t + g(t)\,\mathrm{d}w \tag{1} $$
# turns data into noise. Three choices (Song et al. 2021, Eqs. 9, 11, 12):
# $$ \text{VP:}\quad \mathrm{d}x = -\tfrac12 \beta(t) x\,\mathrm{d}t + \sqrt{\beta(t)}\,\mathrm{d}w, \qquad \beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min}) \tag{2} $$
# $$ \text{VE:}\quad \mathrm{d}x = \sqrt{\tfrac{\mathrm{d}[\sigma^2(t)]}{\mathrm{d}t}}\,\mathrm{d}w, \qquad \sigma(t) = \sigma_{\min} (\sigma_{\max}/\sigma_{\min})^t \tag{3} $$
# $$ \text{sub-VP:}\quad \mathrm{d}x = -\tfrac12 \beta(t) x\,\mathrm{d}t + \sqrt{\beta(t)\big(1 - e^{-2\int_0^t \beta(s) \mathrm{d}s}\big)}\,\mathrm{d}w . \tag{4} $$
# All are linear with a state-independent $g$, so from a fixed $x_0$ the marginal is
# Gaussian,
# $$ x_t = \alpha(t)\,x_0 + \sigma(t)\,\epsilon, \qquad \alpha(t) = e^{-\frac12\int_0^t\beta(s)\mathrm{d}s} \ \text{(VP, sub-VP)}, \ 1 \ \text{(VE)}, \tag{5} $$
# with $\sigma(t)^2 = 1 - \alpha(t)^2$ (VP), $(1 - \alpha(t)^2)^2$ (sub-VP) and
# $\sigma(t)^2 - \sigma_{\min}^2$ (VE started at a point). Simulate Eq. (1) with
# Euler-Maruyama and compare with Eq. (5):

# %%
sdes = {"VP": VPSDE(), "sub-VP": SubVPSDE(), "VE": VESDE()}
x0 = torch.tensor([[1.5]], dtype=F64)
n_paths, steps = 20_000, 500
t_grid = torch.linspace(0, 1, steps + 1, dtype=F64)
fig, ax = plt.subplots(1, 3, figsize=(6.4, 2.6))
for k, (name, sde) in enumerate(sdes.items()):
    x = x0.expand(n_paths, 1).clone()
    means, stds = [x.mean()], [x.std()]
    for i in range(steps):
        dt = float(t_grid[i + 1] - t_grid[i])
        f, g = sde.drift_diffusion(x, t_grid[i].expand(n_paths))
        x = (
            x
            + f * dt
            + g[:, None]
            * math.sqrt(dt)
            * torch.randn(x.shape, generator=gen, dtype=F64)
        )
        means.append(x.mean())
        stds.append(x.std())
    mean_cf, std_cf = sde.marginal(x0.expand(len(t_grid), 1), t_grid)
    ax[k].plot(t_grid, torch.stack(means), "C0", label="simulated mean")
    ax[k].plot(t_grid, mean_cf[:, 0], "k--", lw=1)
    ax[k].plot(t_grid, torch.stack(stds), "C1", label="simulated std")
    ax[k].plot(t_grid, std_cf, "k:", lw=1, label="Eq. (5)")
    ax[k].set_title(name)
    ax[k].set_xlabel("t")
    if name == "VE":
        ax[k].set_yscale("log")
    late = t_grid >= 0.1  # Euler-Maruyama's O(dt) bias is relatively large at tiny t
    rel = (torch.stack(stds)[late] / std_cf[late] - 1).abs().max()
    print(
        f"{name:>6}: max relative error of the simulated std for t >= 0.1: {float(rel):.3f}"
    )
    assert rel < 0.05
ax[0].legend()
plt.show()

# %% [markdown]
# ## 2. DDPM is the VP SDE on a grid
#
# DDPM's step $x_i = \sqrt{1 - \beta_i}\, x_{i-1} + \sqrt{\beta_i}\,\epsilon$ with
# $\beta_i = \bar\beta_i / N$ is, for large $N$,
# $x_i - x_{i-1} \approx -\tfrac12 \bar\beta_i x_{i-1} \tfrac1N + \sqrt{\bar\beta_i} \sqrt{\tfrac1N}\,\epsilon$:
# one Euler-Maruyama step of Eq. (2) with $\mathrm{d}t = 1/N$ and $\beta(i/N) = N \beta_i$
# (Song et al. 2021, Appendix B). So $\beta_{\min} = N\beta_1 = 0.1$ and
# $\beta_{\max} = N \beta_N = 20$ for DDPM's linear schedule with $N = 1000$, and
# $\sqrt{\bar\alpha_i} = \prod_j \sqrt{1 - \beta_j}$ must approach $\alpha(i/N)$ of Eq. (5).
# The error should shrink like $1/N$:

# %%
vp = VPSDE()
errors = {}
for n_steps in (30, 100, 300, 1000, 3000, 10000):
    betas = linear_betas(n_steps)  # rescaled by 1000 / N: beta_i ~ beta(i / N) / N
    alpha_bar = torch.cumprod(1 - betas, 0)
    t = torch.arange(1, n_steps + 1, dtype=F64) / n_steps
    errors[n_steps] = float((alpha_bar.sqrt() - vp.marginal_coefs(t)[0]).abs().max())
    print(
        f"N = {n_steps:5d}: max |sqrt(alpha_bar_i) - alpha(i/N)| = {errors[n_steps]:.2e}"
    )
ns = list(errors)
assert all(
    errors[a] > errors[b] for a, b in zip(ns[:-1], ns[1:], strict=True)
)  # converges ...
assert errors[10000] * 10000 < 2 * errors[1000] * 1000  # ... at rate 1/N

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.loglog(ns, [errors[n] for n in ns], "o-", label="max error")
ax.loglog(ns, [errors[30] * 30 / n for n in ns], "k--", lw=1, label="slope -1")
ax.set_xlabel("number of DDPM steps N")
ax.legend()
plt.show()

# %% [markdown]
# ## 3. The reverse-time SDE
#
# Anderson (1982): the time reversal of Eq. (1) is again an SDE,
# $$ \mathrm{d}x = \big[f(x, t) - g(t)^2 \nabla_x \log p_t(x)\big]\mathrm{d}t + g(t)\,\mathrm{d}\bar w, \tag{6} $$
# run from $t = T$ down to $0$ ($\mathrm{d}t < 0$, $\bar w$ a Brownian motion in
# reversed time). It needs only the score of every marginal $p_t$, which is what
# denoising score matching learns at every noise level. Euler-Maruyama with step
# $\Delta t > 0$ going down:
# $$ x_{t - \Delta t} = x_t - \big[f - g^2 s(x_t, t)\big]\Delta t + g \sqrt{\Delta t}\, z . \tag{7} $$
# From scratch (20 steps), against `reverse_sde_sample` with the same random numbers:

# %%
mix = eight_gaussians()
score = exact_score_fn(mix, vp)
x_T = vp.prior_sample((2000, 2), torch.Generator().manual_seed(1), dtype=F64)

g1 = torch.Generator().manual_seed(2)
x, ts = x_T, uniform_grid(vp, 20)  # 21 times from T = 1 down to t_min, evenly
for i in range(20):
    t, dt = ts[i].expand(len(x)), float(ts[i] - ts[i + 1])
    f, g = vp.drift_diffusion(x, t)
    x = x - (f - g[:, None] ** 2 * score(x, t)) * dt
    if i < 19:  # no noise on the last step
        x = x + g[:, None] * math.sqrt(dt) * torch.randn(
            x.shape, generator=g1, dtype=F64
        )
g2 = torch.Generator().manual_seed(2)
assert_close(
    x, reverse_sde_sample(score, x_T, ts, sde=vp, generator=g2, progress=False)
)

# %% [markdown]
# ## 4. Predictor-corrector sampling
#
# Any numerical solver of Eq. (6) is a *predictor*. Because the score of $p_t$ is
# known at each step, a few Langevin steps targeting $p_t$ (a *corrector*, page
# [score matching](score-matching.py), Eq. 5) can pull the state back onto the
# right marginal before the next prediction (Song et al. 2021, Algorithms 4-5).
# The corrector's step size is set by a target signal-to-noise ratio $r$:
# $$ \varepsilon_i = 2\,\alpha_i \left( \frac{r\,\|z\|}{\|s(x, t_i)\|} \right)^2 , \tag{8} $$
# with $\alpha_i = 1 - \beta_i$ for VP and $1$ for VE; $r = 0.16$ in the paper. The
# predictor here is *reverse diffusion*: the exact inverse of one discrete forward
# step (for VP, one DDPM ancestral step).
#
# Compare at the same budget of score evaluations (NFE), against fresh samples of the
# true mixture. The sliced Wasserstein distance between two independent true
# samples of the same size is the floor.

# %%
reference = mix.sample(2000, gen, dtype=F64)
floor = float(sliced_wasserstein(mix.sample(2000, gen, dtype=F64), reference, 128, gen))
results = {}
for nfe in (20, 100):
    for name in ("Euler-Maruyama", "PC (reverse diffusion + Langevin)"):
        counted = CountedScore(score)
        g = torch.Generator().manual_seed(3)
        if name == "Euler-Maruyama":
            grid = uniform_grid(vp, nfe)
            out = reverse_sde_sample(
                counted, x_T, grid, sde=vp, generator=g, progress=False
            )
        else:
            grid = uniform_grid(vp, nfe // 2)  # one predictor + one corrector each
            out = pc_sample(
                counted, x_T, grid, sde=vp, snr=0.16, generator=g, progress=False
            )
        sw = float(
            sliced_wasserstein(out, reference, 128, torch.Generator().manual_seed(4))
        )
        results[(name, nfe)] = (out, sw)
        print(
            f"{name:>34}  NFE {counted.nfe:4d}: sliced W2 {sw:.3f}  (floor {floor:.3f})"
        )
assert results[("Euler-Maruyama", 100)][1] < floor + 0.08

fig, ax = plt.subplots(2, 3, figsize=(6.4, 4.6), sharex=True, sharey=True)
ax[1, 2].set_visible(False)  # five panels in a 2 x 3 grid
ax = ax.ravel()[:5]
ax[0].scatter(*reference.T, s=1, alpha=0.4)
ax[0].set_title("true samples")
for a, ((name, nfe), (out, sw)) in zip(ax[1:], results.items(), strict=True):
    a.scatter(*out.T, s=1, alpha=0.4)
    a.set_title(f"{name.split(' (')[0]}, NFE {nfe}\nSW2 {sw:.3f}", fontsize=9)
for a in ax:
    a.set_aspect("equal")
plt.show()

# %% [markdown]
# With the exact score both samplers are good at 100 evaluations; at 20 the
# discretisation error of Eq. (7) shows as blurred modes. Which sampler to trust at
# which budget is the subject of the [sandbox page](sde-sandbox.py), which runs every
# sampler of the site over evaluation budgets from 10 to 1000.
#
# ## Summary
#
# | on paper | in code |
# | --- | --- |
# | $f(x,t)$, $g(t)$, Eq. (1) | `sde.drift_diffusion(x, t)` |
# | $\alpha(t)$, $\sigma(t)$, Eq. (5) | `sde.marginal_coefs(t)`; `sde.marginal(x0, t)` gives mean and std |
# | $\lambda(t) = \log(\alpha/\sigma)$ and its inverse | `sde.half_log_snr(t)`, `sde.t_from_half_log_snr(lam)` (the same for a DDPM schedule through `DiscreteNoise`) |
# | $p_T$ | `sde.prior_sample(shape, generator)`, `sde.prior_log_prob(z)` |
# | reverse SDE, Eq. (6) | `sde.reverse(score_fn).drift_diffusion(x, t)` |
# | time grid $t_0 = T > \dots > t_N = t_{\min}$ | `uniform_grid(sde, N)` (also `quadratic_grid`, `half_log_snr_grid`, `karras_grid`) |
# | Euler-Maruyama, Eq. (7) | `reverse_sde_sample(score_fn, x_T, grid, sde=sde)` |
# | predictor-corrector, Eq. (8) | `pc_sample(score_fn, x_T, grid, sde=sde, snr=0.16, corrector_steps=1)` |
#
# `t_min`: samplers stop at $t = 10^{-3}$ (`sde.t_min`) rather than 0, where the
# score of VP/sub-VP marginals of sharp data becomes unbounded.
#
# ## Exercises
#
# 1. Show that Eq. (4)'s variance $(1 - \alpha^2)^2$ solves
#    $\frac{\mathrm{d}}{\mathrm{d}t}\mathrm{Var} = -\beta\,\mathrm{Var} + g^2$.
# 2. Derive the NCSN update $x_i = x_{i-1} + \sqrt{\sigma_i^2 - \sigma_{i-1}^2}\,z$ as
#    the discretisation of Eq. (3), and check `VESDE().discretize`.
# 3. Run `pc_sample` with `snr` in $\{0.05, 0.16, 0.5\}$ at NFE 40. What goes wrong when
#    the corrector's steps are too large?
# 4. Replace the exact score by $1.1\times$ the exact score. Which sampler degrades
#    more, the SDE or PC?
#
# ## References
#
# - Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon, B. Poole.
#   *Score-Based Generative Modeling through Stochastic Differential Equations*.
#   ICLR 2021. [arXiv:2011.13456](https://arxiv.org/abs/2011.13456)
# - B. D. O. Anderson. *Reverse-time diffusion equation models*. Stochastic Processes
#   and their Applications 12(3), 1982.
# - J. Ho, A. Jain, P. Abbeel. *Denoising Diffusion Probabilistic Models*. NeurIPS
#   2020. [arXiv:2006.11239](https://arxiv.org/abs/2006.11239)
# - Y. Song, S. Ermon. *Generative Modeling by Estimating Gradients of the Data
#   Distribution*. NeurIPS 2019. [arXiv:1907.05600](https://arxiv.org/abs/1907.05600)

# %%
run.finish(dataset="synthetic Gaussian mixtures (exact score)")
