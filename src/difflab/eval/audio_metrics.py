"""A spoken-digit classifier on log-mel features, and what it measures of generated clips.

The classifier is a small CNN on the log-mel spectrogram (32 mel bands, the STFT
of the models' clips) trained on FSDD's train split (recordings 5-49 of each
speaker and digit) and tested on its test split (recordings 0-4), the dataset's
own convention; with the synthetic tones it is the same split of takes. Its
penultimate layer (32 numbers) is the feature space of a Frechet distance
(Heusel et al. 2017, Eq. 6) between generated and real clips, read beside the
*real-data floor*: the distance of real test clips, as many as the generated
ones, to the same reference, over several random subsets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.core.optim import adam
from difflab.data.signal import log_mel
from difflab.eval.metrics import frechet_distance, gaussian_stats
from difflab.pipelines.audio import clips
from difflab.runtime.cache import cached


@dataclass(frozen=True)
class AudioClassifierConfig:
    dataset: str = "auto"
    rate: int = 4000
    length: int = 2048
    n_fft: int = 128
    hop: int = 64
    n_mels: int = 32
    feature_dim: int = 32
    epochs: int = 12
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0


class AudioClassifier(nn.Module):
    """Log-mel (standardised) -> two conv-pool stages -> 32 features -> 10 logits."""

    def __init__(self, cfg: AudioClassifierConfig, frames: int):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.zeros(cfg.n_mels, 1))
        self.register_buffer("std", torch.ones(cfg.n_mels, 1))
        self.convs = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        flat = 32 * (cfg.n_mels // 4) * (frames // 4)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(flat, cfg.feature_dim))
        self.head = nn.Linear(cfg.feature_dim, 10)

    def mel(self, x: Tensor) -> Tensor:
        c = self.cfg
        return log_mel(x, c.rate, c.n_fft, c.hop, c.n_mels)

    def embed(self, x: Tensor) -> Tensor:
        """Clips (N, L) -> features (N, feature_dim)."""
        m = (self.mel(x) - self.mean) / self.std
        return self.features(self.convs(m[:, None]))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.relu(self.embed(x)))


def train_audio_classifier(
    cfg: AudioClassifierConfig | None = None,
) -> tuple[AudioClassifier, bool]:
    """The classifier of ``cfg`` (from the cache, or trained now); and the hit flag."""
    cfg = cfg or AudioClassifierConfig()
    x, data = clips(cfg.dataset, "train", cfg.rate, cfg.length)
    cfg = AudioClassifierConfig(**{**cfg.__dict__, "dataset": data.name})
    frames = log_mel(x[:1], cfg.rate, cfg.n_fft, cfg.hop, cfg.n_mels).shape[-1]

    def make() -> AudioClassifier:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            return AudioClassifier(cfg, frames)

    def build(path):
        net = make()
        m = net.mel(x)
        net.mean.copy_(m.mean((0, 2))[:, None])
        net.std.copy_(m.std((0, 2))[:, None] + 1e-3)
        opt = adam(net.parameters(), lr=cfg.lr)
        g = torch.Generator().manual_seed(cfg.seed)
        for _ in range(cfg.epochs):
            order = torch.randperm(len(x), generator=g)
            for i in range(0, len(x), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                loss = F.cross_entropy(net(x[idx]), data.labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return {"state": net.state_dict()}

    def load(state):
        net = make()
        net.load_state_dict(state["state"])
        return net.eval()

    return cached(
        "audio-classifier", cfg, deps=("difflab.eval.audio_metrics",),
        build=build, load=load,
    )  # fmt: skip


@torch.no_grad()
def predict(clf: AudioClassifier, x: Tensor) -> tuple[Tensor, Tensor]:
    """(predicted digits (N,), features (N, D)) of clips x (N, L)."""
    feats = torch.cat([clf.embed(x[i : i + 500]) for i in range(0, len(x), 500)])
    return clf.head(F.relu(feats)).argmax(1), feats


def proportion(hits: Tensor) -> tuple[float, float]:
    """A fraction and its binomial standard error sqrt(p (1 - p) / n)."""
    p = hits.double().mean().item()
    return p, math.sqrt(max(p * (1 - p), 1e-12) / len(hits))


def frechet(feats: Tensor, ref: tuple[Tensor, Tensor]) -> float:
    """Frechet distance of a feature set's Gaussian to the reference (mu, cov)."""
    mu, cov = gaussian_stats(feats.double())
    return frechet_distance(mu, cov, *ref)


def frechet_spread(
    feats: Tensor, ref: tuple[Tensor, Tensor], n_boot: int = 100, seed: int = 0
) -> tuple[float, float]:
    """The distance and the standard deviation of its bootstrap over the rows."""
    g = torch.Generator().manual_seed(seed)
    boot = [
        frechet(feats[torch.randint(len(feats), (len(feats),), generator=g)], ref)
        for _ in range(n_boot)
    ]
    return frechet(feats, ref), float(torch.tensor(boot).std())


def real_floor(
    feats: Tensor, ref: tuple[Tensor, Tensor], n: int, repeats: int = 20, seed: int = 0
) -> tuple[float, float]:
    """Mean and s.d. of the distance of ``n`` random real clips to the reference."""
    g = torch.Generator().manual_seed(seed)
    d = [frechet(feats[torch.randperm(len(feats), generator=g)[:n]], ref)
         for _ in range(repeats)]  # fmt: skip
    d = torch.tensor(d)
    return float(d.mean()), float(d.std())
