"""Captioned digits: words measured on each image, a caption grammar, held-out pairs.

A text-to-image model needs captions that say more than the label. We measure
two attributes on every digit image and bin them into words:

- **thickness** (``thin`` / ``thick``): the ink mass, the mean of (x + 1) / 2
  over the pixels, split at the median of the digit's own class (a thick one is
  thick *for a one*);
- **slant** (``leaning left`` / ``upright`` / ``leaning right``): the shear of
  the ink, ``cov(u, v) / var(v)`` with u the column (rightwards) and v the row
  (upwards) of each pixel, weighted by its ink. A bar sheared by
  u -> u + s v has slant exactly s (the test constructs one). Split at the
  class's terciles.

Thresholds are fitted on the training images only (:func:`fit_attributes`) and
then applied to any image, generated ones included (:func:`describe`).

The grammar: ``a [thickness] <digit> [slant]``, e.g. "a thick seven leaning
right", "a seven upright", "a thin seven", "a seven"; every image is captioned
in all four forms, so a prompt may name any subset of the attributes. Some
(digit, attribute word) pairs are held out (:data:`HELD_OUT`): no training
image with such a pair is kept, so prompting for one tests composition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

DIGIT_WORDS = (
    "zero", "one", "two", "three", "four",
    "five", "six", "seven", "eight", "nine",
)  # fmt: skip
THICKNESS = ("thin", "thick")
SLANT = ("leaning left", "upright", "leaning right")
#: Every word the grammar can produce, in a fixed order (the tokenizer's vocabulary).
VOCABULARY = ("a", *DIGIT_WORDS, *THICKNESS, "leaning", "left", "right", "upright")
#: The longest caption in words: "a thick seven leaning right".
MAX_WORDS = 5
#: (digit, attribute word) pairs with no training image: composition is tested on them.
HELD_OUT = ((7, "thick"), (2, "leaning left"), (4, "thin"), (0, "leaning right"))


def _ink(images: Tensor) -> Tensor:
    """(N, 1, H, W) in [-1, 1] -> (N, H, W) ink in [0, 1]."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected (N, 1, H, W) images, got {tuple(images.shape)}")
    return ((images[:, 0].double() + 1) / 2).clamp(0, 1)


def thickness(images: Tensor) -> Tensor:
    """Mean ink per image, (N,) float64: the fraction of the square that is inked."""
    return _ink(images).mean((1, 2))


def slant(images: Tensor) -> Tensor:
    """The ink's shear cov(u, v) / var(v), (N,) float64; > 0 leans right.

    u is the column position (to the right) and v the row position (upwards),
    both in pixels; the moments are weighted by the ink. For a bar whose points
    are (u0 + s v, v), cov(u, v) = s var(v), so the measure returns s.
    """
    ink = _ink(images)
    _, H, W = ink.shape
    v = -torch.arange(H, dtype=ink.dtype)[:, None].expand(H, W)
    u = torch.arange(W, dtype=ink.dtype)[None, :].expand(H, W)
    mass = ink.sum((1, 2)).clamp_min(1e-12)
    mu_u = (ink * u).sum((1, 2)) / mass
    mu_v = (ink * v).sum((1, 2)) / mass
    du, dv = u - mu_u[:, None, None], v - mu_v[:, None, None]
    cov = (ink * du * dv).sum((1, 2)) / mass
    var = (ink * dv * dv).sum((1, 2)) / mass
    return cov / var.clamp_min(1e-12)


@dataclass(frozen=True)
class AttributeBins:
    """Per-class thresholds: thickness median, slant lower and upper terciles.

    Each is a tuple of 10 floats (one per digit), fitted on training images.
    """

    thick_at: tuple[float, ...]
    left_below: tuple[float, ...]
    right_above: tuple[float, ...]


def fit_attributes(images: Tensor, labels: Tensor) -> AttributeBins:
    """The per-class thresholds of ``images`` (training images, (N, 1, H, W))."""
    thick, sl = thickness(images), slant(images)
    q = torch.tensor([1 / 3, 2 / 3], dtype=torch.float64)
    med, lo, hi = [], [], []
    for d in range(len(DIGIT_WORDS)):
        m = labels == d
        if not m.any():
            raise ValueError(f"no training image of digit {d} to fit thresholds on")
        med.append(thick[m].median().item())
        t = torch.quantile(sl[m], q)
        lo.append(t[0].item())
        hi.append(t[1].item())
    return AttributeBins(tuple(med), tuple(lo), tuple(hi))


def describe(
    images: Tensor, digits: Tensor, bins: AttributeBins
) -> tuple[Tensor, Tensor]:
    """(thickness index into THICKNESS, slant index into SLANT), each (N,) long.

    ``digits`` says whose thresholds to use: the label of a real image, or the
    prompt's digit for a generated one.
    """
    d = digits.long().cpu()
    thick_at = torch.tensor(bins.thick_at, dtype=torch.float64)[d]
    lo = torch.tensor(bins.left_below, dtype=torch.float64)[d]
    hi = torch.tensor(bins.right_above, dtype=torch.float64)[d]
    th = (thickness(images.cpu()) > thick_at).long()
    s = slant(images.cpu())
    sl = torch.ones_like(th)
    sl[s < lo] = 0
    sl[s > hi] = 2
    return th, sl


def caption(
    digit: int, thick: int | None = None, slant_index: int | None = None
) -> str:
    """The caption ``a [thickness] <digit> [slant]``; ``None`` omits an attribute."""
    words = ["a"]
    if thick is not None:
        words.append(THICKNESS[thick])
    words.append(DIGIT_WORDS[digit])
    if slant_index is not None:
        words.append(SLANT[slant_index])
    return " ".join(words)


def is_held_out(digit: int, thick: int | None, slant_index: int | None) -> bool:
    """Whether the caption's (digit, word) pairs include a held-out one."""
    words = []
    if thick is not None:
        words.append(THICKNESS[thick])
    if slant_index is not None:
        words.append(SLANT[slant_index])
    return any((digit, w) in HELD_OUT for w in words)


@dataclass
class CaptionedImages:
    """Training rows: images and one caption each (an image appears in four forms).

    Attributes:
        images: (M, 1, H, W) in [-1, 1]; rows repeat the kept images.
        captions: M strings.
        kept: how many distinct images survived the held-out filter.
        dropped: how many were held out.
        source: (M,) the index of each row's image in the images captioned, so
            that a per-image computation (an encoder) runs once per image.
    """

    images: Tensor
    captions: list[str]
    kept: int
    dropped: int
    source: Tensor


def captioned(images: Tensor, labels: Tensor, bins: AttributeBins) -> CaptionedImages:
    """Caption every image in the four forms of the grammar, held-out pairs removed.

    An image whose (digit, thickness word) or (digit, slant word) is in
    :data:`HELD_OUT` is dropped entirely, so no caption form can leak the pair.
    """
    th, sl = describe(images, labels, bins)
    keep = torch.tensor(
        [
            not is_held_out(int(d), int(a), int(b))
            for d, a, b in zip(labels, th, sl, strict=True)
        ],
        dtype=torch.bool,
    )
    rows, caps = [], []
    for i in keep.nonzero()[:, 0].tolist():
        d, a, b = int(labels[i]), int(th[i]), int(sl[i])
        for form in ((a, b), (a, None), (None, b), (None, None)):
            rows.append(i)
            caps.append(caption(d, *form))
    source = torch.tensor(rows)
    return CaptionedImages(
        images[source], caps, int(keep.sum()), int((~keep).sum()), source
    )
