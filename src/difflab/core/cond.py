"""Conditioning as one mapping, passed unchanged from the data to the network.

A condition ``cond`` is a mapping from names to per-sample tensors whose first
dimension is the batch: ``{"y": labels}`` for a class-conditional model,
``{"context": tokens, "mask": mask}`` for a text-conditioned one, ``None`` for an
unconditional one. Losses, the training loop, the eps-model wrappers and every
sampler pass it through without looking inside; only the network reads its keys
(as k-diffusion's ``extra_args`` and EDM's ``class_labels`` do).

The *null* condition of classifier-free guidance (Ho & Salimans 2022, Sec. 3.2)
is part of a recipe: a :class:`NullCond` says, per key, which value means
"no condition" (e.g. label ``num_classes``, or the padding token with an all-false
mask). It is a frozen dataclass, so it is part of the recipe's cache key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

Cond = Mapping[str, Tensor]


@dataclass(frozen=True)
class NullCond:
    """The null condition, as a fill value per key; keys not listed are kept.

    Example: ``NullCond((("y", 10),))`` for labels 0..9 with the null class 10.
    """

    fill: tuple[tuple[str, float | int | bool], ...]

    def __call__(self, cond: Cond | None) -> dict[str, Tensor] | None:
        """The null condition with the shapes of ``cond`` (``None`` stays ``None``)."""
        if cond is None:
            return None
        fill = dict(self.fill)
        return {
            k: torch.full_like(v, fill[k]) if k in fill else v for k, v in cond.items()
        }


def select(cond: Cond | None, index: Tensor | slice) -> dict[str, Tensor] | None:
    """The rows ``index`` of every tensor of ``cond`` (a batch of a dataset's conds)."""
    if cond is None:
        return None
    return {k: v[index] for k, v in cond.items()}


def to(cond: Cond | None, device: torch.device | str) -> dict[str, Tensor] | None:
    """``cond`` with every tensor on ``device``."""
    if cond is None:
        return None
    return {k: v.to(device) for k, v in cond.items()}


def cat(a: Cond | None, b: Cond | None) -> dict[str, Tensor] | None:
    """Two conditions stacked along the batch (for one network call on both halves)."""
    if a is None and b is None:
        return None
    if a is None or b is None or a.keys() != b.keys():
        raise ValueError("cat needs two conditions with the same keys")
    return {k: torch.cat([a[k], b[k]]) for k in a}


def drop(
    cond: Cond | None,
    p: float,
    null: NullCond,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor] | None:
    """Replace each row of ``cond`` by the null condition with probability ``p``.

    Condition dropout trains one network as both the conditional and the
    unconditional model (Ho & Salimans 2022, Algorithm 1). The coin flips are
    drawn with ``generator`` on its device, so training stays reproducible.
    """
    if cond is None or p <= 0:
        return None if cond is None else dict(cond)
    first = next(iter(cond.values()))
    dev = generator.device if generator is not None else "cpu"
    keep = torch.rand(first.shape[0], generator=generator, device=dev) >= p
    keep = keep.to(first.device)
    nulls = null(cond)
    out = {}
    for k, v in cond.items():
        m = keep.view(-1, *([1] * (v.ndim - 1)))
        out[k] = torch.where(m, v, nulls[k])
    return out
