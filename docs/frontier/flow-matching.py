# ---
# jupyter:
#   difflab:
#     cold_seconds: 76
#     cold_seconds_with_MNIST: 120
#     prerequisites:
#     - deeper/probability-flow.py
#     - deeper/sde-sandbox.py
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
# # Flow matching and rectified flow
#
# A diffusion model learns a noise predictor and samples by solving an ODE built
# from it. **Flow matching** (Lipman et al. 2023) skips the detour: it regresses the
# ODE's velocity field directly, on a path from data to noise chosen by the
# modeller. **Rectified flow** (Liu, Gong, Liu 2023) takes the straight path and
# then *straightens the flow itself* by retraining on its own noise-data pairs, so
# that a few Euler steps, even one, land close to the data. Both now train the
# large text-to-image models (Esser et al. 2024).
#
# **What you will learn**
#
# - the conditional flow-matching loss on a Gaussian path, and why its minimiser is
#   the marginal velocity;
# - that on the VP path the flow-matching target is an affine function of the noise
#   target, so diffusion training *is* flow matching with a weight $b(t)^2$, and the
#   learned velocity is the probability-flow ODE's drift;
# - the exact velocity field of a Gaussian mixture, checked against the continuity
#   equation, and that different Gaussian paths give one ODE up to a change of
#   variables;
# - reflow and Liu et al.'s straightness, measured; quality against the number of
#   steps for flow matching, rectified flow and the diffusion model with DDIM, on
#   the sandbox (exact error) and on digits (Frechet distance beside its floor).

# %% tags=["fold"]
# Imports and set-up (the page's provenance box starts here)
import copy
import math
from dataclasses import replace

import matplotlib.pyplot as plt
import torch
from torch.testing import assert_close

from difflab.diffusion.noise import DiscreteNoise, uniform_grid
from difflab.diffusion.samplers import ddim_grid_sample, ddim_sample
from difflab.eval.metrics import evaluate_samples, real_data_floor
from difflab.flow.exact import continuity_residual, exact_velocity, exact_velocity_fn
from difflab.flow.paths import (
    StraightPath,
    conditional_sample,
    conditional_velocity,
    rates,
    velocity_from_eps,
    velocity_weight,
)
from difflab.flow.rectified import (
    FlowTrainConfig,
    flow_sample,
    reflow_pairs,
    straightness,
    time_grid,
    train_velocity,
    velocity_model,
)
from difflab.nets.mlp import MLP, MLPConfig
from difflab.notes import page
from difflab.notes.plotting import show_grid
from difflab.notes.tables import show_table
from difflab.pipelines.frontier import flow_config, load_or_train_flow, reflow_config
from difflab.pipelines.recipes import get_recipe, load_or_train, resolve_data
from difflab.runtime.cache import cached
from difflab.score.sde import VPSDE
from difflab.toy.mixtures import eight_gaussians
from difflab.toy.sandbox import sliced_wasserstein

run = page.start()
quick = run.profile == "quick"
F64 = torch.float64
straight, vp = StraightPath(), VPSDE()

# %% [markdown]
# ## 1. Conditional paths and the flow-matching loss
#
# Keep the site's direction of time: data at $t = 0$, noise at $t = 1$ (Lipman et
# al. run it the other way). A Gaussian **conditional path** joins one data point
# $x_0$ to one noise draw $\epsilon$,
# $$ x_t = \alpha(t)\,x_0 + \sigma(t)\,\epsilon, \qquad
#    u_t = \dot\alpha(t)\,x_0 + \dot\sigma(t)\,\epsilon , \tag{1} $$
# and $u_t$ is its velocity. Averaged over all pairs that pass through $x$ at time
# $t$, these velocities define the **marginal velocity**
# $v(x, t) = \mathbb E[u_t \mid x_t = x]$, whose ODE $\mathrm dx/\mathrm dt = v$
# moves the noise distribution onto the data distribution with the same marginals
# $p_t$ as the paths (Lipman et al. 2023, Theorem 1). The marginal is intractable,
# but it is the minimiser of a regression onto the conditional target,
# $$ \mathcal L_\text{FM}(\theta) = \mathbb E_{t, x_0, \epsilon}
#    \big\| v_\theta(x_t, t) - u_t \big\|^2 \tag{2} $$
# (the conditional mean minimises a squared loss; Lipman et al., Theorem 2). Two paths:
#
# - **straight** (optimal transport between $x_0$ and $\epsilon$, rectified flow):
#   $\alpha = 1 - t$, $\sigma = t$, $u_t = \epsilon - x_0$;
# - **VP** (the diffusion path): $\alpha, \sigma$ of the VP SDE, whose rates follow
#   from its drift and diffusion, $\dot\alpha = f\alpha$ and
#   $\dot\sigma = (g^2 + 2f\sigma^2)/(2\sigma)$.
#
# In the package a path is a `NoiseLevels` (`StraightPath()`, or `VPSDE()`), and
# `conditional_sample`, `conditional_velocity`, `fm_loss` in `difflab.flow.paths`
# are Eqs. (1)-(2).
#
# ## 2. Diffusion training is flow matching with a weight
#
# Substitute $x_0 = (x_t - \sigma\epsilon)/\alpha$ in Eq. (1):
# $$ u_t = \frac{\dot\alpha}{\alpha} x_t + \Big(\dot\sigma - \frac{\dot\alpha}{\alpha}\sigma\Big)\epsilon
#       = f(t)\,x_t + b(t)\,\epsilon, \qquad
#    b(t) = \dot\sigma - f\sigma = \frac{g(t)^2}{2\sigma(t)} . \tag{3} $$
# The target is affine in the noise, with coefficients that depend on $t$ only. So
# parameterise the velocity through a noise predictor the same way,
# $v_\theta = f x_t + b\,\epsilon_\theta$, and the two losses are one:
# $$ \| v_\theta - u_t \|^2 = b(t)^2\, \| \epsilon_\theta - \epsilon \|^2 . \tag{4} $$
#
# <div class="admonition note"><p class="admonition-title">Key result</p>
#
# On the VP path, flow matching is $L_\text{simple}$ weighted by $b(t)^2 =
# g^4/(4\sigma^2)$ over $t$, and the marginal velocity is
# $v = f x + b\,\mathbb E[\epsilon \mid x_t] = f x - \tfrac12 g^2 \nabla \log p_t$
# (Tweedie: $\mathbb E[\epsilon \mid x_t] = -\sigma \nabla\log p_t$), the drift of
# the probability-flow ODE (Song et al. 2021, Eq. 13). A trained diffusion model
# and a flow-matching model on this path learn the same field, and differ only in
# how the loss weighs the times.
#
# </div>
#
# The same algebra on the straight path gives $f = -1/(1-t)$ and $b = 1/(1-t)$:
# flow matching with straight paths is noise prediction weighted by $(1-t)^{-2}$,
# heaviest near the noise end, where $\hat x_0 = (x_t - t\hat\epsilon)/(1-t)$
# magnifies any error in $\hat\epsilon$. The check draws random $(x_0, \epsilon, t)$ and asserts
# Eqs. (3)-(4) to float64 roundoff; the tempting slip of writing the weight as
# $\dot\sigma^2$ (dropping $-f\sigma$) misses by orders of magnitude more.

# %%
g = torch.Generator().manual_seed(0)
x0 = torch.randn(1000, 2, generator=g, dtype=F64)
eps = torch.randn(1000, 2, generator=g, dtype=F64)
t = 0.02 + 0.96 * torch.rand(1000, generator=g, dtype=F64)
eps_hat = eps + 0.3 * torch.randn(1000, 2, generator=g, dtype=F64)  # some predictor
for name, path in (("VP", vp), ("straight", straight)):
    x_t = conditional_sample(path, x0, eps, t)
    u = conditional_velocity(path, x0, eps, t)
    assert_close(velocity_from_eps(path, x_t, eps, t), u, atol=1e-12, rtol=1e-12)
    fm = (velocity_from_eps(path, x_t, eps_hat, t) - u).pow(2).sum(1)
    weighted = velocity_weight(path, t) * (eps_hat - eps).pow(2).sum(1)
    slip = rates(path, t)[1] ** 2 * (eps_hat - eps).pow(2).sum(1)
    rel = float(((fm - weighted) / fm).abs().max())
    rel_slip = float(((fm - slip) / fm).abs().max())
    print(
        f"{name:8s}: Eq. (4) max relative error {rel:.1e}; "
        f"with sigma'^2 as the weight {rel_slip:.1e}"
    )
    assert rel < 1e-10 and rel_slip > 1e-2
assert_close(velocity_weight(straight, t), (1 - t) ** -2)

# %% [markdown]
# The weights over time, against the uniform weight of $L_\text{simple}$ (log
# scale). Both grow without bound at one end: the straight path's at the noise end,
# the VP path's as $\sigma \to 0$ at the data end; in between the VP weight has a
# minimum (printed) and rises towards $t = 1$. Flow-matching codes therefore choose
# the distribution of $t$ with care (Esser et al. 2024 compare several).

# %%
tt = torch.linspace(0.001, 0.999, 999, dtype=F64)
w_vp = velocity_weight(vp, tt)
print(
    f"VP weight: min {float(w_vp.min()):.1f} at t = {float(tt[w_vp.argmin()]):.3f}, "
    f"{float(w_vp[-1]):.0f} at t = {float(tt[-1]):.3f}, "
    f"{float(w_vp[0]):.0f} at t = {float(tt[0]):.3f}"
)

# %% tags=["fold"]
# Plotting code for the figure
fig, ax = plt.subplots(figsize=(page.FIGURE_WIDTH_IN, 2.4))
ax.semilogy(tt, velocity_weight(vp, tt), label="VP path, $b(t)^2$")
ax.semilogy(tt, velocity_weight(straight, tt), label="straight path, $(1-t)^{-2}$")
ax.axhline(1.0, color="k", lw=1, ls="--", label="$L_\\mathrm{simple}$ (weight 1)")
ax.set(xlabel="t", ylabel="weight on $\\|\\epsilon_\\theta - \\epsilon\\|^2$")
ax.legend()
plt.show()

# %% [markdown]
# ## 3. The exact velocity of a Gaussian mixture
#
# For the sandbox's mixture $\sum_k w_k \mathcal N(m_k, C_k)$, each component is
# jointly Gaussian with $x_t$, so the posterior means are linear in $x$: with
# $S_k = \alpha^2 C_k + \sigma^2 I$ and responsibilities $r_k(x) = p_t(k \mid x)$,
# $$ \mathbb E[x_0 \mid x, k] = m_k + \alpha C_k S_k^{-1}(x - \alpha m_k), \quad
#    \mathbb E[\epsilon \mid x, k] = \sigma S_k^{-1}(x - \alpha m_k), $$
# $$ v(x, t) = \sum_k r_k(x)\big(\dot\alpha\,\mathbb E[x_0 \mid x, k]
#    + \dot\sigma\,\mathbb E[\epsilon \mid x, k]\big) . \tag{5} $$
# `difflab.flow.exact.exact_velocity` is Eq. (5). Two independent checks. First,
# it must equal the probability-flow drift built from the mixture's exact *score*
# (Section 2's key result), a different formula. Second, it must transport $p_t$:
# the continuity equation $\partial_t p_t = -\nabla\cdot(p_t v)$, evaluated with
# central differences of step $h = 10^{-4}$ on the exact density (truncation error
# $O(h^2)$, about $10^{-8}$ here). A field built with every mean shifted by 0.3 fails
# the second check by orders of magnitude.

# %%
mix = eight_gaussians()
x = 2.5 * torch.randn(200, 2, generator=g, dtype=F64)
for name, path, t_check in (("straight", straight, 0.4), ("VP", vp, 0.3)):
    tv = torch.full((200,), t_check, dtype=F64)
    alpha, sigma = path.marginal_coefs(tv)
    score = mix.perturbed_score(x, alpha, sigma)
    pf_drift = velocity_from_eps(path, x, -sigma[:, None] * score, tv)
    drift_err = float((exact_velocity(mix, path, x, tv) - pf_drift).abs().max())
    dp_dt, minus_div = continuity_residual(mix, path, x, t_check)
    resid = float((dp_dt - minus_div).abs().max())
    print(
        f"{name:8s} t = {t_check}: |Eq. (5) - PF drift| {drift_err:.1e}; "
        f"continuity residual {resid:.1e} (|dp/dt| up to {float(dp_dt.abs().max()):.2f})"
    )
    assert drift_err < 1e-10 and resid < 1e-6


class ShiftedMeans:
    """The mixture with every mean moved by 0.3 inside Eq. (5); the true density."""

    means, covs, weights = mix.means + 0.3, mix.covs, mix.weights
    perturbed_log_posterior = staticmethod(mix.perturbed_log_posterior)
    perturb = staticmethod(mix.perturb)


wrong = continuity_residual(ShiftedMeans(), straight, x, 0.4)
miss = float((wrong[0] - wrong[1]).abs().max())
print(f"shifted means: continuity residual {miss:.1e}")
assert miss > 1e-3

# %% [markdown]
# ## 4. One ODE, many paths
#
# Different Gaussian paths give different velocity fields, but not different
# flows. In the variables $y = x/\alpha$ and $s = \sigma/\alpha$, every Gaussian
# path's ODE is $\mathrm dy/\mathrm ds = \mathbb E[\epsilon \mid x_t]$ (page
# [DDIM](../deeper/ddim.py), Eq. 14 of Song et al. 2021a), and that depends on the
# path only through $s$. So the VP flow at time $t$ and the straight flow at the
# time $t'$ with the same $s$, $t' = \sigma/(\alpha + \sigma)$, are the same flow
# after rescaling $x' = x/(\alpha + \sigma)$. Theory says the two ODEs give the
# same samples from the same (rescaled) starting points; numerically they must agree
# to the solvers' error, which we estimate by halving the step, and the same
# solve without the rescaling must miss.
#
# A consequence worth knowing: DDIM's update on the straight path is *exactly*
# Euler's step for the velocity $\hat\epsilon - \hat x_0$ (expand
# $x_s = (1-s)\hat x_0 + s\hat\epsilon$); rectified flow's Euler sampler is DDIM.

# %%
x_start = torch.randn(200, 2, generator=g, dtype=F64)
t_hi, t_lo = torch.tensor([0.5], dtype=F64), torch.tensor([0.05], dtype=F64)
(a_hi, s_hi), (a_lo, s_lo) = vp.marginal_coefs(t_hi), vp.marginal_coefs(t_lo)
v_vp, v_straight = exact_velocity_fn(mix, vp), exact_velocity_fn(mix, straight)


def solve_vp(steps):
    return flow_sample(v_vp, x_start, time_grid(steps, 0.5, 0.05), method="heun")


def solve_mapped(steps):
    u_hi, u_lo = float(s_hi / (a_hi + s_hi)), float(s_lo / (a_lo + s_lo))
    grid = time_grid(steps, u_hi, u_lo)
    return flow_sample(v_straight, x_start / (a_hi + s_hi), grid, method="heun")


# Heun is second order: the error at 200 steps is about a third of the change
# from 100 to 200 steps (Richardson). Both solves carry such an error, so the
# two can differ by up to the sum of the two estimates, both measured on the
# straight path's scale; the tolerance is that sum with a margin of 3.
vp_100, vp_200 = solve_vp(100), solve_vp(200)
mapped_100, mapped = solve_mapped(100), solve_mapped(200)
err_vp = float((vp_100 - vp_200).abs().max() / (a_lo + s_lo)) / 3
err_mapped = float((mapped_100 - mapped).abs().max()) / 3
tol = 3 * (err_vp + err_mapped)
gap = float((mapped - vp_200 / (a_lo + s_lo)).abs().max())
grid = time_grid(200, float(s_hi / (a_hi + s_hi)), float(s_lo / (a_lo + s_lo)))
naive = flow_sample(v_straight, x_start, grid, method="heun")
naive_gap = float((naive - vp_200 / (a_lo + s_lo)).abs().max())
print(
    f"VP vs straight after the change of variables: {gap:.1e} (estimated errors "
    f"{err_vp:.1e} and {err_mapped:.1e}, tolerance {tol:.1e})"
)
print(f"without rescaling x: {naive_gap:.2f}")
assert gap < tol and naive_gap > 100 * tol

score_eps = lambda x, t: (  # noqa: E731  the exact eps-predictor on the straight path
    -straight.sigma(t)[:, None] * mix.perturbed_score(x, *straight.marginal_coefs(t))
)
grid = time_grid(10, 0.99, 0.0)
ddim = ddim_grid_sample(score_eps, x_start, grid, noise=straight, progress=False)
euler = flow_sample(v_straight, x_start, grid)
print(f"DDIM vs Euler on the straight path: {float((ddim - euler).abs().max()):.1e}")
assert_close(ddim, euler, atol=1e-10, rtol=0)

# %% [markdown]
# ## 5. Rectified flow: reflow and straightness
#
# A flow whose paths are straight at constant speed is integrated exactly by one
# Euler step. Liu et al. (2023) measure how far a flow is from that:
# $$ S = \int_0^1 \mathbb E\,\big\|(x_1 - x_0) - \dot x_t\big\|^2 \,\mathrm dt , \tag{6} $$
# zero exactly for straight paths. Flow matching's marginal velocity is *not*
# straight: paths that cross in the conditional picture are averaged, and the
# marginal paths curve around each other. **Reflow** (their Algorithm 1) draws noise
# $z$, solves the trained flow to its end $x_0$, and trains a new velocity field by
# flow matching on these *coupled* pairs $(x_0, z)$ with the straight path. The new
# flow has the same marginals, and no convex transport cost $\mathbb E\,c(x_0 - z)$
# of its coupling exceeds the old one's (their Section 3). For straightness the
# paper proves less: the sum of $S$ over $K$ successive reflows is bounded by the
# starting coupling's $\mathbb E\,\|x_1 - x_0\|^2$, so the straightest of the $K$
# flows has $S \le \mathbb E\,\|x_1 - x_0\|^2 / K$. That does not say each reflow is
# straighter than the flow it came from; whether one reflow straightens this
# flow on this data is measured below.
#
# On the sandbox we train three small networks with the same budget (steps, batch
# and learning rate): flow matching on the straight path ("FM"), the diffusion model
# ($L_\text{simple}$ on the VP path, sampled with DDIM), and FM's reflow
# ("RF", FM's weights fine-tuned on FM's own pairs, which costs extra steps and the
# pair generation; the table states the steps). Each is cached.

# %%
TOY_STEPS = 1500 if quick else 6000
toy_cfg = FlowTrainConfig(steps=TOY_STEPS, batch_size=256, lr=2e-3, time_scale=1000.0)
mlp_cfg = MLPConfig(dim=2, hidden=96, depth=3)
toy_data = mix.sample(20_000, torch.Generator().manual_seed(1))
DEPS = ("difflab.flow.rectified", "difflab.nets.mlp", "difflab.nets.unet")


# %% tags=["fold"]
# Helpers: an MLP with fixed initial weights, and training through the cache
def fresh_mlp():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return MLP(mlp_cfg)


def cached_net(name, config, train_fn, make, deps=DEPS):
    def build(path):
        net, losses = train_fn()
        return {"net": net.state_dict(), "losses": losses}

    def load(state):
        net = make()
        net.load_state_dict(state["net"])
        return net.eval()

    return cached("flow", (name, config), deps=deps, build=build, load=load)[0]


# %%
fm_net = cached_net(
    "toy-fm",
    (mlp_cfg, toy_cfg),
    lambda: train_velocity(fresh_mlp(), toy_data, toy_cfg),
    fresh_mlp,
)
dm_cfg = replace(toy_cfg, prediction="eps", t_min=vp.t_min)
dm_net = cached_net(
    "toy-diffusion",
    (mlp_cfg, dm_cfg, repr(vp)),
    lambda: train_velocity(fresh_mlp(), toy_data, dm_cfg, path=vp),
    fresh_mlp,
)
REFLOW_PAIRS, REFLOW_STEPS = 20_000, TOY_STEPS // 2
rf_cfg = replace(toy_cfg, steps=REFLOW_STEPS, lr=1e-3)


def train_reflow():
    z = torch.randn(REFLOW_PAIRS, 2, generator=torch.Generator().manual_seed(2))
    x_end, _ = reflow_pairs(velocity_model(fm_net, 1000.0), z, steps=50)
    return train_velocity(copy.deepcopy(fm_net).train(), x_end, rf_cfg, noise=z)


rf_net = cached_net(
    "toy-reflow", (mlp_cfg, toy_cfg, rf_cfg, REFLOW_PAIRS), train_reflow, fresh_mlp
)
v_fm, v_rf = velocity_model(fm_net, 1000.0), velocity_model(rf_net, 1000.0)
eps_dm = velocity_model(dm_net, 1000.0)  # the diffusion model's eps(x, t)

# %% [markdown]
# First, the trained FM network against the exact field of Eq. (5), at points and
# times drawn as in training. The network never saw $v$, only the conditional
# targets $u_t$, whose spread around $v$ (the irreducible part of the loss) is
# printed for scale. Then straightness (Eq. 6, 100 Euler steps) and the transport
# cost $\mathbb E\|x_0 - z\|^2$ of the exact flow (1-rectified flow), the trained FM
# and its reflow, from the same noise, with standard errors.

# %%
n_eval = 4000
x0_e = mix.sample(n_eval, g, dtype=F64)
e_e = torch.randn(n_eval, 2, generator=g, dtype=F64)
t_e = torch.rand(n_eval, generator=g, dtype=F64)
x_e = conditional_sample(straight, x0_e, e_e, t_e)
v_true = exact_velocity(mix, straight, x_e, t_e)
with torch.no_grad():
    v_net = v_fm(x_e.float(), t_e.float()).double()
net_err = (v_net - v_true).pow(2).sum(1)
target_spread = (conditional_velocity(straight, x0_e, e_e, t_e) - v_true).pow(2).sum(1)
print(
    f"E||v_FM - v||^2 = {net_err.mean():.4f} ± {net_err.std() / math.sqrt(n_eval):.4f};"
    f" E||u_t - v||^2 = {target_spread.mean():.3f} (the loss's floor)"
)
assert net_err.mean() < 0.1 * target_spread.mean()

# %%
z_test = torch.randn(n_eval, 2, generator=g)
flows = {
    "exact FM field": exact_velocity_fn(mix, straight),
    "FM (trained)": v_fm,
    "RF (reflow of FM)": v_rf,
}
straight_rows, S, ends = [], {}, {}
for name, v in flows.items():
    zz = z_test.double() if name.startswith("exact") else z_test
    s_path, x_end = straightness(v, zz, steps=100)
    S[name], ends[name] = s_path.double(), x_end.double()
    cost = (x_end.double() - z_test.double()).pow(2).sum(1)
    straight_rows.append(
        {
            "flow": name,
            "S": float(s_path.mean()),
            "S_se": float(s_path.std() / math.sqrt(n_eval)),
            "cost": float(cost.mean()),
            "cost_se": float(cost.std() / math.sqrt(n_eval)),
        }
    )
show_table(
    straight_rows,
    ["flow", "S", "cost"],
    headers={"S": "straightness S ± se", "cost": "E‖x₀ − z‖² ± se"},
    digits={"S": 4, "cost": 3},
    spread={"S": "S_se", "cost": "cost_se"},
    caption=f"{n_eval} paths from the same noise, 100 Euler steps",
)
d = S["FM (trained)"] - S["RF (reflow of FM)"]
d_mean, d_se = float(d.mean()), float(d.std() / math.sqrt(n_eval))
print(f"S(FM) - S(RF) = {d_mean:.4f} ± {d_se:.4f} (paired)")
assert d_mean > 4 * d_se

# %% tags=["fold"]
# Plotting code for the figure
fig, axes = plt.subplots(1, 3, figsize=(page.FIGURE_WIDTH_IN, 2.3), sharey=True)
for ax, (name, v) in zip(axes, flows.items(), strict=True):
    zz = z_test[:60].double() if name.startswith("exact") else z_test[:60]
    states = [zz]
    flow_sample(v, zz, time_grid(50), callback=lambda i, acc=states: acc.append(i["x"]))
    traj = torch.stack(states).double()  # (steps + 1, 60, 2)
    ax.plot(traj[..., 0], traj[..., 1], lw=0.5, color="C0", alpha=0.7)
    ax.plot(*traj[0].T, ".", ms=2, color="k")
    ax.plot(*traj[-1].T, ".", ms=3, color="C3")
    ax.set_title(name, fontsize=8)
    ax.set_aspect("equal")
plt.show()

# %% [markdown]
# Now quality against the number of steps. Each model is sampled from the same
# noise with Euler steps on a uniform grid in $t$ (FM and RF) or with DDIM on the
# VP SDE's uniform grid (the diffusion model; DDIM is the first-order solver for
# its ODE, Section 4). The error is the sliced Wasserstein distance to fresh samples
# of the exact mixture, with its floor (two exact samples); each entry is the mean
# over seeds with its standard error.

# %%
SEEDS, N_TOY = 5, 2000
NFES = (1, 2, 4, 8, 16)


def toy_sample(name, k, z):
    if name == "diffusion + DDIM":
        return ddim_grid_sample(
            eps_dm, z, uniform_grid(vp, k), noise=vp, progress=False
        )
    return flow_sample(v_fm if name == "FM" else v_rf, z, time_grid(k))


toy_names = ("FM", "RF", "diffusion + DDIM")
sw = {key: [] for key in [(n, k) for n in toy_names for k in NFES] + ["floor"]}
with torch.no_grad():
    for seed in range(SEEDS):
        gs = torch.Generator().manual_seed(100 + seed)
        z = torch.randn(N_TOY, 2, generator=gs)
        ref = mix.sample(N_TOY, gs)
        proj = torch.Generator().manual_seed(seed)
        sw["floor"].append(
            float(sliced_wasserstein(mix.sample(N_TOY, gs), ref, 128, proj))
        )
        for name in toy_names:
            for k in NFES:
                x_k = toy_sample(name, k, z)
                proj = torch.Generator().manual_seed(seed)
                sw[name, k].append(float(sliced_wasserstein(x_k, ref, 128, proj)))
sw = {key: torch.tensor(v) for key, v in sw.items()}
se = lambda v: float(v.std() / math.sqrt(len(v)))  # noqa: E731
floor_toy = float(sw["floor"].mean())

# %% tags=["fold"]
# Table of the sliced Wasserstein distances
steps_of = {
    "FM": TOY_STEPS,
    "RF": TOY_STEPS + REFLOW_STEPS,
    "diffusion + DDIM": TOY_STEPS,
}
show_table(
    [
        {
            "model": name,
            "train steps": steps_of[name],
            **{f"NFE {k}": float(sw[name, k].mean()) for k in NFES},
            **{f"se{k}": se(sw[name, k]) for k in NFES},
        }
        for name in toy_names
    ],
    ["model", *[f"NFE {k}" for k in NFES], "train steps"],  # the verdict first
    digits=3,
    spread={f"NFE {k}": f"se{k}" for k in NFES},
    caption=f"Sliced W2 to the exact mixture (floor {floor_toy:.3f} ± "
    f"{se(sw['floor']):.3f}), {SEEDS} seeds of {N_TOY} samples",
)

# %%
one_gap = sw["FM", 1] - sw["RF", 1]
print(f"one step: SW(FM) - SW(RF) = {float(one_gap.mean()):.3f} ± {se(one_gap):.3f}")
assert float(one_gap.mean()) > 4 * se(one_gap)

# %% [markdown]
# ## 6. Digits
#
# The same three models on handwritten digits. With MNIST downloaded they work
# on its latents: the latent-diffusion page's factor-4 autoencoder (MNIST resized
# to 32x32, 2x8x8 latents, from the shared cache) and the `mnist-latent` recipe,
# the `ddpm` recipe's UNet and budget on those latents, so that a laptop trains
# all three in minutes; every sample is decoded to a 28x28 image before it is
# scored. Without MNIST they work on the 8x8 digits' pixels with the `ddpm`
# recipe itself. The cell below prints which. Either way the recipe fixes the
# network and the training budget (its UNet, steps, batch size and EMA): the
# diffusion model *is* that recipe (from the shared cache), sampled with DDIM; FM
# trains the same UNet on the straight path's velocity; RF fine-tunes FM on pairs
# from FM's ODE (Heun, 16 evaluations each), which costs extra steps, stated in
# the table. DDIM (with $\hat x_0$ clipped to $[-1, 1]$ on pixels, as everywhere on
# the site; latents are not bounded, so not clipped) takes its $k$ steps at
# the teacher's steps $N j/k - 1$, the "trailing" spacing of Lin et al. (2024):
# the site's default grid starts at step 0 and would spend one of two evaluations
# at almost no noise. Quality is
# the Frechet distance in the site's digit classifier's features, beside the
# real-data floor for the same number of images, mean ± standard error over
# seeds of the initial noise.

# %%
MNIST = run.found_mnist(
    "scikit-learn's 8x8 digits where it uses images (Section 6; the sections "
    "before it use a synthetic mixture either way)"
)
IMG_RECIPE = "mnist-latent" if MNIST and quick else "ddpm"
ddpm = load_or_train(IMG_RECIPE, progress=False)
recipe, digits = resolve_data(get_recipe(IMG_RECIPE))
LATENT = ddpm.autoencoder is not None
print(
    f"{digits.note} Models: the {IMG_RECIPE} recipe's UNet on "
    + ("2x8x8 latents, decoded to 28x28." if LATENT else "the pixels.")
)
# The recipe's budget for FM, half as many steps again for reflow
# (difflab.pipelines.frontier, which `sample flow` and `sample reflow` also use).
img_cfg = flow_config(recipe)
img_rf_cfg, N_PAIRS = reflow_config(recipe)
fm_img = load_or_train_flow("fm", recipe=IMG_RECIPE).net
rf_img = load_or_train_flow("reflow", recipe=IMG_RECIPE).net

# %%
from difflab.diffusion import solvers

IMG_SEEDS, N_IMG = (3, 500) if quick else (5, 2000)
IMG_NFES = (1, 2, 4, 8)
img_names = ["FM", "RF", "diffusion + DDIM", "diffusion + DPM-Solver++"]


def trailing(k):
    """k increasing DDPM step indices ending at the last: N j / k - 1, j = 1..k."""
    return torch.arange(1, k + 1) * ddpm.schedule.T // k - 1


def img_sample(name, k, seed):
    gs = torch.Generator().manual_seed(seed)
    z = ddpm.noise(N_IMG, gs)
    if name == "diffusion + DDIM":
        eps, clip = ddpm.eps_model(), None if LATENT else 1.0
        x = ddim_sample(eps, z, ddpm.schedule, trailing(k), clip_x0=clip, progress=False)
    elif name == "diffusion + DPM-Solver++":
        dn = DiscreteNoise(ddpm.schedule)
        eps = ddpm.eps_model()
        x = solvers.dpm_solver_pp_2m(
            eps, z, dn.grid(trailing(k)), noise=dn, progress=False
        )
    else:
        net = fm_img if name == "FM" else rf_img
        x = flow_sample(velocity_model(net, 999.0), z, time_grid(k))
    return (ddpm.decode(x) if LATENT else x).clamp(-1, 1)  # images, 28x28 or 8x8


fd = {}
with torch.no_grad():
    for name in img_names:
        for k in IMG_NFES:
            fd[name, k] = torch.tensor(
                [
                    evaluate_samples(img_sample(name, k, s), digits.name)["fd"]
                    for s in range(IMG_SEEDS)
                ]
            )
floor_img = real_data_floor(digits.name, N_IMG)[0]

# %% tags=["fold"]
# Table of the Frechet distances
img_steps = {"FM": img_cfg.steps, "RF": img_cfg.steps + img_rf_cfg.steps}
show_table(
    [
        {
            "model": name,
            "train steps": img_steps.get(name, recipe.train.steps),
            **{f"NFE {k}": float(fd[name, k].mean()) for k in IMG_NFES},
            **{f"se{k}": se(fd[name, k]) for k in IMG_NFES},
        }
        for name in img_names
    ],
    ["model", *[f"NFE {k}" for k in IMG_NFES], "train steps"],  # the verdict first
    digits=2,
    spread={f"NFE {k}": f"se{k}" for k in IMG_NFES},
    caption=f"Frechet distance on {digits.name} (real-data floor {floor_img:.2f}), "
    f"{IMG_SEEDS} seeds of {N_IMG} samples",
)

# %%
img_gap = fd["FM", 1] - fd["RF", 1]
print(f"one step: FD(FM) - FD(RF) = {float(img_gap.mean()):.2f} ± {se(img_gap):.2f}")
assert float(img_gap.mean()) > 4 * se(img_gap)

# %% tags=["fold"]
# Plotting code for the figure
# 16 samples a model, 4 across, so that one digit is at least 28 px on the page
fig, axes = plt.subplots(1, 3, figsize=(page.FIGURE_WIDTH_IN, 2.6))
for ax, name in zip(axes, ("FM", "RF", "diffusion + DDIM"), strict=True):
    show_grid(ax, img_sample(name, 2, 0)[:16], nrow=4)  # (16, C, H, W)
    ax.set_title(f"{name}, 2 steps", fontsize=9)
plt.show()

# %% [markdown]
# ## What this page shows, and what it does not
#
# Checked by asserts on every build: the flow-matching target identities (Eqs. 3-4)
# to roundoff; the exact mixture velocity against the probability-flow drift and
# the continuity equation; the VP and straight flows mapping into each other; DDIM
# being Euler on the straight path; the trained FM field close to the exact one;
# reflow lowering straightness (paired, beyond four standard errors) and one-step
# error on both worlds. The tables compare the three models at each number of
# steps; read them with their standard errors and floors, and note that RF was
# given extra training steps (stated in each table) plus the cost of generating
# its pairs.
#
# Liu et al. (2023) add a distillation step after reflow for their best one-step
# results on CIFAR-10, and Esser et al. (2024) report that at scale rectified flow
# with a non-uniform sampling of $t$ did best among the formulations they compared;
# this page tests neither. Whether FM beats the diffusion model at many steps on
# these small worlds depends on the budget and is left to the tables.
#
# ## Summary
#
# | on paper | in code |
# | --- | --- |
# | path $\alpha, \sigma$, Eq. (1) | `StraightPath()`, `VPSDE()` (any `NoiseLevels`) |
# | $x_t$, $u_t$, Eq. (1); loss Eq. (2) | `conditional_sample`, `conditional_velocity`, `fm_loss` |
# | Eq. (3)-(4) | `velocity_from_eps`, `eps_from_velocity`, `velocity_weight` |
# | exact mixture velocity, Eq. (5) | `exact_velocity(mixture, path, x, t)` |
# | ODE sampling | `flow_sample(v, x_1, time_grid(k), method="euler" / "heun")` |
# | straightness, Eq. (6); reflow | `straightness(v, z)`, `reflow_pairs(v, z)`, `train_velocity(..., noise=z)` |
#
# ## Exercises
#
# 1. Derive $b(t) = g^2/(2\sigma)$ from $\dot\sigma$ and $f$, and check that the
#    straight path gives $b = 1/(1-t)$.
# 2. Train FM on the VP path (`train_velocity(..., path=VPSDE(), t_min=1e-3)`) and
#    compare it with the diffusion model. Which times does each loss neglect?
# 3. Reflow a second time (2-rectified to 3-rectified flow). How much straighter does
#    it get, and what happens to the error at many steps?
# 4. Sample FM with Heun instead of Euler at the same NFE. Where does it help?
#
# ## References
#
# - Y. Lipman, R. T. Q. Chen, H. Ben-Hamu, M. Nickel, M. Le. *Flow Matching for
#   Generative Modeling*. ICLR 2023. [arXiv:2210.02747](https://arxiv.org/abs/2210.02747)
# - X. Liu, C. Gong, Q. Liu. *Flow Straight and Fast: Learning to Generate and
#   Transfer Data with Rectified Flow*. ICLR 2023. [arXiv:2209.03003](https://arxiv.org/abs/2209.03003)
# - D. P. Kingma, R. Gao. *Understanding Diffusion Objectives as the ELBO with
#   Simple Data Augmentation*. NeurIPS 2023. [arXiv:2303.00848](https://arxiv.org/abs/2303.00848)
# - P. Esser et al. *Scaling Rectified Flow Transformers for High-Resolution Image
#   Synthesis*. ICML 2024. [arXiv:2403.03206](https://arxiv.org/abs/2403.03206)
# - S. Lin, B. Liu, J. Li, X. Yang. *Common Diffusion Noise Schedules and Sample
#   Steps are Flawed*. WACV 2024. [arXiv:2305.08891](https://arxiv.org/abs/2305.08891)
# - Y. Song et al. *Score-Based Generative Modeling through Stochastic Differential
#   Equations*. ICLR 2021. [arXiv:2011.13456](https://arxiv.org/abs/2011.13456)

# %%
run.finish(dataset=f"synthetic Gaussian mixture (eight Gaussians); {digits.name}")
