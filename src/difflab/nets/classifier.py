"""A small CNN classifier, used for metrics (Frechet distance, accuracy on samples).

Three stages of two 3x3 convs (widths w, 2w, 4w; the second and third stages
start with a stride-2 conv), GroupNorm and SiLU, then global average pooling to
the (B, 4w) features and one linear layer to the logits. It works at any image
size (8x8 digits, 28x28 MNIST, 32x32 CIFAR-10). The Frechet distance in its
feature space follows the recipe of FID (Heusel et al. 2017), with this network
in place of Inception.

Paper: Heusel et al. 2017 https://arxiv.org/abs/1706.08500
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from difflab.nets.layers import num_groups


@dataclass(frozen=True)
class ClassifierConfig:
    """Hyper-parameters of :class:`Classifier`.

    Attributes:
        in_channels: image channels.
        image_size: height = width (any size >= 4 works; kept for the record).
        num_classes: number of classes K.
        width: channels of the first stage; features have 4 * width channels.
    """

    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    width: int = 32


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
        nn.GroupNorm(num_groups(c_out), c_out),
        nn.SiLU(),
    )


class Classifier(nn.Module):
    """CNN ``x -> logits``; :meth:`features` gives the penultimate features."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = cfg = config
        w = cfg.width
        self.body = nn.Sequential(
            _conv(cfg.in_channels, w),  # (B, w, H, W)
            _conv(w, w),
            _conv(w, 2 * w, stride=2),  # (B, 2w, H/2, W/2)
            _conv(2 * w, 2 * w),
            _conv(2 * w, 4 * w, stride=2),  # (B, 4w, H/4, W/4)
            _conv(4 * w, 4 * w),
        )
        self.head = nn.Linear(4 * w, cfg.num_classes)

    @property
    def feature_dim(self) -> int:
        """F, the width of :meth:`features`."""
        return self.head.in_features

    def features(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) in [-1, 1] -> (B, F) globally average-pooled features."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> logits (B, num_classes)."""
        return self.head(self.features(x))
