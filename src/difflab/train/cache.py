"""Where trained things are kept, keyed by their configuration and the package source.

A cached checkpoint's name is a hash of (its kind, the repr of its frozen-dataclass
config, the text of every module of ``difflab``), so an unchanged rebuild of the
site trains nothing, and any change in ``src/`` is never hidden by a stale file.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path | None:
    """The checkout this package lives in (a folder with ``pyproject.toml``), if any."""
    for parent in PACKAGE_DIR.parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return None


def cache_dir() -> Path:
    """``$DIFFLAB_CACHE``, else ``<checkout>/.cache/difflab``, else ``~/.cache/difflab``."""
    if os.environ.get("DIFFLAB_CACHE"):
        return Path(os.environ["DIFFLAB_CACHE"])
    root = project_root()
    return (root / ".cache" if root else Path.home() / ".cache") / "difflab"


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """SHA-256 of every ``.py`` file of the package (tests excluded), in path order."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR)
        if rel.parts[0] == "tests":
            continue
        h.update(str(rel).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def config_key(kind: str, config: object) -> str:
    """A short stable key for ``config`` (a frozen dataclass: its repr is its content)."""
    text = f"{kind}|{config!r}|{source_hash()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_path(kind: str, config: object) -> Path:
    """``<cache_dir>/<kind>/<key>.pt``: where a run of ``config`` keeps its checkpoint."""
    return cache_dir() / kind / f"{config_key(kind, config)}.pt"
