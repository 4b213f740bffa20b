"""The noise-prediction UNet of DDPM, with class and cross-attention conditioning.

The layout mirrors the network of Ho et al. (2020), Appendix B (itself the
PixelCNN++ / Wide-ResNet UNet): a 3x3 conv in; per resolution level
``num_res_blocks`` residual blocks (each followed by self-attention at the
chosen resolutions) and a strided-conv downsample (except at the last level); a
middle resblock-attention-resblock; an up path with ``num_res_blocks + 1``
residual blocks per level, each taking a skip connection from the down path,
and a nearest-neighbour + conv upsample; then GroupNorm-SiLU-conv out.
:func:`ddpm_cifar10_config` reproduces the 35.7M-parameter CIFAR-10 network.

Two additions, both off by default: a learned class embedding added to the
time embedding (with a "null" class ``num_classes`` for classifier-free
guidance, Ho & Salimans 2022), and cross-attention to a context sequence at the
attention resolutions (Rombach et al. 2022, Sec. 3.3). Both are read from one
condition mapping ``cond`` (:mod:`difflab.core.cond`): ``cond["y"]`` the labels,
``cond["context"]`` the sequence and ``cond["mask"]`` which of its tokens are real.

The forward graph has no data-dependent Python control flow, so it compiles
with ``torch.compile``; attention goes through
``torch.nn.functional.scaled_dot_product_attention``.

Papers: Ho et al. 2020 https://arxiv.org/abs/2006.11239 ;
Vaswani et al. 2017 https://arxiv.org/abs/1706.03762 ;
Ho & Salimans 2022 https://arxiv.org/abs/2207.12598 ;
Rombach et al. 2022 https://arxiv.org/abs/2112.10752
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.core.cond import Cond
from difflab.nets.layers import num_groups, sinusoidal_embedding


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of :class:`UNet`.

    Attributes:
        in_channels: image channels C.
        out_channels: output channels; ``None`` means ``in_channels``.
        image_size: height = width; must halve exactly at each downsample.
        channels: base width (DDPM: 128).
        channel_mult: width multiplier per resolution level.
        num_res_blocks: residual blocks per level on the down path (the up path
            has one more).
        attn_resolutions: feature-map sizes with self-attention (DDPM: (16,)).
        mid_attention: self-attention in the middle block, at the lowest
            resolution (DDPM: on); off leaves two residual blocks there (and no
            cross-attention there either, when ``context_dim`` is set).
        dropout: dropout inside the residual blocks (DDPM CIFAR-10: 0.1).
        num_heads: attention heads (DDPM: 1); ignored if ``head_dim`` is set.
        head_dim: channels per head; if set, heads = width // head_dim.
        num_classes: if set, a learned class embedding is added to the time
            embedding; label ``num_classes`` is the "null" (unconditional) class.
        context_dim: if set, cross-attention to ``context`` (B, L, context_dim)
            after each self-attention.
        time_scale: multiplies ``t`` before the sinusoidal embedding (use 1000
            for continuous t in [0, 1], so the frequencies match DDPM indices).
    """

    in_channels: int = 1
    out_channels: int | None = None
    image_size: int = 28
    channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = ()
    mid_attention: bool = True
    dropout: float = 0.0
    num_heads: int = 1
    head_dim: int | None = None
    num_classes: int | None = None
    context_dim: int | None = None
    time_scale: float = 1.0


def ddpm_cifar10_config() -> UNetConfig:
    """The CIFAR-10 network of Ho et al. 2020, Appendix B: 35.7M parameters."""
    return UNetConfig(
        in_channels=3,
        image_size=32,
        channels=128,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks=2,
        attn_resolutions=(16,),
        dropout=0.1,
    )


def _heads(width: int, cfg: UNetConfig) -> int:
    heads = width // cfg.head_dim if cfg.head_dim else cfg.num_heads
    if heads < 1 or width % heads:
        raise ValueError(f"width {width} is not divisible into {heads} heads")
    return heads


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + time embedding, GroupNorm-SiLU-dropout-conv, + skip.

    Ho et al. 2020, Appendix B (Wide-ResNet block). The last conv starts at zero,
    so the block starts as the identity (or its 1x1 shortcut).
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(num_groups(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x (B, C_in, H, W), emb (B, E) already through SiLU -> (B, C_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = h + self.emb_proj(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions, with a residual.

    Vaswani et al. 2017, Eq. 1; placed as in Ho et al. 2020, Appendix B. q, k, v
    come from one fused linear map; the output projection starts at zero.
    """

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(num_groups(channels), channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        qkv = self.qkv(h).view(B, H * W, 3, self.heads, C // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, HW, head_dim)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, head_dim)
        h = self.proj(h.transpose(1, 2).reshape(B, H * W, C))  # (B, HW, C)
        return x + h.transpose(1, 2).view(B, C, H, W)


class CrossAttention(nn.Module):
    """Attention from the H*W positions (queries) to a context sequence (keys, values).

    Rombach et al. 2022, Sec. 3.3: Q = W_q x, K = W_k context, V = W_v context.
    The output projection starts at zero, so the block starts as the identity.
    Padding tokens (``mask`` False) get no attention weight; a sample whose
    tokens are all padding attends to nothing and the block passes x through.
    """

    def __init__(self, channels: int, context_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(num_groups(channels), channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, C, H, W), context (B, L, D), mask (B, L) bool -> (B, C, H, W)."""
        B, C, H, W = x.shape
        L, d = context.shape[1], C // self.heads
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q = self.q(h).view(B, H * W, self.heads, d).transpose(1, 2)  # (B, hd, HW, d)
        kv = self.kv(context.to(h.dtype)).view(B, L, 2, self.heads, d)
        k, v = kv.permute(2, 0, 3, 1, 4)  # each (B, heads, L, d)
        attn_mask, any_real = None, None
        if mask is not None:
            mask = mask.to(torch.bool)
            any_real = mask.any(-1)  # (B,)
            # An all-padding row would softmax over nothing (NaN): let it attend
            # everywhere, then zero its output below.
            attn_mask = (mask | ~any_real[:, None])[:, None, None, :]  # (B, 1, 1, L)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        h = self.proj(h.transpose(1, 2).reshape(B, H * W, C))  # (B, HW, C)
        if any_real is not None:
            h = h * any_real[:, None, None].to(h.dtype)
        return x + h.transpose(1, 2).view(B, C, H, W)


class Block(nn.Module):
    """A residual block, optionally followed by self- and cross-attention."""

    def __init__(
        self, c_in: int, c_out: int, emb_dim: int, cfg: UNetConfig, attn: bool
    ):
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim, cfg.dropout)
        heads = _heads(c_out, cfg)
        self.attn = SelfAttention(c_out, heads) if attn else None
        cross = attn and cfg.context_dim is not None
        self.cross = CrossAttention(c_out, cfg.context_dim, heads) if cross else None

    def forward(
        self, x: Tensor, emb: Tensor, context: Tensor | None, mask: Tensor | None
    ) -> Tensor:
        x = self.res(x, emb)
        if self.attn is not None:
            x = self.attn(x)
        if self.cross is not None:
            x = self.cross(x, context, mask)
        return x


class Downsample(nn.Module):
    """3x3 conv with stride 2 (Ho et al. 2020, Appendix B): H, W -> H/2, W/2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv: H, W -> 2H, 2W."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """The DDPM UNet (Ho et al. 2020, Appendix B), optionally class/text conditioned.

    ``forward(x, t, cond=None)`` maps x_t (B, C, H, W), the time t (B,) and the
    condition mapping to a tensor of the same shape as x (eps, x0 or v, as the
    recipe decides).
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        n_levels = len(cfg.channel_mult)
        if cfg.image_size % 2 ** (n_levels - 1):
            raise ValueError(
                f"image_size {cfg.image_size} cannot be halved {n_levels - 1} times "
                f"(channel_mult {cfg.channel_mult}); use fewer levels or another size"
            )
        sizes = [cfg.image_size // 2**i for i in range(n_levels)]
        if missing := set(cfg.attn_resolutions) - set(sizes):
            raise ValueError(
                f"attn_resolutions {sorted(missing)} not among the sizes {sizes}"
            )
        ch, emb_dim = cfg.channels, 4 * cfg.channels

        # Time embedding: sinusoid -> Linear -> SiLU -> Linear (Appendix B).
        self.time_mlp = nn.Sequential(
            nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        # Label num_classes is the "null" label of classifier-free guidance.
        self.class_emb = (
            nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes else None
        )

        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skips, c = [ch], ch  # channels of each skip connection
        for level, mult in enumerate(cfg.channel_mult):
            attn = sizes[level] in cfg.attn_resolutions
            for _ in range(cfg.num_res_blocks):
                self.down.append(Block(c, ch * mult, emb_dim, cfg, attn))
                c = ch * mult
                skips.append(c)
            if level < n_levels - 1:
                self.down.append(Downsample(c))
                skips.append(c)

        self.mid1 = Block(c, c, emb_dim, cfg, attn=cfg.mid_attention)
        self.mid2 = Block(c, c, emb_dim, cfg, attn=False)

        self.up = nn.ModuleList()
        for level in reversed(range(n_levels)):
            attn = sizes[level] in cfg.attn_resolutions
            for _ in range(cfg.num_res_blocks + 1):
                c_out = ch * cfg.channel_mult[level]
                self.up.append(Block(c + skips.pop(), c_out, emb_dim, cfg, attn))
                c = c_out
            if level > 0:
                self.up.append(Upsample(c))

        self.norm_out = nn.GroupNorm(num_groups(c), c)
        self.conv_out = nn.Conv2d(c, cfg.out_channels or cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        """Predict from x_t.

        Args:
            x: (B, C, H, W) noisy images x_t.
            t: (B,) float times (DDPM index 0..T-1, or scaled by ``time_scale``).
            cond: ``None`` or a mapping with
                ``"y"``: (B,) long labels in 0..num_classes, ``num_classes`` (or
                no ``"y"``) the null label; only with ``config.num_classes``;
                ``"context"``: (B, L, context_dim) sequence for cross-attention,
                required when ``config.context_dim`` is set;
                ``"mask"``: (B, L) bool, True for real tokens, False for padding
                (ignored by the cross-attention); default all True.

        Returns:
            (B, out_channels, H, W).
        """
        cfg = self.config
        cond = cond or {}
        y, context, mask = cond.get("y"), cond.get("context"), cond.get("mask")
        if (context is None) != (cfg.context_dim is None):
            raise ValueError(
                'pass cond["context"] exactly when UNetConfig.context_dim is set'
            )
        if y is not None and self.class_emb is None:
            raise ValueError(
                'labels cond["y"] given but UNetConfig.num_classes is None'
            )

        t_emb = sinusoidal_embedding(t * cfg.time_scale, cfg.channels).to(x.dtype)
        emb = self.time_mlp(t_emb)  # (B, 4 ch)
        if self.class_emb is not None:
            if y is None:
                y = torch.full_like(t, cfg.num_classes, dtype=torch.long)
            emb = emb + self.class_emb(y)
        emb = F.silu(emb)  # every ResBlock applies SiLU first; do it once here

        h = self.conv_in(x)  # (B, ch, H, W)
        hs = [h]
        for block in self.down:
            h = (
                block(h)
                if isinstance(block, Downsample)
                else block(h, emb, context, mask)
            )
            hs.append(h)
        h = self.mid2(self.mid1(h, emb, context, mask), emb, context, mask)
        for block in self.up:
            if isinstance(block, Upsample):
                h = block(h)
            else:
                h = block(torch.cat([h, hs.pop()], dim=1), emb, context, mask)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C_out, H, W)
