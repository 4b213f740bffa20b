"""A 1D UNet for waveforms, class-conditional like the 2D UNet.

The layout follows the 2D network of :mod:`difflab.nets.unet` (Ho et al. 2020,
App. B) with 1D convolutions, and the waveform UNets of audio-diffusion-pytorch
(Schneider et al. 2023, "Mousai") in one respect: each level downsamples by its
own factor (a strided convolution, kernel 2f) rather than always by 2, so a few
levels cover a long signal. Per level: ``num_res_blocks`` residual blocks, then
a downsample; a middle pair of residual blocks; the up path mirrors it with skip
connections and a nearest-neighbour upsample followed by a convolution.

**Lengths.** The levels divide the length by D = prod(factors). A signal whose
length is not a multiple of D is zero-padded on the right to the next multiple
before the first convolution, and the output is cropped back to the input's
length, so ``net(x, t, cond).shape == x.shape`` for every length.

**Conditioning** through ``cond={"y": labels}`` as in the 2D UNet: a learned
class embedding added to the time embedding, with label ``num_classes`` (or no
``"y"``) the null class of classifier-free guidance (Ho & Salimans 2022).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.core.cond import Cond
from difflab.nets.layers import num_groups, sinusoidal_embedding


@dataclass(frozen=True)
class UNet1DConfig:
    """Hyper-parameters of :class:`UNet1D`.

    Attributes:
        in_channels: signal channels (1 for mono audio).
        channels: base width.
        channel_mult: width multiplier per level.
        factors: downsampling factor after each level but the last
            (``len(factors) == len(channel_mult) - 1``).
        num_res_blocks: residual blocks per level on the down path.
        kernel_size: of the residual blocks' convolutions (odd).
        num_classes: if set, class-conditional with null label ``num_classes``.
        time_scale: multiplies t before the sinusoidal embedding.
    """

    in_channels: int = 1
    channels: int = 16
    channel_mult: tuple[int, ...] = (1, 2, 4)
    factors: tuple[int, ...] = (4, 4)
    num_res_blocks: int = 1
    kernel_size: int = 5
    num_classes: int | None = None
    time_scale: float = 1.0

    @property
    def multiple(self) -> int:
        """D = prod(factors): the input is padded to a multiple of this."""
        return math.prod(self.factors)


class ResBlock1D(nn.Module):
    """GroupNorm-SiLU-conv, + time embedding, GroupNorm-SiLU-conv, + skip (zero init)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, k: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups(c_in), c_in)
        self.conv1 = nn.Conv1d(c_in, c_out, k, padding=k // 2)
        self.emb_proj = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(num_groups(c_out), c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, k, padding=k // 2)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x (B, C_in, L), emb (B, E) after SiLU -> (B, C_out, L)."""
        h = self.conv1(F.silu(self.norm1(x))) + self.emb_proj(emb)[:, :, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class UNet1D(nn.Module):
    """``forward(x, t, cond=None)``: (B, C, L) -> (B, C, L) for any length L."""

    def __init__(self, config: UNet1DConfig):
        super().__init__()
        self.config = cfg = config
        if len(cfg.factors) != len(cfg.channel_mult) - 1:
            raise ValueError(
                f"need one factor per level but the last: {cfg.factors} for "
                f"{len(cfg.channel_mult)} levels"
            )
        if cfg.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {cfg.kernel_size}")
        ch, emb_dim, k = cfg.channels, 4 * cfg.channels, cfg.kernel_size
        self.time_mlp = nn.Sequential(
            nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.class_emb = (
            nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes else None
        )
        self.conv_in = nn.Conv1d(cfg.in_channels, ch, k, padding=k // 2)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, c = [ch], ch
        for level, mult in enumerate(cfg.channel_mult):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock1D(c, ch * mult, emb_dim, k))
                c = ch * mult
                skips.append(c)
            self.down.append(blocks)
            if level < len(cfg.factors):
                f = cfg.factors[level]
                self.downsample.append(nn.Conv1d(c, c, 2 * f, stride=f, padding=f // 2))
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock1D(c, c, emb_dim, k) for _ in range(2)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(cfg.channel_mult))):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                c_out = ch * cfg.channel_mult[level]
                blocks.append(ResBlock1D(c + skips.pop(), c_out, emb_dim, k))
                c = c_out
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(nn.Conv1d(c, c, k, padding=k // 2))
        self.norm_out = nn.GroupNorm(num_groups(c), c)
        self.conv_out = nn.Conv1d(c, cfg.in_channels, k, padding=k // 2)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        """Predict from x_t (B, C, L); t (B,) float; cond None or {"y": (B,) long}."""
        cfg = self.config
        y = (cond or {}).get("y")
        if y is not None and self.class_emb is None:
            raise ValueError(
                'labels cond["y"] given but UNet1DConfig.num_classes is None'
            )
        length = x.shape[-1]
        x = F.pad(x, (0, -length % cfg.multiple))  # zero-pad to a multiple of D
        emb = self.time_mlp(
            sinusoidal_embedding(t * cfg.time_scale, cfg.channels).to(x.dtype)
        )
        if self.class_emb is not None:
            if y is None:
                y = torch.full_like(t, cfg.num_classes, dtype=torch.long)
            emb = emb + self.class_emb(y)
        emb = F.silu(emb)
        h = self.conv_in(x)
        hs = [h]
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
                hs.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                hs.append(h)
        for block in self.mid:
            h = block(h, emb)
        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            if i < len(self.upsample):
                f = cfg.factors[len(cfg.factors) - 1 - i]
                h = self.upsample[i](F.interpolate(h, scale_factor=f, mode="nearest"))
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out[..., :length]  # crop the padding back off
