"""Atomic checkpoint files that load with ``weights_only=True`` and fail clearly.

Whatever is wrong with a checkpoint (cut short by a crash, empty, a folder where
the file should be, another program's file, or a state of another network), the
error is one :class:`CheckpointError` line that names the file and says that
deleting it makes the next run train again.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import torch

FORMAT = "difflab-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: truncated, foreign or of another run."""


class DiskFullError(OSError):
    """A checkpoint could not be written because its disk is full (ENOSPC).

    The message names the folder and the fix; the previous checkpoint is intact.
    The command line exits with status 74 (``EX_IOERR``) on it.
    """


def _disk_full(err: BaseException) -> bool:
    """ENOSPC or EDQUOT, as an OSError or as PyTorch's zip writer reports it."""
    import errno

    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "file write failed" in text or "No space left" in text
    )


class _Loadable(Protocol):
    def load_state_dict(self, state_dict: Any, /) -> Any: ...


def _fix(path: Path) -> str:
    return f"delete {path} and run again to retrain it"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    if text and text[0].startswith("Weights only load failed"):
        # torch's long advice on unpickling untrusted code does not apply here:
        # a difflab checkpoint holds tensors, numbers and strings only.
        return "it holds Python objects besides tensors, so it was not loaded"
    return f"{type(err).__name__}: {text[0][:120]}" if text else type(err).__name__


def unreadable(path: str | Path, why: str | BaseException) -> CheckpointError:
    """The one-line error for the checkpoint ``path`` that cannot be used, and why."""
    path = Path(path)
    why = _first_line(why) if isinstance(why, BaseException) else why
    return CheckpointError(
        f"{path} is not a readable checkpoint ({why}); {_fix(path)}."
    )


_UMASK_LOCK = threading.Lock()


def file_mode() -> int:
    """The mode ``open()`` gives a new file here: 0o666 less the process's umask.

    A temporary file (``tempfile.mkstemp``) is created 0o600; the files a user keeps
    (checkpoints, PNG, NPZ, JSON) get this mode before they are renamed into place,
    so they are shared as the user's umask says (0o644 under the usual 022).
    """
    with _UMASK_LOCK:  # reading the umask means setting it: one thread at a time
        mask = os.umask(0o077)
        os.umask(mask)
    return 0o666 & ~mask


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
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _disk_full(err):
            kept = (
                f"the last checkpoint, {path.name}, is kept"
                if path.exists()
                else "no checkpoint was kept"
            )
            raise DiskFullError(
                28,  # ENOSPC
                f"No space left on the disk of {path.parent} to write {path.name} "
                f"({kept}); free some space, or point DIFFLAB_CACHE at another "
                f"disk, and run the same command again",
            ) from None
        raise


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    keys: Iterable[str] = (),
) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Args:
        keys: entries the caller needs; a checkpoint without one of them is refused.

    Raises:
        CheckpointError: with one message naming the file and what to do, if it is
            missing, a folder, empty, truncated, not a difflab checkpoint, lacks
            one of ``keys``, or holds pickled code.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No checkpoint at {path}.")
    if path.is_dir():
        raise unreadable(path, "it is a folder")
    if path.stat().st_size == 0:
        raise unreadable(path, "the file is empty")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, unreadable file, ...
        raise unreadable(path, err) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a difflab checkpoint ({FORMAT}); {_fix(path)}."
        )
    missing = [k for k in keys if k not in state]
    if missing:
        raise unreadable(path, f"it has no {', '.join(map(repr, missing))}")
    return state


def restore(obj: _Loadable, state_dict: Any, path: str | Path) -> None:
    """``obj.load_state_dict(state_dict)``, a mismatch being the checkpoint's fault.

    Raises:
        CheckpointError: naming ``path`` if the keys, shapes or types do not fit.
    """
    try:
        obj.load_state_dict(state_dict)
    except (KeyError, RuntimeError, TypeError, ValueError, IndexError) as err:
        raise unreadable(path, f"it does not fit: {_first_line(err)}") from err
