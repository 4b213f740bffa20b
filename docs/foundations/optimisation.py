# ---
# jupyter:
#   difflab:
#     cold_seconds: 4
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
# # Optimisation: gradient descent, momentum, Adam and backpropagation
#
# Every network on this site is trained by the same recipe: compute a loss on a
# mini-batch, compute its gradient with backpropagation, and hand the gradient to
# Adam. This page opens each of those boxes on problems small enough to draw.
#
# **What you will learn**
#
# - why gradient descent is slow on ill-conditioned problems, with the exact rate
#   on a quadratic;
# - how momentum fixes part of that, and Adam's per-coordinate step sizes with bias
#   correction (checked against `torch.optim.Adam`);
# - the three optimisers on the Rosenbrock function;
# - backpropagation written out by hand for a two-layer tanh network, checked
#   against autograd, then used to train the network.

# %% tags=["fold"]
# Imports and set-up (the page's provenance box starts here)
import math

import matplotlib.pyplot as plt
import torch
from torch.testing import assert_close

from difflab.foundations import optim as O
from difflab.notes import page

run = page.start()
F64 = torch.float64

# %% [markdown]
# ## 1. Gradient descent on a quadratic
#
# Gradient descent with step size (learning rate) $\eta$ moves against the gradient:
#
# $$ x_{k+1} = x_k - \eta\,\nabla L(x_k). \tag{1} $$
#
# Near a minimum every smooth loss looks like a quadratic, so the quadratic
# $L(x) = \tfrac12 x^\top A x$ with $A$ symmetric positive definite tells us what to
# expect. Its gradient is $Ax$, so Eq. (1) is the linear recursion
# $x_{k+1} = (I - \eta A)x_k$, i.e. $x_k = (I - \eta A)^k x_0$. In the eigenbasis of
# $A$ (eigenvalues $\lambda_{\min} \le \dots \le \lambda_{\max}$) each coordinate is
# multiplied by $1 - \eta\lambda_i$ at every step:
#
# $$ x_k^{(i)} = (1 - \eta\lambda_i)^k\, x_0^{(i)}. \tag{2} $$
#
# Convergence needs $|1 - \eta\lambda_i| < 1$ for all $i$, so $\eta < 2/\lambda_{\max}$.
# The worst coordinate decides the speed; balancing the two extremes,
# $\eta = 2/(\lambda_{\min} + \lambda_{\max})$, gives the best rate
#
# $$ \rho_{\rm GD} = \frac{\kappa - 1}{\kappa + 1}, \qquad \kappa = \frac{\lambda_{\max}}{\lambda_{\min}}. \tag{3} $$
#
# With condition number $\kappa = 100$ that is $0.98$ per step: about 115 steps per
# factor of 10. The step size is capped by the steepest direction while progress is
# limited by the flattest.

# %%
A = torch.tensor([[10.0, 0.0], [0.0, 0.5]], dtype=F64)  # kappa = 20
R = torch.tensor(
    [[math.cos(0.5), -math.sin(0.5)], [math.sin(0.5), math.cos(0.5)]], dtype=F64
)
A = R @ A @ R.T  # rotate, so the valley is not axis-aligned
lam = torch.linalg.eigvalsh(A)
kappa = (lam[-1] / lam[0]).item()
grad_q = lambda x: O.quadratic_grad(x, A)
x0 = torch.tensor([-2.0, 1.5], dtype=F64)

eta_gd = 2 / (lam[0] + lam[-1]).item()
xs_gd = O.gradient_descent(grad_q, x0, eta_gd, 60)
# Eq. (2): the iterates are exactly (I - eta A)^k x0.
Mk = torch.linalg.matrix_power(torch.eye(2, dtype=F64) - eta_gd * A, 60)
assert_close(xs_gd[-1], Mk @ x0)
rate_gd = (xs_gd[-1].norm() / xs_gd[-2].norm()).item()
print(
    f"kappa = {kappa:.1f}; GD contraction per step {rate_gd:.4f}, Eq. (3) predicts {(kappa - 1) / (kappa + 1):.4f}"
)
assert abs(rate_gd - (kappa - 1) / (kappa + 1)) < 1e-6
# Teeth: the rate of the "safe" step eta = 1 / lambda_max, 1 - 1/kappa, is what one
# gets by balancing nothing; it misses the measured contraction by far more.
print(f"1 - 1/kappa (step 1/lambda_max) would be {1 - 1 / kappa:.4f}")
assert abs(rate_gd - (1 - 1 / kappa)) > 1e-6

# %% [markdown]
# ## 2. Momentum
#
# Heavy-ball momentum [(Polyak 1964)](https://doi.org/10.1016/0041-5553(64)90137-5)
# keeps a running sum of past gradients. In the form PyTorch's `SGD(momentum=beta)`
# uses,
#
# $$ v_{k+1} = \beta v_k + \nabla L(x_k), \qquad x_{k+1} = x_k - \eta\,v_{k+1}, \tag{4} $$
#
# which, after eliminating $v$, is $x_{k+1} = x_k - \eta\nabla L(x_k) + \beta(x_k - x_{k-1})$:
# a gradient step plus a fraction of the previous displacement. Along a direction
# where the gradient keeps its sign, the steps add up to $\eta/(1-\beta)$ times the
# gradient; across a narrow valley, where it flips sign, they cancel. On the quadratic
# each eigen-direction now follows a two-term linear recursion. Its characteristic
# roots have modulus $\sqrt\beta$ when $(1 - \sqrt{\beta})^2 \le \eta\lambda_i \le (1 + \sqrt{\beta})^2$,
# and choosing $\eta$ and $\beta$ so that both ends of the spectrum sit on the edges of that
# interval gives
#
# $$ \eta = \frac{4}{(\sqrt{\lambda_{\max}} + \sqrt{\lambda_{\min}})^2}, \quad
#    \beta = \Big(\frac{\sqrt\kappa - 1}{\sqrt\kappa + 1}\Big)^2, \quad
#    \rho_{\rm HB} = \frac{\sqrt\kappa - 1}{\sqrt\kappa + 1}. \tag{5} $$
#
# The square root of $\kappa$ replaces $\kappa$: with $\kappa = 100$ the rate is
# $0.82$ instead of $0.98$.

# %%
sq = lam.sqrt()
eta_hb = (4 / (sq[0] + sq[-1]) ** 2).item()
beta_hb = ((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)) ** 2
xs_hb = O.momentum(grad_q, x0, eta_hb, beta_hb, 200)
rate_hb = ((xs_hb[200].norm() / xs_hb[100].norm()) ** (1 / 100)).item()
rho_hb = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
# With the tuned eta and beta both extreme eigenvalues sit on a repeated root, so
# each coordinate behaves like (a + b k) rho^k and the measured rate over steps
# 100 to 200 is rho (200 / 100)^(1/100), 0.7% above rho. The constant a shifts
# that by a relative (a / b) / 20000 or so: a 1e-3 relative tolerance holds for
# |a / b| up to about 20 and still separates rho (2)^(1/100) from rho itself.
rate_pred = rho_hb * 2 ** (1 / 100)
print(
    f"heavy ball: measured rate {rate_hb:.5f}; Eq. (5) with the repeated root's "
    f"factor predicts {rate_pred:.5f} (rho alone {rho_hb:.5f}, GD's {rate_gd:.5f})"
)
assert abs(rate_hb / rate_pred - 1) < 1e-3
assert abs(rate_hb / rho_hb - 1) > 1e-3 and abs(rate_hb / rate_gd - 1) > 1e-3

# %% [markdown]
# ## 3. Adam
#
# Adam [(Kingma & Ba 2015)](https://arxiv.org/abs/1412.6980) keeps exponential moving
# averages of the gradient $g_k$ and of its elementwise square,
#
# $$ m_k = \beta_1 m_{k-1} + (1-\beta_1)\,g_k, \qquad v_k = \beta_2 v_{k-1} + (1-\beta_2)\,g_k^2, \tag{6} $$
#
# starting from $m_0 = v_0 = 0$. Unrolling, $m_k = (1-\beta_1)\sum_{j\le k}\beta_1^{k-j}g_j$,
# so if the gradients had a constant mean, $\mathbb{E}[m_k] = (1 - \beta_1^k)\,\mathbb{E}[g]$:
# the average is biased towards zero early on. Dividing removes the bias:
#
# $$ \hat m_k = \frac{m_k}{1-\beta_1^k}, \qquad \hat v_k = \frac{v_k}{1-\beta_2^k}, \tag{7} $$
#
# $$ x_k = x_{k-1} - \eta\,\frac{\hat m_k}{\sqrt{\hat v_k} + \varepsilon}. \tag{8} $$
#
# Each coordinate gets its own step size $\eta/\sqrt{\hat v_k}$, so the size of a
# step is roughly $\eta$ whatever the scale of the gradient: multiplying the loss by
# $c > 0$ multiplies $\hat m$ by $c$ and $\sqrt{\hat v}$ by $c$, and (for
# $\varepsilon \to 0$) leaves the iterates unchanged. That is why one learning rate
# works for losses of very different sizes. A single step of Eq. (6)-(8) from scratch
# first, against the package:

# %%
b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.1
x, m, v = x0.clone(), torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64)
for k in range(1, 4):
    gk = O.rosenbrock_grad(x)
    m = b1 * m + (1 - b1) * gk
    v = b2 * v + (1 - b2) * gk**2
    x = x - lr * (m / (1 - b1**k)) / ((v / (1 - b2**k)).sqrt() + eps)
assert_close(x, O.adam(O.rosenbrock_grad, x0, lr, (b1, b2), eps, steps=3)[-1])

# The package against torch.optim.Adam, 300 steps on the Rosenbrock function.
xt = x0.clone().requires_grad_(True)
opt = torch.optim.Adam([xt], lr=0.02)
for _ in range(300):
    opt.zero_grad()
    O.rosenbrock(xt).backward()
    opt.step()
assert_close(O.adam(O.rosenbrock_grad, x0, lr=0.02, steps=300)[-1], xt.detach())

# Scale invariance: the loss times 1000 gives the same iterates (eps aside).
xs_1 = O.adam(O.rosenbrock_grad, x0, lr=0.02, eps=0.0, steps=100)
xs_1000 = O.adam(lambda x: 1000 * O.rosenbrock_grad(x), x0, lr=0.02, eps=0.0, steps=100)
assert_close(xs_1, xs_1000)
print(
    "Adam: from scratch = difflab = torch.optim.Adam; invariant to the scale of the loss"
)

# %% [markdown]
# ## 4. The three optimisers on two problems
#
# On the rotated quadratic above ($\kappa = 20$) and on Rosenbrock's banana
# [(Rosenbrock 1960)](https://doi.org/10.1093/comjnl/3.3.175)
# $L(u, w) = (1-u)^2 + 100(w - u^2)^2$, with minimum $0$ at $(1, 1)$ at the end of a
# long, curved, flat-bottomed valley. All three methods first drop into the valley
# and then follow its floor (their paths overlap in the middle panel). Gradient
# descent needs a small step (the walls are steep: the Hessian there has eigenvalues
# near 1000) and then crawls along the floor, where the gradient is tiny; momentum
# builds up speed along it; Adam's normalised steps move at an almost constant speed
# whatever the size of the gradient.

# %%
x0_r = torch.tensor([-1.5, 2.0], dtype=F64)
steps = 2000
runs_r = {
    "gradient descent, $\\eta=10^{-3}$": O.gradient_descent(
        O.rosenbrock_grad, x0_r, 1e-3, steps
    ),
    "momentum, $\\eta=10^{-3}, \\beta=0.9$": O.momentum(
        O.rosenbrock_grad, x0_r, 1e-3, 0.9, steps
    ),
    "Adam, $\\eta=0.02$": O.adam(O.rosenbrock_grad, x0_r, lr=0.02, steps=steps),
}
runs_q = {
    "gradient descent": xs_gd[:40],
    "momentum": O.momentum(grad_q, x0, eta_hb, beta_hb, 40),
    "Adam": O.adam(grad_q, x0, lr=0.2, steps=40),
}
final = {name: O.rosenbrock(xs[-1]).item() for name, xs in runs_r.items()}
print({k.split(",")[0]: f"{v:.2e}" for k, v in final.items()})
# Momentum and Adam both beat plain gradient descent after the same number of steps.
names = list(final)
assert final[names[1]] < final[names[0]] and final[names[2]] < final[names[0]]

# %% tags=["fold"]
# Plotting code for the figure
fig, axes = plt.subplots(1, 3, figsize=(6.4, 2.6))
u = torch.linspace(-2.5, 2.5, 300, dtype=F64)
U, V = torch.meshgrid(u, u, indexing="xy")
Zq = O.quadratic(torch.stack([U, V], -1), A)
axes[0].contour(
    U, V, Zq, levels=torch.logspace(-2, 1.7, 15).tolist(), colors="0.6", linewidths=0.6
)
for i, (name, xs) in enumerate(runs_q.items()):
    axes[0].plot(xs[:, 0], xs[:, 1], ".-", color=f"C{i}", ms=3, lw=1, label=name)
axes[0].set(
    title=rf"quadratic, $\kappa = {kappa:.0f}$",
    aspect="equal",
    xlim=(-2.5, 2.5),
    ylim=(-2.5, 2.5),
)
axes[0].legend()
ur, wr = torch.linspace(-2, 2, 300, dtype=F64), torch.linspace(-1, 3, 300, dtype=F64)
Ur, Wr = torch.meshgrid(ur, wr, indexing="xy")
Zr = O.rosenbrock(torch.stack([Ur, Wr], -1))
axes[1].contour(Ur, Wr, torch.log10(Zr + 1e-3), levels=25, cmap="Greys", linewidths=0.6)
for i, (name, xs) in enumerate(runs_r.items()):
    axes[1].plot(
        xs[:, 0],
        xs[:, 1],
        ["--", "-", ":"][i],
        color=f"C{i}",
        lw=[2.5, 1.2, 2.0][i],
        label=name,
    )
    axes[2].semilogy(O.rosenbrock(xs) + 1e-16, color=f"C{i}", label=name)
axes[1].plot([1], [1], "k*", ms=12)
axes[1].set(title="Rosenbrock", xlabel="$u$", ylabel="$w$")
axes[2].set(xlabel="iteration", ylabel="loss", title="Rosenbrock loss vs iteration")
# The Rosenbrock runs' legend goes under the panels: inside one it hides a path.
handles, labels = axes[1].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
plt.tight_layout(rect=(0, 0.1, 1, 1))
plt.show()

# %% [markdown]
# ## 5. Backpropagation by hand
#
# Take a two-layer network with a tanh hidden layer and the mean squared error over
# a batch of $B$ pairs $(x_i, y_i)$, $x_i \in \mathbb{R}^D$, $y_i \in \mathbb{R}^O$:
#
# $$ a_i = W_1 x_i + b_1, \quad h_i = \tanh(a_i), \quad \hat y_i = W_2 h_i + b_2, \quad
#    L = \frac{1}{2B}\sum_{i=1}^B \|\hat y_i - y_i\|^2. \tag{9} $$
#
# Backpropagation is the chain rule applied to Eq. (9) from the end to the start,
# reusing each intermediate result. Write $\delta^{(2)}_i = \partial L/\partial\hat y_i$
# and $\delta^{(1)}_i = \partial L/\partial a_i$. Then
#
# $$ \delta^{(2)}_i = \frac{1}{B}(\hat y_i - y_i), \tag{10} $$
#
# $$ \frac{\partial L}{\partial W_2} = \sum_i \delta^{(2)}_i h_i^\top, \qquad
#    \frac{\partial L}{\partial b_2} = \sum_i \delta^{(2)}_i, \tag{11} $$
#
# $$ \delta^{(1)}_i = \big(W_2^\top\delta^{(2)}_i\big)\odot\big(1 - h_i^2\big), \tag{12} $$
#
# $$ \frac{\partial L}{\partial W_1} = \sum_i \delta^{(1)}_i x_i^\top, \qquad
#    \frac{\partial L}{\partial b_1} = \sum_i \delta^{(1)}_i. \tag{13} $$
#
# Eq. (11) holds because $\hat y_i$ depends on $W_2$ linearly through $h_i$; Eq. (12)
# sends $\delta^{(2)}$ back through the linear layer (multiply by $W_2^\top$) and
# through the tanh (multiply by its derivative $1 - \tanh^2$); Eq. (13) repeats
# Eq. (11) one layer down. The cost is about twice that of the forward pass, whatever
# the number of parameters; that is the point of reverse-mode differentiation
# [(Rumelhart, Hinton & Williams 1986)](https://doi.org/10.1038/323533a0).
# `mlp_backprop_by_hand` is Eq. (10)-(13) line by line; autograd must agree, and so must
# a finite difference.

# %%
g = torch.Generator().manual_seed(0)
params = O.mlp_init(d_in=3, d_hidden=16, d_out=2, generator=g)
xb = torch.randn(32, 3, generator=g, dtype=F64)
yb = torch.randn(32, 2, generator=g, dtype=F64)

loss, grads = O.mlp_backprop_by_hand(params, xb, yb)
leaves = {k: p.clone().requires_grad_(True) for k, p in params.items()}
loss_ag = O.mlp_loss(leaves, xb, yb)
loss_ag.backward()
assert_close(loss, loss_ag.detach())
for k in params:
    assert_close(grads[k], leaves[k].grad)

# One entry by central finite differences.
h = 1e-6
plus = {k: p.clone() for k, p in params.items()}
minus = {k: p.clone() for k, p in params.items()}
plus["W1"][4, 1] += h
minus["W1"][4, 1] -= h
fd = (O.mlp_loss(plus, xb, yb) - O.mlp_loss(minus, xb, yb)) / (2 * h)
assert abs(fd - grads["W1"][4, 1]) < 1e-8
print(f"dL/dW1[4,1]: by hand {grads['W1'][4, 1]:.8f}, finite difference {fd:.8f}")

# %% [markdown]
# With gradients in hand, training is a loop. We fit $y = \sin(3x)$ on $[-1, 1]$ with
# 32 hidden units, once with plain gradient descent and once with Adam, both driven by
# the hand-written gradients of Eq. (10)-(13).

# %%
g = torch.Generator().manual_seed(1)
x_train = torch.linspace(-1, 1, 64, dtype=F64).unsqueeze(1)
y_train = torch.sin(3 * x_train)
p0 = O.mlp_init(1, 32, 1, generator=g)
keys = list(p0)
sizes = [p0[k].numel() for k in keys]


def flat(p):
    return torch.cat([p[k].reshape(-1) for k in keys])


def unflat(theta):
    return {
        k: c.reshape(p0[k].shape) for k, c in zip(keys, theta.split(sizes), strict=True)
    }


def grad_flat(theta):
    return flat(O.mlp_backprop_by_hand(unflat(theta), x_train, y_train)[1])


n_iter = 600
curves = {
    "gradient descent, $\\eta = 0.3$": O.gradient_descent(
        grad_flat, flat(p0), 0.3, n_iter
    ),
    "Adam, $\\eta = 0.01$": O.adam(grad_flat, flat(p0), lr=0.01, steps=n_iter),
}
losses = {
    name: [O.mlp_loss(unflat(th), x_train, y_train).item() for th in traj[::10]]
    for name, traj in curves.items()
}
for name, ls in losses.items():
    print(f"{name.split(',')[0]}: loss {ls[0]:.3f} -> {ls[-1]:.5f}")
    assert ls[-1] < 0.1 * ls[0]

# %% tags=["fold"]
# Plotting code for the figure
fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.6))
for i, (name, ls) in enumerate(losses.items()):
    axes[0].semilogy(range(0, n_iter + 1, 10), ls, color=f"C{i}", label=name)
    axes[1].plot(
        x_train,
        O.mlp_forward(unflat(curves[name][-1]), x_train),
        color=f"C{i}",
        label=name,
    )
axes[1].plot(x_train, y_train, "k.", ms=4, label=r"data $\sin(3x)$")
axes[0].set(
    xlabel="iteration",
    ylabel="loss, Eq. (9)",
    title="Training with hand-written gradients",
)
axes[1].set(xlabel="$x$", title="Fitted networks")
axes[0].legend()
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
#
# | on paper | in code |
# | --- | --- |
# | Eq. (1) | `gradient_descent(grad, x0, lr, steps)` |
# | Eq. (4) | `momentum(grad, x0, lr, beta, steps)` (same as `torch.optim.SGD(momentum=beta)`) |
# | Eq. (6)-(8) | `adam(grad, x0, lr, betas, eps, steps)` (same as `torch.optim.Adam`) |
# | test losses | `quadratic`, `quadratic_grad`, `rosenbrock`, `rosenbrock_grad` |
# | Eq. (9)-(13) | `mlp_init`, `mlp_forward`, `mlp_loss`, `mlp_backprop_by_hand` |
#
# Gradient descent converges at a rate set by the condition number; momentum
# improves the dependence to its square root; Adam rescales each coordinate by a
# running estimate of the gradient's size. Backpropagation computes all the
# gradients for about the cost of one more forward pass. In the rest of the site
# autograd does the differentiating and `torch.optim.AdamW` the stepping.
#
# ## Exercises
#
# 1. Verify Eq. (3) numerically: run gradient descent on the quadratic with
#    $\eta = 1/\lambda_{\max}$ and with $\eta = 2.05/\lambda_{\max}$. What happens?
# 2. Derive the characteristic polynomial of the heavy-ball recursion for one
#    eigenvalue $\lambda$ and show its roots have modulus $\sqrt\beta$ in the interval
#    quoted before Eq. (5).
# 3. Remove the bias correction of Eq. (7) from Adam and compare the first 20 steps
#    on the Rosenbrock function. Why are the first steps tiny?
# 4. Add a third layer to the network of Eq. (9) and extend Eq. (10)-(13); check your
#    gradients against autograd.
# 5. Replace tanh by ReLU in `mlp_backprop_by_hand`. Which line of Eq. (12) changes,
#    and what happens to the gradient at $a = 0$?
#
# ## References
#
# - D. P. Kingma, J. Ba. *Adam: A Method for Stochastic Optimization*. ICLR 2015.
#   [arXiv:1412.6980](https://arxiv.org/abs/1412.6980)
# - B. T. Polyak. *Some methods of speeding up the convergence of iteration methods*.
#   USSR Comp. Math. and Math. Physics 4(5), 1964.
#   [doi:10.1016/0041-5553(64)90137-5](https://doi.org/10.1016/0041-5553(64)90137-5)
# - D. E. Rumelhart, G. E. Hinton, R. J. Williams. *Learning representations by
#   back-propagating errors*. Nature 323, 1986. [doi:10.1038/323533a0](https://doi.org/10.1038/323533a0)
# - H. H. Rosenbrock. *An automatic method for finding the greatest or least value of
#   a function*. The Computer Journal 3(3), 1960. [doi:10.1093/comjnl/3.3.175](https://doi.org/10.1093/comjnl/3.3.175)
# - I. Loshchilov, F. Hutter. *Decoupled Weight Decay Regularization*. ICLR 2019.
#   [arXiv:1711.05101](https://arxiv.org/abs/1711.05101)

# %%
run.finish(dataset="synthetic test functions")
