"""What the image and audio loaders share: the data folder, the split check, and
the errors whose message names the fix."""

from __future__ import annotations

import os
import shlex
from pathlib import Path


class DatasetMissingError(RuntimeError):
    """A named dataset is not in the data folder; the message names the fix."""


class DatasetCorruptError(DatasetMissingError):
    """A dataset file is there but unreadable (truncated, wrong size, bad image).

    A subclass of :class:`DatasetMissingError`: either way there is no usable copy,
    and the message names the file and the fix (re-run the download script).
    """


def project_folder() -> Path | None:
    """The checkout holding ``download-datasets.sh`` (an editable install), if any."""
    project = Path(__file__).resolve().parents[3]
    return project if (project / "download-datasets.sh").is_file() else None


def fix_hint(key: str, root: Path | None = None) -> str:
    """The download command that repairs dataset ``key`` in the data folder ``root``.

    The command is exact: ``DIFFLAB_DATA=<root>`` is prefixed when ``root`` is not
    the folder the script fills by default (``data/`` beside it). It repairs a
    corrupt file too, since the script checks every unpacked file against the
    checksums recorded when it unpacked them and fetches again on a mismatch.
    """
    project = project_folder()
    env = ""
    if root is not None and (
        project is None or Path(root).resolve() != (project / "data").resolve()
    ):
        env = f"DIFFLAB_DATA={shlex.quote(str(Path(root).resolve()))} "
    where = f"the project folder ({project})" if project else "the project folder"
    return f"run `{env}bash download-datasets.sh {key}` in {where}"


def describe_error(e: Exception) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def data_root() -> Path:
    """The data folder, searched in the order given in the module docstring."""
    env = os.environ.get("DIFFLAB_DATA")
    if env:
        return Path(env).expanduser().resolve()
    cwd = Path.cwd()
    if (cwd / "data").is_dir():
        return (cwd / "data").resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "pyproject.toml").is_file() or (folder / "mkdocs.yml").is_file():
            if (folder / "data").is_dir():
                return folder / "data"
            break
    project = Path(__file__).resolve().parents[3]
    if (project / "download-datasets.sh").is_file():
        return project / "data"
    return cwd / "data"


#: The folders download-datasets.sh unpacks into the data folder, one per dataset.
DATASET_FOLDERS = (
    "MNIST",
    "cifar-10-batches-py",
    "CIFAR10",
    "free-spoken-digit-dataset",
)


def data_setting_problem() -> str | None:
    """What is wrong with ``DIFFLAB_DATA`` when the data is chosen automatically.

    With ``DIFFLAB_DATASET`` unset, a ``DIFFLAB_DATA`` that does not exist or holds
    none of the datasets would silently give the embedded 8x8 digits: that is
    refused (one line, the caller's exit status 2). With ``DIFFLAB_DATASET``
    named, its loader says what is missing and the command that fetches it.

    Returns:
        the one-line message, or None when the setting can work.
    """
    raw = os.environ.get("DIFFLAB_DATA", "").strip()
    if not raw or os.environ.get("DIFFLAB_DATASET", "").strip():
        return None
    folder = Path(raw).expanduser()
    if not folder.exists():
        what = "does not exist"
    elif not folder.is_dir():
        return None  # "is a file": the caller's own check says so
    elif not any((folder / name).exists() for name in DATASET_FOLDERS):
        what = f"holds none of the datasets ({', '.join(DATASET_FOLDERS[:2])}/, ...)"
    else:
        return None
    return (
        f"DIFFLAB_DATA={raw!r} {what}; fetch them with `DIFFLAB_DATA={raw} bash "
        f"download-datasets.sh`, or unset DIFFLAB_DATA to use data/ (the embedded "
        f"8x8 digits when that is empty)."
    )


def check_split(split: str) -> bool:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    return split == "train"
