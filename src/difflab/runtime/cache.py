"""One cache-or-train helper for every trained object of the site.

A trained object (a diffusion recipe, the metric's classifier, the VAE, a GAN, ...)
is kept at ``<cache_dir>/<kind>/<key>.pt`` with

    key = sha256(kind | repr(config) | deps_hash(deps))[:16],

where ``config`` is a frozen dataclass (its repr is its content) and
``deps_hash`` hashes the source of the modules the object depends on: the
modules named in ``deps`` and every ``difflab`` module they import, transitively
(read with :mod:`ast`, without importing anything). So editing a plotting helper
or a page trains nothing again, while editing the network, the loss or the
training loop retrains exactly what uses them, and a stale file is never used.

A ``<key>.json`` sidecar beside each checkpoint records the kind, the config's
repr and the dependencies, so ``python -m difflab cache list`` can tell which
entries the current source still reaches and ``cache prune`` can remove the rest.

The executed notes of the site follow the same rule: :func:`imported_modules`
reads which ``difflab`` modules a note imports and :func:`deps_hash` hashes their
closure, so editing a module re-executes exactly the notes that reach it.

Two processes that need the same untrained object (two notes of one site build,
two ``train`` commands) do not both train it: :func:`cached` holds a lock on the
entry (``<key>.lock``, an advisory ``flock``) while it builds, and the second
process waits for it, then loads the finished entry.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import functools
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from difflab.runtime.checkpoint import (
    CheckpointError,
    file_mode,
    load_checkpoint,
    save_checkpoint,
)
from difflab.runtime.settings import SettingError

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/difflab
PACKAGE = PACKAGE_DIR.name
# Where objects are stored, not how they are made: editing it retrains nothing.
NOT_DEPENDENCIES = frozenset({f"{PACKAGE}.runtime.cache"})
T = TypeVar("T")


def project_root() -> Path | None:
    """The checkout this package lives in (a folder with ``pyproject.toml``), if any."""
    for parent in PACKAGE_DIR.parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return None


def cache_dir() -> Path:
    """``$DIFFLAB_CACHE``, else ``<checkout>/.cache/difflab``, else ``~/.cache/difflab``."""
    if os.environ.get("DIFFLAB_CACHE", "").strip():
        return Path(os.environ["DIFFLAB_CACHE"].strip()).expanduser()
    root = project_root()
    return (root / ".cache" if root else Path.home() / ".cache") / "difflab"


# --- is the cache folder usable? -------------------------------------------------

PROBE_BYTES = 64 * 1024  # enough to need a data block: a full disk refuses it


class CacheNotWritable(SettingError):
    """The cache folder is not a folder, cannot be created, or cannot be written."""


def _which() -> str:
    if os.environ.get("DIFFLAB_CACHE", "").strip():
        return f"DIFFLAB_CACHE={os.environ['DIFFLAB_CACHE'].strip()!r}"
    return "the default; DIFFLAB_CACHE moves it"


def _existing_ancestor(path: Path) -> Path:
    """``path`` or the nearest folder above it that exists (``/`` at worst)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_cache_dir(folder: Path | None = None) -> Path:
    """The cache folder, if it is a folder or could become one; writes nothing.

    What the command line checks before any command, including ``cache list``,
    which needs no write access (a read-only cache of trained models is usable).

    Raises:
        CacheNotWritable: if the folder, or the nearest existing path above it,
            is a file.
    """
    folder = folder or cache_dir()
    found = _existing_ancestor(folder)
    if not found.is_dir():
        what = "is a file"
        if found != Path(os.path.abspath(folder)):
            what = f"lies under the file {found}"
        raise CacheNotWritable(
            f"The cache folder {folder} ({_which()}) {what}; point DIFFLAB_CACHE "
            f"at a folder."
        )
    return folder


def probe_write(folder: Path) -> None:
    """Write, sync and delete a small temporary file in ``folder``.

    Raises:
        OSError: as the file system answers: read-only (EROFS), no permission
            (EACCES), full (ENOSPC, at the write or at the sync).
    """
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".probe-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_atomic(path: str | Path, write: Callable[[Any], None]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it there.

    A failure (a full disk, Ctrl-C) leaves ``path`` as it was, never half a file,
    and removes the temporary file. The folder is created if missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, file_mode())  # as open() would have made it, not mkstemp's 0o600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def ensure_writable(folder: Path | None = None) -> Path:
    """Create the cache folder (or ``folder`` in it) if missing, and probe a write.

    Called by :func:`cached` before anything is built, and by the command line, so
    a read-only, full or misplaced cache is reported before training starts rather
    than at the first checkpoint.

    Returns:
        the folder, which now exists.

    Raises:
        CacheNotWritable: one line naming the folder, ``DIFFLAB_CACHE`` and the
            reason.
    """
    folder = folder or cache_dir()
    check_cache_dir(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe_write(folder)
    except OSError as err:
        reason = err.strerror or errno.errorcode.get(err.errno, str(err))
        fix = "point DIFFLAB_CACHE at a writable folder"
        if err.errno == errno.ENOSPC:
            fix = "free some space, or point DIFFLAB_CACHE at another disk"
        raise CacheNotWritable(
            f"Cannot write to the cache folder {folder} ({_which()}): {reason}; {fix}."
        ) from None
    return folder


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


# --- the modules an object depends on ------------------------------------------


def _module_file(name: str, root: Path) -> Path | None:
    """``difflab.a.b`` -> ``root/a/b.py`` (or ``root/a/b/__init__.py``), if it exists."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(name: str, path: Path) -> set[str]:
    """The ``difflab`` modules that ``path`` (module ``name``) imports, anywhere in it.

    Imports inside functions count too (a lazy import is still a dependency);
    ``from difflab.a import b`` names module ``difflab.a.b`` when that is a module.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    stat = path.stat()
    return set(_parsed_imports(package, str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=1024)
def _parsed_imports(package: str, path: str, mtime_ns: int, size: int) -> frozenset:
    """:func:`_imports_in` of a file, read once per version of it (mtime and size):
    the site build asks for the closure of every note, each a few dozen modules."""
    return frozenset(_imports_in(Path(path).read_text(), package, path))


def _imports_in(text: str, package: str, filename: str) -> set[str]:
    """The ``difflab`` names imported by the source ``text`` (of a module in ``package``)."""
    found = set()
    for node in ast.walk(ast.parse(text, filename=filename)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb level - 1 packages above ``package``
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] == PACKAGE}


def imported_modules(text: str, root: Path = PACKAGE_DIR) -> set[str]:
    """The ``difflab`` modules that a script's source ``text`` imports (a note, say).

    ``from difflab.notes import page`` gives ``difflab.notes.page``; names that are
    not modules (functions, classes) give the module they come from. The set is what
    :func:`deps_hash` takes: its hash changes exactly when the source of one of these
    modules, or of anything they import, changes.

    Raises:
        SyntaxError: if ``text`` is not Python.
    """
    names = _imports_in(text, "", "<text>")
    return {n for n in names if _module_file(n, root) is not None}


def module_closure(deps: Iterable[str], root: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every ``difflab`` module that the modules ``deps`` import, transitively.

    The packages above each module (their ``__init__.py``, which Python runs on
    import) are included; this module (the storage) is not. Read with
    :mod:`ast` from the files under ``root`` (the package folder), so nothing is
    imported.

    Returns:
        module name -> its file, for the modules found under ``root``.

    Raises:
        ValueError: if a module of ``deps`` is not in the package.
    """
    todo, seen = list(deps), {}
    for name in todo:
        if _module_file(name, root) is None:
            raise ValueError(f"{name!r} is not a module of {root}")
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name, root)
        if path is None or name in NOT_DEPENDENCIES:  # not a module, or this one
            continue
        seen[name] = path
        parts = name.split(".")
        todo.extend(".".join(parts[:k]) for k in range(1, len(parts)))
        todo.extend(_imports(name, path))
    return seen


def deps_hash(deps: Iterable[str], root: Path = PACKAGE_DIR) -> str:
    """SHA-256 of the source of :func:`module_closure` of ``deps``, in name order."""
    h = hashlib.sha256()
    for name, path in sorted(module_closure(deps, root).items()):
        h.update(name.encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def cache_key(
    kind: str, config: object, deps: Iterable[str], root: Path = PACKAGE_DIR
) -> str:
    """The 16-hex-digit key of ``config`` of ``kind`` built from the modules ``deps``."""
    text = f"{kind}|{config!r}|{deps_hash(deps, root)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- entries --------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """Where one trained object lives: ``<cache_dir>/<kind>/<key>.pt`` and ``.json``."""

    kind: str
    key: str

    @property
    def path(self) -> Path:
        """The checkpoint (partial while training, ``done`` when finished)."""
        return cache_dir() / self.kind / f"{self.key}.pt"

    @property
    def sidecar(self) -> Path:
        """The JSON record of kind, config and dependencies."""
        return self.path.with_suffix(".json")


def entry(kind: str, config: object, *, deps: Iterable[str]) -> Entry:
    """The cache entry of ``config`` (a frozen dataclass) of ``kind``; writes nothing."""
    return Entry(kind, cache_key(kind, config, tuple(deps)))


def _write_sidecar(e: Entry, config: object, deps: tuple[str, ...]) -> None:
    e.sidecar.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "kind": e.kind,
        "key": e.key,
        "config": repr(config),
        "deps": list(deps),
        "deps_hash": deps_hash(deps),
    }
    text = json.dumps(record, indent=1) + "\n"
    write_atomic(e.sidecar, lambda f: f.write(text.encode()))


def _load(e: Entry, device: torch.device | str) -> dict[str, Any]:
    try:
        return load_checkpoint(e.path, map_location=device)
    except CheckpointError as err:  # its message names the file and the fix once
        raise CheckpointError(
            f"The cached {e.kind} {e.key} cannot be read: {err}"
        ) from err


def cached(
    kind: str,
    config: object,
    *,
    deps: Iterable[str],
    build: Callable[[Path], dict[str, Any]],
    load: Callable[[dict[str, Any]], T],
    device: torch.device | str = "cpu",
) -> tuple[T, bool]:
    """The object of ``config`` from the cache, built (and cached) if not there yet.

    Args:
        kind: a folder name for this sort of object ("ddpm", "vae", ...).
        config: a frozen dataclass (or a tuple of them): its repr is its content.
        deps: the modules (``"difflab.nets.unet"``, ...) whose source, with
            everything they import from ``difflab``, determines the object.
        build: ``build(path) -> state`` trains and returns what to keep (tensors,
            numbers, strings, lists, dicts). It may write partial checkpoints to
            ``path`` and resume from one found there; it is called whenever no
            finished entry exists.
        load: ``load(state) -> object`` rebuilds the object from a state.
        device: where the stored tensors are loaded.

    Returns:
        (the object, whether it came from the cache).

    Raises:
        CheckpointError: if the entry is there but unreadable; the message names
            the file to delete.
        CacheNotWritable: if the entry must be built and the cache folder cannot
            be written (read-only, full, or under a file); ``build`` is not called.
    """
    deps = tuple(deps)
    e = entry(kind, config, deps=deps)
    if (state := _finished(e, device)) is not None:
        return load(state), True
    ensure_writable(e.path.parent)  # before any training, not at its first save
    with entry_lock(e):
        # Another process may have finished it while this one waited for the lock.
        if (state := _finished(e, device)) is not None:
            return load(state), True
        _write_sidecar(e, config, deps)  # before training, so `cache list` sees it
        try:
            state = build(e.path)
            save_checkpoint({**state, "done": True}, e.path)
        except BaseException:
            if not e.path.exists():  # no checkpoint: no record of one either
                e.sidecar.unlink(missing_ok=True)
            raise
        _write_sidecar(e, config, deps)  # again: a prune during training removed it
    return load(state), False


def _finished(e: Entry, device: torch.device | str) -> dict[str, Any] | None:
    """The entry's state if it holds a finished object, else None."""
    if e.path.is_file():
        state = _load(e, device)
        if state.get("done"):
            return state
    return None


@contextlib.contextmanager
def entry_lock(e: Entry, *, announce: Callable[[str], None] | None = None):
    """Hold the advisory lock of entry ``e`` (``<kind>/<key>.lock``) while inside.

    A second process that asks for the same entry waits here until the first one
    leaves (it finished, failed or was interrupted: the operating system releases a
    dead process's lock), and says once, on stderr, that it is waiting. The lock
    file stays (it is empty); ``cache prune`` removes it with its entry. On a
    system without ``fcntl`` (Windows) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on the systems the site supports
        yield
        return
    lock = e.path.with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say = announce or (lambda m: print(m, file=sys.stderr, flush=True))
            say(
                f"waiting for another process that is training {e.kind} {e.key} "
                f"(lock {lock}); its result will be used here"
            )
            with waiting_marker():
                fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


#: A folder where a process that waits for another's entry lock keeps a file named
#: by its pid while it waits: how the site build's notes runner sees that a note's
#: core is idle, and starts another note meanwhile (``hooks/notes.py``).
WAITING_DIR_ENV = "DIFFLAB_LOCK_WAITING_DIR"


@contextlib.contextmanager
def waiting_marker():
    """Inside, ``$DIFFLAB_LOCK_WAITING_DIR/<pid>`` exists (when the variable is set)."""
    folder = os.environ.get(WAITING_DIR_ENV)
    marker = Path(folder) / str(os.getpid()) if folder else None
    if marker is not None:
        with contextlib.suppress(OSError):  # a missing folder: nobody is watching
            marker.touch()
    try:
        yield
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)


# --- list and prune ----------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    """One entry of the cache, as ``cache list`` shows it."""

    kind: str
    key: str
    size: int  # bytes of its files
    reachable: bool  # the current source still gives this key
    files: tuple[Path, ...]
    progress: str = ""  # "finished", "unfinished at step N", "no checkpoint", ...


def _progress(pt: Path) -> str:
    """Whether the checkpoint ``pt`` holds a finished object (read memory-mapped)."""
    if not pt.is_file():
        return "no checkpoint"
    try:
        state = torch.load(pt, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return "unreadable"
    if not isinstance(state, dict):
        return "unreadable"
    if state.get("done"):
        return "finished"
    step = state.get("step")
    return f"unfinished at step {step}" if isinstance(step, int) else "unfinished"


def _record(sidecar: Path) -> dict | None:
    """The sidecar's record if it is one that :func:`cached` wrote, else None."""
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    ok = isinstance(record, dict) and {"kind", "key", "config", "deps"} <= set(record)
    return record if ok else None


def _reachable(record: dict) -> bool:
    try:
        current = deps_hash(record["deps"])
    except ValueError:  # a dependency that no longer exists
        return False
    text = f"{record['kind']}|{record['config']}|{current}"
    return hashlib.sha256(text.encode()).hexdigest()[:16] == record["key"]


def list_entries(root: Path | None = None) -> list[Listed]:
    """Every entry under the cache folder (``<kind>/<key>.pt`` and its sidecar).

    An entry is reachable when the source of its dependencies is unchanged, so the
    key recorded in its sidecar is what :func:`cached` would compute today. A
    checkpoint without a sidecar (left by an older version) is unreachable. Other
    files (the executed notes, say) are not entries and are left alone.
    """
    root = root or cache_dir()
    out = []
    for folder in sorted(p for p in root.glob("*") if p.is_dir()):
        keys = {p.stem for p in folder.glob("*.pt")}
        keys |= {p.stem for p in folder.glob("*.json") if _record(p) is not None}
        for key in sorted(keys):
            record = _record(folder / f"{key}.json")
            reachable = (
                record is not None
                and (record["kind"], record["key"]) == (folder.name, key)
                and _reachable(record)
            )
            files = [folder / f"{key}.pt", folder / f"{key}.json"]
            files += sorted(folder.glob(f"{key}.*.tmp"))  # an interrupted write
            files.append(folder / f"{key}.lock")
            files = tuple(f for f in files if f.is_file())
            size = sum(f.stat().st_size for f in files)
            progress = _progress(folder / f"{key}.pt")
            out.append(Listed(folder.name, key, size, reachable, files, progress))
    return out


def prune(
    root: Path | None = None, *, dry_run: bool = False, everything: bool = False
) -> list[Listed]:
    """Remove every entry that :func:`list_entries` finds unreachable; return them.

    ``everything``: remove the reachable entries too (every trained model is
    trained again when next needed). Files that are not entries stay.
    """
    gone = [e for e in list_entries(root) if everything or not e.reachable]
    if not dry_run:
        for e in gone:
            for f in e.files:
                f.unlink(missing_ok=True)
    return gone
