# ---
# jupyter:
#   difflab:
#     cold_seconds: 8
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
from difflab.notes.tables import show_table
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
# Euler-Maruyama and compare with Eq. (5).
#
# How close must they be? The simulation has two errors. The sampling error of $n$
# paths: a mean has standard error $\sigma/\sqrt n$ and a standard deviation about
# $\sigma/\sqrt{2(n-1)}$. And the bias of Euler-Maruyama's finite step, which is
# known exactly here: for a linear SDE its mean and variance obey
# $m_{k+1} = (1 + f_k \Delta t)\,m_k$ and $v_{k+1} = (1 + f_k\Delta t)^2 v_k + g_k^2
# \Delta t$ (writing $f(x, t) = f(t)\,x$). We require each simulated moment within 4
# standard errors plus that bias of Eq. (5), at four times for each SDE. The check has
# teeth: the same test against Eq. (5) without the $\tfrac12$ in $\alpha(t)$ misses
# by dozens of standard errors (for VP and sub-VP before $t = 1$, where both
# versions of $\alpha$ are nearly 0).

# %%
sdes = {"VP": VPSDE(), "sub-VP": SubVPSDE(), "VE": VESDE()}
x0 = torch.tensor([[1.5]], dtype=F64)
n_paths, steps = 20_000, 500
t_grid = torch.linspace(0, 1, steps + 1, dtype=F64)
checked = {50: "t = 0.1", 125: "t = 0.25", 250: "t = 0.5", 500: "t = 1"}
rows = []

# %% tags=["fold"]
# Simulation: Euler-Maruyama paths of each SDE, checked against Eq. (5), and the figure
fig, ax = plt.subplots(1, 3, figsize=(6.4, 2.6))
for k, (name, sde) in enumerate(sdes.items()):
    x = x0.expand(n_paths, 1).clone()
    means, stds = [x.mean()], [x.std()]
    m_em, v_em = [x0[0, 0]], [torch.tensor(0.0, dtype=F64)]  # Euler-Maruyama's own
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
        grow = 1 + sde.f(t_grid[i : i + 1])[0] * dt
        m_em.append(grow * m_em[-1])
        v_em.append(grow**2 * v_em[-1] + g[0] ** 2 * dt)
    mean_cf, std_cf = sde.marginal(x0.expand(len(t_grid), 1), t_grid)
    alpha = sde.marginal_coefs(t_grid)[0]
    for i, label in checked.items():
        se_m, se_s = stds[i] / math.sqrt(n_paths), stds[i] / math.sqrt(2 * n_paths - 2)
        bias_m = abs(m_em[i] - mean_cf[i, 0])
        bias_s = abs(v_em[i].sqrt() - std_cf[i])
        err_m, err_s = abs(means[i] - mean_cf[i, 0]), abs(stds[i] - std_cf[i])
        assert err_m < 4 * se_m + bias_m and err_s < 4 * se_s + bias_s
        wrong = abs(means[i] - x0[0, 0] * alpha[i] ** 2)  # e^{-int beta}: no 1/2
        teeth = name != "VE" and i < steps  # at t = 1 both alphas are ~0
        if teeth:
            assert wrong > 4 * se_m + bias_m
        rows.append(
            {
                "sde": name,
                "t": label,
                "mean": float(means[i]),
                "mean_se": float(se_m),
                "mean_cf": float(mean_cf[i, 0]),
                "z_m": float(err_m / se_m),
                "bias_m": float(bias_m / se_m),
                "std": float(stds[i]),
                "std_se": float(se_s),
                "std_cf": float(std_cf[i]),
                "z_s": float(err_s / se_s),
                "bias_s": float(bias_s / se_s),
                "wrong": float(wrong / se_m) if teeth else "",
            }
        )
    ax[k].plot(t_grid, torch.stack(means), "C0", label="simulated mean")
    ax[k].plot(t_grid, mean_cf[:, 0], "k--", lw=1)
    ax[k].plot(t_grid, torch.stack(stds), "C1", label="simulated std")
    ax[k].plot(t_grid, std_cf, "k:", lw=1, label="Eq. (5)")
    ax[k].set_title(name)
    ax[k].set_xlabel("t")
    if name == "VE":
        ax[k].set_yscale("log")
ax[0].legend()
plt.show()

# %% tags=["fold"]
# Table of the checks against Eq. (5)
show_table(
    rows,
    [
        "sde",
        "t",
        "mean",
        "mean_cf",
        "z_m",
        "bias_m",
        "std",
        "std_cf",
        "z_s",
        "bias_s",
        "wrong",
    ],
    headers={
        "sde": "SDE",
        "mean": "mean (simulated)",
        "mean_cf": "mean, Eq. (5)",
        "z_m": "|error| / s.e.",
        "bias_m": "EM bias / s.e.",
        "std": "std (simulated)",
        "std_cf": "std, Eq. (5)",
        "z_s": "|error| / s.e.",
        "bias_s": "EM bias / s.e.",
        "wrong": "no 1/2: |error| / s.e.",
    },
    digits={
        "mean": 4,
        "mean_cf": 4,
        "std": 4,
        "std_cf": 4,
        "z_m": 1,
        "z_s": 1,
        "bias_m": 2,
        "bias_s": 2,
        "wrong": 0,
    },
    spread={"mean": "mean_se", "std": "std_se"},
)

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
# From scratch (20 steps), against `reverse_sde_sample` with the same random numbers.
# Then a check of Eq. (6) itself, with teeth: 100 steps from 8,000 prior samples must
# give the mixture's mean squared radius $\mathbb E\|x\|^2 = 2^2 + 2 \cdot 0.2^2 =
# 4.08$ within 4 standard errors, and the same sampler with half the score term,
# $f - \tfrac12 g^2 s$ (the drift of the next page's probability-flow ODE, which is
# only right *without* the noise), must miss.

# %%
mix = eight_gaussians()
score = exact_score_fn(mix, vp)


def euler_maruyama(x, steps, generator, weight=1.0):
    """Eq. (7) on a uniform grid; ``weight`` multiplies g^2 s (1 is Eq. 6)."""
    ts = uniform_grid(vp, steps)  # steps + 1 times from T = 1 down to t_min
    for i in range(steps):
        t, dt = ts[i].expand(len(x)), float(ts[i] - ts[i + 1])
        f, g = vp.drift_diffusion(x, t)
        x = x - (f - weight * g[:, None] ** 2 * score(x, t)) * dt
        if i < steps - 1:  # no noise on the last step
            x = x + g[:, None] * math.sqrt(dt) * torch.randn(
                x.shape, generator=generator, dtype=F64
            )
    return x


x_T = vp.prior_sample((2000, 2), torch.Generator().manual_seed(1), dtype=F64)
x = euler_maruyama(x_T, 20, torch.Generator().manual_seed(2))
ts = uniform_grid(vp, 20)
g2 = torch.Generator().manual_seed(2)
assert_close(
    x, reverse_sde_sample(score, x_T, ts, sde=vp, generator=g2, progress=False)
)

r2_true = float(
    (mix.means**2).sum(-1).mean() + mix.covs.diagonal(0, 1, 2).sum(-1).mean()
)
x_big = vp.prior_sample((8000, 2), torch.Generator().manual_seed(5), dtype=F64)
for weight in (1.0, 0.5):
    r2 = (
        euler_maruyama(x_big, 100, torch.Generator().manual_seed(6), weight) ** 2
    ).sum(-1)
    m, se = r2.mean().item(), r2.std().item() / math.sqrt(len(r2))
    print(
        f"drift f - {weight} g^2 s: E||x||^2 = {m:.3f} +- {se:.3f} (mixture: {r2_true:.3f})"
    )
    assert (abs(m - r2_true) < 4 * se) == (weight == 1.0)

# %% [markdown]
# ## 4. Predictor-corrector sampling
#
# Any numerical solver of Eq. (6) is a *predictor*. Because the score of $p_t$ is
# known at each step, a few Langevin steps targeting $p_t$ (a *corrector*, page
# [score matching](score-matching.py), Eq. 5) can pull the state back onto the
# right marginal before the next prediction (Song et al. 2021, Algorithms 4-5).
# The corrector's step size is set by a target signal-to-noise ratio $r$:
# $$ \varepsilon_i = 2\,\alpha_i \left( \frac{r\,\|z\|}{\|s(x, t_i)\|} \right)^2 , \tag{8} $$
# with $\alpha_i = 1 - \beta_i$ for VP and $1$ for VE; $r = 0.16$ in the paper.
#
# The predictor here is *reverse diffusion* (Song et al. 2021, App. E): discretise
# the forward SDE as $x_{i+1} = x_i + f_i(x_i) + G_i z_i$ and take the reverse step
# with the same coefficients, $x_i = x_{i+1} - f_{i+1}(x_{i+1}) + G_{i+1}^2\,
# s(x_{i+1}, t_{i+1}) + G_{i+1} z$. It is *not* the exact inverse of a forward step
# (that would need the unknown $q(x_i \mid x_{i+1})$), and for VP it is not one DDPM
# ancestral step either. With $a = \sqrt{1 - \beta_{i+1}}$, $f = (a - 1)x$ and
# $G^2 = \beta_{i+1}$, the two steps are
# $$ \text{reverse diffusion: } x_i = (2 - a)\,x_{i+1} + \beta\, s + \sqrt\beta\, z,
#    \qquad \text{ancestral: } x_i = \tfrac{1}{a}\big(x_{i+1} + \beta\, s\big) + \sqrt\beta\, z , $$
# whose coefficients differ by $1/a - (2 - a) = \beta^2/4 + O(\beta^3)$ and $\beta/a -
# \beta = \beta^2/2 + O(\beta^3)$: they agree to $O(\beta^2)$ per step, so over $N$
# steps with $\beta \sim 1/N$ the two samplers driven by the same noise should drift
# apart like $1/N$. Measured with the exact score, from the same $x_T$ and $z$:


# %%
def two_predictors(x, steps, generator):
    """Reverse-diffusion and DDPM-ancestral steps from the same x_T and noise."""
    ts, x_rd, x_anc = uniform_grid(vp, steps), x, x
    for i in range(steps):
        t, dt = ts[i].expand(len(x)), float(ts[i] - ts[i + 1])
        a, b = vp.transition_coefs(t - dt, t)  # a^2 = 1 - beta_i, b^2 = beta_i
        a, beta = a[:, None], b[:, None] ** 2
        x_rd = (2 - a) * x_rd + beta * score(x_rd, t)
        x_anc = (x_anc + beta * score(x_anc, t)) / a
        if i < steps - 1:
            z = torch.randn(x.shape, generator=generator, dtype=F64)
            x_rd, x_anc = x_rd + beta.sqrt() * z, x_anc + beta.sqrt() * z
    return x_rd, x_anc


gaps = {}
for n in (25, 50, 100, 200, 400):
    x_rd, x_anc = two_predictors(x_T, n, torch.Generator().manual_seed(7))
    if n == 25:  # the hand-written step is the package's predictor
        pkg = pc_sample(
            score,
            x_T,
            uniform_grid(vp, n),
            sde=vp,
            corrector_steps=0,
            generator=torch.Generator().manual_seed(7),
            progress=False,
        )
        assert_close(x_rd, pkg)
    gaps[n] = (x_rd - x_anc).norm(dim=-1).mean().item()
ns = list(gaps)
order = -math.log(gaps[ns[-1]] / gaps[ns[1]]) / math.log(ns[-1] / ns[1])
print(", ".join(f"N = {n}: {gaps[n]:.2e}" for n in ns), "(mean distance at t_min)")
print(f"fitted order: distance ~ N^-{order:.2f}")
assert 0.8 < order < 1.2  # O(beta^2) per step, O(1/N) after N steps

# %% [markdown]
# The gap falls like $1/N$, as the per-step $O(\beta^2)$ agreement predicts: on a fine
# grid the two predictors are interchangeable, on a coarse one they are different
# samplers.
#
# Now compare the samplers at the same budget of score evaluations (NFE), against
# the true mixture. The sliced Wasserstein distance between samples and fresh true
# samples has a floor: its value between two independent true samples of the same
# size, printed as a mean and standard deviation over 10 pairs. A measure that sees
# more is the *within-mode spread*, the mean squared distance of a sample to the
# nearest mode centre; for the mixture it is $2 \cdot 0.2^2 = 0.08$ up to the rare
# point nearer another centre, and it is a mean over samples, so it has a standard
# error.


# %%
def within_mode(x):
    """Mean squared distance to the nearest mode centre and its standard error."""
    d2 = (x[:, None, :] - mix.means).pow(2).sum(-1).min(1).values  # (B,)
    return d2.mean().item(), d2.std().item() / math.sqrt(len(d2))


truth, truth_se = within_mode(mix.sample(200_000, gen, dtype=F64))
reference = mix.sample(2000, gen, dtype=F64)
floors = torch.tensor(
    [
        float(sliced_wasserstein(mix.sample(2000, gen, dtype=F64), reference, 128, gen))
        for _ in range(10)
    ]
)
floor, floor_sd = floors.mean().item(), floors.std().item()
print(f"true mixture: within-mode spread {truth:.4f} +- {truth_se:.4f}")
print(f"sliced W2 floor: {floor:.3f}, standard deviation {floor_sd:.3f} over 10 pairs")

# %%
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
        spread = within_mode(out)
        results[(name, nfe)] = (out, sw, *spread)
        print(
            f"{name:>34}  NFE {counted.nfe:4d}: sliced W2 {sw:.3f}, "
            f"within-mode spread {spread[0]:.4f} +- {spread[1]:.4f}"
        )


def z_score(key):
    """(spread - truth) in standard errors of the difference."""
    _, _, m, se = results[key]
    return (m - truth) / math.hypot(se, truth_se)


em, pc = "Euler-Maruyama", "PC (reverse diffusion + Langevin)"
assert abs(z_score((em, 100))) < 4  # right spread at 100 evaluations
assert z_score((em, 20)) < -4 and z_score((pc, 20)) > 4  # too tight / too wide at 20
assert abs(z_score((pc, 100))) < z_score((pc, 20)) - 4  # PC much better at 100

# %% tags=["fold"]
# Plotting code for the figure
fig, ax = plt.subplots(2, 3, figsize=(6.4, 4.6), sharex=True, sharey=True)
ax[1, 2].set_visible(False)  # five panels in a 2 x 3 grid
ax = ax.ravel()[:5]
ax[0].scatter(*reference.T, s=1, alpha=0.4)
ax[0].set_title("true samples")
for a, ((name, nfe), (out, _, spread, _)) in zip(ax[1:], results.items(), strict=True):
    a.scatter(*out.T, s=1, alpha=0.4)
    a.set_title(f"{name.split(' (')[0]}, NFE {nfe}\nspread {spread:.3f}", fontsize=9)
for a in ax:
    a.set_aspect("equal")
plt.show()

# %% [markdown]
# With the exact score, Euler-Maruyama at 100 evaluations gives the right within-mode
# spread (0.081 against 0.080, inside its standard error). At 20 the two samplers
# fail in opposite directions: Euler-Maruyama's modes are far too *tight* (0.032),
# because its coarse steps near $t = 0$, where the score of the narrow modes is steep,
# overshoot towards the centres and the last step adds no noise; PC's are too *wide*
# (0.125), its few large corrector steps leaving Langevin noise behind. At 100
# evaluations PC is much closer but still about four standard errors wide (0.088),
# since it spends half its budget on the corrector and so takes only 50 predictor
# steps. The sliced Wasserstein distances all lie within about three standard
# deviations of the floor's own spread: at 2,000 samples they cannot rank these
# samplers, which is why the assertions use the within-mode spread. Which sampler to
# trust at which budget is the subject of the [sandbox page](sde-sandbox.py), which
# runs every sampler of the site over evaluation budgets from 10 to 1000.
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
