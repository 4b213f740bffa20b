# ---
# jupyter:
#   difflab:
#     cold_seconds: 4
#     prerequisites: []
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
# # Probability and Gaussians
#
# A diffusion model is, underneath the neural network, a long calculation with
# Gaussians: noise is added with Gaussians, the reverse steps are Gaussians, and the
# training loss is a sum of divergences between Gaussians. This page collects the
# facts that the rest of the site uses, derives each one, and checks each one
# numerically against the package `difflab.foundations.gaussians`.
#
# **What you will learn**
#
# - the reparameterisation trick, and why it makes a sample differentiable;
# - why sums and linear maps of Gaussians are Gaussian, and how to read marginals
#   and conditionals off a partitioned covariance;
# - the product of two Gaussian densities (the algebra behind every posterior);
# - the KL divergence between two Gaussians in closed form, checked by Monte Carlo;
# - why the forward process of diffusion stays Gaussian at every step, and where
#   the DDPM posterior $q(x_{t-1} \mid x_t, x_0)$ comes from.

# %% tags=["fold"]
# Imports and set-up (the page's provenance box starts here)
import math

import matplotlib.pyplot as plt
import torch
from torch.testing import assert_close

from difflab.foundations import gaussians as G
from difflab.notes import page

run = page.start()
F64 = torch.float64

# %% [markdown]
# ## 1. The Gaussian density
#
# A random vector $x \in \mathbb{R}^D$ is Gaussian with mean $\mu$ and covariance
# $\Sigma$ (symmetric, positive definite) when its density is
#
# $$ \mathcal{N}(x; \mu, \Sigma) = (2\pi)^{-D/2} |\Sigma|^{-1/2}
#    \exp\!\big(-\tfrac12 (x-\mu)^\top \Sigma^{-1} (x-\mu)\big). \tag{1} $$
#
# Two facts carry most of this page. First, the log-density is a quadratic in
# $x$, so anything whose log is quadratic in $x$ is Gaussian, and its mean and
# covariance can be read off by completing the square. Second, if
# $\epsilon \sim \mathcal{N}(0, I)$ then $\mu + L\epsilon$ with $LL^\top = \Sigma$
# has density Eq. (1): a change of variables with constant Jacobian $|L|$ turns
# $\tfrac12\|\epsilon\|^2$ into $\tfrac12 (x-\mu)^\top \Sigma^{-1}(x-\mu)$.
#
# ## 2. The reparameterisation trick
#
# Suppose we want the gradient, with respect to $\mu$ and $\sigma$, of an
# expectation $\mathbb{E}_{x \sim \mathcal{N}(\mu, \sigma^2)}[f(x)]$. The
# distribution we average over depends on the parameters, so we cannot simply move
# the gradient inside. Writing the sample as a deterministic function of the
# parameters and of parameter-free noise fixes this:
#
# $$ x = \mu + \sigma \epsilon, \qquad \epsilon \sim \mathcal{N}(0, 1), \tag{2} $$
#
# $$ \nabla_{\mu,\sigma}\, \mathbb{E}_{x}[f(x)]
#    = \mathbb{E}_{\epsilon}\big[\nabla_{\mu,\sigma} f(\mu + \sigma\epsilon)\big]
#    = \mathbb{E}_{\epsilon}\big[f'(\mu + \sigma\epsilon)\,(1, \epsilon)\big]. \tag{3} $$
#
# Networks usually output $\log \sigma^2$ (any real number is a valid output),
# so `difflab.foundations.gaussians.reparameterize(mu, log_var, generator)` computes
# $\mu + e^{\frac12 \log\sigma^2}\epsilon$. This is the trick that lets a VAE train
# its encoder [(Kingma & Welling 2014)](https://arxiv.org/abs/1312.6114), and it is
# also exactly how a diffusion model samples $x_t$ from $x_0$ during training.
#
# First, the same thing from scratch, checked against the package with the same
# random numbers:

# %%
mu = torch.tensor([0.5, -1.0], dtype=F64)
log_var = torch.tensor([0.0, math.log(0.25)], dtype=F64)

g = torch.Generator().manual_seed(0)
eps = torch.randn(mu.shape, generator=g, dtype=F64)
x_scratch = mu + torch.exp(0.5 * log_var) * eps

x_pkg = G.reparameterize(mu, log_var, torch.Generator().manual_seed(0))
assert_close(x_scratch, x_pkg)

# %% [markdown]
# Now Eq. (3) at work. For $f(x) = x^2$ we know the answer in closed form:
# $\mathbb{E}[x^2] = \mu^2 + \sigma^2$, so the gradient is $(2\mu, 2\sigma)$.
# Autograd through reparameterised samples must reproduce it.

# %%
mu_p = torch.tensor(0.7, dtype=F64, requires_grad=True)
sigma_p = torch.tensor(1.3, dtype=F64, requires_grad=True)
n = 200_000
x = G.reparameterize(
    mu_p.expand(n), (2 * torch.log(sigma_p)).expand(n), torch.Generator().manual_seed(1)
)
(x**2).mean().backward()
# Each sample contributes 2x (to d/dmu) and 2x*eps (to d/dsigma); their sample
# standard deviations over sqrt(n) are the standard errors of the two estimates.
with torch.no_grad():
    eps_s = (x - mu_p) / sigma_p
    se_mu = (2 * x).std() / math.sqrt(n)
    se_sigma = (2 * x * eps_s).std() / math.sqrt(n)
print(
    f"d/dmu    : Monte Carlo {mu_p.grad.item():.4f} ± {se_mu:.4f}   exact {2 * 0.7:.4f}"
)
print(
    f"d/dsigma : Monte Carlo {sigma_p.grad.item():.4f} ± {se_sigma:.4f}"
    f"   exact {2 * 1.3:.4f}"
)
assert abs(mu_p.grad - 1.4) < 4 * se_mu and abs(sigma_p.grad - 2.6) < 4 * se_sigma

# %% [markdown]
# ## 3. Sums and linear maps
#
# Let $x \sim \mathcal{N}(\mu, \Sigma)$ and $A$ a matrix. Writing
# $x = \mu + L\epsilon$ gives $Ax + b = (A\mu + b) + (AL)\epsilon$, again of the
# form "mean plus matrix times standard noise", so
#
# $$ Ax + b \sim \mathcal{N}(A\mu + b,\; A\Sigma A^\top). \tag{4} $$
#
# If $y \sim \mathcal{N}(\nu, \Gamma)$ is independent of $x$, stack them into one
# Gaussian vector $(x, y)$ with block-diagonal covariance and apply Eq. (4) with
# $A = [I \; I]$:
#
# $$ x + y \sim \mathcal{N}(\mu + \nu,\; \Sigma + \Gamma). \tag{5} $$
#
# Means add, and (for independent terms) covariances add. Independence matters:
# $x + x = 2x$ has covariance $4\Sigma$, not $2\Sigma$.

# %%
g = torch.Generator().manual_seed(2)
mu_x, Sigma_x = (
    torch.tensor([1.0, 0.0], dtype=F64),
    torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=F64),
)
mu_y, Sigma_y = (
    torch.tensor([-2.0, 3.0], dtype=F64),
    torch.tensor([[0.3, -0.1], [-0.1, 0.2]], dtype=F64),
)
A = torch.tensor([[2.0, -1.0], [0.5, 1.0]], dtype=F64)
n = 200_000
xs = mu_x + torch.randn(n, 2, generator=g, dtype=F64) @ torch.linalg.cholesky(Sigma_x).T
ys = mu_y + torch.randn(n, 2, generator=g, dtype=F64) @ torch.linalg.cholesky(Sigma_y).T

m_sum, S_sum = G.gaussian_sum(mu_x, Sigma_x, mu_y, Sigma_y)
m_lin, S_lin = G.gaussian_linear(A, mu_x, Sigma_x)
zs = xs @ A.T


def cov_se(S, n):
    """Standard error of each sample-covariance entry of a Gaussian:
    Var(S_hat_ij) = (S_ii S_jj + S_ij^2) / n (Anderson 2003, Thm. 3.4.4)."""
    d = S.diagonal()
    return ((d[:, None] * d[None, :] + S**2) / n).sqrt()


# Every tolerance is 4 standard errors of the estimate it bounds.
assert ((xs + ys).mean(0) - m_sum).abs().le(4 * (S_sum.diagonal() / n).sqrt()).all()
assert (torch.cov((xs + ys).T) - S_sum).abs().le(4 * cov_se(S_sum, n)).all()
assert (torch.cov(zs.T) - S_lin).abs().le(4 * cov_se(S_lin, n)).all()
# Teeth: adding covariances for the dependent sum x + x (2 Sigma instead of 4 Sigma)
# misses the simulated covariance of 2x by hundreds of standard errors.
z_dep = ((torch.cov((2 * xs).T) - 2 * Sigma_x).abs() / cov_se(4 * Sigma_x, n)).min()
print(f"x + x with covariances added: off by at least {z_dep:.0f} standard errors")
assert z_dep > 4
print("Eq. (4) covariance:", [[round(v, 4) for v in row] for row in S_lin.tolist()])

# %% [markdown]
# ## 4. Marginals and conditionals
#
# Split $x = (x_a, x_b)$ and partition the mean and covariance the same way:
#
# $$ \mu = \begin{pmatrix}\mu_a \\ \mu_b\end{pmatrix}, \qquad
#    \Sigma = \begin{pmatrix}\Sigma_{aa} & \Sigma_{ab} \\
#                            \Sigma_{ba} & \Sigma_{bb}\end{pmatrix}. \tag{6} $$
#
# **Marginal.** $x_a$ is the linear map $[I \; 0]\,x$, so by Eq. (4)
# $x_a \sim \mathcal{N}(\mu_a, \Sigma_{aa})$: just drop the rows and columns of
# the other block.
#
# **Conditional.** Define the residual $r = x_a - K x_b$ with
# $K = \Sigma_{ab}\Sigma_{bb}^{-1}$. Its covariance with $x_b$ is
# $\Sigma_{ab} - K\Sigma_{bb} = 0$, and jointly Gaussian variables that are
# uncorrelated are independent. So, given $x_b$, the residual still has its
# unconditional law $\mathcal{N}(\mu_a - K\mu_b,\; \Sigma_{aa} - K\Sigma_{ba})$,
# and $x_a = r + Kx_b$ shifts it by the now-fixed $Kx_b$:
#
# $$ \mu_{a\mid b} = \mu_a + \Sigma_{ab}\Sigma_{bb}^{-1}(x_b - \mu_b), \tag{7} $$
#
# $$ \Sigma_{a\mid b} = \Sigma_{aa} - \Sigma_{ab}\Sigma_{bb}^{-1}\Sigma_{ba}. \tag{8} $$
#
# The conditional mean is linear in the observation, and the conditional
# covariance (the Schur complement) does not depend on it at all. A second route to
# the same answer goes through the precision matrix $\Lambda = \Sigma^{-1}$:
# keeping only the terms of Eq. (1) that involve $x_a$ and completing the square
# gives covariance $\Lambda_{aa}^{-1}$ and mean
# $\mu_a - \Lambda_{aa}^{-1}\Lambda_{ab}(x_b - \mu_b)$. We compute that from
# scratch and check it against `gaussian_conditional`, which uses Eq. (7)-(8).

# %%
mu3 = torch.tensor([0.0, 1.0, -1.0], dtype=F64)
B = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.5, 0.3, 0.7]], dtype=F64)
Sigma3 = B @ B.T
idx_obs, x_obs = [2], torch.tensor([0.5], dtype=F64)

Lam = torch.linalg.inv(Sigma3)
a, b = [0, 1], [2]
cov_scratch = torch.linalg.inv(Lam[a][:, a])
mean_scratch = mu3[a] - cov_scratch @ Lam[a][:, b] @ (x_obs - mu3[b])

mean_c, cov_c = G.gaussian_conditional(mu3, Sigma3, idx_obs, x_obs)
assert_close(mean_c, mean_scratch)
assert_close(cov_c, cov_scratch)
print("mean of (x0, x1) given x2 = 0.5:", [round(v, 4) for v in mean_c.tolist()])

# %% [markdown]
# A figure makes Eq. (7)-(8) concrete in 2D: the joint density, three vertical
# slices $x_b = \text{const}$, and the conditional densities of $x_a$ along each
# slice, which are narrower than the marginal (knowing $x_b$ tells us something) and
# centred on the regression line $\mu_a + K(x_b - \mu_b)$.

# %%
mu2 = torch.tensor([0.0, 0.0], dtype=F64)
Sigma2 = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=F64)
grid = torch.linspace(-3, 3, 201, dtype=F64)
XA, XB = torch.meshgrid(grid, grid, indexing="ij")
dens = G.mvn_log_prob(torch.stack([XA, XB], -1), mu2, Sigma2).exp()

fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.6))
axes[0].contour(XB, XA, dens, levels=8, cmap="Blues")
axes[0].plot(grid, 0.8 * grid, "k--", lw=1, label=r"$\mu_{a|b}$, Eq. (7)")
m_a, v_a = G.gaussian_marginal(mu2, Sigma2, [0])
axes[1].plot(
    grid, G.gaussian_log_prob(grid, m_a, v_a[0]).exp(), "k", label=r"marginal $p(x_a)$"
)
for xb, colour in zip([-1.5, 0.0, 1.5], ["C0", "C1", "C3"], strict=True):
    axes[0].axvline(xb, color=colour, lw=1.5)
    m_c, v_c = G.gaussian_conditional(mu2, Sigma2, [1], torch.tensor([xb], dtype=F64))
    axes[1].plot(
        grid,
        G.gaussian_log_prob(grid, m_c, v_c[0]).exp(),
        colour,
        label=f"$p(x_a | x_b={xb})$",
    )
axes[0].set(xlabel="$x_b$", ylabel="$x_a$", title="joint density and slices")
axes[1].set(xlabel="$x_a$", title="conditionals, Eq. (7)-(8)")
axes[0].legend(loc="upper left")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Products of Gaussian densities
#
# Bayes' rule multiplies a prior by a likelihood, and when both are Gaussian in the
# same variable $x$, so is the product. Adding the two exponents of Eq. (1),
#
# $$ -\tfrac12 (x-\mu_1)^\top\Sigma_1^{-1}(x-\mu_1)
#    -\tfrac12 (x-\mu_2)^\top\Sigma_2^{-1}(x-\mu_2)
#    = -\tfrac12 x^\top(\Sigma_1^{-1}+\Sigma_2^{-1})x
#      + x^\top(\Sigma_1^{-1}\mu_1 + \Sigma_2^{-1}\mu_2) + \text{const}, $$
#
# and matching the quadratic and linear terms with those of a single Gaussian
# gives precisions that add and a precision-weighted mean:
#
# $$ \Sigma = (\Sigma_1^{-1} + \Sigma_2^{-1})^{-1}, \qquad
#    \mu = \Sigma\,(\Sigma_1^{-1}\mu_1 + \Sigma_2^{-1}\mu_2). \tag{9} $$
#
# The leftover constant is the integral of the product. Integrating
# $\mathcal{N}(x;\mu_1,\Sigma_1)\,\mathcal{N}(x;\mu_2,\Sigma_2)$ over $x$ is the
# density of $x_1 - x_2$ at zero for independent $x_1, x_2$, which by Eq. (4)-(5)
# is
#
# $$ Z = \mathcal{N}(\mu_1;\, \mu_2,\, \Sigma_1 + \Sigma_2), \qquad
#    \mathcal{N}(x;\mu_1,\Sigma_1)\,\mathcal{N}(x;\mu_2,\Sigma_2) = Z\,\mathcal{N}(x;\mu,\Sigma). \tag{10} $$
#
# In 1D, Eq. (9) reads $1/\sigma^2 = 1/\sigma_1^2 + 1/\sigma_2^2$: the product is
# always narrower than either factor. We check Eq. (9)-(10) by numerical
# integration on a fine grid.

# %%
m1, v1, m2, v2 = (torch.tensor([v], dtype=F64) for v in (-1.0, 1.0, 2.0, 0.5))
prod = G.gaussian_product(m1, v1, m2, v2)

x = torch.linspace(-12, 12, 100_001, dtype=F64)
dx = x[1] - x[0]
p1, p2 = G.gaussian_log_prob(x, m1, v1).exp(), G.gaussian_log_prob(x, m2, v2).exp()
Z_num = (p1 * p2).sum() * dx
mean_num = (x * p1 * p2).sum() * dx / Z_num
var_num = ((x - mean_num) ** 2 * p1 * p2).sum() * dx / Z_num
assert_close(prod.log_scale.exp()[0], Z_num, atol=1e-9, rtol=0)
assert_close(prod.mu[0], mean_num, atol=1e-9, rtol=0)
assert_close(prod.Sigma[0], var_num, atol=1e-9, rtol=0)
print(
    f"product: mean {prod.mu.item():.4f}, variance {prod.Sigma.item():.4f}, Z {prod.log_scale.exp().item():.4f}"
)

plt.figure(figsize=(6, 3.5))
plt.plot(x, p1, label=r"$\mathcal{N}(-1, 1)$")
plt.plot(x, p2, label=r"$\mathcal{N}(2, 0.5)$")
plt.plot(x, p1 * p2 / Z_num, "k", label="normalised product, Eq. (9)")
plt.xlim(-4, 5)
plt.legend()
plt.title("The product of two Gaussians is a narrower Gaussian")
plt.show()

# %% [markdown]
# ## 6. The KL divergence between two Gaussians
#
# The Kullback-Leibler divergence $\mathrm{KL}(p\,\|\,q) = \mathbb{E}_{p}[\log p(x) - \log q(x)]$
# is zero only when $p = q$ and positive otherwise. For 1D Gaussians
# $p = \mathcal{N}(\mu_1, \sigma_1^2)$ and $q = \mathcal{N}(\mu_2, \sigma_2^2)$,
#
# $$ \log p(x) - \log q(x) = \log\frac{\sigma_2}{\sigma_1}
#    - \frac{(x-\mu_1)^2}{2\sigma_1^2} + \frac{(x-\mu_2)^2}{2\sigma_2^2}. \tag{11} $$
#
# Under $p$, $\mathbb{E}[(x-\mu_1)^2] = \sigma_1^2$ and
# $\mathbb{E}[(x-\mu_2)^2] = \sigma_1^2 + (\mu_1-\mu_2)^2$ (variance plus squared
# bias), so
#
# $$ \mathrm{KL}(p\,\|\,q) = \frac12\left[\log\frac{\sigma_2^2}{\sigma_1^2}
#    + \frac{\sigma_1^2 + (\mu_1-\mu_2)^2}{\sigma_2^2} - 1\right]. \tag{12} $$
#
# For diagonal Gaussians the log-density is a sum over coordinates, so the KL is
# the sum of Eq. (12) over coordinates. For full covariances the same computation,
# with $\mathbb{E}[(x-\mu_2)^\top\Sigma_2^{-1}(x-\mu_2)] = \mathrm{tr}(\Sigma_2^{-1}\Sigma_1) + (\mu_1-\mu_2)^\top\Sigma_2^{-1}(\mu_1-\mu_2)$,
# gives
#
# $$ \mathrm{KL} = \frac12\Big[\mathrm{tr}(\Sigma_2^{-1}\Sigma_1)
#    + (\mu_2-\mu_1)^\top\Sigma_2^{-1}(\mu_2-\mu_1) - D
#    + \log\frac{|\Sigma_2|}{|\Sigma_1|}\Big]. \tag{13} $$
#
# `gaussian_kl` implements Eq. (12) elementwise and `mvn_kl` Eq. (13) with Cholesky
# factors. A Monte Carlo estimate (the sample average of Eq. (11)) must converge to
# them; the figure shows it doing so at the $1/\sqrt{n}$ rate. Each check allows
# four standard errors of the estimate, and to show that this is tight enough to
# catch a real mistake, the cell also evaluates Eq. (13) with the trace replaced
# by the sum of the diagonal ratios $\sum_i (\Sigma_1)_{ii}/(\Sigma_2)_{ii}$, which is
# right for diagonal covariances only: it misses the 3D Monte Carlo value by about
# ten standard errors.

# %%
mu1, var1, mu2_, var2_ = (torch.tensor(v, dtype=F64) for v in (0.0, 1.0, 1.0, 2.0))
kl_exact = G.gaussian_kl(mu1, var1, mu2_, var2_)
g = torch.Generator().manual_seed(3)
x = mu1 + var1.sqrt() * torch.randn(2**17, generator=g, dtype=F64)
log_ratio = G.gaussian_log_prob(x, mu1, var1) - G.gaussian_log_prob(x, mu2_, var2_)
ns = 2 ** torch.arange(4, 18)
kl_mc = torch.stack([log_ratio[:n].mean() for n in ns])
se1 = log_ratio.std() / math.sqrt(ns[-1])
print(
    f"KL closed form {kl_exact.item():.5f}, "
    f"Monte Carlo (n = {ns[-1].item()}) {kl_mc[-1].item():.5f} ± {se1:.5f}"
)
assert abs(kl_mc[-1] - kl_exact) < 4 * log_ratio.std() / math.sqrt(ns[-1])

# %%
# Full covariance: Eq. (13) against Monte Carlo, and against Eq. (12) when diagonal.
mu_q = torch.tensor([1.0, -1.0, 0.5], dtype=F64)
Sigma_q = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, -0.2], [0.0, -0.2, 0.5]], dtype=F64)
xs = (
    mu3
    + torch.randn(400_000, 3, generator=g, dtype=F64) @ torch.linalg.cholesky(Sigma3).T
)
log_ratio3 = G.mvn_log_prob(xs, mu3, Sigma3) - G.mvn_log_prob(xs, mu_q, Sigma_q)
kl3_mc, se3 = log_ratio3.mean(), log_ratio3.std() / math.sqrt(len(xs))
kl3 = G.mvn_kl(mu3, Sigma3, mu_q, Sigma_q)
print(
    f"3D KL closed form {kl3.item():.4f}, Monte Carlo {kl3_mc.item():.4f} ± {se3:.4f}"
)
assert abs(kl3 - kl3_mc) < 4 * se3
# Teeth: a trace that keeps only the diagonals, sum_i Sigma1_ii / Sigma2_ii in
# place of tr(Sigma2^-1 Sigma1), is the classic slip when going from Eq. (12) to
# Eq. (13); it misses the Monte Carlo value by many standard errors.
P_q = torch.linalg.inv(Sigma_q)
kl3_diag = kl3 + 0.5 * (
    (Sigma3.diagonal() / Sigma_q.diagonal()).sum() - (P_q @ Sigma3).trace()
)
print(
    f"with the diagonal-only trace: {kl3_diag.item():.4f}, "
    f"{abs(kl3_diag - kl3_mc) / se3:.1f} standard errors away"
)
assert abs(kl3_diag - kl3_mc) > 4 * se3
d1, d2 = torch.tensor([0.5, 2.0], dtype=F64), torch.tensor([1.0, 1.5], dtype=F64)
assert_close(
    G.mvn_kl(mu2, torch.diag(d1), mu2 + 1, torch.diag(d2)),
    G.gaussian_kl(mu2, d1, mu2 + 1, d2).sum(),
)

# %% tags=["fold"]
# Plotting code for the figure
plt.figure(figsize=(6, 3.5))
plt.semilogx(ns, kl_mc, "o-", label="Monte Carlo mean of Eq. (11)")
plt.axhline(kl_exact, color="k", ls="--", label="closed form, Eq. (12)")
band = 2 * log_ratio.std() / ns.to(F64).sqrt()
plt.fill_between(
    ns,
    kl_exact - band,
    kl_exact + band,
    alpha=0.2,
    color="k",
    label=r"$\pm 2$ standard errors",
)
plt.xlabel("number of samples $n$")
plt.ylabel("KL (nats)")
plt.legend()
plt.title(r"KL$(\mathcal{N}(0,1)\,\|\,\mathcal{N}(1,2))$")
plt.show()

# %% [markdown]
# ## 7. Why the forward process of diffusion stays Gaussian
#
# DDPM [(Ho et al. 2020)](https://arxiv.org/abs/2006.11239) corrupts a data point
# $x_0$ in $T$ small steps,
#
# $$ x_t = \sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\epsilon_t, \qquad
#    \epsilon_t \sim \mathcal{N}(0, I) \text{ independent}. \tag{14} $$
#
# Given $x_0$, each step is a linear map of a Gaussian plus an independent
# Gaussian, so by Eq. (4)-(5) every $x_t$ is Gaussian given $x_0$. Suppose
# $x_{t-1} \mid x_0 \sim \mathcal{N}(\sqrt{\bar\alpha_{t-1}}\,x_0, (1-\bar\alpha_{t-1})I)$
# with $\alpha_t = 1 - \beta_t$ and $\bar\alpha_t = \prod_{s\le t}\alpha_s$. Then the
# mean of $x_t$ is $\sqrt{\alpha_t}\sqrt{\bar\alpha_{t-1}}\,x_0 = \sqrt{\bar\alpha_t}\,x_0$
# and its variance $\alpha_t(1-\bar\alpha_{t-1}) + \beta_t = 1 - \bar\alpha_t$. By
# induction,
#
# $$ q(x_t \mid x_0) = \mathcal{N}\big(\sqrt{\bar\alpha_t}\,x_0,\; (1-\bar\alpha_t)\,I\big). \tag{15} $$
#
# The pair $(x_{t-1}, x_t)$ given $x_0$ is jointly Gaussian with
# $\mathrm{Cov}(x_{t-1}, x_t) = \sqrt{\alpha_t}(1-\bar\alpha_{t-1})$, so the
# posterior of one step back is a *conditional* of that joint, Eq. (7)-(8). Working
# through the algebra gives the DDPM posterior (their Eq. 6-7):
#
# $$ q(x_{t-1}\mid x_t, x_0) = \mathcal{N}\big(\tilde\mu_t, \tilde\beta_t I\big), \quad
#    \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}x_0
#    + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}x_t, \quad
#    \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t. \tag{16} $$
#
# Note what is *not* Gaussian: the marginal $q(x_t) = \int q(x_t\mid x_0)\,p_{\rm data}(x_0)\,dx_0$
# is a mixture over data points, and only becomes close to $\mathcal{N}(0, I)$ when
# $\bar\alpha_t \approx 0$. The cell below checks Eq. (15) against simulation of
# Eq. (14), at every $t$ to within five standard errors of the simulated mean and
# variance, and Eq. (16) against `gaussian_conditional` applied to the joint. The
# same check rejects the off-by-one $\bar\alpha_{t-1}$ in place of $\bar\alpha_t$
# (an easy slip between the paper's $t = 1, \dots, T$ and Python's zero-based
# arrays): at $t = 1$ it predicts variance $0$ instead of $\beta_1$.

# %%
T = 200
betas = torch.linspace(1e-4, 0.04, T, dtype=F64)
alphas = 1 - betas
alpha_bar = torch.cumprod(alphas, 0)
x0 = torch.tensor(1.5, dtype=F64)
g = torch.Generator().manual_seed(4)
xt = x0.expand(20_000).clone()
means, variances = [], []
for t in range(T):
    xt = alphas[t].sqrt() * xt + betas[t].sqrt() * torch.randn(
        xt.shape, generator=g, dtype=F64
    )
    means.append(xt.mean())
    variances.append(xt.var())
means, variances = torch.stack(means), torch.stack(variances)
# Standard errors at each t, from the simulation itself: the sample mean has
# variance v_t / n and the sample variance (for a Gaussian) v_t^2 * 2 / (n - 1),
# with v_t the simulated variance. With 400 comparisons the tolerance is
# 5 standard errors (a false alarm at any one has probability 6e-7, so under
# 3e-4 for the whole curve by the union bound).
n = len(xt)
se_mean, se_var = (variances / n).sqrt(), variances * math.sqrt(2 / (n - 1))


def z_scores(ab):
    """Largest |simulated - predicted| / standard error over t (mean, variance)."""
    z_mean = (means - ab.sqrt() * x0).abs() / se_mean
    z_var = (variances - (1 - ab)).abs() / se_var
    return z_mean.max().item(), z_var.max().item()


z_ok = z_scores(alpha_bar)
# Teeth: the off-by-one alpha_bar_{t-1} in place of alpha_bar_t must fail; it is
# worst at t = 1, where it predicts variance 0 instead of beta_1.
z_off = z_scores(torch.cat([torch.ones(1, dtype=F64), alpha_bar[:-1]]))
print(
    "Eq. (15): largest error "
    f"{max(z_ok):.1f} standard errors (mean {z_ok[0]:.1f}, variance {z_ok[1]:.1f})"
)
print(
    f"alpha_bar_(t-1) for alpha_bar_t: largest error {max(z_off):.0f} standard errors"
)
assert max(z_ok) < 5 and max(z_off) > 5

# %%
t = 50  # paper index t = 51; any t >= 1 works
ab_prev, ab_t = alpha_bar[t - 1], alpha_bar[t]
joint_mu = torch.stack([ab_prev.sqrt() * x0, ab_t.sqrt() * x0])
c = alphas[t].sqrt() * (1 - ab_prev)
joint_Sigma = torch.stack([torch.stack([1 - ab_prev, c]), torch.stack([c, 1 - ab_t])])
x_t_obs = torch.tensor([0.3], dtype=F64)
post_mean, post_var = G.gaussian_conditional(joint_mu, joint_Sigma, [1], x_t_obs)
mu_tilde = (
    ab_prev.sqrt() * betas[t] / (1 - ab_t) * x0
    + alphas[t].sqrt() * (1 - ab_prev) / (1 - ab_t) * x_t_obs
)
beta_tilde = (1 - ab_prev) / (1 - ab_t) * betas[t]
assert_close(post_mean, mu_tilde)
assert_close(post_var[0, 0], beta_tilde)
print(
    f"posterior at t={t}: mean {post_mean.item():.4f}, variance {post_var.item():.5f} = beta_tilde"
)

# %% tags=["fold"]
# Plotting code for the figure
tt = torch.arange(1, T + 1)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(tt, means, label="simulated mean")
ax.plot(tt, alpha_bar.sqrt() * x0, "k--", label=r"$\sqrt{\bar\alpha_t}\,x_0$, Eq. (15)")
ax.plot(tt, variances, label="simulated variance")
ax.plot(tt, 1 - alpha_bar, "k:", label=r"$1-\bar\alpha_t$, Eq. (15)")
ax.set(xlabel="step $t$", title=r"Forward process from $x_0 = 1.5$")
ax.legend()
plt.show()

# %% [markdown]
# ## Summary
#
# | on paper | in code |
# | --- | --- |
# | $\mu + \sigma\epsilon$, Eq. (2) | `reparameterize(mu, log_var, generator)` |
# | $\log\mathcal{N}(x;\mu,\sigma^2)$, $\log\mathcal{N}(x;\mu,\Sigma)$ | `gaussian_log_prob`, `mvn_log_prob` |
# | Eq. (4), Eq. (5) | `gaussian_linear`, `gaussian_sum` |
# | marginal, Eq. (7)-(8) | `gaussian_marginal`, `gaussian_conditional(mu, Sigma, idx_obs, x_obs)` |
# | Eq. (9)-(10) | `gaussian_product` (returns `mu`, `Sigma`, `log_scale` $=\log Z$) |
# | Eq. (12), Eq. (13) | `gaussian_kl(mu1, var1, mu2, var2)`, `mvn_kl` |
#
# Gaussians are closed under linear maps, sums of independent terms,
# marginalisation, conditioning and (up to a constant) multiplication; their KL
# divergence has a closed form. Those five facts are all that the DDPM derivation
# needs.
#
# ## Exercises
#
# 1. Use Eq. (3) to compute $\nabla_\sigma \mathbb{E}[x^4]$ for
#    $x\sim\mathcal{N}(0,\sigma^2)$ by Monte Carlo and check it against the exact
#    $12\sigma^3$. How does the variance of the estimator compare with the
#    score-function (REINFORCE) estimator $\mathbb{E}[f(x)\nabla_\sigma\log p(x)]$?
# 2. Derive the precision-matrix form of the conditional used in Section 4 from
#    Eq. (1), and show it equals Eq. (7)-(8) using the block-inverse formula.
# 3. Show that $\mathrm{KL}(p\|q) \ne \mathrm{KL}(q\|p)$ for the Gaussians of
#    Section 6, and find $\mu_2, \sigma_2$ where they coincide.
# 4. In Eq. (16), derive $\tilde\mu_t$ and $\tilde\beta_t$ by hand from Eq. (7)-(8)
#    and the joint covariance given in Section 7. What happens to $\tilde\beta_t$
#    as $\beta_t \to 0$?
# 5. Repeat the forward-process simulation with $x_0$ drawn from a two-point
#    distribution $\{-1, +1\}$. Is $x_t$ Gaussian? Plot its histogram at several $t$.
#
# ## References
#
# - D. P. Kingma, M. Welling. *Auto-Encoding Variational Bayes*. ICLR 2014.
#   [arXiv:1312.6114](https://arxiv.org/abs/1312.6114)
# - J. Ho, A. Jain, P. Abbeel. *Denoising Diffusion Probabilistic Models*. NeurIPS 2020.
#   [arXiv:2006.11239](https://arxiv.org/abs/2006.11239)
# - C. M. Bishop. *Pattern Recognition and Machine Learning*, Section 2.3. Springer 2006.
# - K. B. Petersen, M. S. Pedersen. *The Matrix Cookbook*, Section 8.1 (products and KL of Gaussians).

# %%
run.finish(dataset="synthetic Gaussians")
