"""Signal processing for the audio chapter: STFT, its inverse, Griffin-Lim, WAV files.

**STFT** (as used here). A signal x (..., L) is zero-padded by n_fft / 2 on each
side, cut into frames x_m[n] = x[mH + n], n = 0..N-1 (N = ``n_fft``, H = ``hop``),
each multiplied by the periodic Hann window w and Fourier transformed:

    X[k, m] = sum_n w[n] x[mH + n] exp(-2 pi i k n / N),   k = 0..N/2.

**Inverse** (Griffin & Lim 1984, Eq. 6): the least-squares signal whose STFT is
closest to a given (possibly inconsistent) array Y is the windowed overlap-add

    x[n] = sum_m w[n - mH] y_m[n - mH] / sum_m w[n - mH]^2,

with y_m the inverse DFT of column m. It reconstructs x exactly from its own STFT
whenever the denominator is positive at every sample of the signal (the
"nonzero overlap-add" condition). For the Hann window, w^2 = (3 - 4 cos(2 pi n / N)
+ cos(4 pi n / N)) / 8, so away from the ends the sum is the constant 3N / (8H)
when N / H is a whole number >= 3 (the cosines cancel over the shifts); at 50%
overlap it is sin^4 + cos^4, between 1/2 and 1. Near the ends fewer frames
overlap, but the frame centred there has weight 1, so the sum stays positive.

**Griffin-Lim** (Griffin & Lim 1984, Sec. 3) recovers a signal from a magnitude M
alone: alternate x_i = ISTFT(M exp(i angle(X_{i-1}))) and X_i = STFT(x_i). They
prove that no step increases the squared distance sum (|X_i| - M)^2 over every
frame and the full spectrum of N frequencies (the distance from X_i to the set
of arrays with magnitude M). We report the spectral convergence
||  |X_i| - M ||_F / ||M||_F over the N / 2 + 1 one-sided bins, equally weighted;
the full spectrum counts the bins strictly between 0 and N / 2 twice, so the
theorem does not cover this norm.

**WAV**: 16-bit PCM mono written and read with the standard library's ``wave``;
a sample k in -32768..32767 is the float k / 32768, so a write-read round trip of
such floats is exact to the bit.
"""

from __future__ import annotations

import io
import math
import wave
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor


def hann(n_fft: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The periodic Hann window w[n] = sin^2(pi n / N), n = 0..N-1."""
    n = torch.arange(n_fft, dtype=torch.float64)
    return (torch.sin(math.pi * n / n_fft) ** 2).to(dtype)


def _check(n_fft: int, hop: int) -> None:
    if n_fft < 2 or n_fft % 2 or not 1 <= hop <= n_fft:
        raise ValueError(
            f"need an even n_fft >= 2 and 1 <= hop <= n_fft, got {n_fft=} {hop=}"
        )


def n_frames(length: int, n_fft: int, hop: int) -> int:
    """Frames of a signal of ``length`` samples padded by n_fft / 2 on each side."""
    return 1 + (length + 2 * (n_fft // 2) - n_fft) // hop


def stft(x: Tensor, n_fft: int, hop: int) -> Tensor:
    """X[..., k, m] = sum_n w[n] x[mH + n - N/2] exp(-2 pi i k n / N) (module docstring).

    Args:
        x: (..., L) real signals.

    Returns:
        (..., n_fft // 2 + 1, frames) complex.
    """
    _check(n_fft, hop)
    shape = x.shape[:-1]
    x = F.pad(x.reshape(-1, 1, x.shape[-1]), (n_fft // 2, n_fft // 2))[:, 0]
    frames = x.unfold(-1, n_fft, hop)  # (B, M, N)
    X = torch.fft.rfft(frames * hann(n_fft, x.dtype).to(x.device), dim=-1)
    return X.transpose(-1, -2).reshape(*shape, n_fft // 2 + 1, -1)


def overlap_add_norm(length: int, n_fft: int, hop: int) -> Tensor:
    """sum_m w[n - mH]^2 at each sample n of the signal: the ISTFT's denominator."""
    w2 = hann(n_fft, torch.float64) ** 2
    m = n_frames(length, n_fft, hop)
    total = (m - 1) * hop + n_fft
    out = F.fold(
        w2[None, :, None].expand(1, n_fft, m),
        output_size=(1, total),
        kernel_size=(1, n_fft),
        stride=(1, hop),
    ).reshape(total)
    return out[n_fft // 2 : n_fft // 2 + length]


def istft(X: Tensor, n_fft: int, hop: int, length: int) -> Tensor:
    """The least-squares inverse (Griffin & Lim 1984, Eq. 6) cropped to ``length``.

    Raises:
        ValueError: if the window overlap-add vanishes somewhere (no inverse).
    """
    _check(n_fft, hop)
    norm = overlap_add_norm(length, n_fft, hop)
    if norm.min() < 1e-10:
        raise ValueError(f"hop {hop} leaves gaps between Hann windows of {n_fft}")
    shape, m = X.shape[:-2], X.shape[-1]
    frames = torch.fft.irfft(X.reshape(-1, *X.shape[-2:]).transpose(-1, -2), n=n_fft)
    frames = frames * hann(n_fft, frames.dtype).to(frames.device)  # (B, M, N)
    total = (m - 1) * hop + n_fft
    y = F.fold(
        frames.transpose(1, 2),
        output_size=(1, total),
        kernel_size=(1, n_fft),
        stride=(1, hop),
    ).reshape(-1, total)
    y = y[:, n_fft // 2 : n_fft // 2 + length]
    return (y / norm.to(y)).reshape(*shape, length)


def spectral_convergence(X: Tensor, magnitude: Tensor) -> Tensor:
    """|| |X| - M ||_F / ||M||_F over the last two axes (one value per signal)."""
    diff = (X.abs() - magnitude).flatten(-2).norm(dim=-1)
    return diff / magnitude.flatten(-2).norm(dim=-1)


def griffin_lim(
    magnitude: Tensor,
    n_fft: int,
    hop: int,
    length: int,
    iters: int = 100,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """A signal whose STFT magnitude approaches ``magnitude`` (Griffin & Lim 1984).

    Starts from uniformly random phases (drawn with ``generator``), then
    ``iters`` rounds of x = ISTFT(M e^{i phase}), phase = angle(STFT(x)).

    Args:
        magnitude: (..., n_fft // 2 + 1, frames) non-negative.

    Returns:
        (signals (..., length), spectral convergence (iters + 1, ...)): entry 0 is
        that of the random-phase start, entry i that after i rounds.
    """
    dev = generator.device if generator is not None else "cpu"
    phase = torch.rand(magnitude.shape, generator=generator, device=dev)
    Y = magnitude * torch.exp(2j * math.pi * phase.to(magnitude))
    x = istft(Y, n_fft, hop, length)
    conv = []
    for _ in range(iters):
        X = stft(x, n_fft, hop)
        conv.append(spectral_convergence(X, magnitude))
        x = istft(magnitude * torch.exp(1j * X.angle()), n_fft, hop, length)
    conv.append(spectral_convergence(stft(x, n_fft, hop), magnitude))
    return x, torch.stack(conv)


def mel_filterbank(n_mels: int, n_fft: int, rate: int) -> Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters equally spaced on the mel scale.

    mel(f) = 2595 log10(1 + f / 700) (the HTK formula); filter j rises from mel
    point j to j + 1 and falls to j + 2, over 0 Hz to rate / 2.
    """

    def mel(f):
        return 2595 * torch.log10(1 + f / 700)

    def hz(m):
        return 700 * (10 ** (m / 2595) - 1)

    freqs = torch.linspace(0, rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    top = mel(torch.tensor(rate / 2, dtype=torch.float64))
    edges = hz(torch.linspace(0, float(top), n_mels + 2, dtype=torch.float64))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs - lo) / (mid - lo)
    down = (hi - freqs) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0).float()


def log_mel(
    x: Tensor, rate: int, n_fft: int, hop: int, n_mels: int, floor: float = 1e-3
) -> Tensor:
    """log(mel filterbank @ |STFT(x)| + floor): (..., n_mels, frames)."""
    mag = stft(x, n_fft, hop).abs()
    fb = mel_filterbank(n_mels, n_fft, rate).to(mag)
    return torch.log(torch.einsum("jk,...km->...jm", fb, mag) + floor)


def resample_half(x: Tensor) -> Tensor:
    """Halve the sample rate: keep the DFT bins below the new Nyquist (ideal low-pass).

    x (..., L) with L even -> (..., L / 2); the kept bins are scaled by 1/2 so
    that a sinusoid below the new Nyquist keeps its amplitude (irfft reads only
    the real part of the new Nyquist bin).
    """
    L = x.shape[-1]
    if L % 2:
        raise ValueError(f"resample_half needs an even length, got {L}")
    X = torch.fft.rfft(x.double(), dim=-1)[..., : L // 4 + 1] / 2
    return torch.fft.irfft(X, n=L // 2, dim=-1).to(x.dtype)


# --- WAV files -----------------------------------------------------------------------


def to_pcm16(x: Tensor) -> bytes:
    """Floats in [-1, 1) as little-endian 16-bit samples round(32768 x), clipped."""
    k = torch.round(x.detach().double().cpu().flatten() * 32768).clamp(-32768, 32767)
    return k.to(torch.int16).numpy().astype("<i2").tobytes()


def wav_bytes(x: Tensor, rate: int) -> bytes:
    """A mono 16-bit PCM WAV file of the signal x (L,) as bytes."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(to_pcm16(x))
    return buf.getvalue()


def write_wav(path: str | Path, x: Tensor, rate: int) -> Path:
    """Write x (L,) as a mono 16-bit PCM WAV file; returns the path."""
    path = Path(path)
    path.write_bytes(wav_bytes(x, rate))
    return path


def read_wav(source: str | Path | bytes) -> tuple[Tensor, int]:
    """A mono 16-bit PCM WAV (path or bytes) as float32 k / 32768 and its rate.

    Raises:
        ValueError: if it is not 16-bit mono PCM WAV, or shorter than its header says.
    """
    f = io.BytesIO(source) if isinstance(source, bytes) else Path(source).open("rb")
    name = "WAV bytes" if isinstance(source, bytes) else str(source)
    try:
        with f, wave.open(f, "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise ValueError(f"{name}: expected 16-bit mono WAV")
            rate, n = w.getframerate(), w.getnframes()
            frames = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise ValueError(f"{name} is not a WAV file ({e})") from e
    if len(frames) != 2 * n:
        raise ValueError(f"{name} is truncated: {len(frames) // 2} of {n} samples")
    k = torch.frombuffer(bytearray(frames), dtype=torch.int16)
    return k.float() / 32768.0, rate
