"""Image and audio datasets, with embedded defaults so every page runs offline.

Images come as float32 tensors in [-1, 1], the range DDPM's forward process
assumes (Ho et al. 2020, Sec. 3.3: "data consists of integers in {0, ..., 255}
scaled linearly to [-1, 1]"). Real datasets are fetched by
``bash download-datasets.sh`` into ``data/``; without them the loaders fall back
to scikit-learn's bundled 8x8 digits, and the ``note`` field says so and how to
get the real data. Audio (spoken digits) lives in :mod:`difflab.data.audio`;
``load_audio`` and ``AudioData`` are importable from here too.

Where ``data/`` is looked for (:func:`data_root`), first match wins:

1. ``$DIFFLAB_DATA`` if set;
2. ``./data`` in the current directory, if it exists;
3. ``data/`` beside the nearest ``pyproject.toml`` or ``mkdocs.yml`` above the
   current directory (so notes executed from ``docs/<stage>/`` find it);
4. ``data/`` in the project checkout this package lives in (editable install);
5. otherwise ``./data`` (which does not exist: loaders then say how to fill it).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import struct
import zlib
from dataclasses import dataclass, field
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

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
MNIST_SIZES = {  # uncompressed IDX sizes in bytes; 16/8-byte header + payload
    "train-images-idx3-ubyte": 16 + 60000 * 784,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 784,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}
IMAGE_NAMES = ("auto", "digits", "mnist", "cifar10")


@dataclass
class ImageData:
    """An image dataset held in memory.

    Attributes:
        images: (N, C, H, W) float32 in [-1, 1].
        labels: (N,) int64 class indices.
        name: "digits", "mnist" or "cifar10".
        note: one sentence saying which data was used (and how to get the real one).
        classes: class names, index i naming label i.
    """

    images: Tensor
    labels: Tensor
    name: str
    note: str
    classes: tuple[str, ...] = field(default=tuple(str(d) for d in range(10)))

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]


def _uint8_to_unit(x: Tensor) -> Tensor:
    return x.to(torch.float32).div_(127.5).sub_(1.0)  # {0..255} -> [-1, 1]


def load_digits(split: str = "train") -> ImageData:
    """scikit-learn's 8x8 digits (1,797 images, values 0..16) scaled to [-1, 1].

    The split is fixed, not random: the last 20% (359 images) are the test set
    and the first 1,438 the training set, in scikit-learn's order.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    train = check_split(split)
    bunch = sk_load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32)) / 8.0 - 1.0  # (N, 8, 8)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    n_train = len(y) - round(0.2 * len(y))
    sl = slice(0, n_train) if train else slice(n_train, None)
    note = "scikit-learn's 8x8 digits (the embedded default)"
    return ImageData(x[sl, None].contiguous(), y[sl].clone(), "digits", note + ".")


def _mnist_files(train: bool) -> tuple[str, str]:
    prefix = "train" if train else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _mnist_present(root: Path, train: bool) -> bool:
    raw = root / "MNIST" / "raw"
    return all(
        (raw / f).is_file() or (raw / f"{f}.gz").is_file() for f in _mnist_files(train)
    )


def mnist_present(split: str = "train", root: str | Path | None = None) -> bool:
    """Whether MNIST's ``split`` is downloaded (what ``load_images("auto")`` would
    load), from the files' presence alone: nothing is read."""
    root = Path(root) if root is not None else data_root()
    return _mnist_present(root, check_split(split))


def _read(path: Path) -> bytes:
    """The bytes of ``path``; a file-system error is a message, not a traceback."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise DatasetMissingError(
            f"{path} cannot be read ({describe_error(e)}): check that it is a file "
            "you may read."
        ) from e


def _keep_unpacked(dst: Path, payload: bytes) -> bool:
    """Write ``payload`` to ``dst`` if its folder is writable; report success.

    Written to a per-process ``.part`` name and renamed, so a half-written file
    is never taken as done; on any write error (read-only mount, EROFS, EACCES,
    a full disk) the part is removed and the caller keeps the bytes in memory.
    """
    part = dst.with_name(f"{dst.name}.{os.getpid()}.part")
    try:
        with open(part, "wb") as fout:
            fout.write(payload)
        os.replace(part, dst)
        return True
    except OSError:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        return False


def _mnist_payload(root: Path, name: str) -> tuple[bytes, Path]:
    """The uncompressed IDX bytes of MNIST file ``name`` and the file read.

    Where only ``<name>.gz`` is present it is decompressed in memory and the
    result written beside it when ``raw/`` is writable (so the next load skips
    the decompression); a read-only folder is read as it is, with no temporary
    copy anywhere.
    """
    raw = root / "MNIST" / "raw"
    if (raw / name).is_file():
        return _read(raw / name), raw / name
    gz = raw / f"{name}.gz"
    packed = _read(gz)
    try:
        payload = gzip.decompress(packed)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DatasetCorruptError(
            f"{gz} is not a valid gzip file ({describe_error(e)}): delete it and "
            f"{fix_hint('mnist', root)}."
        ) from e
    _keep_unpacked(raw / name, payload)
    return payload, gz


def _parse_idx(payload: bytes, ndim: int) -> np.ndarray:
    """An IDX array of unsigned bytes (LeCun et al.'s MNIST file format).

    Header: two zero bytes, the type code 0x08 (uint8), the number of dimensions,
    then each dimension as a big-endian uint32; the values follow in C order.
    """
    zero, code, nd = struct.unpack_from(">HBB", payload)
    if (zero, code, nd) != (0, 0x08, ndim):
        raise ValueError(f"not a {ndim}-d uint8 IDX file (header {payload[:4].hex()})")
    dims = struct.unpack_from(f">{nd}I", payload, 4)
    values = np.frombuffer(payload, dtype=np.uint8, offset=4 + 4 * nd)
    if values.size != int(np.prod(dims)):
        raise ValueError(f"{values.size} values for dimensions {dims}")
    return values.reshape(dims).copy()  # a writable copy, owned by the tensor


def load_mnist(split: str = "train", root: str | Path | None = None) -> ImageData:
    """MNIST from the IDX files in ``<root>/MNIST/raw`` (torchvision's layout).

    Only the split asked for is needed. Where only ``.gz`` files are present they
    are decompressed in memory, and kept beside themselves when ``raw/`` is
    writable; a read-only folder is read in place and nothing is written
    anywhere. Returns (N, 1, 28, 28) in [-1, 1] with pixel k mapped to k/127.5-1.
    """
    train = check_split(split)
    root = Path(root) if root is not None else data_root()
    raw = root / "MNIST" / "raw"
    if not _mnist_present(root, train):
        raise DatasetMissingError(f"MNIST is not in {raw}: {fix_hint('mnist', root)}.")
    arrays, read = [], []
    for f, ndim in zip(_mnist_files(train), (3, 1), strict=True):
        payload, path = _mnist_payload(root, f)
        read.append(path)
        if len(payload) != MNIST_SIZES[f]:
            size = "uncompressed size" if path.suffix == ".gz" else "size"
            raise DatasetCorruptError(
                f"{path} has {size} {len(payload):,} bytes, expected "
                f"{MNIST_SIZES[f]:,} (truncated or wrong file): delete it and "
                f"{fix_hint('mnist', root)}."
            )
        try:
            arrays.append(_parse_idx(payload, ndim))
        except (ValueError, struct.error) as e:
            raise DatasetCorruptError(
                f"{path} is not an MNIST IDX file ({describe_error(e)}): delete it "
                f"and {fix_hint('mnist', root)}."
            ) from e
    x, y = (torch.from_numpy(a) for a in arrays)  # (N, 28, 28), (N,) uint8
    if x.shape[1:] != (28, 28) or len(x) != len(y):
        raise DatasetCorruptError(
            f"MNIST in {raw} has unexpected shapes {tuple(x.shape)}, {tuple(y.shape)}"
            f": delete it and {fix_hint('mnist', root)}."
        )
    if int(y.max()) > 9:  # the shapes are right, the labels are not digits
        labels, also = read[1], ""
        if labels.suffix == ".gz" and labels.with_suffix("").is_file():
            also = f" (and {labels.with_suffix('').name}, unpacked from it)"
        raise DatasetCorruptError(
            f"{labels} is corrupt: {int((y > 9).sum()):,} of its {len(y):,} labels "
            f"are not digits 0-9 (largest {int(y.max())}): delete it{also} and "
            f"{fix_hint('mnist', root)}."
        )
    note = f"MNIST {split} split ({len(y):,} images of 28x28) from {raw}."
    return ImageData(_uint8_to_unit(x[:, None]), y.long(), "mnist", note)


def _cifar_png_dir(root: Path, split: str) -> Path:
    return root / "CIFAR10" / split


def _load_png_tree(folder: Path, root: Path) -> tuple[Tensor, Tensor]:
    from PIL import Image

    paths, labels = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name not in CIFAR10_CLASSES:
            raise DatasetCorruptError(
                f"{sub} is not a CIFAR-10 class folder (expected one of "
                f"{', '.join(CIFAR10_CLASSES)}); remove it or"
                f" {fix_hint('cifar10', root)}."
            )
        for p in sorted(sub.glob("*.png")):
            paths.append(p)
            labels.append(CIFAR10_CLASSES.index(sub.name))
    if not paths:
        raise DatasetMissingError(
            f"no PNG images under {folder}: {fix_hint('cifar10', root)}."
        )
    x = np.empty((len(paths), 32, 32, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        try:
            png = p.read_bytes()
            with Image.open(io.BytesIO(png)) as im:
                im.verify()  # chunk CRCs and the IEND marker: decoding alone
                # accepts a file cut short after its last pixel row.
            with Image.open(io.BytesIO(png)) as im:
                im = im.convert("RGB")
                if im.size != (32, 32):
                    raise ValueError(f"size {im.size[0]}x{im.size[1]}, expected 32x32")
                x[i] = np.asarray(im)
        except Exception as e:
            raise DatasetCorruptError(
                f"{p} is not a valid 32x32 CIFAR-10 PNG ({describe_error(e)}): "
                f"{fix_hint('cifar10', root)}."
            ) from e
    return torch.from_numpy(x).permute(0, 3, 1, 2), torch.tensor(labels)


def load_cifar10(split: str = "train", root: str | Path | None = None) -> ImageData:
    """CIFAR-10 as (N, 3, 32, 32) in [-1, 1], labels in the official class order.

    Reads torchvision's layout ``<root>/cifar-10-batches-py`` (the official
    archive) if present, else the PNG tree ``<root>/CIFAR10/{train,test}/<class>/``.
    """
    from torchvision.datasets import CIFAR10

    train = check_split(split)
    root = Path(root) if root is not None else data_root()
    official = root / "cifar-10-batches-py"
    if official.is_dir():
        try:
            ds = CIFAR10(root, train=train, download=False)
            if tuple(ds.classes) != CIFAR10_CLASSES:
                raise ValueError(f"unexpected classes {ds.classes}")
        except Exception as e:
            raise DatasetCorruptError(
                f"CIFAR-10 in {official} could not be read ({describe_error(e)}): "
                f"{fix_hint('cifar10', root)}, which replaces that folder "
                "(or delete that folder to use the PNG subset, if present)."
            ) from e
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2)  # (N, H, W, C) -> NCHW
        y = torch.tensor(ds.targets)
        src = official
    elif _cifar_png_dir(root, split).is_dir():
        src = _cifar_png_dir(root, split)
        x, y = _load_png_tree(src, root)
    else:
        raise DatasetMissingError(
            f"CIFAR-10 is not in {root} (neither cifar-10-batches-py/ nor "
            f"CIFAR10/{split}/): {fix_hint('cifar10', root)}."
        )
    note = f"CIFAR-10 {split} split ({len(y):,} images of 32x32) from {src}."
    # NCHW in memory too, not the files' HWC seen through a permute: convolutions on
    # those strides (and on every batch indexed from them) run slower, in bf16
    # 1.2x slower than fp32 instead of 1.7x faster (the autoencoder's step)
    x = _uint8_to_unit(x).contiguous()
    return ImageData(x, y.long(), "cifar10", note, CIFAR10_CLASSES)


def load_images(
    name: str = "auto", split: str = "train", root: str | Path | None = None
) -> ImageData:
    """Load an image dataset by name; see the module docstring for ``root``.

    Args:
        name: "auto" (MNIST if downloaded, else the digits), "digits", "mnist"
            or "cifar10".
        split: "train" or "test".
        root: the data folder; default :func:`data_root`.

    Raises:
        DatasetMissingError: a named dataset is not downloaded.
        DatasetCorruptError: a file is there but unreadable.
    """
    if name not in IMAGE_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose from {IMAGE_NAMES}")
    root = Path(root) if root is not None else data_root()
    if name == "auto":
        if _mnist_present(root, check_split(split)):
            return load_mnist(split, root)
        data = load_digits(split)
        data.note = (
            f"scikit-learn's 8x8 digits (the embedded default, since MNIST is not in "
            f"{root}); for MNIST run `bash download-datasets.sh mnist`."
        )
        return data
    if name == "digits":
        return load_digits(split)
    return load_mnist(split, root) if name == "mnist" else load_cifar10(split, root)


def __getattr__(name: str):  # PEP 562: audio names, imported on first use
    if name in ("AudioData", "load_audio", "load_fsdd", "load_tones"):
        from difflab.data import audio as audio_data

        return getattr(audio_data, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
