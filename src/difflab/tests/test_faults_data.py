"""Fault injection for the dataset loaders: read-only and full folders, and every
kind of bad file, each giving one clear error that names the file and the exact
command that repairs it (issue 10, points 5, 6 and 10; issue 13's bad WAVs).

Read-only folders are simulated twice over: the fixture folder is chmod'ed to
0o555 (which stops writes for an ordinary user) and ``open`` as the loader module
sees it is patched to fail for writes with the errno under test (EROFS, EACCES or
ENOSPC part-way through), because root, as on CI, writes through a 0o555 folder
and a real read-only mount needs privileges a test does not have.
"""

from __future__ import annotations

import builtins
import errno
import functools
import gzip
import os
import re
import shlex
import struct
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from difflab.data import audio, common, images
from difflab.data.audio import load_audio, load_fsdd
from difflab.data.common import DatasetCorruptError, DatasetMissingError, fix_hint
from difflab.data.images import load_images

N_TEST = 10000  # MNIST's test split: the loader insists on the real sizes


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(f">HBB{array.ndim}I", 0, 0x08, array.ndim, *array.shape)
    return header + array.astype(np.uint8).tobytes()


@functools.cache
def mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """A deterministic stand-in for MNIST's test split (pixel = (i + r + c) % 256)."""
    i, r, c = np.ogrid[:N_TEST, :28, :28]
    x = ((i + r + c) % 256).astype(np.uint8)
    return x, (np.arange(N_TEST) % 10).astype(np.uint8)


@functools.cache
def mnist_gz() -> dict[str, bytes]:
    x, y = mnist_arrays()
    return {
        name: gzip.compress(idx_bytes(a), compresslevel=1)
        for name, a in (("t10k-images-idx3-ubyte", x), ("t10k-labels-idx1-ubyte", y))
    }


def write_mnist_gz(raw: Path) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    for name, packed in mnist_gz().items():
        (raw / f"{name}.gz").write_bytes(packed)


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv("DIFFLAB_DATA", str(folder))
    return folder


def failing_writes(err: int, after: int | None = None):
    """An ``open`` whose writes fail with ``err`` (at once, or after ``after`` bytes)."""

    class Full:
        def __init__(self, f):
            self.f, self.left = f, after

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, b):
            self.f.write(b[: self.left])  # a half-written file, as on a full disk
            raise OSError(err, os.strerror(err))

    def fake_open(file, mode="r", *args, **kwargs):
        if not any(m in mode for m in "wax+"):
            return builtins.open(file, mode, *args, **kwargs)
        if after is None:
            raise OSError(err, os.strerror(err), str(file))
        return Full(builtins.open(file, mode, *args, **kwargs))

    return fake_open


@pytest.mark.parametrize(
    "err, after",
    [(errno.EROFS, None), (errno.EACCES, None), (errno.ENOSPC, 1000)],
    ids=["read-only-mount", "no-permission", "disk-full"],
)
def test_mnist_gz_in_a_read_only_folder_loads_and_writes_nothing(
    root, tmp_path, monkeypatch, err, after
):
    raw = root / "MNIST" / "raw"
    write_mnist_gz(raw)
    before = sorted(p.name for p in raw.iterdir())
    scratch = tmp_path / "tmp"  # the temporary folder: must stay empty
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(images, "open", failing_writes(err, after), raising=False)
    raw.chmod(0o555)
    try:
        d = load_images("mnist", "test")
    finally:
        raw.chmod(0o755)
    x, y = mnist_arrays()
    # Every byte k came through as k / 127.5 - 1, so (v + 1) * 127.5 gives k back
    # (float32 keeps 2^-24 relative precision: far inside the 0.5 rounding margin).
    back = ((d.images[:, 0] + 1) * 127.5).round().to(torch.uint8)
    assert torch.equal(back, torch.from_numpy(x))
    assert torch.equal(d.labels, torch.from_numpy(y).long())
    assert sorted(p.name for p in raw.iterdir()) == before  # no unpacked or .part
    assert list(scratch.iterdir()) == []  # and no copy in the temporary folder


def test_mnist_gz_in_a_writable_folder_is_unpacked_beside_itself_once(root):
    raw = root / "MNIST" / "raw"
    write_mnist_gz(raw)
    first = load_images("mnist", "test")
    assert sorted(p.name for p in raw.iterdir()) == [
        "t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz",
    ]  # fmt: skip
    (raw / "t10k-images-idx3-ubyte.gz").unlink()  # now read from the unpacked copy
    assert torch.equal(load_images("mnist", "test").images, first.images)


def test_fix_hint_is_a_command_that_runs_as_written(tmp_path):
    project = common.project_folder()
    if project is not None:  # the default folder needs no DIFFLAB_DATA
        hint = fix_hint("fsdd", project / "data")
        assert (
            hint
            == f"run `bash download-datasets.sh fsdd` in the project folder ({project})"
        )
    odd = tmp_path / "my data's folder"
    command = re.search(r"`([^`]+)`", fix_hint("cifar10", odd))[1]
    assert shlex.split(command) == [
        f"DIFFLAB_DATA={odd.resolve()}",
        "bash",
        "download-datasets.sh",
        "cifar10",
    ]


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def mnist_case(root: Path, fault: str) -> tuple[Path, type[Exception]]:
    raw = root / "MNIST" / "raw"
    write_mnist_gz(raw)
    gz = raw / "t10k-images-idx3-ubyte.gz"
    x, _ = mnist_arrays()
    if fault == "gz-not-gzip":
        gz.write_bytes(b"<html>404 Not Found</html>")
    elif fault == "gz-truncated":
        truncate(gz, gz.stat().st_size // 2)
    elif fault == "idx-short":
        gz.write_bytes(gzip.compress(idx_bytes(x[:-1]), compresslevel=1))
    elif fault == "idx-header":  # right size, a float (0x0D) type code
        gz.write_bytes(gzip.compress(b"\0\0\x0d\3" + idx_bytes(x)[4:], compresslevel=1))
    elif fault == "unreadable":
        return gz, DatasetMissingError
    elif fault == "labels-not-digits":  # right size and shapes, labels out of 0-9
        _, y = mnist_arrays()
        bad = y.copy()
        bad[::7] = 200
        labels = raw / "t10k-labels-idx1-ubyte.gz"
        labels.write_bytes(gzip.compress(idx_bytes(bad), compresslevel=1))
        return labels, DatasetCorruptError
    return gz, DatasetCorruptError


MNIST_FAULTS = [
    "gz-not-gzip",
    "gz-truncated",
    "idx-short",
    "idx-header",
    "unreadable",
    "labels-not-digits",
]


@pytest.mark.parametrize("fault", MNIST_FAULTS)
def test_bad_mnist_file_is_named_with_its_fix(root, monkeypatch, fault):
    path, kind = mnist_case(root, fault)
    if fault == "unreadable":  # as root, chmod 000 does not stop reads: patch them
        real = Path.read_bytes

        def read_bytes(self):
            if self == path:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(kind) as err:
        load_images("auto", "test")  # present, so no silent fallback to digits
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    if kind is DatasetCorruptError:
        assert f"`DIFFLAB_DATA={root} bash download-datasets.sh mnist`" in msg
    if fault == "labels-not-digits":  # named as what it is, not as a shape fault
        assert "labels are not digits" in msg and "shapes" not in msg
    assert [p for p in path.parent.iterdir() if p.name.endswith(".part")] == []


def write_png(path: Path, size: int = 32) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (10, 20, 30)).save(path)


@pytest.mark.parametrize("fault", ["truncated", "not-png", "empty", "64x64"])
def test_bad_cifar_png_is_named_with_its_fix(root, fault):
    good, bad = (root / "CIFAR10" / "test" / "cat" / f"{n}.png" for n in "ab")
    write_png(good)
    write_png(bad, 64 if fault == "64x64" else 32)
    if fault == "truncated":
        truncate(bad, bad.stat().st_size - 20)
    elif fault == "not-png":
        bad.write_text("GIF89a, not a PNG")
    elif fault == "empty":
        bad.write_bytes(b"")
    with pytest.raises(DatasetCorruptError) as err:
        load_images("cifar10", "test")
    msg = str(err.value)
    assert str(bad) in msg and "\n" not in msg
    assert f"`DIFFLAB_DATA={root} bash download-datasets.sh cifar10`" in msg


def write_wav(path: Path, n: int = 400, channels: int = 1, width: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(8000)
        w.writeframes(bytes(n * channels * width))


WAV_FAULTS = ["truncated-data", "truncated-header", "empty", "not-wav", "stereo"]
WAV_FAULTS += ["8bit"]


@pytest.mark.parametrize("fault", WAV_FAULTS)
def test_bad_fsdd_wav_is_named_with_its_fix(root, fault):
    rec = root / "free-spoken-digit-dataset" / "recordings"
    write_wav(rec / "1_bob_5.wav")
    bad = rec / "2_bob_6.wav"
    write_wav(
        bad,
        channels=2 if fault == "stereo" else 1,
        width=1 if fault == "8bit" else 2,
    )
    if fault == "truncated-data":  # the header still declares 400 frames
        truncate(bad, bad.stat().st_size - 100)
    elif fault == "truncated-header":
        truncate(bad, 30)
    elif fault == "empty":
        bad.write_bytes(b"")
    elif fault == "not-wav":
        bad.write_text("<html>rate limited</html>")
    for load in (lambda: load_fsdd("train"), lambda: load_audio("auto", "train")):
        with pytest.raises(DatasetCorruptError) as err:
            load()  # "auto" must not fall back to tones over a broken FSDD
        msg = str(err.value)
        assert str(bad) in msg and "\n" not in msg
        assert f"`DIFFLAB_DATA={root} bash download-datasets.sh fsdd`" in msg


def test_truncated_wav_is_caught_even_at_an_even_byte_count(root):
    """``wave`` returns what is there without complaint; the loader counts frames."""
    rec = root / "free-spoken-digit-dataset" / "recordings"
    bad = rec / "3_bob_9.wav"
    write_wav(bad, n=400)
    truncate(bad, bad.stat().st_size - 200)  # 100 whole frames missing
    with pytest.raises(DatasetCorruptError, match=r"truncated: 300 of 400 samples"):
        load_fsdd("train")
    assert audio.FSDD_TEST_INDICES == range(5)  # index 9 is in the train split
