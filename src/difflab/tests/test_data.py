"""Fast tests of the dataset loaders: scaling, splits, fallbacks and clear errors."""

from __future__ import annotations

import gzip
import shutil
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from difflab.data import images as data
from difflab.data.audio import load_audio, load_fsdd, load_tones
from difflab.data.images import (
    CIFAR10_CLASSES,
    DatasetCorruptError,
    DatasetMissingError,
    data_root,
    load_images,
)

SHARED_MNIST = Path(__file__).resolve().parents[3].parent / "shared/data/MNIST/raw"


@pytest.fixture
def empty_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("DIFFLAB_DATA", str(root))
    return root


def test_digits_scaling_and_split_partition_the_dataset():
    from sklearn.datasets import load_digits

    train, test = load_images("digits", "train"), load_images("digits", "test")
    assert train.images.shape == (1438, 1, 8, 8) and test.images.shape == (359, 1, 8, 8)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    # Train then test is the whole dataset in order, pixel p mapped to p / 8 - 1:
    # so the split is disjoint, covering and deterministic, and 0 -> -1, 16 -> 1.
    bunch = load_digits()
    expected = torch.from_numpy(bunch.images).float()[:, None] / 8 - 1
    torch.testing.assert_close(torch.cat([train.images, test.images]), expected)
    assert torch.equal(
        torch.cat([train.labels, test.labels]), torch.from_numpy(bunch.target).long()
    )
    assert train.images.min() == -1 and train.images.max() == 1
    assert (train.num_classes, train.channels, train.image_size) == (10, 1, 8)
    assert torch.equal(load_images("digits", "test").images, test.images)


def test_auto_falls_back_to_digits_and_says_how_to_get_mnist(empty_root):
    d = load_images("auto", "train")
    assert d.name == "digits" and len(d) == 1438
    assert "bash download-datasets.sh mnist" in d.note
    assert str(empty_root) in d.note


def test_missing_named_datasets_raise_with_the_fix(empty_root):
    for name, key in [("mnist", "mnist"), ("cifar10", "cifar10")]:
        with pytest.raises(DatasetMissingError, match=f"download-datasets.sh {key}"):
            load_images(name, "test")
    with pytest.raises(DatasetMissingError, match="download-datasets.sh fsdd"):
        load_fsdd("train")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_images("imagenet")
    with pytest.raises(ValueError, match="split"):
        load_images("digits", "val")


def test_data_root_search_order(tmp_path, monkeypatch):
    monkeypatch.delenv("DIFFLAB_DATA", raising=False)
    project = tmp_path / "project"
    (project / "docs" / "deeper").mkdir(parents=True)
    (project / "data").mkdir()
    (project / "mkdocs.yml").write_text("site_name: x\n")
    monkeypatch.chdir(project / "docs" / "deeper")  # where the site runs a note
    assert data_root() == (project / "data").resolve()
    (project / "docs" / "deeper" / "data").mkdir()  # ./data wins over the project
    assert data_root() == (project / "docs" / "deeper" / "data").resolve()
    monkeypatch.setenv("DIFFLAB_DATA", str(tmp_path / "elsewhere"))  # env wins
    assert data_root() == (tmp_path / "elsewhere").resolve()


def write_idx(path: Path, array: np.ndarray, truncate: int = 0) -> None:
    dims = array.shape  # IDX header: two zero bytes, type 0x08 (uint8), ndim, dims
    header = struct.pack(f">HBB{len(dims)}I", 0, 0x08, len(dims), *dims)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(payload[: len(payload) - truncate])


def test_truncated_or_garbled_mnist_gives_a_clear_error(empty_root):
    raw = empty_root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((10000, 28, 28)), truncate=784)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(10000))
    with pytest.raises(DatasetCorruptError) as err:
        load_images("auto", "test")  # present, so no silent fallback to digits
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte" in msg and "truncated" in msg
    assert "download-datasets.sh mnist" in msg

    # Right size, wrong magic number: torchvision's assertion is wrapped, not leaked.
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"\xff" * (16 + 10000 * 784))
    with pytest.raises(DatasetCorruptError, match="download-datasets.sh mnist") as err:
        load_images("mnist", "test")
    assert not isinstance(err.value.__cause__, (DatasetMissingError, type(None)))

    for f in raw.iterdir():
        f.unlink()
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(10000))
    with pytest.raises(DatasetCorruptError, match=r"t10k-images-idx3-ubyte\.gz"):
        load_images("mnist", "test")
    assert not (raw / "t10k-images-idx3-ubyte").exists()  # nothing half-written kept


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"no MNIST at {SHARED_MNIST}")
def test_mnist_test_split_from_gz_files(empty_root):
    raw = empty_root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(SHARED_MNIST / f, raw / f)  # only .gz: the loader unpacks them
    d = load_images("auto", "test")
    assert d.name == "mnist" and "MNIST test split" in d.note
    assert d.images.shape == (10000, 1, 28, 28) and d.images.dtype == torch.float32
    assert d.images.min() == -1 and d.images.max() == 1
    assert d.labels[:3].tolist() == [7, 2, 1]  # the well-known first test digits
    assert d.labels.bincount().tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009,
    ]  # fmt: skip
    # Pixels are k / 127.5 - 1 for bytes k read straight from the IDX file.
    with gzip.open(raw / "t10k-images-idx3-ubyte.gz") as f:
        first = np.frombuffer(f.read()[16 : 16 + 784], dtype=np.uint8)
    torch.testing.assert_close(
        d.images[0, 0].flatten(), torch.from_numpy(first / 127.5 - 1).float()
    )
    assert (raw / "t10k-images-idx3-ubyte").stat().st_size == 16 + 10000 * 784


def write_png(path: Path, rgb: tuple[int, int, int], size: int = 32) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), rgb).save(path)


def test_cifar10_png_tree_keeps_the_official_class_order(empty_root):
    folder = empty_root / "CIFAR10" / "test"
    write_png(folder / "truck" / "a.png", (255, 0, 0))
    write_png(folder / "cat" / "b.png", (0, 255, 0))
    write_png(folder / "cat" / "c.png", (0, 0, 255))
    d = load_images("cifar10", "test")
    assert d.images.shape == (3, 3, 32, 32) and d.classes == CIFAR10_CLASSES
    assert d.labels.tolist() == [3, 3, 9]  # cat, cat, truck in CIFAR-10's order
    # (R, G, B) byte values land in channels 0, 1, 2 scaled to [-1, 1].
    assert d.images[2, :, 0, 0].tolist() == [1.0, -1.0, -1.0]
    assert d.images[0, :, 5, 7].tolist() == [-1.0, 1.0, -1.0]
    assert "CIFAR-10 test split" in d.note and d.num_classes == 10

    write_png(folder / "cat" / "big.png", (0, 0, 0), size=64)
    with pytest.raises(DatasetCorruptError, match=r"big\.png.*32x32"):
        load_images("cifar10", "test")
    (folder / "cat" / "big.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetCorruptError, match="download-datasets.sh cifar10"):
        load_images("cifar10", "test")


def test_broken_official_cifar_folder_names_the_fix(empty_root):
    (empty_root / "cifar-10-batches-py").mkdir()
    with pytest.raises(DatasetCorruptError, match="delete that folder"):
        load_images("cifar10", "train")


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())


def test_fsdd_split_by_index_scaling_and_padding(empty_root):
    rec = empty_root / "free-spoken-digit-dataset" / "recordings"
    ramp = np.arange(-100, 100) * 100
    write_wav(rec / "3_alice_4.wav", ramp)  # index 4: test
    write_wav(rec / "1_bob_5.wav", ramp)  # index 5: train
    write_wav(rec / "7_bob_12.wav", np.full(100, -32768))  # train
    train, test = load_audio("auto", "train", length=150), load_fsdd("test", length=150)
    assert train.name == "fsdd" and train.sample_rate == 8000
    assert train.labels.tolist() == [1, 7] and train.speakers == ["bob", "bob"]
    assert test.labels.tolist() == [3] and test.speakers == ["alice"]
    assert train.waveforms.shape == (2, 1, 150) and train.lengths.tolist() == [150, 100]
    torch.testing.assert_close(  # int16 k -> k / 32768, cropped at the end
        train.waveforms[0, 0], torch.from_numpy(ramp[:150] / 32768).float()
    )
    assert train.waveforms[1, 0, :100].eq(-1).all()  # -32768 is exactly -1
    assert train.waveforms[1, 0, 100:].eq(0).all()  # zero padding

    (rec / "1_bob_5.wav").write_bytes(b"RIFF....junk")
    with pytest.raises(DatasetCorruptError, match=r"1_bob_5\.wav.*download-datasets"):
        load_fsdd("train")


def test_tones_fallback_is_deterministic_and_each_digit_has_its_pitch(empty_root):
    a = load_audio("auto", "test")
    assert a.name == "tones" and "bash download-datasets.sh fsdd" in a.note
    assert a.waveforms.shape == (300, 1, 8192) and a.labels.bincount().eq(30).all()
    assert a.waveforms.abs().max() <= 1
    assert torch.equal(load_tones("test").waveforms, a.waveforms)
    assert len(load_tones("train")) == 2700
    # Fundamental: digit k sweeps between f0 and f0 * (1.6 or 0.6), with
    # f0 = (200 + 60 k) * pitch (pitch in 0.8..1.35) * (0.95..1.05 jitter); the
    # strongest frequency of every clip must fall inside that sweep.
    freqs = np.fft.rfftfreq(a.length, 1 / a.sample_rate)
    peak = freqs[np.abs(np.fft.rfft(a.waveforms[:, 0].numpy(), axis=-1)).argmax(-1)]
    for k in range(10):
        f0 = 200 + 60 * k
        lo = min(f0, f0 * (1.6 if k % 2 == 0 else 0.6)) * 0.8 * 0.95
        hi = max(f0, f0 * (1.6 if k % 2 == 0 else 0.6)) * 1.35 * 1.05
        p = peak[a.labels.numpy() == k]
        assert ((p >= lo - 2) & (p <= hi + 2)).all(), (k, p.min(), p.max(), lo, hi)


def test_audio_names_are_importable_from_data():
    assert data.load_audio is load_audio
    with pytest.raises(AttributeError):
        data.no_such_name  # noqa: B018
