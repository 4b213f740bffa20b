# ---
# jupyter:
#   difflab:
#     cold_seconds: 4
#     prerequisites:
#     - foundations/optimisation.py
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
# # PyTorch essentials for this site
#
# Every page of this site is PyTorch code that imports `difflab`. This page covers
# the parts of PyTorch the rest of the site leans on, each shown on a piece of
# diffusion-model code rather than in the abstract.
#
# **What you will learn**
#
# - tensors, shapes and dtypes, and the broadcasting rules that let one line add
#   noise to a whole batch at different time steps;
# - autograd: how `backward()` computes gradients, checked on a Gaussian score;
# - `nn.Module`, parameters and a training loop, on the 8x8 digits that ship with
#   scikit-learn (`difflab.data.images.load_images("digits")`);
# - devices and dtypes: why library code follows `x.device` and `x.dtype`, and what
#   float32 costs in accuracy;
# - reproducibility with an explicit `torch.Generator` instead of a global seed.

# %% tags=["fold"]
# Imports and set-up (the page's provenance box starts here)
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from difflab.data.images import load_images
from difflab.diffusion.forward import q_sample
from difflab.diffusion.schedules import gather, make_schedule
from difflab.foundations import gaussians as G
from difflab.nets.classifier import Classifier, ClassifierConfig
from difflab.notes import page
from difflab.runtime.device import autocast_dtype, default_device, describe

run = page.start()

# %% [markdown]
# ## 1. Tensors
#
# A tensor is an n-dimensional array with a `shape`, a `dtype` and a `device`.
# Images on this site are batches of shape $(B, C, H, W)$: batch, channels, height,
# width, stored as float32 in $[-1, 1]$.

# %%
data = load_images("digits")
test = load_images("digits", split="test")
x = data.images
print(data.note)
print(
    f"images: shape {tuple(x.shape)}, dtype {x.dtype}, device {x.device}, range [{x.min():.0f}, {x.max():.0f}]"
)
print(f"labels: shape {tuple(data.labels.shape)}, dtype {data.labels.dtype}")
assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32
assert x.min() >= -1 and x.max() <= 1

# Views share memory with the original; reshape/flatten of a contiguous tensor is free.
flat = x.flatten(1)  # (N, 64)
assert flat.data_ptr() == x.data_ptr()
print(
    f"flatten(1): {tuple(flat.shape)}; per-pixel mean over the batch: {tuple(x.mean(0).shape)}"
)

# %% [markdown]
# ## 2. Broadcasting
#
# Elementwise operations on tensors of different shapes follow one rule: align the
# shapes from the right; two sizes are compatible when they are equal or one of them
# is 1 (or missing), and a size-1 axis is repeated to match, without copying memory.
#
# The forward process of DDPM draws, for a batch $x_0$ of shape $(B, C, H, W)$ and a
# batch of time steps $t$ of shape $(B,)$,
#
# $$ x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon. \tag{1} $$
#
# `alpha_bar[t]` has shape $(B,)$, which aligned from the right would meet $W$, not
# $B$. Reshaping it to $(B, 1, 1, 1)$ makes it broadcast over channels and pixels,
# one coefficient per image: that is what `difflab.diffusion.schedules.gather` does. A loop over
# the batch from scratch, and the package's `q_sample`, must agree.

# %%
schedule = make_schedule("linear", T=1000)
g = torch.Generator().manual_seed(0)
x0 = x[:16]
t = torch.randint(0, schedule.T, (16,), generator=g)
eps = torch.randn(x0.shape, generator=g)

x_t_loop = torch.stack(
    [
        schedule.alpha_bar[t[i]].sqrt() * x0[i]
        + (1 - schedule.alpha_bar[t[i]]).sqrt() * eps[i]
        for i in range(16)
    ]
).to(x0.dtype)
coef = gather(schedule.alpha_bar, t, x0)  # (16, 1, 1, 1), float32 like x0
x_t = q_sample(schedule, x0, t, eps)
print(f"gather: {tuple(coef.shape)} {coef.dtype}; x_t: {tuple(x_t.shape)}")
assert_close(x_t, x_t_loop)

# A classic bug: without the reshape, (16,) broadcasts against W = 8 and fails.
try:
    schedule.alpha_bar[t].float() * x0
except RuntimeError as e:
    print("without gather:", str(e).splitlines()[0])

# %% [markdown]
# ## 3. Autograd
#
# Any tensor created with `requires_grad=True` records the operations applied to it;
# `backward()` on a scalar result walks that record in reverse and accumulates
# $\partial(\text{result})/\partial(\text{leaf})$ into each leaf's `.grad` (reverse-mode
# differentiation, written out by hand on the [optimisation page](optimisation.py)).
# `torch.autograd.grad` returns the gradient instead of accumulating it, and with
# `create_graph=True` the gradient is itself differentiable.
#
# Score-based models are about the *score* $\nabla_x\log p(x)$. For a Gaussian it is
# known in closed form,
#
# $$ \nabla_x \log\mathcal{N}(x;\mu,\sigma^2 I) = -\frac{x - \mu}{\sigma^2}, \qquad
#    \nabla_x\cdot\nabla_x\log\mathcal{N} = -\frac{D}{\sigma^2}, \tag{2} $$
#
# so autograd of `difflab.foundations.gaussians.gaussian_log_prob` must reproduce both the score
# and (differentiating once more) its divergence.

# %%
mu, var = torch.tensor(0.5), torch.tensor(2.0)
xq = torch.randn(5, 3, generator=g).requires_grad_(True)
log_p = G.gaussian_log_prob(xq, mu, var).sum()
(score,) = torch.autograd.grad(log_p, xq, create_graph=True)
assert_close(score, -(xq - mu) / var)

div = sum(
    torch.autograd.grad(score[:, d].sum(), xq, retain_graph=True)[0][:, d]
    for d in range(3)
)
assert_close(div, torch.full((5,), -3 / var.item()))
print("autograd score and divergence match Eq. (2)")

with torch.no_grad():  # no graph is recorded: use it for sampling and evaluation
    y = xq * 2
assert not y.requires_grad

# %% [markdown]
# ## 4. Modules: nn.Module
#
# A module bundles parameters (tensors registered with `nn.Parameter`, found by
# `.parameters()` and saved by `.state_dict()`) with a `forward` method. Modules nest:
# a layer's parameters belong to every module that contains it. A linear layer from
# scratch, against `nn.Linear` with the same weights:
#
# $$ \mathrm{Linear}(x) = x W^\top + b, \qquad W \in \mathbb{R}^{\text{out}\times\text{in}}. \tag{3} $$


# %%
class MyLinear(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in) / d_in**0.5)
        self.bias = nn.Parameter(torch.zeros(d_out))

    def forward(self, x):  # (B, d_in) -> (B, d_out), Eq. (3)
        return x @ self.weight.T + self.bias


mine, ref = MyLinear(64, 10), nn.Linear(64, 10)
ref.load_state_dict(mine.state_dict())  # same parameter names, so the weights transfer
assert_close(mine(flat[:8]), ref(flat[:8]))
print({name: tuple(p.shape) for name, p in mine.named_parameters()})


class DigitMLP(nn.Module):
    """A two-layer classifier for flattened 8x8 digits: (B, 1, 8, 8) -> logits (B, 10)."""

    def __init__(self, hidden: int = 128, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, hidden),
            nn.SiLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.net(x)


# %% [markdown]
# ## 5. A training loop
#
# The loop every training on this site follows: shuffle with a generator, slice a
# mini-batch, forward, loss, `zero_grad`, `backward`, `step`. Classification uses the
# cross-entropy of the softmax of the logits $z$,
#
# $$ L = -\frac1B\sum_{i=1}^B \log\frac{e^{z_{i,y_i}}}{\sum_k e^{z_{i,k}}}. \tag{4} $$
#
# `F.cross_entropy` fuses Eq. (4) into one numerically stable call (it subtracts the
# largest logit before exponentiating); we check it against the formula.

# %%
device = default_device()
print("training on", describe(device))


def train(seed: int, epochs: int = 10, batch_size: int = 64):
    g = torch.Generator().manual_seed(seed)
    model = DigitMLP()
    with torch.no_grad():  # initialise from our generator, not the global one
        for p in model.parameters():
            p.copy_(
                torch.randn(p.shape, generator=g)
                * (0.05 if p.ndim == 1 else 1 / p.shape[-1] ** 0.5)
            )
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    images, labels = data.images.to(device), data.labels.to(device)
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(len(images), generator=g).to(device)
        for i in range(0, len(images), batch_size):
            idx = perm[i : i + batch_size]
            logits = model(images[idx])  # (B, 10)
            loss = F.cross_entropy(logits, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return model, losses


model, losses = train(seed=1)
model.eval()
with torch.no_grad():
    logits = model(test.images.to(device)).cpu()
acc = (logits.argmax(1) == test.labels).float().mean().item()
acc_se = (acc * (1 - acc) / len(test.labels)) ** 0.5  # binomial, over test images
print(f"test accuracy after {len(losses)} steps: {acc:.3f} ± {acc_se:.3f}")
assert acc - 4 * acc_se > 0.8  # chance level is 0.1

z = logits[:32]
manual = -(z.gather(1, test.labels[:32, None]).squeeze(1) - z.logsumexp(1)).mean()
assert_close(F.cross_entropy(z, test.labels[:32]), manual)  # Eq. (4)

# %%
fig = plt.figure(figsize=(6.4, 3.0))
left, right = fig.subfigures(1, 2, width_ratios=[1, 1.2])
ax = left.subplots()
ax.semilogy(losses, lw=0.7)
ax.set(xlabel="step", ylabel="cross-entropy, Eq. (4)", title="Training loss")
wrong = (logits.argmax(1) != test.labels).nonzero().flatten().tolist()
show = (wrong[:4] + list(range(12)))[:12]
for a, i in zip(right.subplots(3, 4).flat, show, strict=True):
    pred, true = logits[i].argmax().item(), test.labels[i].item()
    a.imshow(test.images[i, 0], cmap="gray_r", vmin=-1, vmax=1)
    a.set_title(
        f"{pred}" if pred == true else f"{pred} (is {true})",
        fontsize=9,
        color="k" if pred == true else "C3",
    )
    a.axis("off")
right.suptitle("Test digits with predicted labels (red: mistakes)", fontsize=10)
right.subplots_adjust(top=0.8, hspace=0.6)  # the top row's labels under the title
plt.show()

# %% [markdown]
# `difflab`'s own networks are modules of the same kind. The small CNN that the site
# uses for metrics takes images of any size at least 4; a forward pass on the digits
# gives logits of shape $(B, 10)$:

# %%
cnn = Classifier(
    ClassifierConfig(in_channels=1, image_size=8, num_classes=10, width=16)
)
with torch.no_grad():
    out = cnn(x[:4])
print(
    f"difflab Classifier: {sum(p.numel() for p in cnn.parameters()):,} parameters, logits {tuple(out.shape)}"
)
assert out.shape == (4, 10)

# %% [markdown]
# ## 6. Devices and dtypes
#
# `difflab.runtime.device.default_device()` picks CUDA, then Apple's MPS, then the CPU (the
# `DIFFLAB_DEVICE` environment variable overrides it); only entry points such as
# recipes and pages call it. Everything else *follows its inputs*: new tensors are
# created with `device=x.device, dtype=x.dtype`, so the same function runs on a GPU or
# in float64 without changes, and no line of the package says `"cuda"`. On GPUs
# training runs in bfloat16 autocast where supported (`autocast_dtype(device)`). On
# a CPU that does bfloat16 in hardware (Intel's AMX or AVX512-BF16), the real-data
# laptop recipes ask for it too (`autocast_dtype(device, cpu=True)`): their
# networks train 1.4 to 2 times faster there. Other CPUs train in float32.
#
# Why not always float32? Schedules multiply a thousand numbers close to one. In
# float32 (24-bit mantissa, relative precision about $6\times10^{-8}$) the quantity
# $1 - \bar\alpha_t$ for small $t$ loses digits to cancellation; that is why `difflab`
# stores schedules in float64 and casts coefficients to the data's dtype only at the
# end (`gather`).

# %%
print(
    f"default device: {describe(device)}; autocast dtype there: {autocast_dtype(device)} "
    f"(for the laptop recipes: {autocast_dtype(device, cpu=True)})"
)
for dtype in (torch.float32, torch.float64):
    mu_d = torch.zeros(3, dtype=dtype, device=device)
    sample = G.reparameterize(mu_d, mu_d, torch.Generator(device=device).manual_seed(0))
    assert sample.dtype == dtype and sample.device == mu_d.device  # follows its inputs

betas = schedule.betas
ab64 = torch.cumprod(1 - betas, 0)
ab32 = torch.cumprod(1 - betas.float(), 0)
rel_err = ((1 - ab32.double()) - (1 - ab64)).abs() / (1 - ab64)
print(
    f"relative error of 1 - alpha_bar_1 in float32: {rel_err[0]:.1e}; max over t: {rel_err.max():.1e}"
)
assert rel_err[0] > 1e-5 and (1 - ab64[0] - betas[0]).abs() < 1e-15

# %% [markdown]
# ## 7. Reproducibility with a torch.Generator
#
# `torch.manual_seed` resets one global random stream that every library shares,
# so any extra call anywhere shifts all later numbers. `difflab` instead takes an
# explicit `torch.Generator` wherever it draws random numbers: the same generator
# state gives the same numbers, and the global stream is left alone. One exception
# is worth knowing: `nn.Linear` and friends draw their *initial* weights from the
# global stream, which is why `train` above overwrites them from its own generator.
# With that, retraining with the same seed reproduces the model exactly (on the CPU;
# some GPU kernels are not bit-for-bit deterministic).

# %%
global_state = torch.get_rng_state()
a = G.reparameterize(torch.zeros(4), torch.zeros(4), torch.Generator().manual_seed(7))
b = G.reparameterize(torch.zeros(4), torch.zeros(4), torch.Generator().manual_seed(7))
assert torch.equal(a, b)
assert torch.equal(
    torch.get_rng_state(), global_state
)  # the global stream was not used

if device.type == "cpu":
    # One epoch again with seed 1 repeats the first epoch of the run above exactly.
    _, losses_again = train(seed=1, epochs=1)
    assert losses_again == losses[: len(losses_again)]
    print("same seed, same losses:", [round(v, 4) for v in losses_again[:4]])

# %% [markdown]
# ## Summary
#
# | idea | in code |
# | --- | --- |
# | per-example coefficients, Eq. (1) | `gather(a, t, x)` gives shape (B, 1, 1, 1); `q_sample(schedule, x0, t, eps)` |
# | gradients, scores, Eq. (2) | `loss.backward()`, `torch.autograd.grad(..., create_graph=True)` |
# | modules, Eq. (3) | `nn.Module`, `nn.Parameter`, `state_dict()` |
# | training, Eq. (4) | shuffle with a generator, `zero_grad`, `backward`, `step` |
# | devices | `difflab.runtime.device.default_device()`; library code follows `x.device`, `x.dtype` |
# | randomness | `torch.Generator().manual_seed(s)` passed as `generator=` |
#
# ## Exercises
#
# 1. Write `q_sample` without `gather`, using `alpha_bar[t][:, None, None, None]`, and
#    with `alpha_bar[t].view(-1, *[1] * (x0.ndim - 1))`. Which works for any number of
#    data dimensions?
# 2. Use `torch.func.jacrev` to compute the full Jacobian of the Gaussian score of
#    Eq. (2) and check that its trace is the divergence computed above.
# 3. Replace `nn.SiLU` by `nn.Tanh` in `DigitMLP` and compare the test accuracy after
#    the same number of steps.
# 4. Train `difflab.nets.classifier.Classifier` on the digits with the loop of Section 5.
#    How many steps does it need to beat the MLP?
# 5. Compute $1 - \bar\alpha_t$ as `-torch.expm1(torch.log1p(-betas).cumsum(0))` in
#    float32. Is the cancellation of Section 6 gone?
#
# ## References
#
# - A. Paszke et al. *PyTorch: An Imperative Style, High-Performance Deep Learning
#   Library*. NeurIPS 2019. [arXiv:1912.01703](https://arxiv.org/abs/1912.01703)
# - J. Ho, A. Jain, P. Abbeel. *Denoising Diffusion Probabilistic Models*. NeurIPS 2020.
#   [arXiv:2006.11239](https://arxiv.org/abs/2006.11239)
# - I. Loshchilov, F. Hutter. *Decoupled Weight Decay Regularization* (AdamW). ICLR 2019.
#   [arXiv:1711.05101](https://arxiv.org/abs/1711.05101)
# - The PyTorch documentation on [broadcasting semantics](https://pytorch.org/docs/stable/notes/broadcasting.html)
#   and [reproducibility](https://pytorch.org/docs/stable/notes/randomness.html).

# %%
run.finish(dataset=data.name)
