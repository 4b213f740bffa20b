"""Two tensor helpers the whole package shares: broadcasting a per-sample value and
drawing seeded noise.

Randomness is explicit (a ``torch.Generator``), and noise is drawn on the
generator's device and then moved to the target's, so one CPU generator seeds a
run on any device identically.
"""

from __future__ import annotations

import torch
from torch import Tensor


def append_dims(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample (B,) tensor to (B, 1, ..., 1) to broadcast against ``x``.

    The result has ``x``'s dtype and device.
    """
    return v.reshape(-1, *([1] * (x.ndim - 1))).to(dtype=x.dtype, device=x.device)


def randn(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None = None,
    *,
    like: Tensor | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Standard normal noise of ``shape`` drawn with ``generator``.

    The draw happens on the generator's device (the CPU if there is none and no
    ``device`` is given) in ``dtype`` (default: ``like``'s dtype, else torch's
    default), and the result is moved to ``like``'s device (or ``device``).
    """
    if like is not None:
        dtype = dtype or like.dtype
        device = device or like.device
    draw_on = generator.device if generator is not None else (device or "cpu")
    z = torch.randn(tuple(shape), generator=generator, device=draw_on, dtype=dtype)
    return z.to(device) if device is not None else z


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Noise shaped like ``x``, in its dtype and on its device (see :func:`randn`)."""
    return randn(x.shape, generator, like=x)
