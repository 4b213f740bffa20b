"""A word-level tokenizer and a small transformer text encoder, trained from scratch.

Stable Diffusion (Rombach et al. 2022, Sec. 3.3) encodes the prompt with a
transformer tau_theta into a sequence tau_theta(y) of shape (L, d_tau) and lets
the UNet attend to it by cross-attention (their Eq. 3). SD v1 uses the frozen
CLIP ViT-L/14 text transformer; we train a small one jointly with the UNet, over
a fixed vocabulary of whole words (the caption grammar has a few dozen words).

:class:`TextEncoder` prepends a learned *start* vector that is always a real
token, so even the empty caption (all padding) has an encoding: the start
vector passed through the layers. That encoding is the null condition of
classifier-free guidance, as the empty prompt's CLIP encoding is in SD.

Papers: Vaswani et al. 2017 https://arxiv.org/abs/1706.03762 ;
Rombach et al. 2022 https://arxiv.org/abs/2112.10752
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from difflab.core.cond import Cond, NullCond
from difflab.nets.unet import CrossAttention

PAD, UNK = "<pad>", "<unk>"


class WordTokenizer:
    """Whole words to ids: ``<pad>`` is 0, ``<unk>`` is 1, then the vocabulary.

    Args:
        vocabulary: the known words (lower case, no spaces), in a fixed order.
        max_length: L, the number of ids per prompt (shorter prompts are padded).
    """

    def __init__(self, vocabulary: Sequence[str], max_length: int):
        words = [PAD, UNK, *vocabulary]
        if len(set(words)) != len(words):
            raise ValueError("the vocabulary has repeated words (or <pad>/<unk>)")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, not {max_length}")
        self.words = tuple(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.max_length = max_length
        self._warned: set[str] = set()

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    def __len__(self) -> int:
        return len(self.words)

    def split(self, prompt: str) -> list[str]:
        """Lower-cased words of ``prompt``.

        Raises:
            ValueError: if ``prompt`` is empty or longer than ``max_length`` words.
        """
        if not isinstance(prompt, str):
            raise TypeError(f"a prompt must be a string, got {type(prompt).__name__}")
        words = prompt.lower().split()
        if not words:
            raise ValueError(
                "the prompt is empty; write a caption such as 'a thin two' "
                "(unconditional samples: guidance 0)"
            )
        if len(words) > self.max_length:
            start = prompt[:40] + ("..." if len(prompt) > 40 else "")
            raise ValueError(
                f"the prompt has {len(words)} words, more than the "
                f"{self.max_length} this tokenizer takes: {start!r}"
            )
        return words

    def encode(self, prompts: str | Sequence[str]) -> tuple[Tensor, Tensor]:
        """(ids (B, L) long, mask (B, L) bool: True for real words).

        An unknown word becomes ``<unk>``; each unknown word is warned about once
        per tokenizer.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        ids = torch.zeros(len(prompts), self.max_length, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            for col, w in enumerate(self.split(prompt)):
                if w not in self.index and w not in self._warned:
                    self._warned.add(w)
                    warnings.warn(
                        f"unknown word {w!r} in the prompt is read as {UNK}; the "
                        f"known words are: {' '.join(self.words[2:])}",
                        stacklevel=2,
                    )
                ids[row, col] = self.index.get(w, self.unk_id)
        return ids, ids != self.pad_id

    def decode(self, ids: Tensor) -> list[str]:
        """Prompts from (B, L) ids, padding dropped."""
        return [
            " ".join(self.words[i] for i in row.tolist() if i != self.pad_id)
            for row in ids.reshape(-1, ids.shape[-1])
        ]

    def null(self) -> NullCond:
        """The null condition: every id ``<pad>``, every mask entry False."""
        return NullCond((("ids", self.pad_id), ("mask", False)))


@dataclass(frozen=True)
class TextEncoderConfig:
    """Hyper-parameters of :class:`TextEncoder`.

    Attributes:
        vocab_size: number of token ids (the tokenizer's ``len``).
        max_length: L, ids per prompt.
        dim: width d_tau of every token's vector.
        layers, heads: of the transformer encoder (pre-norm).
    """

    vocab_size: int
    max_length: int
    dim: int = 32
    layers: int = 2
    heads: int = 2


class TextEncoder(nn.Module):
    """tau_theta: (ids, mask) -> (context (B, L + 1, D), mask (B, L + 1)).

    Token plus learned position embeddings, a learned start vector in front, then
    pre-norm transformer encoder layers (Vaswani et al. 2017) whose attention
    ignores padding (``src_key_padding_mask``), and a final LayerNorm.
    """

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = cfg = config
        self.tok = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos = nn.Parameter(torch.randn(cfg.max_length + 1, cfg.dim) * 0.02)
        self.start = nn.Parameter(torch.randn(cfg.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.dim,
            cfg.heads,
            dim_feedforward=4 * cfg.dim,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(
            layer, cfg.layers, enable_nested_tensor=False
        )
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """ids (B, L) long, mask (B, L) bool -> (B, L + 1, D), (B, L + 1) bool."""
        B = ids.shape[0]
        mask = mask.to(torch.bool)
        # Padded positions are zeroed before the layers, so their ids never matter.
        x = self.tok(ids) * mask[..., None]
        x = torch.cat([self.start.expand(B, 1, -1), x], 1) + self.pos  # (B, L+1, D)
        mask = torch.cat([mask.new_ones(B, 1), mask], 1)
        x = self.layers(x, src_key_padding_mask=~mask)
        return self.norm(x) * mask[..., None], mask


class TextConditioned(nn.Module):
    """A denoiser conditioned on token ids: ``net(x, t, {"ids", "mask"})``.

    Encodes the ids with ``encoder`` and calls ``unet(x, t, {"context": ...,
    "mask": ...})``, so the encoder and the UNet train jointly through the
    ordinary loop, and guidance, dropout and samplers see ids only.
    """

    def __init__(self, encoder: TextEncoder, unet: nn.Module):
        super().__init__()
        self.encoder, self.unet = encoder, unet

    def context(self, cond: Cond) -> dict[str, Tensor]:
        """The UNet's condition: ``{"context": (B, L+1, D), "mask": (B, L+1)}``."""
        context, mask = self.encoder(cond["ids"], cond["mask"])
        return {"context": context, "mask": mask}

    def forward(self, x: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        """x (B, C, H, W), t (B,), cond ``{"ids", "mask"}`` -> (B, C, H, W)."""
        if cond is None or "ids" not in cond:
            raise ValueError('a text-conditioned model needs cond={"ids", "mask"}')
        return self.unet(x, t, self.context(cond))


def cross_attention_weights(
    block: CrossAttention, x: Tensor, context: Tensor, mask: Tensor | None = None
) -> Tensor:
    """softmax(Q K^T / sqrt(d)) of Rombach et al. 2022, Eq. 3, for ``block``.

    Recomputed from the block's own weights (its forward uses a fused kernel that
    does not return them): Q from the normalised feature map ``x`` (B, C, H, W),
    K from ``context`` (B, L, D); padding (``mask`` False) gets weight 0.

    Returns:
        (B, heads, H*W, L): for each position, a distribution over the tokens.
    """
    B, C, H, W = x.shape
    L, heads = context.shape[1], block.heads
    d = C // heads
    h = block.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
    q = block.q(h).view(B, H * W, heads, d).transpose(1, 2)  # (B, heads, HW, d)
    k = block.kv(context.to(h.dtype)).view(B, L, 2, heads, d)[:, :, 0]
    logits = q @ k.permute(0, 2, 3, 1) / math.sqrt(d)  # (B, heads, HW, L)
    if mask is not None:
        logits = logits.masked_fill(~mask.to(torch.bool)[:, None, None, :], -math.inf)
    return logits.softmax(-1)


@torch.no_grad()
def attention_maps(
    model: TextConditioned, block: CrossAttention, x: Tensor, t: Tensor, cond: Cond
) -> Tensor:
    """The weights of ``block`` during one call ``model(x, t, cond)``.

    Returns:
        (B, heads, H*W, L + 1) of :func:`cross_attention_weights` at that block's
        input (token 0 is the start vector).
    """
    seen = {}

    def hook(module, args):
        seen["args"] = args

    handle = block.register_forward_pre_hook(hook)
    try:
        model(x, t, cond)
    finally:
        handle.remove()
    return cross_attention_weights(block, *seen["args"])
