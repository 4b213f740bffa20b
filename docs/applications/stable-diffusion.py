# ---
# jupyter:
#   difflab:
#     cold_seconds: 55
#     cold_seconds_with_MNIST: 136
#     prerequisites:
#     - applications/conditioning.py
#     - applications/latent-diffusion.py
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
# # A small Stable Diffusion: a text prompt in, a digit out
#
# Stable Diffusion is three networks: an autoencoder that moves images to a
# small latent and back, a text encoder that turns a prompt into a sequence of
# vectors, and a UNet in latent space that reads that sequence through
# cross-attention (Rombach et al. 2022, Sec. 3.3). Classifier-free guidance
# then pushes its samples towards the prompt. This chapter builds all three at
# the size of our digits, trains the text encoder and the UNet from scratch on
# captions measured on the images themselves, and measures how well the
# samples follow their prompts, including prompts for combinations that never
# occurred in training.
#
# **What you will learn**
#
# - how to caption an image dataset with words measured on each image (stroke
#   thickness and slant), and a grammar that turns them into prompts;
# - a word tokenizer and a small transformer text encoder, and the padding
#   mask that lets prompts of different lengths share a batch;
# - cross-attention (Rombach et al. 2022, Eq. 3), derived, checked by hand
#   against the package, and shown to fail without its $1/\sqrt d$;
# - our model beside Stable Diffusion v1, component by component, with
#   parameter counts computed by code;
# - measured: how often the samples show the prompt's digit, thickness and
#   slant as the guidance weight grows, for seen and held-out combinations;
#   sample quality beside the real-data floor; and where in the image each word
#   of a prompt is attended to.

# %% tags=["fold"]
# Imports and set-up (the page's provenance box starts here)
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from difflab.data import captions as cap
from difflab.eval.metrics import (
    classifier_recipe,
    features_and_probs,
    frechet_distance,
    gaussian_stats,
    train_classifier,
)
from difflab.nets.text import attention_maps, cross_attention_weights
from difflab.notes import page
from difflab.notes.page import FIGURE_WIDTH_IN
from difflab.notes.plotting import show_grid
from difflab.notes.tables import show_table
from difflab.pipelines.autoencoder import resized_images
from difflab.pipelines.stable_diffusion import (
    caption_data,
    stable_diffusion_recipe,
    train_stable_diffusion,
)

run = page.start()
# Small convolutions on a shared machine: one thread is faster than two here.
torch.set_num_threads(1)
quick = run.profile == "quick"

# %% [markdown]
# ## 1. Captioned digits
#
# Our digits come with a label only, so the captions are made from the images.
# Two attributes are measured on every image, with the ink $m(u, v) = (x + 1)/2
# \in [0, 1]$ at column $u$ (rightwards) and row $v$ (upwards):
#
# - **thickness**, the mean ink $\bar m$: the fraction of the square that is
#   inked. A digit is *thin* or *thick* as it falls below or above the median
#   of its own class (a thick one still has less ink than a thin eight);
# - **slant**, the shear of the ink,
#
# $$ s = \frac{\operatorname{cov}_m(u, v)}{\operatorname{var}_m(v)}, \tag{1} $$
#
# with moments weighted by the ink. A stroke whose points are $(u_0 + s v, v)$
# has $\operatorname{cov}(u, v) = s \operatorname{var}(v)$, so Eq. (1) returns
# the shear $s$ itself (the tests build such a bar and get $s$ back to
# $10^{-9}$). A digit is *leaning left*, *upright* or *leaning right* by the
# terciles of its class.
#
# Thresholds are fitted on the training images and applied unchanged to
# generated images, with the thresholds of the prompt's digit.
#
# **Data.** The page runs on MNIST when `download-datasets.sh` has fetched it,
# resized from 28x28 to 32x32, and reuses the latent-diffusion chapter's
# $f = 4$ autoencoder (32x32 to a 2x8x8 latent) from the cache. Without it, it
# uses the embedded 8x8 digits upsampled to 16x16 and that chapter's $f = 2$
# autoencoder (16x16 to the same 2x8x8 latent shape). Either way the latent
# UNet below is the same network; the cell prints which data it found. The full
# profile (`DIFFLAB_PROFILE=full`, with MNIST) uses MNIST at 32x32 and a
# 2x16x16 latent.
#
# **The grammar.** A caption is `a [thickness] <digit> [slant]`: "a thick seven
# leaning right", "a thin seven", "a seven upright", "a seven". Every training
# image appears in all four forms, so a prompt may name any subset of the
# attributes; the longest caption has five words.
#
# **Held out.** Four (digit, word) pairs are removed from training with every
# image that shows them: *thick sevens*, *twos leaning left*, *thin fours* and
# *zeros leaning right*. The words and the digits are all seen, but never
# together; prompting for them asks the model to compose.

# %%
MNIST = run.found_mnist("scikit-learn's 8x8 digits")  # MNIST from data/ if downloaded
if MNIST and quick:  # the same 2x8x8 latent as f = 2 on the 16x16 digits
    recipe = stable_diffusion_recipe(run.profile, factor=4, dataset="mnist")
else:
    recipe = stable_diffusion_recipe(run.profile)
model = train_stable_diffusion(recipe)
ae = model.autoencoder
data = caption_data(recipe, ae)
train_set = resized_images(
    recipe.autoencoder.dataset, recipe.autoencoder.net.image_size
)
test_set = resized_images(
    recipe.autoencoder.dataset, recipe.autoencoder.net.image_size, "test"
)
dataset = train_set.name
print(train_set.note)
print(
    f"{data.kept + data.dropped} training images: {data.dropped} held out, "
    f"{data.kept} kept, {len(data.captions)} captions"
)
show_table(
    [{"digit": d, "word": w} for d, w in cap.HELD_OUT],
    headers={"word": "never seen with this digit"},
    caption="Held-out (digit, word) pairs",
)
th, sl = cap.describe(train_set.images, train_set.labels, data.bins)
counts = [
    {"attr": name, "count": int((idx == v).sum())}
    for idx, words in ((th, cap.THICKNESS), (sl, cap.SLANT))
    for v, name in enumerate(words)
]
show_table(counts, headers={"attr": "word", "count": "training images"})

# %% [markdown]
# The measures are only useful if they survive what the model has to go
# through: the autoencoder. Below, the attributes of the test digits are
# measured again after an encode-decode round trip; the fraction that keeps
# its word is the best adherence a perfect latent model could show.

# %%
n_test = len(test_set.images)
rec = ae.decode(ae.encode(test_set.images))
th0, sl0 = cap.describe(test_set.images, test_set.labels, data.bins)
th1, sl1 = cap.describe(rec, test_set.labels, data.bins)
ceiling = {}
for name, a, b in (("thickness", th0, th1), ("slant", sl0, sl1)):
    p = (a == b).double().mean().item()
    ceiling[name] = p
    print(
        f"{name}: {p:.3f} +- {math.sqrt(p * (1 - p) / n_test):.3f} of "
        f"{n_test} test digits keep their word through the autoencoder"
    )

# %% [markdown]
# Eq. (1) checked on a constructed stroke: a one-pixel bar through
# $(u_0 + s v, v)$, its ink split linearly between the two nearest columns
# (which keeps each row's mean column at exactly $u_0 + s v$). The measure must
# return $s$ to float64 rounding; the regression the other way round,
# $\operatorname{cov}(u, v) / \operatorname{var}(u)$, must not.


# %%
def sheared_bar(s, size=32):
    """(1, 1, size, size) image of a bar with shear s, in [-1, 1]."""
    ink = torch.zeros(size, size, dtype=torch.float64)
    for row in range(4, size - 4):
        u = size / 2 + s * (size / 2 - row)  # v = -row, measured from the middle
        lo = math.floor(u)
        ink[row, lo] += 1 - (u - lo)
        ink[row, lo + 1] += u - lo
    return (2 * ink - 1)[None, None]


for s_true in (-0.4, 0.25, 0.6):
    bar = sheared_bar(s_true)
    s_hat = cap.slant(bar).item()
    ink = (bar[0, 0] + 1) / 2
    vv, uu = torch.meshgrid(
        -torch.arange(32.0, dtype=torch.float64),
        torch.arange(32.0, dtype=torch.float64),
        indexing="ij",
    )
    du = uu - (ink * uu).sum() / ink.sum()
    dv = vv - (ink * vv).sum() / ink.sum()
    wrong = ((ink * du * dv).sum() / (ink * du * du).sum()).item()
    print(
        f"shear {s_true:+.2f}: Eq. (1) {s_hat:+.3f} (off by {abs(s_hat - s_true):.1e}),"
        f" cov/var(u) {wrong:+.3f}"
    )
    assert abs(s_hat - s_true) < 1e-9  # float64 sums of ~50 terms
    assert abs(wrong - s_true) > 0.1

# %% tags=["fold"]
# Figure: training digits with their full captions (red: held out of training)
idx = torch.arange(0, 12 * 37, 37)
fig, axes = plt.subplots(2, 6, figsize=(FIGURE_WIDTH_IN, 3.2))
for ax, i in zip(axes.flat, idx.tolist(), strict=True):
    d = int(train_set.labels[i])
    ax.imshow(train_set.images[i, 0], cmap="gray", vmin=-1, vmax=1)
    words = cap.caption(d, int(th[i]), int(sl[i])).split()
    held = cap.is_held_out(d, int(th[i]), int(sl[i]))
    title = " ".join(words[:3]) + "\n" + " ".join(words[3:])
    ax.set_title(title, fontsize=8, color="tab:red" if held else "black")
    ax.set_axis_off()
fig.suptitle("Measured captions (red: a held-out pair, not trained on)", fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. The text encoder and cross-attention
#
# **Tokens.** The tokenizer (`difflab.nets.text.WordTokenizer`) maps each word
# of the grammar to an id, with `<pad>` (0) filling prompts up to $L = 5$ ids
# and `<unk>` (1) standing for a word it does not know (with one warning per
# word). Stable Diffusion uses CLIP's byte-pair tokenizer with $L = 77$; whole
# words suffice for a grammar of 20.
#
# **The encoder** $\tau_\theta$ (`TextEncoder`) adds learned token and position
# embeddings, puts a learned start vector in front (always a real token), and
# runs two pre-norm transformer layers whose self-attention ignores the
# padding. Its output is a sequence $\tau_\theta(y) \in \mathbb{R}^{(L+1)
# \times d_\tau}$ and a mask saying which entries are real.
#
# **Cross-attention.** At a UNet block with feature map $\varphi(z_t) \in
# \mathbb{R}^{N \times c}$ ($N = H \times W$ positions), Rombach et al. (2022,
# Eq. 3) form
#
# $$ Q = \varphi(z_t) W_Q, \quad K = \tau_\theta(y) W_K, \quad
#    V = \tau_\theta(y) W_V, \qquad
#    \mathrm{Attention}(Q, K, V) = \operatorname{softmax}\Big(
#    \frac{Q K^\top}{\sqrt d}\Big) V, \tag{2} $$
#
# per head of width $d$, and add the result (through one more linear map) to
# the feature map. Row $n$ of the softmax is a distribution over the tokens:
# how much position $n$ of the image reads each word. Two details make it work.
#
# *Why $1/\sqrt d$.* If the entries of a query $q$ and a key $k$ are
# independent with mean 0 and variance 1, then $q^\top k = \sum_{j=1}^d q_j
# k_j$ has mean 0 and variance $\sum_j \mathbb{E} q_j^2\, \mathbb{E} k_j^2 =
# d$. Without the scaling the logits grow like $\sqrt d$ with the head width,
# the softmax saturates to one token and its gradient vanishes; dividing by
# $\sqrt d$ keeps the logits at unit variance whatever $d$ is (Vaswani et al.
# 2017, Sec. 3.2.1).
#
# *Padding.* A padded position gets the logit $-\infty$, hence the weight
# $e^{-\infty} / \sum = 0$, so padding changes nothing, whatever its vector
# (the tests change the padded vectors and compare outputs bit for bit).
#
# **Training** is the DDPM loss on the scaled latents, with the text encoder
# and the UNet trained jointly (SD v1 keeps its CLIP encoder frozen). With
# probability 0.1 a caption is replaced by the *empty caption* (all padding);
# its encoding, the start vector after the layers, is the null condition of
# classifier-free guidance, as the empty prompt's encoding is in Stable
# Diffusion. Sampling is DDIM with the guided prediction
# $\hat\epsilon = \epsilon(z_t, \varnothing) + w\,(\epsilon(z_t, y) -
# \epsilon(z_t, \varnothing))$ ($w = 1$: the conditional model, $w = 0$: the
# unconditional one; Ho & Salimans write $1 + w$ for our $w$).
#
# The check below runs the trained model once, catches the input of one
# cross-attention block, and computes Eq. (2) by hand from the block's weights.
# It must give the block's output to float32 rounding; the same computation
# without the $1/\sqrt d$ must not.

# %%
print(
    f"trained {model.steps} steps in {model.seconds:.0f} s "
    f"(from cache: {model.from_cache}); final loss {model.losses[-1]:.4f}"
)
PROMPT = "a thick seven leaning right"
block = model.net.unet.down[0].cross  # the first cross-attention, at 8x8 (quick)
metric = train_classifier(classifier_recipe(dataset))
METRIC_SIZE = classifier_recipe(dataset).config.image_size


def to_metric(x):
    """Images at the metric classifier's size (area averages: 16 -> 8, 32 -> 28)."""
    return F.adaptive_avg_pool2d(x, METRIC_SIZE)


# Eight samples of the prompt; we keep the one the metric classifier reads most
# confidently as a seven (for the attention maps of Section 6).
cond = model.encode_prompts([PROMPT] * 8)
gen = torch.Generator().manual_seed(0)
z0 = model.sample_latents(cond, steps=25, guidance=3.0, generator=gen)
best = features_and_probs(metric, to_metric(ae.decode(z0)))[1][:, 7].argmax()
z0, cond = z0[best : best + 1], model.encode_prompts([PROMPT])
t_att = torch.tensor([300])
ab = model.schedule.alpha_bar[t_att].item()
z_t = math.sqrt(ab) * z0 + math.sqrt(1 - ab) * torch.randn(z0.shape, generator=gen)
seen = {}
hook = block.register_forward_pre_hook(lambda m, args: seen.update(args=args))

# %%
with torch.no_grad():
    model.net(z_t, t_att.float(), cond)
hook.remove()
x_in, context, mask = seen["args"]
heads, width = block.heads, x_in.shape[1]
d_head = width // heads
B, _, H, W = x_in.shape


# %% tags=["fold"]
# Helper: the block's output computed by hand from given attention weights
@torch.no_grad()
def by_hand(weights):
    """x + W_o (softmax(.) V): the block's output from given attention weights."""
    v = block.kv(context).view(B, -1, 2, heads, d_head)[:, :, 1].transpose(1, 2)
    h = (weights @ v).transpose(1, 2).reshape(B, H * W, width)
    return x_in + block.proj(h).transpose(1, 2).view(B, width, H, W)


with torch.no_grad():
    out = block(x_in, context, mask)
    weights = cross_attention_weights(block, x_in, context, mask)
    # The softmax of the unscaled logits: weights ** sqrt(d), renormalised.
    unscaled = weights ** math.sqrt(d_head)
    unscaled = unscaled / unscaled.sum(-1, keepdim=True)
err = (by_hand(weights) - out).abs().max().item()
err_wrong = (by_hand(unscaled) - out).abs().max().item()
scale = out.abs().max().item()
# float32 rounding: about 1e-7 relative per operation over a few hundred sums.
tol = 1e-5 * scale
print(f"Eq. (2) by hand vs the block: max difference {err:.1e} (tolerance {tol:.1e})")
print(f"without 1/sqrt(d): max difference {err_wrong:.1e}")
assert err < tol
assert err_wrong > 100 * tol

# %% [markdown]
# ## 3. Our model beside Stable Diffusion v1
#
# Stable Diffusion v1 is the configuration that CompVis released after Rombach
# et al. (2022): an autoencoder with $f = 8$ and 4 latent channels, a UNet of
# about 860M parameters and the CLIP ViT-L/14 text encoder, trained on
# 512x512 images (so 64x64x4 latents). The exact counts in the table are those
# of the released v1 weights; ours are counted by code. The text encoder's
# count is recomputed below from the published configuration of CLIP
# ViT-L/14's text tower (width 768, 12 layers, MLP width 3072, 49,408 tokens,
# 77 positions), as a check of the quoted figure.


# %%
def clip_text_params(vocab=49_408, positions=77, width=768, layers=12, mlp=3072):
    """Parameters of a pre-norm transformer text tower (CLIP's), from its sizes."""
    attn = 4 * width * width + 4 * width  # q, k, v, out with biases
    ffn = 2 * width * mlp + mlp + width
    norms = 2 * 2 * width
    return vocab * width + positions * width + layers * (attn + ffn + norms) + 2 * width


SD_TEXT, SD_VAE, SD_UNET = 123_060_480, 83_653_863, 859_520_964
assert clip_text_params() == SD_TEXT


def count(module):
    return sum(p.numel() for p in module.parameters())


ours = {
    "text": count(model.net.encoder),
    "ae": count(ae.net),
    "unet": count(model.net.unet),
}

# %% tags=["fold"]
# Table: the components, this page's beside Stable Diffusion's
a_cfg, size = recipe.autoencoder.net, recipe.autoencoder.net.image_size
show_table(
    [
        {
            "part": "text encoder",
            "role": "prompt -> sequence the UNet attends to",
            "sd": f"CLIP ViT-L/14 text transformer, frozen; {SD_TEXT:,}",
            "ours": f"{recipe.text.layers}-layer transformer, width "
            f"{recipe.text.dim}, trained jointly; {ours['text']:,}",
        },
        {
            "part": "autoencoder",
            "role": "image <-> latent",
            "sd": f"KL, f = 8, 512x512x3 -> 64x64x4; {SD_VAE:,}",
            "ours": f"KL, f = {a_cfg.factor}, {size}x{size}x1 -> "
            f"{a_cfg.latent_size}x{a_cfg.latent_size}x{a_cfg.latent_channels}; "
            f"{ours['ae']:,}",
        },
        {
            "part": "UNet",
            "role": "predicts the noise, cross-attends to the text",
            "sd": f"860M (released weights: {SD_UNET:,})",
            "ours": f"channels {recipe.unet.channels}, cross-attention at "
            f"{recipe.unet.attn_resolutions} and the middle; {ours['unet']:,}",
        },
        {
            "part": "sampler",
            "role": "latent noise -> latent",
            "sd": "DDIM or PLMS, 50 steps by default",
            "ours": "DDIM (eta = 0), 25 steps",
        },
        {
            "part": "guidance",
            "role": "towards the prompt",
            "sd": "classifier-free, 10% caption dropout",
            "ours": f"classifier-free, {recipe.train.cond_drop:.0%} caption dropout",
        },
    ],
    columns=["part", "ours", "sd", "role"],  # this page's choice beside SD's
    headers={"part": "component", "sd": "Stable Diffusion v1", "ours": "here"},
    caption="Component by component (parameter counts after the semicolons)",
)

# %%
ratio = (SD_TEXT + SD_VAE + SD_UNET) / sum(ours.values())
print(f"ours: {sum(ours.values()):,} parameters, {ratio:,.0f}x fewer than SD v1")

# %% [markdown]
# ## 4. Does it follow the prompt?
#
# We prompt with every full caption, `a <thickness> <digit> <slant>` (60
# combinations; 10 of them contain a held-out pair), at guidance weights
# $w \in \{0, 1, 3, 5\}$, and measure each sample three ways: the **digit**
# that the metric classifier of the conditioning chapter reads (on the image
# brought to its size, 8x8 or 28x28), and its **thickness** and **slant** words by Eqs.
# (1) with the thresholds of the prompt's digit. Chance is 1/10, 1/2 and 1/3.
# Each rate is a binomial proportion, printed with its standard error
# $\sqrt{p(1-p)/n}$.
#
# **Composition** is measured on the held-out word itself: for a prompt such as
# "a thick seven upright" we ask whether the seven is thick, and compare with
# the same question for the seen counterparts of the same digit ("a thin seven
# upright": is it thin?). The prompts of both groups are sampled more often.
# The two groups do not ask about the attributes in the same proportions: of
# the 10 held-out combinations 6 probe the thickness and 4 the slant, of their
# 14 seen twins 6 and 8, and the two words are not equally hard. So held-out and
# twins are compared within each attribute, and over both with the twins'
# rates weighted to the held-out mix (6 : 4); held-out and twin prompts are
# different samples, so each difference has the independent spread
# $\sqrt{se_1^2 + se_2^2}$.

# %%
W_GRID = (0.0, 1.0, 3.0, 5.0)
STEPS = 25
combos = [(d, a, b) for d in range(10) for a in range(2) for b in range(3)]
held_of = {d: w for d, w in cap.HELD_OUT}


# %% tags=["fold"]
# Helpers: which combinations hold a held-out word, and which attribute each probes
def held_kind(d, a, b):
    """'held' if the combo holds a held-out pair, 'twin' if its digit has one."""
    if cap.is_held_out(d, a, b):
        return "held"
    return "twin" if d in held_of else "seen"


def probed(d, a, b):
    """The attribute that the composition test asks about, for a held/twin combo."""
    return "thickness" if held_of[d] in cap.THICKNESS else "slant"


# %%
K = (
    {"held": 20, "twin": 8, "seen": 4}
    if quick
    else {"held": 50, "twin": 50, "seen": 20}
)
rows = [(c, held_kind(*c)) for c in combos for _ in range(K[held_kind(*c)])]
prompts = [cap.caption(*c) for c, _ in rows]
digit = torch.tensor([c[0] for c, _ in rows])
want_th = torch.tensor([c[1] for c, _ in rows])
want_sl = torch.tensor([c[2] for c, _ in rows])
group = [g for _, g in rows]
samples, reads = {}, {}
for w in W_GRID:
    x = model.text_to_image(prompts, steps=STEPS, guidance=w, seed=1)
    samples[w] = x
    feats, probs = features_and_probs(metric, to_metric(x))
    t_w, s_w = cap.describe(x, digit, data.bins)
    reads[w] = {
        "feats": feats,
        "digit": probs.argmax(1) == digit,
        "thickness": t_w == want_th,
        "slant": s_w == want_sl,
    }


def rate(hits):
    p = hits.double().mean().item()
    return p, math.sqrt(p * (1 - p) / len(hits))


is_seen = torch.tensor([g != "held" for g in group])
is_held = ~is_seen
table = []
for w in W_GRID:
    r = reads[w]
    for name, m in (("seen", is_seen), ("held-out", is_held)):
        row = {"w": w, "group": name, "n": int(m.sum())}
        for key in ("digit", "thickness", "slant"):
            row[key], row[key + "_se"] = rate(r[key][m])
        table.append(row)

# %% tags=["fold"]
# Table of prompt adherence
show_table(
    table,
    columns=["w", "group", "n", "digit", "thickness", "slant"],
    headers={
        "w": "guidance w",
        "group": "prompts",
        "n": "samples",
        "digit": "digit read as prompted",
        "thickness": "thickness as prompted",
        "slant": "slant as prompted",
    },
    digits={"w": 0, "digit": 3, "thickness": 3, "slant": 3},
    spread={"digit": "digit_se", "thickness": "thickness_se", "slant": "slant_se"},
    caption=f"Prompt adherence, DDIM {STEPS} steps (chance: 0.1, 0.5, 0.333)",
)

# %% [markdown]
# **Reading the table.** At $w = 0$ the prompt is ignored and each measure,
# over all prompts, sits near its chance level for this mix of prompts (checked
# below). At $w = 1$, the plain conditional model, the table gives this build's
# rates (not asserted), and guidance raises them (the checks below hold $w = 5$
# against $w = 0$). On the 8x8 digits the slant is the hardest word: its
# bins are the terciles of a small within-class spread. On MNIST, whose 28x28
# strokes show their lean plainly, the thickness was the harder word in the
# build we read. For the slant, the autoencoder is not what limits it: the
# fraction of test digits that keep their slant word through the round trip
# (Section 1) is above the slant adherence at $w = 0$, 1 and 3 (asserted
# below). At $w = 5$ on MNIST the adherence comes within about 0.05 of it
# (printed below), so the strongest guidance brings the model close to what the
# autoencoder allows.
#
# The composition test: the held-out word against the same attribute on the
# seen counterparts of the same four digits.

# %%
probe = [probed(*c) if g != "seen" else None for c, g in rows]
ATTRS = ("thickness", "slant")
CHANCE = {"thickness": 1 / 2, "slant": 1 / 3}
members = {  # sample indices of each group and probed attribute
    (g, a): [i for i in range(len(rows)) if group[i] == g and probe[i] == a]
    for g in ("held", "twin")
    for a in ATTRS
}
n_held = sum(len(members["held", a]) for a in ATTRS)
mix = {a: len(members["held", a]) / n_held for a in ATTRS}  # the held-out mix
chance = sum(mix[a] * CHANCE[a] for a in ATTRS)
comp, by = [], {}
for w in W_GRID:
    r = reads[w]
    for g in ("held", "twin"):
        for a in ATTRS:
            idx = members[g, a]
            p, se = rate(r[a][idx])
            by[w, g, a] = {"p": p, "se": se, "n": len(idx)}
        # Both attributes, weighted to the held-out mix: the held-out rate itself
        # (its samples are in that mix), and the twins reweighted to it.
        p = sum(mix[a] * by[w, g, a]["p"] for a in ATTRS)
        se = math.sqrt(sum((mix[a] * by[w, g, a]["se"]) ** 2 for a in ATTRS))
        by[w, g, "both"] = {"p": p, "se": se, "n": sum(by[w, g, a]["n"] for a in ATTRS)}
    for a in (*ATTRS, "both"):
        h, t = by[w, "held", a], by[w, "twin", a]
        comp.append(
            {
                "w": w,
                "attribute": a if a != "both" else "both, held-out mix",
                "n_held": h["n"],
                "held": h["p"],
                "held_se": h["se"],
                "n_twin": t["n"],
                "twin": t["p"],
                "twin_se": t["se"],
                "diff": t["p"] - h["p"],
                "diff_se": math.hypot(t["se"], h["se"]),  # different samples
            }
        )

# %% tags=["fold"]
# Table: held-out words against their seen twins
show_table(
    comp,
    columns=["w", "attribute", "n_held", "held", "n_twin", "twin", "diff"],
    headers={
        "w": "guidance w",
        "attribute": "probed attribute",
        "n_held": "held-out samples",
        "held": "held-out as prompted",
        "n_twin": "twin samples",
        "twin": "twins as prompted",
        "diff": "twins − held-out",
    },
    digits={"w": 0, "held": 3, "twin": 3, "diff": 3},
    spread={"held": "held_se", "twin": "twin_se", "diff": "diff_se"},
    caption=(
        "Held-out words vs their seen twins, within each attribute (chance 0.5 "
        f"and 0.333); {len(members['held', 'thickness'])} held-out samples probe "
        f"thickness and {len(members['held', 'slant'])} slant, so the last row "
        f"weights both groups {mix['thickness']:.1f} : {mix['slant']:.1f} "
        f"(chance {chance:.3f})"
    ),
)

# %% tags=["fold"]
# Figure: adherence against the guidance weight
fig, axes = plt.subplots(1, 3, figsize=(FIGURE_WIDTH_IN, 2.6), sharey=True)
for ax, key, ch in zip(
    axes, ("digit", "thickness", "slant"), (0.1, 0.5, 1 / 3), strict=True
):
    for name, style in (("seen", "o-"), ("held-out", "s--")):
        rs = [r for r in table if r["group"] == name]
        ax.errorbar(
            [r["w"] for r in rs],
            [r[key] for r in rs],
            yerr=[2 * r[key + "_se"] for r in rs],
            fmt=style,
            capsize=2,
            label=name,
        )
    ax.axhline(ch, color="k", ls=":", lw=1)
    if key in ceiling:
        ax.axhline(ceiling[key], color="g", ls="-.", lw=1)
    ax.set(title=key, xlabel="guidance w", ylim=(0, 1))
axes[0].set_ylabel("fraction as prompted")
axes[0].legend(fontsize=8)
fig.suptitle(
    "Adherence (bars: 2 s.e.; dotted: chance; dash-dot: autoencoder ceiling)",
    fontsize=9,
)
fig.tight_layout()
plt.show()

# %% [markdown]
# The checks below hold the table to what the prose says, each at four
# standard errors of the difference it tests.
#
# - At $w = 0$ the model ignores the prompt, so each measure reads as prompted
#   by chance alone. For the digit the expected rate is $\sum_d \pi_d q_d$,
#   with $\pi_d$ the share of prompts naming $d$ and $q_d$ the share of samples
#   read as $d$. The thickness and slant are read with the thresholds of the
#   prompted digit, so their sum is taken within each prompted digit:
#   $\sum_d \sum_v \pi_{d,v}\, q_{v \mid d}$, with $\pi_{d,v}$ the share of
#   prompts naming digit $d$ and word $v$, and $q_{v \mid d}$ the share of the
#   samples prompted with $d$ that read as $v$. The held-out prompts are sampled
#   more often, so the prompts do not ask for each word equally, and this
#   chance is near 1/2 and 1/3 but not exactly at them.
# - Guidance makes the samples follow the prompt: at $w = 5$ each of the three
#   measures, over all prompts, is above its $w = 0$ value.
# - The slant adherence at $w = 0$, 1 and 3 is below the autoencoder's ceiling
#   for the slant, so there the diffusion model, not the first stage, limits it.
#   At $w = 5$ the gap is printed: on MNIST it is about four standard errors,
#   too close to the rule to assert.
# - The held-out words are followed too: at $w = 5$ the probed attribute of the
#   held-out prompts is above its chance level for their mix of attributes (at
#   $w = 3$ the margin is printed, not asserted).


# %%
def chance_rate(read, want, within):
    """The hit rate of reads that ignore the prompt: the sum over groups g and
    values v of P(g and v prompted) P(v read | g)."""
    total = 0.0
    for g in within.unique():
        m = within == g
        for v in want.unique():
            p_asked = ((want == v) & m).double().mean()
            total += p_asked * (read[m] == v).double().mean()
    return float(total)


read0 = features_and_probs(metric, to_metric(samples[0.0]))[1].argmax(1)
th_read0, sl_read0 = cap.describe(samples[0.0], digit, data.bins)
at_chance = {  # the digit in one group; the words within each prompted digit
    "digit": chance_rate(read0, digit, torch.zeros_like(digit)),
    "thickness": chance_rate(th_read0, want_th, digit),
    "slant": chance_rate(sl_read0, want_sl, digit),
}
for key, expect in at_chance.items():
    p0, se0 = rate(reads[0.0][key])
    print(f"w = 0: {key} as prompted {p0:.3f} +- {se0:.3f}; chance here {expect:.3f}")
    assert abs(p0 - expect) < 4 * se0, (key, p0, se0, expect)
# The check has teeth: the same comparison at w = 5, where the model follows the
# prompt, fails for every measure (its chance computed from the w = 5 reads).
read5 = features_and_probs(metric, to_metric(samples[5.0]))[1].argmax(1)
th_read5, sl_read5 = cap.describe(samples[5.0], digit, data.bins)
for key, read, want, within in (
    ("digit", read5, digit, torch.zeros_like(digit)),
    ("thickness", th_read5, want_th, digit),
    ("slant", sl_read5, want_sl, digit),
):
    p5, se5 = rate(reads[5.0][key])
    z5 = (p5 - chance_rate(read, want, within)) / se5
    print(f"w = 5: {key} {z5:+.1f} s.e. from its chance level")
    assert z5 > 4, (key, z5)

# %%
for key in ("digit", "thickness", "slant"):
    # Every w samples the same prompts from the same noise (seed 1): the spread
    # of the difference is that of the per-sample difference of hits (paired).
    p5, pz = rate(reads[5.0][key])[0], rate(reads[0.0][key])[0]
    each = reads[5.0][key].double() - reads[0.0][key].double()
    gap = each.mean().item() / (each.std().item() / math.sqrt(len(each)))
    print(f"{key}: w = 5 {p5:.3f}, w = 0 {pz:.3f}: {gap:.1f} paired s.e. apart")
    assert gap > 4
for w in (3.0, 5.0):
    h = by[w, "held", "both"]
    z = (h["p"] - chance) / h["se"]
    print(
        f"w = {w:g}: held-out words as prompted {h['p']:.3f} +- {h['se']:.3f} "
        f"({z:.1f} s.e. above chance {chance:.3f})"
    )
    for a in (*ATTRS, "both"):
        h, t = by[w, "held", a], by[w, "twin", a]
        d, d_se = t["p"] - h["p"], math.hypot(t["se"], h["se"])
        z_d = f"{d / d_se:+.1f} s.e." if d_se > 0 else "no spread"
        print(
            f"  {a}: twins {t['p']:.3f} - held-out {h['p']:.3f} = "
            f"{d:+.3f} +- {d_se:.3f} ({z_d})"
        )
h5 = by[5.0, "held", "both"]
assert (h5["p"] - chance) / h5["se"] > 4
# The slant against the autoencoder's ceiling, asserted below the largest w. At
# the largest, on MNIST, the gap was about four standard errors (4.1, 3.7 and,
# pooling a second draw, 4.0 in three builds whose models differed only in float
# rounding): at the edge of the rule, so it is printed, not asserted.
c_se = math.sqrt(ceiling["slant"] * (1 - ceiling["slant"]) / n_test)
for w in W_GRID:
    p_w, se_w = rate(reads[w]["slant"])
    z_c = (ceiling["slant"] - p_w) / math.hypot(se_w, c_se)
    print(
        f"slant at w = {w:g}: {p_w:.3f} +- {se_w:.3f}; the ceiling {ceiling['slant']:.3f} "
        f"is {ceiling['slant'] - p_w:.3f} above ({z_c:.1f} s.e.)"
    )
    if w < max(W_GRID):
        assert z_c > 4, (w, p_w, se_w)

# %% [markdown]
# The held-out words are followed: the model has seen "thick" on every other
# digit and "seven" with "thin", and at $w = 5$ it puts them together more
# often than chance (asserted above). Whether it follows them less reliably
# than the same attribute on the seen twins is read from the differences
# printed above for $w = 3$ and $w = 5$: within the thickness, within the
# slant, and over both at the held-out mix, each with its standard error; a
# difference within about two standard errors is not resolved at this sample
# size. Rombach et al.
# show compositional prompts qualitatively; here the composition is measured,
# on a grammar small enough to hold pairs out exactly.
#
# ## 5. Quality beside the floor
#
# Following the prompt is not all: the samples should also look like digits.
# The Frechet distance of the samples at each $w$ to the test digits, with a
# bootstrap standard error, beside the floor (as many real training digits).
# The prompts are spread evenly over the combinations, not as the data are, so
# part of any gap is the prompt mix, not the model.

# %% tags=["fold"]
# Helpers: the Frechet distance to the test digits with its bootstrap spread
ref_mu, ref_cov = gaussian_stats(
    features_and_probs(metric, to_metric(test_set.images))[0]
)
N = len(rows)
N_BOOT = 200
boot = torch.randint(N, (N_BOOT, N), generator=torch.Generator().manual_seed(2))


def frechet(feats):
    """Distance to the test digits, its bootstrap s.e., and the draws on `boot`.

    Every w resamples the same rows, and row i of every w is the same prompt from
    the same noise, so the std of a difference of two w's draws is the paired
    spread of their difference.
    """
    boots = [frechet_distance(*gaussian_stats(feats[i]), ref_mu, ref_cov) for i in boot]
    fd = frechet_distance(*gaussian_stats(feats), ref_mu, ref_cov)
    boots = torch.tensor(boots, dtype=torch.float64)
    return fd, boots.std().item(), boots


# %%
perm = torch.randperm(len(train_set.images), generator=torch.Generator().manual_seed(3))
floor, floor_se, _ = frechet(
    features_and_probs(metric, to_metric(train_set.images[perm[:N]]))[0]
)
quality = []
for w in W_GRID:
    fd, fd_se, draws = frechet(reads[w]["feats"])
    quality.append({"w": w, "fd": fd, "se": fd_se, "draws": draws})
quality.append({"w": "real digits (floor)", "fd": floor, "se": floor_se})
show_table(
    quality,
    headers={"w": "guidance w", "fd": "Frechet distance"},
    digits={"fd": 3},
    spread={"fd": "se"},
    columns=["w", "fd"],
    caption=f"{N} samples per row",
)
for qrow in quality[:-1]:
    gap = (qrow["fd"] - floor) / math.hypot(qrow["se"], floor_se)
    print(f"w = {qrow['w']:g}: {gap:.1f} standard errors above the floor")
fd_by = {qrow["w"]: qrow for qrow in quality}


def versus_w1(w):
    """FD(w) - FD(w = 1), its paired spread, and the spread as if independent."""
    d = fd_by[w]["fd"] - fd_by[1.0]["fd"]
    paired = (fd_by[w]["draws"] - fd_by[1.0]["draws"]).std().item()
    return d, paired, math.hypot(fd_by[w]["se"], fd_by[1.0]["se"])


for w in (0.0, 3.0, 5.0):
    d, d_se, unpaired = versus_w1(w)
    print(
        f"w = {w:g} - w = 1: {d:+.3f} +- {d_se:.3f} paired "
        f"({d / d_se:+.1f} s.e.; as if independent +- {unpaired:.3f})"
    )
# The unconditional samples are resolved from real digits (other images: the
# independent spread is the right one here).
assert fd_by[0.0]["fd"] - floor > 4 * math.hypot(fd_by[0.0]["se"], floor_se)
for w in (3.0, 5.0):  # the prose: more guidance never brings the samples closer
    d, d_se, _ = versus_w1(w)
    assert d > -4 * d_se, (w, d, d_se)

# %% [markdown]
# The unconditional samples ($w = 0$) are far from the floor (asserted above).
# On the 8x8 digits they had the largest distance in both models we trained,
# by about 3 and 5.5 standard errors over $w = 1$ counted as independent
# samples (the paired spread printed above, which the shared prompts and noise
# call for, is the one to read); on MNIST they were 2.1 paired standard errors
# above $w = 1$ and below $w = 3$ and $5$. The unconditional branch is the same
# network trained on only the 10% of batches whose caption was dropped. Stronger
# guidance never brings the samples closer to the real digits than $w = 1$
# (asserted: no difference below minus four paired standard errors). Whether it
# takes them further away depends on the data: on the 8x8 digits the
# differences among $w = 1, 3, 5$ stayed within four paired standard errors in
# our builds, so at this sample size the metric did not resolve the
# fidelity-for-diversity trade-off that the conditioning chapter measured on
# the class-conditional model; on MNIST, in the build we read while writing
# this, $w = 5$ was further from the floor than $w = 1$ by 4.4 paired standard
# errors ($w = 3$ by 3.8): the trade-off, seen in the features this metric
# reads, while the digit is read as prompted far more often (Section 4). The
# lines printed above are this build's answer; each row sits above the floor
# by the number of standard errors printed.
# Below, six prompts with six seeds each at $w = 3$, two of them held-out
# combinations. Each column shares its starting noise across the prompts, so
# a noise draw that the model turns into a poor sample does so for every
# prompt.

# %% tags=["fold"]
# Figure: prompts x seeds at w = 3
GRID_PROMPTS = [
    "a thin two",
    "a thick two",
    "a seven leaning left",
    "a seven leaning right",
    "a thick seven leaning right",
    "a thin four upright",
]
SEEDS = 6
x = torch.cat(
    [
        model.text_to_image(p, n=SEEDS, steps=STEPS, guidance=3.0, seed=5)
        for p in GRID_PROMPTS
    ]
)
fig, axes = plt.subplots(len(GRID_PROMPTS), 1, figsize=(FIGURE_WIDTH_IN * 0.6, 6.4))
for ax, p, i in zip(axes, GRID_PROMPTS, range(0, len(x), SEEDS), strict=True):
    show_grid(ax, x[i : i + SEEDS], nrow=SEEDS)
    ax.set_title(p, fontsize=9, loc="left")
fig.suptitle(
    "Six seeds per prompt, w = 3 (held out: thick sevens, thin fours)", fontsize=9
)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Where each word is read
#
# The weights of Eq. (2) say, for each position of the 8x8 latent, how much
# it reads each token. Below: the sample for "a thick seven leaning right"
# chosen in Section 2 (of eight, the one the metric classifier reads most
# confidently as a seven), and the weight of each token at every position of the first
# cross-attention block (averaged over its heads) at step $t = 300$, upsampled
# to the image.

# %%
w_att = attention_maps(model.net, block, z_t, t_att.float(), cond)  # (1, h, HW, L+1)
maps = w_att.mean(1)[0].T.reshape(-1, H, W)  # (L+1, H, W)
tokens = ["<start>", *PROMPT.split()]
share = maps.flatten(1).mean(1)[: len(tokens)]
for tok, s in zip(tokens, share.tolist(), strict=True):
    print(f"{tok:>8s}: {s:.3f} of the attention, averaged over positions")
img = ae.decode(z0)

# %% tags=["fold"]
# Figure: the attention of each token over the image
fig, axes = plt.subplots(1, len(tokens) + 1, figsize=(FIGURE_WIDTH_IN, 1.9))
axes[0].imshow(img[0, 0], cmap="gray", vmin=-1, vmax=1)
axes[0].set_title("sample", fontsize=8)
vmax = maps[: len(tokens)].max().item()
for ax, tok, mp in zip(axes[1:], tokens, maps, strict=False):
    ax.imshow(
        F.interpolate(mp[None, None], size=img.shape[-2:], mode="nearest")[0, 0],
        cmap="magma",
        vmin=0,
        vmax=vmax,
    )
    ax.set_title(tok, fontsize=8)
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %% [markdown]
# The maps are not a segmentation. A quarter of the way from the clean sample
# ($t = 300$), on an 8x8 latent, each position spreads its attention over all
# the tokens, the start vector and "a" included (the printed shares); where a
# word's weight is highest changes from one trained model to the next, so read
# the figure as this build's. Nothing in training asks a word to be read where
# its attribute shows: the cross-attention only has to carry what the
# denoiser needs, and at this size it carries it diffusely.
#
# ## Summary
#
# | on paper | in code |
# | --- | --- |
# | captions from measured attributes, Eq. (1) | `difflab.data.captions`: `thickness`, `slant`, `describe`, `captioned`, `HELD_OUT` |
# | tokenizer, $\tau_\theta$ | `difflab.nets.text.WordTokenizer`, `TextEncoder` |
# | cross-attention, Eq. (2) | `difflab.nets.unet.CrossAttention`; weights: `cross_attention_weights`, `attention_maps` |
# | the text-conditioned latent UNet | `TextConditioned(encoder, unet)`, called with `cond={"ids", "mask"}` |
# | training with caption dropout | `train_stable_diffusion(stable_diffusion_recipe(profile))` |
# | prompt to image | `text_to_image(prompt, steps=..., guidance=..., seed=...)` (`difflab.pipelines.stable_diffusion`; also a method of the trained model); `python -m difflab sample sd --prompt "a thin two" --guidance 3 --out grid.png` |
#
# - Captions measured on the images let a digit model take prompts that say
#   more than the label; holding out some (digit, word) pairs tests whether the
#   model composes words it has seen apart.
# - Cross-attention is attention with the image as the queries and the prompt
#   as keys and values; the $1/\sqrt d$ keeps the logits at unit scale, and
#   the padding mask makes prompts of any length equivalent.
# - Guidance turns a weakly conditioned model into one that follows the
#   prompt: the measured adherence rises with $w$ for the digit, the thickness
#   and the slant; the tables above give this build's numbers.
#
# ## Exercises
#
# 1. Train without caption dropout (`cond_drop = 0`). What does guidance do
#    then, and why?
# 2. Freeze the text encoder at its random initialisation. Which adherence
#    suffers most?
# 3. Add a third attribute, size (the bounding-box height), to the grammar.
#    How robust is its measure through the autoencoder?
# 4. Replace the word tokenizer by characters. How long must $L$ be, and does
#    the model still compose the held-out pairs?
#
# ## References
#
# - R. Rombach, A. Blattmann, D. Lorenz, P. Esser, B. Ommer. *High-Resolution
#   Image Synthesis with Latent Diffusion Models*. CVPR 2022.
#   [arXiv:2112.10752](https://arxiv.org/abs/2112.10752)
# - A. Vaswani et al. *Attention Is All You Need*. NeurIPS 2017.
#   [arXiv:1706.03762](https://arxiv.org/abs/1706.03762)
# - J. Ho, T. Salimans. *Classifier-Free Diffusion Guidance*. 2022.
#   [arXiv:2207.12598](https://arxiv.org/abs/2207.12598)
# - A. Radford et al. *Learning Transferable Visual Models From Natural
#   Language Supervision* (CLIP). ICML 2021.
#   [arXiv:2103.00020](https://arxiv.org/abs/2103.00020)
# - CompVis, *Stable Diffusion* (release notes of v1).
#   [github.com/CompVis/stable-diffusion](https://github.com/CompVis/stable-diffusion)

# %%
run.finish(dataset=dataset)
