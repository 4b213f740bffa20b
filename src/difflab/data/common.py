"""What the image and audio loaders share: the data folder, the split check, and
the errors whose message names the fix."""

from __future__ import annotations

import os
from pathlib import Path


class DatasetMissingError(RuntimeError):
    """A named dataset is not in the data folder; the message names the fix."""


class DatasetCorruptError(DatasetMissingError):
    """A dataset file is there but unreadable (truncated, wrong size, bad image).

    A subclass of :class:`DatasetMissingError`: either way there is no usable copy,
    and the message names the file and the fix (re-run the download script).
    """


def fix_hint(key: str) -> str:
    return f"run `bash download-datasets.sh {key}` in the project folder"


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


def check_split(split: str) -> bool:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    return split == "train"
