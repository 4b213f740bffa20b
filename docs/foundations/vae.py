# ---
# jupyter:
#   difflab:
#     cold_seconds: 13
#     cold_seconds_with_MNIST: 71
#     prerequisites:
#     - foundations/probability.py
#     - foundations/pytorch.py
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
# # The VAE and the evidence lower bound
#
# A variational autoencoder (VAE) is a latent-variable model trained by maximising
# a lower bound on its log-likelihood. The same bound, taken over a chain of latent
# variables, is how DDPM is derived, so this is the page to read first.
#
# **What you will learn**
#
# - why $\log p(x)$ of a latent-variable model is intractable, and how any
#   approximate posterior $q(z\mid x)$ gives a lower bound on it, the ELBO, whose
#   gap is exactly $\mathrm{KL}(q(z\mid x)\,\|\,p(z\mid x))$;
# - the reparameterisation trick that lets us train encoder and decoder together;
# - a discretised likelihood for images, so that the numbers are in nats and
#   bits/dim, comparable with the DDPM chapter;
# - how big the gap is on a trained model, measured with the importance-weighted
#   bound of Burda et al. (2016) and, in a 2D latent space, by brute-force quadrature;
# - what the latent space looks like, and how good the samples are by the site's
#   distance metric.
#
# Papers: [Kingma & Welling 2014, *Auto-Encoding Variational Bayes*](https://arxiv.org/abs/1312.6114);
# [Rezende, Mohamed & Wierstra 2014, *Stochastic Backpropagation and Approximate
# Inference in Deep Generative Models*](https://arxiv.org/abs/1401.4082);
# [Burda, Grosse & Salakhutdinov 2016, *Importance Weighted Autoencoders*](https://arxiv.org/abs/1509.00519).

# %% tags=["fold"]
# Imports and set-up (the page's provenance box starts here)
import math

import matplotlib.pyplot as plt
import torch
from torch.distributions import Normal

from difflab.data.images import load_images
from difflab.eval.metrics import evaluate_samples, format_scores
from difflab.foundations import vae as V
from difflab.notes import page
from difflab.notes.plotting import show_grid, smooth
from difflab.notes.tables import show_table
from difflab.pipelines import pretrained
from difflab.runtime.device import default_device

run = page.start()
device = default_device()
data = load_images("auto")
test = load_images(data.name, split="test")
print(data.note)
D = data.channels * data.image_size**2  # pixels per image
print(
    f"{len(data.images)} training and {len(test.images)} test images of {tuple(data.images.shape[1:])}"
)

# %% [markdown]
# ## The model and why its likelihood is hard
#
# Draw a code $z\in\mathbb{R}^d$ from a simple prior and an image from a decoder
# network that reads it:
#
# $$ p(z) = \mathcal N(0, I), \qquad p_\theta(x) = \int p_\theta(x\mid z)\, p(z)\, dz. \tag{1} $$
#
# The integral in Eq. (1) runs over every code; for a neural decoder it has no
# closed form, and neither has the posterior
# $p_\theta(z\mid x) = p_\theta(x\mid z)p(z)/p_\theta(x)$, which needs it.
#
# ## The evidence lower bound
#
# Take *any* density $q(z\mid x)$ over codes. Bayes' rule says
# $\log p_\theta(x) = \log p_\theta(x, z) - \log p_\theta(z\mid x)$ for every $z$.
# Add and subtract $\log q(z\mid x)$, then average over $z\sim q(z\mid x)$ (the
# left side does not depend on $z$):
#
# $$ \log p_\theta(x) = \underbrace{\mathbb E_{q(z\mid x)}\Big[\log \frac{p_\theta(x,z)}{q(z\mid x)}\Big]}_{\mathcal L(x)\ (\text{ELBO})}
#  + \underbrace{\mathbb E_{q(z\mid x)}\Big[\log \frac{q(z\mid x)}{p_\theta(z\mid x)}\Big]}_{\mathrm{KL}(q(z\mid x)\,\|\,p_\theta(z\mid x))\ \ge\ 0}. \tag{2} $$
#
# A KL divergence is never negative, so
#
# $$ \log p_\theta(x) \ \ge\ \mathcal L(x) = \mathbb E_{q(z\mid x)}[\log p_\theta(x\mid z)] - \mathrm{KL}(q(z\mid x)\,\|\,p(z)), \tag{3} $$
#
# where the second form splits $p_\theta(x,z) = p_\theta(x\mid z)p(z)$. The bound is
# tight exactly when $q$ equals the true posterior, and Eq. (2) names the gap: it is
# the KL from $q$ to the posterior. Raising $\mathcal L$ over $q$ therefore does two
# things at once: it pushes $q$ towards $p_\theta(z\mid x)$ and, over $\theta$, it
# pushes up (a bound on) the likelihood. The first term of Eq. (3) rewards codes
# that let the decoder rebuild $x$; the second keeps the codes close to the prior.
#
# In a VAE, $q_\phi(z\mid x) = \mathcal N(\mu_\phi(x), \mathrm{diag}\,\sigma^2_\phi(x))$ is
# produced by an *encoder* network (amortised inference: one network for every
# $x$). Against the standard normal prior the KL term is a sum over coordinates:
#
# $$ \mathrm{KL}(q_\phi(z\mid x)\,\|\,p(z)) = \tfrac12 \sum_{j=1}^{d} \big(\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2\big). \tag{4} $$
#
# ## The reparameterisation trick
#
# The reconstruction term is an expectation over a distribution that depends on
# $\phi$, so we cannot just differentiate inside it. Write the sample as a
# deterministic function of $\phi$ and of noise that does not depend on $\phi$:
#
# $$ z = \mu_\phi(x) + \sigma_\phi(x) \odot \epsilon, \quad \epsilon\sim\mathcal N(0, I)
#   \quad\Longrightarrow\quad
#   \nabla_\phi\, \mathbb E_{q_\phi}[f(z)] = \mathbb E_{\epsilon}\big[\nabla_\phi f(\mu_\phi + \sigma_\phi\odot\epsilon)\big]. \tag{5} $$
#
# One $\epsilon$ per image gives an unbiased, low-variance gradient of Eq. (3); this is
# how `difflab.foundations.vae.elbo` is written and trained with Adam.
#
# ## A likelihood for images in $[-1, 1]$
#
# The data are 8-bit (MNIST has 256 grey levels; the 8x8 digits have 17, which we
# treat as a subset of the same 256). A continuous density on discrete data can grow
# without bound, so the decoder is a **discretised Gaussian**: pixel $i$ gets the
# Gaussian mass of its bin of half-width $\delta = 1/255$, with the outermost bins open
# (as in Ho et al. 2020, Eq. 13),
#
# $$ p_\theta(x_i\mid z) = \Phi\Big(\frac{x_i+\delta-m_i(z)}{s_i(z)}\Big) - \Phi\Big(\frac{x_i-\delta-m_i(z)}{s_i(z)}\Big), \tag{6} $$
#
# with mean $m(z)$ and scale $s(z)$ from the decoder. Eq. (6) is a probability, so
# $-\mathcal L$ is a code length in **nats**, and $-\mathcal L / (D \ln 2)$ is in
# **bits per dimension** ($D$ pixels), the unit of the DDPM chapter.
#
# ## From scratch: one ELBO by hand
#
# Before training, we compute Eq. (3) for a batch with the formulas above, using only
# `torch.distributions.Normal`, and compare with the package.

# %%
cfg = V.vae_config(run.profile, data.name)
print(cfg)
torch.manual_seed(0)  # only for this untrained check model
fresh = V.VAE(cfg)
x = test.images[:16]

with torch.no_grad():
    mu, log_var = fresh.encode(x)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(7))
    z = mu + torch.exp(0.5 * log_var) * eps  # Eq. (5)
    m, log_s = fresh.decode(z)
    m, s, xd = m.double(), log_s.double().exp(), x.double()
    cdf = Normal(m, s).cdf
    delta = 1 / 255
    upper = torch.where(xd > 1 - delta, torch.ones_like(xd), cdf(xd + delta))
    lower = torch.where(xd < -1 + delta, torch.zeros_like(xd), cdf(xd - delta))
    rec_hand = (upper - lower).log().flatten(1).sum(1)  # Eq. (6), summed over pixels
    kl_hand = 0.5 * (mu**2 + log_var.exp() - 1 - log_var).sum(1)  # Eq. (4)
    elbo_hand = rec_hand - kl_hand  # Eq. (3)
    pkg = V.elbo(fresh, x, torch.Generator().manual_seed(7))

print("ELBO by hand :", elbo_hand[:4].numpy().round(3))
print("difflab.foundations.vae  :", pkg.elbo[:4].numpy().round(3))
torch.testing.assert_close(pkg.elbo.double(), elbo_hand, rtol=1e-4, atol=1e-2)

# %% [markdown]
# ## Training
#
# `difflab.pipelines.pretrained.pretrained_vae` maximises the one-sample estimate of Eq. (3) with
# Adam (Kingma & Welling's Algorithm 1), and caches the result keyed by the
# configuration printed above (which holds the dataset and the training settings)
# and the source of `difflab.foundations.vae`, so a rebuild of this page trains nothing. Encoder and decoder are two-hidden-layer
# perceptrons; the latent space has $d = 2$ dimensions so that we can draw it.

# %% tags=["fold"]
# Train the VAE (or load it from the cache) and plot its training curve
model, history = pretrained.pretrained_vae(
    cfg, data.images, device=device, progress=False
)
model = model.cpu()

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(history, lw=0.5, alpha=0.4, label="per step")
ax.plot(smooth(history, 51), lw=1.5, label="moving average")
ax.set_ylim(None, 2.5 * sorted(history)[len(history) // 2])
ax.set(xlabel="step", ylabel="-ELBO (nats / image)", title="VAE training")
ax.legend()
plt.show()

# %% [markdown]
# ## The KL term, checked where it is large
#
# The analytic KL of Eq. (4) is what the package uses; a Monte Carlo estimate of
# $\mathbb E_q[\log q(z\mid x) - \log p(z)]$ must agree with it. The check is made on
# the *trained* encoder: its posteriors are narrow and away from the origin, so the KL
# is several nats per image. (On the untrained encoder it is a few thousandths of a
# nat, and a KL off by a factor of two would pass any tolerance.) The tolerance is
# four standard errors of the Monte Carlo mean, per image; dropping the factor
# $\tfrac12$ of Eq. (4) must then fail.

# %%
n_mc = 20_000
with torch.no_grad():
    x16 = test.images[:16]
    mu, log_var = model.encode(x16)
    kl_pkg = V.elbo(model, x16, torch.Generator().manual_seed(7)).kl.double()
    eps = torch.randn((n_mc, *mu.shape), generator=torch.Generator().manual_seed(1))
    zs = mu + torch.exp(0.5 * log_var) * eps
    log_q = Normal(mu, torch.exp(0.5 * log_var)).log_prob(zs).sum(-1)
    log_p = Normal(0.0, 1.0).log_prob(zs).sum(-1)
    log_ratio = (log_q - log_p).double()  # (n_mc, 16)
kl_mc, kl_se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n_mc)
z_ok = ((kl_mc - kl_pkg) / kl_se).abs()
z_no_half = ((kl_mc - 2 * kl_pkg) / kl_se).abs()  # Eq. (4) without its 1/2
print(
    "KL Monte Carlo:",
    [f"{m:.3f} ± {e:.3f}" for m, e in zip(kl_mc, kl_se, strict=True)][:4],
)
print("KL Eq. (4)    :", [f"{k:.3f}" for k in kl_pkg[:4]])
print(
    f"largest error over 16 images: {z_ok.max():.1f} standard errors; "
    f"without the 1/2, the smallest is {z_no_half.min():.0f}"
)
assert z_ok.max() < 4 and z_no_half.min() > 4

# %% [markdown]
# ## How loose is the bound?
#
# Burda et al. (2016) tighten Eq. (3) by averaging $K$ importance weights inside the
# logarithm:
#
# $$ \mathcal L_K(x) = \mathbb E_{z_1..z_K \sim q}\Big[\log \frac1K \sum_{k=1}^K \frac{p_\theta(x, z_k)}{q(z_k\mid x)}\Big], \qquad
#  \mathcal L_1 = \mathcal L \le \mathcal L_K \le \mathcal L_{K+1} \le \log p_\theta(x). \tag{7} $$
#
# The weights average to $p_\theta(x)$, so Jensen's inequality gives the bound; more
# weights make the average less noisy and the bound tighter, and $\mathcal L_K \to
# \log p_\theta(x)$ as $K\to\infty$. Because $\mathcal L_{1000} \le \log p_\theta(x)$,
# the difference $\mathcal L_{1000} - \mathcal L$ is a *lower bound* on the gap of
# Eq. (2), the KL between the encoder and the true posterior; it does not estimate
# the gap itself, and it falls short by however much $\mathcal L_{1000}$ still
# misses $\log p_\theta(x)$. The next section measures that shortfall directly.

# %%
n_eval = 100 if run.profile == "quick" else 500
x_eval, y_eval = test.images[:n_eval], test.labels[:n_eval]
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    terms = V.elbo(model, x_eval, g)
bounds = {K: V.iwae_bound(model, x_eval, K, g) for K in (1, 10, 100, 1000)}

to_bpd = lambda nats: -nats / (D * math.log(2))  # noqa: E731
print(
    f"test ELBO {terms.elbo.mean():.2f} nats = reconstruction {terms.reconstruction.mean():.2f} - KL {terms.kl.mean():.2f}"
)
show_table(
    [
        {
            "K": K,
            "L": b.mean().item(),
            "se": (b.std() / n_eval**0.5).item(),
            "bpd": to_bpd(b.mean()).item(),
        }
        for K, b in bounds.items()
    ],
    ["K", "L", "bpd"],
    headers={"L": "L_K (nats) ± s.e.", "bpd": "bits/dim"},
    digits={"L": 3, "bpd": 4},
    spread={"L": "se"},
    caption=f"The importance-weighted bound of Eq. (7) on {n_eval} test images",
)
gap_i = bounds[1000] - terms.elbo  # per image: paired, so the s.e. is small
gap, gap_se = gap_i.mean(), gap_i.std() / n_eval**0.5
print(
    f"L_1000 - ELBO = {gap:.3f} ± {gap_se:.3f} nats per image: "
    "a lower bound on the KL of q to the posterior, Eq. (2)"
)

# %%
# Eq. (7): L_K increases with K. Each K used fresh samples, so compare per image
# and allow three standard errors of the paired difference.
Ks = list(bounds)
for k1, k2 in zip(Ks[:-1], Ks[1:], strict=True):
    diff = bounds[k2] - bounds[k1]
    assert diff.mean() > -3 * diff.std() / n_eval**0.5, (k1, k2)
# ... and K = 1000 is measurably tighter than K = 1 (four standard errors).
diff = bounds[1000] - bounds[1]
assert diff.mean() > 4 * diff.std() / n_eval**0.5

# %% tags=["fold"]
# Plotting code for the figure
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(Ks, [b.mean().item() for b in bounds.values()], "o-", label=r"$\mathcal{L}_K$")
ax.axhline(terms.elbo.mean().item(), color="C1", ls="--", label="ELBO (one sample)")
ax.set(
    xscale="log",
    xlabel="K",
    ylabel="nats / image",
    title="Importance-weighted bounds on test images",
)
ax.legend()
plt.show()

# %% [markdown]
# ## The gap by brute force
#
# With $d = 2$ we can do what is impossible in general: compute the integral of Eq. (1)
# on a grid. For a few test images we integrate $p_\theta(x\mid z)p(z)$ over a
# $161\times161$ grid around the encoder's mean, which gives $\log p_\theta(x)$
# up to quadrature error, and the exact ELBO of Eq. (3) by integrating against
# $q$. Eq. (2) then says their difference is $\mathrm{KL}(q\,\|\,p(z\mid x))$, and
# Eq. (7) puts $\mathcal L_{1000}$ between the two. How much of the gap it closes
# depends on the tails of the importance weights: where $q$ is narrower than the
# posterior, rare large weights make $\mathcal L_K$ converge slowly.
#
# A quadrature can be wrong without any bound noticing (the ELBO on the grid is below
# $\log p$ on the same grid by Jensen's inequality, whatever the grid), so each grid
# value is checked against an estimate that shares no code with it: the ELBO as a
# Monte Carlo mean over $z\sim q$, and $\log p_\theta(x)$ by importance sampling
# from a proposal twice as wide as $q$, each with its standard error. Forgetting the
# cell area in the quadrature of Eq. (1) fails that check by several nats.
#
# On these four images $\mathcal L_{1000} - \mathcal L$ recovers between about half
# and all of the gap; a share above one is the noise of the single estimate of
# $\mathcal L_{1000}$, which is itself random.


# %% tags=["fold"]
# Helpers: log p(x, z), the same on a grid of codes around mu(x), and the Monte Carlo
# estimates that share no code with the grid
def log_joint(x1, zz):
    """log p(x, z) = log p(x | z) + log p(z) for one image x1 and codes zz (N, 2)."""
    mean, log_s = model.decode(zz)
    log_px_z = (
        V.discretized_gaussian_log_likelihood(x1.expand_as(mean), mean, log_s)
        .flatten(1)
        .sum(1)
    )
    return (log_px_z + Normal(0.0, 1.0).log_prob(zz).sum(1)).double()


def log_joint_on_grid(x1, half_width=6.0, n=161):
    """log p(x, z) and log q(z|x) on a grid of z around mu(x); returns cell area too."""
    mu1, log_var1 = model.encode(x1[None])
    width = half_width * torch.exp(0.5 * log_var1[0]).clamp(min=0.05) + 0.5
    axes = [
        torch.linspace(float(mu1[0, j] - width[j]), float(mu1[0, j] + width[j]), n)
        for j in range(2)
    ]
    zz = torch.cartesian_prod(*axes)  # (n*n, 2)
    log_q = Normal(mu1, torch.exp(0.5 * log_var1)).log_prob(zz).sum(1).double()
    area = ((axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])).double()
    return log_joint(x1, zz), log_q, area


def monte_carlo(x1, m=20_000, seed=0):
    """Two estimates that share no code with the grid, each with its standard error:
    the ELBO as a mean over z ~ q, and log p(x) by importance sampling from a
    proposal twice as wide as q (wide, so that the weights have a finite variance);
    the latter's standard error is the delta method's sd(w) / (mean(w) sqrt(m))."""
    g = torch.Generator().manual_seed(seed)
    mu1, log_var1 = model.encode(x1[None])
    s1 = torch.exp(0.5 * log_var1)
    z_q = mu1 + s1 * torch.randn(m, 2, generator=g)
    log_w_q = log_joint(x1, z_q) - Normal(mu1, s1).log_prob(z_q).sum(1)
    z_w = mu1 + 2 * s1 * torch.randn(m, 2, generator=g)
    log_w = log_joint(x1, z_w) - Normal(mu1, 2 * s1).log_prob(z_w).sum(1)
    w = (log_w - log_w.max()).exp()
    return (
        log_w_q.mean().item(),
        (log_w_q.std() / m**0.5).item(),
        (torch.logsumexp(log_w, 0) - math.log(m)).item(),
        (w.std() / w.mean() / m**0.5).item(),
    )


# %%
rows = []
with torch.no_grad():
    for i in range(4):
        log_j, log_q, area = log_joint_on_grid(x_eval[i])
        log_px = torch.logsumexp(log_j, 0) + area.log()  # Eq. (1) by quadrature
        q = log_q.exp() * area
        elbo_exact = (q * (log_j - log_q)).sum() / q.sum()  # Eq. (3) by quadrature
        elbo_mc, elbo_se, lp_is, lp_se = monte_carlo(x_eval[i])
        rows.append(
            {
                "image": i,
                "lp": log_px.item(),
                "lp_is": lp_is,
                "lp_se": lp_se,
                "elbo": elbo_exact.item(),
                "elbo_mc": elbo_mc,
                "elbo_se": elbo_se,
                "kl": (log_px - elbo_exact).item(),
                "l1000": bounds[1000][i].item(),
                "area": area.item(),
            }
        )

# %% tags=["fold"]
# Table: quadrature beside the independent estimates
show_table(
    rows,
    ["image", "lp", "lp_is", "elbo", "elbo_mc", "kl", "l1000"],
    headers={
        "lp": "log p(x), grid",
        "lp_is": "log p(x), imp. sampling",
        "elbo": "ELBO, grid",
        "elbo_mc": "ELBO, Monte Carlo",
        "kl": "KL(q ‖ posterior)",
        "l1000": "L_1000",
    },
    digits=3,
    spread={"lp_is": "lp_se", "elbo_mc": "elbo_se"},
    caption="Log-likelihood and ELBO by quadrature beside independent estimates (nats)",
)

# %%
# The grid values must agree with the independent estimates to four standard
# errors (16 comparisons in all, counting the wrong variant below). A grid that is
# too coarse or too narrow, or an integral missing its cell area, fails here.
for r in rows:
    assert abs(r["lp"] - r["lp_is"]) < 4 * r["lp_se"], r
    assert abs(r["elbo"] - r["elbo_mc"]) < 4 * r["elbo_se"], r
    # Teeth: Eq. (1) as a plain sum over the grid, without the cell area.
    assert abs(r["lp"] - math.log(r["area"]) - r["lp_is"]) > 4 * r["lp_se"], r
z_lp = max(abs(r["lp"] - r["lp_is"]) / r["lp_se"] for r in rows)
z_elbo = max(abs(r["elbo"] - r["elbo_mc"]) / r["elbo_se"] for r in rows)
closed = [(r["l1000"] - r["elbo"]) / r["kl"] for r in rows]
print(
    f"largest disagreement: log p {z_lp:.1f}, ELBO {z_elbo:.1f} standard errors; "
    f"without the cell area log p is off by {-math.log(rows[0]['area']):.1f} nats"
)
print("share of the gap that L_1000 - ELBO recovers:", [f"{c:.2f}" for c in closed])

# %% [markdown]
# ## The latent space
#
# Left: the encoder's means $\mu_\phi(x)$ of test images, coloured by their digit.
# Right: decoder means $m(z)$ on a grid of codes placed at evenly spaced quantiles
# of the prior (the picture of Kingma & Welling's Fig. 4). Codes of similar digits
# cluster, and the decoder morphs smoothly between classes, because the KL term of
# Eq. (3) packs every code into the same unit Gaussian, leaving no empty space.

# %%
with torch.no_grad():
    mu_test = model.encode(test.images)[0]
n_side = 7  # 7 x 7 decoded points: at least 28 px a digit on the page
u = Normal(0.0, 1.0).icdf(torch.linspace(0.03, 0.97, n_side))
grid_z = torch.stack(torch.meshgrid(u, -u, indexing="xy"), dim=-1).reshape(-1, 2)
with torch.no_grad():
    manifold = model.decode(grid_z)[0].clamp(-1, 1)

fig, axs = plt.subplots(1, 2, figsize=(6.4, 3.4))
sc = axs[0].scatter(mu_test[:, 0], mu_test[:, 1], c=test.labels, cmap="tab10", s=6)
axs[0].legend(*sc.legend_elements(), title="digit", fontsize=9, loc="upper right")
axs[0].set(xlabel="$z_1$", ylabel="$z_2$", title="encoder means of test images")
show_grid(
    axs[1], manifold, nrow=n_side, title="decoder means on a grid of prior quantiles"
)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Samples and the distance metric
#
# Sampling is ancestral: $z\sim\mathcal N(0, I)$, then the decoder's mean image (the
# per-pixel noise of Eq. (6) is usually left out in pictures). The quality is
# scored with the site's metric, a Frechet distance in the features of the
# package's own classifier, printed beside the floor that real images reach with
# the same sample size (see the DDPM chapter for the protocol).

# %%
n_samples = 1000 if run.profile == "quick" else 5000
samples = model.sample(n_samples, generator=torch.Generator().manual_seed(0))
scores = evaluate_samples(samples, data.name)
print("VAE samples:", format_scores(scores))
# The distance's spread over sample draws: four more seeds of the same size.
fds = torch.tensor(
    [scores["fd"]]
    + [
        evaluate_samples(
            model.sample(n_samples, generator=torch.Generator().manual_seed(s)),
            data.name,
        )["fd"]
        for s in range(1, 5)
    ]
)
fd_mean, fd_se = fds.mean().item(), (fds.std() / len(fds) ** 0.5).item()
print(
    f"Frechet distance over {len(fds)} draws: {fd_mean:.3f} ± {fd_se:.3f} "
    f"(real-data floor {scores['floor']:.3f})"
)
assert fd_mean - 4 * fd_se > 2 * scores["floor"]  # "well above the floor"

fig, axs = plt.subplots(1, 2, figsize=(6.4, 3.2))
# 24 images a panel, 6 across: at least 28 px a digit on the page
show_grid(axs[0], test.images[:24], nrow=6, title="test images")
show_grid(axs[1], samples[:24], nrow=6, title="VAE samples (decoder means)")
plt.show()

# %% [markdown]
# A two-dimensional code is a very small bottleneck: the decoder mean for a code
# is the average of the images that share it, which is why VAE samples look blurry
# and why the distance above is well above the real-data floor. The DDPM chapter
# uses many latent variables, one per noise level, with no bottleneck at all.
#
# ## Summary
#
# - Eq. (2): $\log p(x) = \mathcal L(x) + \mathrm{KL}(q(z\mid x)\,\|\,p(z\mid x))$,
#   so the ELBO is a lower bound whose gap is the posterior mismatch.
# - Eq. (5): the reparameterisation trick turns the sampling step into a
#   differentiable function of the encoder's outputs.
# - With a discretised decoder, Eq. (6), the bounds are code lengths in nats and
#   bits/dim; the importance-weighted bound $\mathcal L_K$, Eq. (7), tightens the
#   ELBO, so $\mathcal L_{1000} - \mathcal L$ is a lower bound on the gap; on this
#   model it recovers most of the gap that quadrature measures exactly.
#
# ## Exercises
#
# 1. Starting from Jensen's inequality $\log \mathbb E[w] \ge \mathbb E[\log w]$ with
#    $w = p(x,z)/q(z\mid x)$, derive Eq. (3) without Bayes' rule. Which step hides the
#    KL term of Eq. (2)?
# 2. Derive Eq. (4) from the densities of two Gaussians. What is the KL between two
#    diagonal Gaussians that are both not standard?
# 3. Show that $\mathcal L_2 \ge \mathcal L_1$ (hint: the average of two weights, one
#    of them chosen uniformly at random, and Jensen's inequality).
# 4. Replace the reparameterised gradient by the score-function (REINFORCE) estimator
#    $\mathbb E_q[f(z)\nabla_\phi \log q_\phi(z\mid x)]$ for one batch and compare the
#    variance of the two gradient estimates of the encoder's last layer.
# 5. Train with a latent dimension of 16 (`V.vae_config(..., latent_dim=16)`). How do
#    the ELBO, the gap $\mathcal L_{1000} - \mathcal L$ and the distance change? Why can
#    the quadrature check no longer be done?
# 6. For a linear-Gaussian model $x = Wz + b + \text{noise}$ the posterior is
#    Gaussian. Show that then the ELBO equals $\log p(x)$ for the right $q$ (this is
#    one of the unit tests in `src/difflab/tests/test_vae_gan.py`).

# %%
run.finish(dataset=data.name)
