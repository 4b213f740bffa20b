"""Spoken-digit audio: the Free Spoken Digit Dataset, or synthetic tone digits.

Waveforms are float32 in [-1, 1], shaped (N, 1, L) like a one-channel image row,
ready for a 1D UNet. The Free Spoken Digit Dataset (FSDD, Jackson et al.,
https://github.com/Jakobovski/free-spoken-digit-dataset) is fetched by
``bash download-datasets.sh fsdd``; without it :func:`load_audio` ("auto") falls
back to deterministic synthetic chirps with 10 classes, and the note says so.
WAV files are read with the standard library's ``wave`` module.
"""

from __future__ import annotations

import re
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from difflab.data.common import (
    DatasetCorruptError,
    DatasetMissingError,
    check_split,
    data_root,
    describe_error,
    fix_hint,
)

AUDIO_NAMES = ("auto", "fsdd", "tones")
FSDD_TEST_INDICES = range(5)  # upstream's advice: recordings 0-4 are the test set


@dataclass
class AudioData:
    """A spoken-digit style audio dataset held in memory.

    Attributes:
        waveforms: (N, 1, L) float32 in [-1, 1], zero-padded or cropped to L samples.
        labels: (N,) int64 digit spoken.
        speakers: N speaker names.
        sample_rate: samples per second (8000 for FSDD).
        name: "fsdd" or "tones".
        note: one sentence saying which data was used (and how to get the real one).
        lengths: (N,) int64 samples of real signal before padding (at most L).
    """

    waveforms: Tensor
    labels: Tensor
    speakers: list[str]
    sample_rate: int
    name: str
    note: str
    lengths: Tensor

    def __len__(self) -> int:
        return self.waveforms.shape[0]

    @property
    def num_classes(self) -> int:
        return 10

    @property
    def length(self) -> int:
        return self.waveforms.shape[-1]


def _read_wav(path: Path, root: Path) -> tuple[np.ndarray, int]:
    """A 16-bit mono WAV file as float32 k / 32768, and its sample rate.

    A truncated file (fewer frames than its header declares), a file that is not
    RIFF/WAVE, or another sample format is a :class:`DatasetCorruptError` naming
    the file and the command that fetches a fresh copy.
    """
    try:
        with path.open("rb") as f, wave.open(f, "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise ValueError(
                    f"{w.getnchannels()} channel(s) of {8 * w.getsampwidth()} bits, "
                    "expected 16-bit mono"
                )
            rate, n = w.getframerate(), w.getnframes()
            frames = w.readframes(n)
        if len(frames) != 2 * n:
            raise ValueError(f"truncated: {len(frames) // 2} of {n} samples present")
        x = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    except OSError as e:  # unreadable (permissions, I/O): not the file's content
        raise DatasetMissingError(
            f"{path} cannot be read ({describe_error(e)}): check that it is a file "
            "you may read."
        ) from e
    except Exception as e:  # wave.Error, EOFError, struct.error, ValueError, ...
        raise DatasetCorruptError(
            f"{path} is not a valid FSDD recording ({describe_error(e)}): "
            f"{fix_hint('fsdd', root)}."
        ) from e
    return x, rate


def load_fsdd(
    split: str = "train", root: str | Path | None = None, length: int = 8192
) -> AudioData:
    """Free Spoken Digit Dataset: ``{digit}_{speaker}_{index}.wav``, 8 kHz mono.

    Recordings with index 0-4 form the test split (300), the rest train (2,700).
    """
    train = check_split(split)
    root = Path(root) if root is not None else data_root()
    folder = root / "free-spoken-digit-dataset" / "recordings"
    pattern = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
    matches = [pattern.match(p.name) for p in sorted(folder.glob("*.wav"))]
    matches = [m for m in matches if m and (int(m[3]) in FSDD_TEST_INDICES) != train]
    if not matches:
        raise DatasetMissingError(f"FSDD is not in {folder}: {fix_hint('fsdd', root)}.")
    x = np.zeros((len(matches), length), dtype=np.float32)
    labels, speakers, lengths, rates = [], [], [], set()
    for i, m in enumerate(matches):
        wav, rate = _read_wav(folder / m[0], root)
        rates.add(rate)
        lengths.append(min(len(wav), length))
        x[i, : lengths[-1]] = wav[:length]
        labels.append(int(m[1]))
        speakers.append(m[2])
    if len(rates) != 1:
        raise DatasetCorruptError(
            f"mixed sample rates {sorted(rates)} in {folder}: {fix_hint('fsdd', root)}."
        )
    note = f"Free Spoken Digit Dataset {split} split ({len(x):,} recordings)."
    return AudioData(
        torch.from_numpy(x[:, None]), torch.tensor(labels),
        speakers, rates.pop(), "fsdd", note, torch.tensor(lengths),
    )  # fmt: skip


def load_tones(split: str = "train", length: int = 8192) -> AudioData:
    """Synthetic spoken-digit stand-in: 10 classes of harmonic chirps at 8 kHz.

    Digit k glides from f_start = 200 + 60 k Hz to f_start * (1.6 if k is even
    else 0.6), with k % 3 + 1 syllables under a Hann envelope. Six "speakers"
    scale the pitch; each of 50 takes per (digit, speaker) jitters duration
    (0.35-0.75 s), pitch (+-5%) and gain from one fixed seed, so the data are the
    same on every machine. Takes 0-4 are the test split, as in FSDD.
    """
    train = check_split(split)
    rate, pitch = 8000, np.array([0.8, 0.9, 1.0, 1.1, 1.2, 1.35])
    takes = [i for i in range(50) if (i in FSDD_TEST_INDICES) != train]
    # Jitter (duration, pitch, gain) for every (digit, speaker, take), both splits.
    u = np.random.default_rng(0).uniform(size=(10, len(pitch), 50, 3))[:, :, takes]
    t = np.arange(length, dtype=np.float32) / rate  # (L,) seconds; float32 is fast
    waves, lengths = [], []
    for k in range(10):  # one digit at a time: (M, L) with M = speakers * takes
        n = (rate * (0.35 + 0.4 * u[k, :, :, 0])).astype(np.int64).reshape(-1, 1)
        T = ((n - 1) / rate).astype(np.float32)  # (M, 1) last sample time
        f0 = (200 + 60 * k) * pitch[:, None] * (0.95 + 0.1 * u[k, :, :, 1])
        f0 = f0.reshape(-1, 1).astype(np.float32)
        f1 = f0 * (1.6 if k % 2 == 0 else 0.6)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * T))  # linear chirp
        tone = np.sin(phase) + np.sin(2 * phase) / 2 + np.sin(3 * phase) / 3
        syllable = t / T * (k % 3 + 1)  # k % 3 + 1 syllables, each a Hann bump
        env = np.sin(np.pi * (syllable - np.floor(syllable))) ** 2 * (t <= T)
        gain = 0.5 * (0.6 + 0.4 * u[k, :, :, 2]).reshape(-1, 1).astype(np.float32)
        waves.append((gain * env * tone).astype(np.float32))
        lengths.append(np.minimum(n[:, 0], length))
    labels = torch.arange(10).repeat_interleave(len(pitch) * len(takes))
    speakers = [f"synth{s}" for _ in range(10) for s in range(6) for _ in takes]
    note = (
        f"Synthetic tone digits ({len(labels):,} chirps, the embedded default); "
        "for real speech run `bash download-datasets.sh fsdd`."
    )
    x = torch.from_numpy(np.concatenate(waves)[:, None])  # (N, 1, L)
    lengths = torch.from_numpy(np.concatenate(lengths))
    return AudioData(x, labels, speakers, rate, "tones", note, lengths)


def load_audio(
    name: str = "auto",
    split: str = "train",
    root: str | Path | None = None,
    length: int = 8192,
) -> AudioData:
    """Load spoken digits: "fsdd", "tones", or "auto" (FSDD if downloaded).

    Waveforms are (N, 1, length) float32 in [-1, 1]: 8192 samples is 1.02 s at
    8 kHz, longer than all but 17 of FSDD's 3,000 recordings (cropped at the end).
    """
    if name not in AUDIO_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose from {AUDIO_NAMES}")
    root = Path(root) if root is not None else data_root()
    if name == "fsdd":
        return load_fsdd(split, root, length)
    if name == "auto":
        try:
            return load_fsdd(split, root, length)
        except DatasetCorruptError:
            raise
        except DatasetMissingError:
            pass
    return load_tones(split, length)
