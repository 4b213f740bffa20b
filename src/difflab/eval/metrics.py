"""Quality measured, not eyeballed: a Frechet distance in a classifier's features.

The protocol (written on the site too):

1. A small CNN (:class:`difflab.nets.classifier.Classifier`) is trained by the package on
   the dataset's train split (cached like every trained model).
2. Its penultimate features of the *test* split give the reference mean and
   covariance; a set of images is scored by the Frechet distance (Heusel et al.
   2017, Eq. 6; the FID recipe with our classifier in place of Inception) between
   its features' Gaussian and the reference.
3. Every score is printed beside the real-data floor: the same distance for the
   same number of *train* images, which is what a perfect sampler would get,
   since the distance is biased upwards at small sample sizes.
4. The classifier's confidence on samples: the fraction whose top class has
   probability >= 0.9 (a digit-like sample is classified confidently), and its
   accuracy against the requested labels for conditional samples.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.core.optim import adam
from difflab.data.images import load_images
from difflab.nets.classifier import Classifier, ClassifierConfig
from difflab.runtime.cache import cached
from difflab.runtime.device import bf16_as_run

CONFIDENT = 0.9
# What the trained classifier depends on: this module (its training code), the
# network and the data loaders.
DEPS = ("difflab.eval.metrics", "difflab.nets.classifier", "difflab.data.images")


@dataclass(frozen=True)
class ClassifierRecipe:
    """How the metric's classifier is trained (part of its cache key).

    ``shift``: the augmentation, a random translation of up to that many pixels
    each way (None: an eighth of the image side, at least 1). ``crop``: instead,
    train on random ``crop`` x ``crop`` windows of the image (the network pools
    over space, so it is applied to whole images afterwards). ``amp``: train under
    bf16 autocast where the hardware does bf16 (CUDA, or a CPU with AMX or
    AVX512-BF16); :func:`train_classifier` sets it off elsewhere, so the key says
    what ran. The features are always computed in fp32.
    """

    dataset: str
    config: ClassifierConfig
    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    shift: int | None = None
    crop: int | None = None
    amp: bool = False


def _width(image_size: int, channels: int = 1) -> int:
    return 16 if image_size <= 8 or channels == 1 else 32


def classifier_recipe(dataset: str) -> ClassifierRecipe:
    """The metric classifier of ``dataset``.

    The 8x8 digits: 600 steps of batch 128. Grey 28x28 images (MNIST): one epoch
    of the 60,000 at batch 32, width 16 (64 features): 99.0% test accuracy in
    about 45 s on one CPU core (the width-32 net of 2,000 steps took 545 s for
    the same). Colour images (CIFAR-10): width 32, 1,500 steps of batch 128 on
    random 24x24 windows at a peak learning rate of 6e-3 (a step costs about 0.56
    of a 32x32 one). Both train in bf16 where the hardware does it: a CIFAR-10
    step 2.0x faster (0.37 s, then 0.19 s), an MNIST one 1.5x (one core with AMX,
    2026-12-07).

    How the CIFAR-10 one was chosen (2026-12-07, bf16, one core each of an AMD
    EPYC, side by side; accuracy on the subset's 1,000 test images, paired
    differences on the same images). Before, 2,000 steps of whole images shifted
    by up to 4 pixels at 2e-3: 247 s, 71.2% (in fp32 on two Xeon cores, 71.4% in
    about 420 s; 1,000 steps gave 7.7 +- 1.4 points less). Windows at 6e-3:
    1,500 steps 106 s and 72.4% (+1.2 +- 1.4 points), 2,000 steps 141 s and 74.9%
    (+3.7 +- 1.4). Narrower networks reached less: a 16-channel first stage 176 s
    and 70.1% (2,000 steps at 2e-3; 1,200 steps at 6e-3, 112 s and 68.9%), width
    24 throughout 198 s and 70.3%.
    """
    data = load_images(dataset, split="test")
    width = _width(data.image_size, data.channels)
    cfg = ClassifierConfig(
        in_channels=data.channels,
        image_size=data.image_size,
        num_classes=data.num_classes,
        width=width,
    )
    if data.image_size <= 8:
        return ClassifierRecipe(data.name, cfg, steps=600)
    if data.channels == 1:
        # 1875 steps: one pass over MNIST's 60,000 training images
        return ClassifierRecipe(
            data.name, cfg, steps=1875, batch_size=32, lr=3e-3, shift=2, amp=True
        )
    return ClassifierRecipe(data.name, cfg, steps=1500, lr=6e-3, crop=24, amp=True)


def train_classifier(
    recipe: ClassifierRecipe, device: torch.device | str = "cpu", progress: bool = False
) -> Classifier:
    """Train (with random shifts or windows as augmentation) or load from the cache."""
    device = torch.device(device)
    recipe = bf16_as_run(recipe, "amp", device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.amp)

    def build(path) -> dict:
        from difflab.core.progress import tqdm

        # Initial weights from the recipe's seed, not from the caller's global
        # random state: whichever page (or process) trains it first, the same
        # classifier comes out (pages build in parallel, in no fixed order).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            net = Classifier(recipe.config).to(device)
        data = load_images(recipe.dataset, split="train")
        images, labels = data.images.to(device), data.labels.to(device)
        gen = torch.Generator(device).manual_seed(recipe.seed)
        opt = adam(net.parameters(), lr=recipe.lr, decoupled=True, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, recipe.lr, total_steps=recipe.steps
        )
        size = recipe.crop or data.image_size
        if not 0 < size <= data.image_size:
            raise ValueError(f"crop {size} must be in 1..{data.image_size}, the side")
        pad = 0 if recipe.crop else recipe.shift
        if pad is None:
            pad = max(1, data.image_size // 8)
        for _ in tqdm(range(recipe.steps), disable=not progress, desc="classifier"):
            idx = torch.randint(
                len(images), (recipe.batch_size,), device=device, generator=gen
            )
            x = F.pad(images[idx], (pad,) * 4, value=-1.0) if pad else images[idx]
            # one window (or shift) per batch, anywhere in the (padded) image
            dx, dy = torch.randint(
                0, x.shape[-1] - size + 1, (2,), generator=gen, device=device
            ).tolist()
            x = x[:, :, dy : dy + size, dx : dx + size]
            x = x.contiguous()  # a crop's strides make bf16 convolutions 2.2x slower
            with amp:
                logits = net(x)
            loss = F.cross_entropy(logits.float(), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        return {"net": net.state_dict()}

    def load(state: dict) -> Classifier:
        with torch.random.fork_rng(devices=[]):  # the weights are overwritten below
            net = Classifier(recipe.config).to(device)
        net.load_state_dict(state["net"])
        return net.eval()

    net, _ = cached(
        "classifier", recipe, deps=DEPS, build=build, load=load, device=device
    )
    return net


def min_samples(dataset: str) -> int:
    """The fewest images :func:`evaluate_samples` scores on ``dataset``: F + 1.

    F is the width of the classifier's features (4 * width: 64 for 8x8 images,
    128 otherwise). N images give a sample covariance of rank at most N - 1, so
    with N <= F it is singular and the Frechet distance measures the sample
    size more than the samples.
    """
    return 4 * classifier_recipe(dataset).config.width + 1


def _check_count(n: int, feature_dim: int) -> None:
    if n < feature_dim + 1:
        raise ValueError(
            f"A Frechet distance in {feature_dim} features needs at least "
            f"{feature_dim + 1} samples (a full-rank covariance); got {n}."
        )


@functools.lru_cache(maxsize=4)
def _classifier(dataset: str) -> Classifier:
    return train_classifier(classifier_recipe(dataset))


@torch.no_grad()
def features_and_probs(
    net: Classifier, images: Tensor, batch: int = 1000
) -> tuple[Tensor, Tensor]:
    """Penultimate features (N, F) and class probabilities (N, K), float64 on the CPU."""
    feats, probs = [], []
    for x in images.split(batch):
        f = net.features(x.float())
        feats.append(f.double())
        probs.append(net.head(f).softmax(-1).double())
    return torch.cat(feats), torch.cat(probs)


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (F,) and unbiased covariance (F, F) of features (N, F)."""
    return features.mean(0), torch.cov(features.T)


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^{1/2}) (Dowson & Landau 1982).

    The trace of the matrix square root is computed as the sum of square roots of
    the eigenvalues of C1^{1/2} C2 C1^{1/2}, which is symmetric PSD (stable in float64).
    """
    mu1, mu2, cov1, cov2 = (a.double() for a in (mu1, mu2, cov1, cov2))
    w, v = torch.linalg.eigh(cov1)
    root1 = (v * w.clamp(min=0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp(min=0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * cross)


@functools.lru_cache(maxsize=8)
def _reference(dataset: str) -> tuple[Tensor, Tensor, float]:
    test = load_images(dataset, split="test")
    feats, probs = features_and_probs(_classifier(dataset), test.images)
    acc = float((probs.argmax(1) == test.labels).double().mean())
    return *gaussian_stats(feats), acc


@functools.lru_cache(maxsize=16)
def real_data_floor(dataset: str, n: int, seed: int = 0) -> tuple[float, float]:
    """(distance, confident fraction) of ``n`` train images against the test split."""
    train = load_images(dataset, split="train")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train.images), generator=g)[: min(n, len(train.images))]
    feats, probs = features_and_probs(_classifier(dataset), train.images[idx])
    mu, cov = _reference(dataset)[:2]
    fd = frechet_distance(*gaussian_stats(feats), mu, cov)
    return fd, float((probs.max(1).values >= CONFIDENT).double().mean())


def evaluate_samples(
    samples: Tensor, data_name: str, *, labels: Tensor | None = None
) -> dict:
    """Score images (N, C, H, W) in [-1, 1] against the test split of ``data_name``.

    Returns:
        dict with ``fd`` (Frechet distance), ``floor`` (the same for N real train
        images), ``ratio`` (fd / floor), ``confident`` (fraction with top
        probability >= 0.9), ``floor_confident`` (that fraction on real images),
        ``accuracy`` (against ``labels``, if given, else None), ``n``.

    Raises:
        ValueError: with fewer samples than :func:`min_samples`.
    """
    net = _classifier(data_name)
    _check_count(len(samples), net.feature_dim)
    samples = samples.to(next(net.parameters()).device)
    feats, probs = features_and_probs(net, samples)
    mu, cov, _ = _reference(data_name)
    fd = frechet_distance(*gaussian_stats(feats), mu, cov)
    floor, floor_conf = real_data_floor(data_name, len(samples))
    acc = None
    if labels is not None:
        acc = float((probs.argmax(1).cpu() == labels.cpu()).double().mean())
    return {
        "n": len(samples),
        "fd": fd,
        "floor": floor,
        "ratio": fd / floor,
        "confident": float((probs.max(1).values >= CONFIDENT).double().mean()),
        "floor_confident": floor_conf,
        "accuracy": acc,
    }


def metric_features(images: Tensor, data_name: str) -> tuple[Tensor, Tensor]:
    """The metric classifier's features (N, F) and class probabilities (N, K) of
    ``images`` (N, C, H, W) in [-1, 1], float64 on the CPU: what
    :func:`evaluate_samples` scores, for spreads computed elsewhere."""
    net = _classifier(data_name)
    feats, probs = features_and_probs(net, images.to(next(net.parameters()).device))
    return feats.cpu(), probs.cpu()


def classifier_test_accuracy(data_name: str) -> float:
    """The metric classifier's accuracy on the test split (a sanity check of the metric)."""
    return _reference(data_name)[2]


def format_scores(s: dict) -> str:
    """One line: distance, floor, ratio and confidence."""
    line = (
        f"Frechet distance {s['fd']:.3f} (real-data floor {s['floor']:.3f}, "
        f"{s['ratio']:.1f}x) | confident {100 * s['confident']:.0f}% "
        f"(real data {100 * s['floor_confident']:.0f}%)"
    )
    if s.get("accuracy") is not None:
        line += f" | accuracy {100 * s['accuracy']:.0f}%"
    return line + f" | n={s['n']}"
