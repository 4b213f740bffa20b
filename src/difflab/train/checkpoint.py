"""Atomic checkpoint files that load with ``weights_only=True`` and fail clearly."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "difflab-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: truncated, foreign or of another run."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file, fsync, then rename.

    A crash mid-write leaves the previous checkpoint in place, never half a file.
    ``state`` must hold only tensors, numbers, strings, lists, tuples and dicts so
    that it loads with ``weights_only=True``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        CheckpointError: with one message naming the file and what to do, if it is
            missing, truncated, not a difflab checkpoint, or holds pickled code.
    """
    path = Path(path)
    fix = f"delete {path} and run again to retrain it"
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, ...
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:120]}); {fix}."
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a difflab checkpoint ({FORMAT}); {fix}.")
    return state
