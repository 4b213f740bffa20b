"""Figures used across the site: image grids and loss curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from difflab.notes.figures import mark_grid


def to_uint8(images: Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8, the layout image tools expect."""
    x = (
        ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5)
        .round()
        .to(torch.uint8)
    )
    return x.permute(0, 2, 3, 1).numpy()


def image_grid(images: Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] into one (H', W', C) uint8 array."""
    n, c, h, w = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    ncol = int(np.ceil(n / nrow))
    tiles = to_uint8(images)
    grid = np.zeros((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), np.uint8)
    for k in range(n):
        r, q = divmod(k, nrow)
        grid[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + q * (w + pad) : pad + q * (w + pad) + w,
        ] = tiles[k]
    return grid


def save_grid(
    images: Tensor, path: str | Path, nrow: int | None = None, scale: int = 1
) -> Path:
    """Write an image grid as a PNG (upscaled by ``scale`` with nearest neighbours)."""
    from PIL import Image

    grid = image_grid(images, nrow)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def show_grid(
    ax, images: Tensor, nrow: int | None = None, title: str | None = None
) -> None:
    """Draw an image grid on a matplotlib axis."""
    grid = image_grid(images, nrow)
    shown = ax.imshow(
        grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255
    )
    mark_grid(shown, tuple(images.shape[-2:]), len(images))  # one digit: one tile
    ax.set_axis_off()
    if title:
        ax.set_title(title)


def smooth(values, k: int = 5) -> np.ndarray:
    """A centred moving average, for noisy loss curves."""
    v = np.asarray(values, dtype=float)
    if len(v) < k:
        return v
    return np.convolve(
        np.pad(v, (k // 2, k - 1 - k // 2), mode="edge"), np.ones(k) / k, "valid"
    )
