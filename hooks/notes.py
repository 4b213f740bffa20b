"""MkDocs hook: run the notes before MkDocs reads them; mkdocs-jupyter only renders.

A note is a py:percent file ``docs/<stage>/<name>.py``. The route is plain, and uses
only MkDocs' own events and mkdocs-jupyter's documented options:

1. ``on_files`` (run before every plugin's): for each note the hook computes a key
   and looks for ``.cache/notes/<key>.ipynb``. The notes that miss are executed
   in parallel: ``DIFFLAB_NOTES_JOBS`` workers (default: one per core), each note
   in its own kernel (the ``python3`` kernel, working directory the project root,
   ``src/`` first on ``PYTHONPATH``) with ``OMP_NUM_THREADS`` set to its share of
   the cores (``DIFFLAB_NOTES_THREADS`` to change it), longest first by the last
   timings (``.cache/notes/timings.json``). The log has one line per note as it
   finishes. Each executed notebook is stored in the cache, and the note's entry
   in MkDocs' file list is then backed by it (same page path and URL, so ``nav``
   and links keep naming the ``.py``). Two notes that need the same untrained
   model do not train it twice: the package's cache holds a lock on the entry
   (:func:`difflab.runtime.cache.entry_lock`). While a note waits for such a lock
   its core would idle, so the next queued note starts meanwhile (the waiting
   kernel marks itself in a folder the runner watches).

   Under ``mkdocs serve`` nothing is executed before the site is served: a note
   that misses is shown converted but not executed, under a notice (its place in
   the queue, the notes done, a time estimate from the last timings), and runs in
   the background; when it is done it touches ``.cache/notes/ready/stamp``, which
   serve watches, and the rebuild shows the executed page (live reload).
   ``mkdocs build`` (and ``serve --clean``, which MkDocs runs as a build) executes
   every note before writing anything, so the notice never reaches a built site.
2. mkdocs-jupyter, configured with ``include: ["*.ipynb"]`` and ``execute: false``,
   renders the executed notebook like any other; its own HTML cache is keyed on the
   notebook's bytes, so a warm rebuild converts nothing either.
3. ``on_page_content`` finishes the page (see "What a page shows").

The key is a SHA-256 of the note's text, the source of the ``difflab`` modules it
imports and everything they import (:func:`note_modules_hash`: the package's own
rule, :func:`difflab.runtime.cache.deps_hash`, which also keys the trained models),
``difflab.runtime.profiles.current_profile()``, the datasets present in
``difflab.data.common.data_root()``, the kernel name and ``HOOK_VERSION``. So a
change in ``difflab.eval.audio_metrics`` re-executes the audio page only, and a
change in ``difflab.diffusion.noise`` every page that reaches it. Notes named
``_*.py`` are rendered without being executed.

What an executed notebook keeps (it is also the ``.ipynb`` readers download):
no stderr output (warnings and progress bars are logged at INFO, never published),
no absolute path of the build machine (the project root becomes ``.``, the
interpreter's prefix ``<venv>``, the home folder ``~``), PNG figures re-encoded
losslessly at the smallest size, and the ``fold`` tag on import-only cells.

What a page shows:

* under its title, links to download the note (``<name>.py``) and the executed
  notebook (``<name>.ipynb``), both copied beside the page;
* code cells tagged ``fold`` (``# %% tags=["fold"]`` in the note) folded into a
  ``<details>`` whose one-line summary is the cell's first comment (or, for an
  import-only cell, the modules it imports); every other cell stays open;
* no ``In [n]:`` prompts (mkdocs-jupyter's ``no_prompt``);
* figures as files beside the page (``<name>_files/fig-<hash>.png``), loaded lazily,
  so the HTML stays small;
* links to other pages (``../deeper/ddim.py``, ``../notation.md``) pointing at the
  built pages; a link to a page that does not exist is a warning (an error under
  ``--strict``), as in .md pages.

A note that raises fails the build with ``Error: note docs/<stage>/<name>.py raised
...`` (with or without ``--strict``) and nothing is cached for it; the notes
already running finish (and are cached), no new one starts. Each build logs a
table of the notes (seconds, executed or cached) and writes it to
``.cache/notes/last-build.json``.

Environment: ``DIFFLAB_NOTES_CACHE`` (cache folder, default ``<root>/.cache/notes``),
``DIFFLAB_NOTES_JOBS`` and ``DIFFLAB_NOTES_THREADS`` (workers, threads each),
``DIFFLAB_NOTES_BACKGROUND=0`` (``mkdocs serve`` executes every note first, as
before),
``DIFFLAB_CELL_TIMEOUT`` (seconds per cell, default 1800: a cell may train a model
on a busy laptop), ``DIFFLAB_NOTES_KEEP_GOING=1`` (run every note even after one
raised, then fail the build naming all that raised: one cold build finds every
broken note instead of the first).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import shutil
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import jupytext
import nbformat
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.notes")

HOOK_VERSION = "2"
FOLD_TAG = "fold"
_LANG = "zh"  # the Chinese edition's pages live under zh/ (hooks/i18n.py)
NOT_NOTES = ("assets/", "javascripts/", "stylesheets/")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

_state: dict = {"notes": {}, "py_to_page": {}, "rows": [], "used": set(), "t0": None}


# ------------------------------------------------------------------ events


def on_config(config):
    root = Path(config.config_file_path).resolve().parent
    _state["root"] = root
    _state["dir_urls"] = bool(config.use_directory_urls)
    _state["cache"] = Path(
        os.environ.get("DIFFLAB_NOTES_CACHE") or root / ".cache" / "notes"
    )
    plugin = config.plugins.get("mkdocs-jupyter")
    if plugin is None:
        raise PluginError("hooks/notes.py needs the mkdocs-jupyter plugin.")
    if plugin.config.get("execute"):
        raise PluginError(
            "mkdocs-jupyter must not execute (execute: false in mkdocs.yml): "
            "hooks/notes.py runs the notes and hands over the executed notebooks."
        )
    _state["kernel"] = plugin.config.get("kernel_name") or "python3"
    src = str(root / "src")
    if src not in sys.path:
        sys.path.insert(0, src)  # the hook reads the package's own cache rules
    if _state.get("command") == "serve" and not _state.get("port_checked"):
        _state["port_checked"] = True  # before the first build, not on rebuilds
        _check_port(config.dev_addr.host, config.dev_addr.port)
    return config


def _check_port(host: str, port: int) -> None:
    """A taken address is one line before anything is built, with the fix."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                return  # MkDocs reports other faults itself
            raise PluginError(
                f"{host}:{port} is already in use (another `make serve`?). Stop "
                f"it, or serve on another port: make serve HOST={host}:{port + 1} "
                f"(mkdocs serve -a {host}:{port + 1})."
            ) from None


def on_startup(command, dirty):
    """``mkdocs serve`` shows pages first and runs the notes in the background."""
    _state["command"] = command
    flag = os.environ.get("DIFFLAB_NOTES_BACKGROUND", "").strip()
    # Never for `build` or `gh-deploy` (nor `serve --clean`, which MkDocs calls a
    # build): a built site has every note executed and no notice.
    _state["background"] = command == "serve" and flag != "0"


def on_serve(server, config, builder):
    """A note finished in the background touches this file: MkDocs rebuilds."""
    ready = _state["cache"] / "ready"
    ready.mkdir(parents=True, exist_ok=True)
    server.watch(str(ready))
    return server


def on_shutdown():
    store = sys.modules.get("difflab_notes_background")
    if store is not None and getattr(store, "runner", None) is not None:
        store.runner.stop()


def on_pre_build(config):
    from difflab.data.common import data_root, data_setting_problem

    if (problem := data_setting_problem()) is not None:
        raise PluginError(problem)  # the notes would run on the embedded digits
    _state.update(notes={}, rows=[], used=set(), t0=time.perf_counter())
    _state.setdefault("background", False)
    _state["profile"], _state["fingerprint"] = _fingerprint()
    _state["data"] = data_root()


@event_priority(100)  # before mkdocs-jupyter decides which files are notebooks
def on_files(files, config):
    keep_going = os.environ.get("DIFFLAB_NOTES_KEEP_GOING", "") not in ("", "0")
    _state["nav_order"] = {f"docs/{p}": i for i, p in enumerate(_nav_paths(config.nav))}
    notes, missing = [], []
    for file in list(files):
        if not _is_note(file):
            continue
        job = _Job(Path(file.abs_src_path), f"docs/{file.src_uri}")
        notes.append((file, job))
        _state["used"].add(job.digest)
        if not job.cached():
            missing.append(job)
    results: dict[str, tuple[Path, str, float]] = {}
    failed: list[str] = []
    if missing and _state["background"]:
        _background().submit_all(missing)
    elif missing:
        failed = _run_now(missing, results, keep_going)
    pages = _state["cache"] / "pages"
    for file, job in notes:
        rel = job.rel
        if job.digest in results:
            ipynb, status, seconds = results[job.digest]
            pending = None
        elif job.cached():
            ipynb, status, seconds = job.ipynb, job.cached_status(), 0.0
            pending = None
        elif _state["background"]:
            ipynb, status, seconds = (
                job.placeholder(),
                "pending (in the background)",
                0.0,
            )
            pending = job
        else:  # it raised (keep-going) or was never started after another raised
            _state["rows"].append((rel, 0.0, "raised or not run"))
            continue
        _state["rows"].append((rel, seconds, status))
        # The page's source is the executed notebook, at the note's path with the
        # .ipynb suffix (so the page keeps its URL); the .py stays a static file.
        uri = file.src_uri[: -len(".py")] + ".ipynb"
        if files.get_file_from_path(uri) is not None:
            raise PluginError(f"docs/{uri} and the note {rel} would be one page.")
        copy = pages / uri
        if not copy.is_file() or copy.read_bytes() != ipynb.read_bytes():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ipynb, copy)
        files.append(File(uri, str(pages), config.site_dir, config.use_directory_urls))
        nb = nbformat.read(ipynb, as_version=4)
        _state["notes"][uri] = {
            "py": file.src_uri,
            "source": Path(file.abs_src_path),
            "ipynb": ipynb,
            "pending": pending,
            "folds": _fold_summaries(nb),
            "figures": _figure_notes(nb),
            "files": {},  # site path -> bytes: figures and shared CSS
        }
    if failed:
        if len(failed) == 1 and not keep_going:
            raise PluginError(failed[0])
        raise PluginError(
            f"{len(failed)} note(s) raised"
            + (" (DIFFLAB_NOTES_KEEP_GOING ran the rest)" if keep_going else "")
            + ":\n"
            + "\n\n".join(failed)
        )
    _state["py_to_page"] = {n["py"]: uri for uri, n in _state["notes"].items()}
    config.nav = _nav_to_pages(config.nav)
    return files


def _nav_paths(item) -> list[str]:
    """The page paths of ``nav`` in reading order."""
    if isinstance(item, str):
        return [item]
    if isinstance(item, list):
        return [p for i in item for p in _nav_paths(i)]
    if isinstance(item, dict):
        return [p for v in item.values() for p in _nav_paths(v)]
    return []


def _nav_to_pages(item):
    """``nav`` with each note (``stage/name.py``) named by its page's source."""
    if isinstance(item, str):
        return _state["py_to_page"].get(item, item)
    if isinstance(item, list):
        return [_nav_to_pages(i) for i in item]
    if isinstance(item, dict):
        return {k: _nav_to_pages(v) for k, v in item.items()}
    return item


_MD_LINK = re.compile(
    r"(\]\(\s*<?|^\s*\[[^\]]+\]:\s*<?)([^)\s>#]+\.py)(?=[)#>\s]|$)", re.M
)


def on_page_markdown(markdown, page, config, files):
    """Links from .md pages to a note (``ddpm.py``) lead to its page."""
    if page.file.src_uri in _state["notes"]:
        return markdown
    here = posixpath.dirname(page.file.src_uri)

    def fix(m: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(here, m[2]))
        uri = _state["py_to_page"].get(target)
        if uri is None:
            return m[0]
        return m[1] + m[2][: -len(".py")] + ".ipynb"

    return _MD_LINK.sub(fix, markdown)


@event_priority(50)  # before glightbox wraps the figures
def on_page_content(html, page, config, files):
    note = _state["notes"].get(page.file.src_uri)
    if note is None:
        return html
    html = _rewrite_page_links(html, page, files)
    html = _fold_cells(html, note["folds"], page.file.src_uri)
    html = _extract_images(html, note, page)
    html = _share_styles(html, note, page)
    html = _add_downloads(html, page)
    html = _move_data_notices(html)
    if note["pending"] is not None:
        html = _add_notice(html, note["pending"])
    return html


_DATA_NOTICE = re.compile(r'<div class="admonition warning difflab-data-notice">')


def _move_data_notices(html: str) -> str:
    """Move the notes' stand-in data notices (``PageRun.data_notice``) from the
    output cell that made them to the top of the page, under the title."""
    blocks = []
    while (m := _DATA_NOTICE.search(html)) is not None:
        end = _div_end(html, m.start())
        blocks.append(html[m.start() : end])
        html = html[: m.start()] + html[end:]
    return _after_title(html, "".join(blocks)) if blocks else html


def _add_notice(html: str, job: _Job) -> str:
    """The notice over a page whose note has not run yet (``mkdocs serve`` only)."""
    from html import escape

    runner = _background()
    times = _timings(_state["cache"])
    notes = [n for n in _state["notes"].values() if "lang" not in n]  # not twins
    total = len(notes)
    ready = sum(1 for n in notes if n["pending"] is None)
    with runner.lock:
        running = {d: (j.rel, t0) for d, (j, t0) in runner.running.items()}
        running_jobs = list(runner.running.values())
        queued = runner.queued_jobs()
        error = runner.finished.get(job.digest)
    now = time.perf_counter()
    if error:
        body = (
            f"<p>This note raised while it ran in the background, so its results are "
            f"missing below. Fix the note and save it: it runs again.</p>"
            f"<pre>{escape(error[-3000:])}</pre>"
        )
        return _after_title(
            html, f'<div class="admonition failure difflab-pending">{body}</div>'
        )
    mine = _cost(job, times)
    if job.digest in running:  # what is left of its own last time
        known, eta = (
            mine is not None,
            max(0.0, (mine or 0.0) - (now - running[job.digest][1])),
        )
    else:  # the work ahead of it (running notes' rest, queued before it), shared out
        ahead = [(_cost(j, times), now - t0) for j, t0 in running_jobs]
        for other in queued:
            if other.digest == job.digest:
                break
            ahead.append((_cost(other, times), 0.0))
        known = mine is not None and all(t is not None for t, _ in ahead)
        work = sum(max(0.0, (t or 0.0) - spent) for t, spent in ahead)
        eta = work / max(1, runner.jobs) + (mine or 0.0)
    state = "is running now" if job.digest in running else "is queued"
    names = ", ".join(escape(posixpath.basename(r)) for r, _ in running.values())
    if known:
        when = (
            f"Expected in about {_minutes(eta)} (from the last timings here, or "
            f"the notes' own estimates on two cores)."
        )
    else:
        when = (
            "No estimate: it has not been timed here yet."
            if job.digest in running
            else "No estimate: it, or a note ahead of it, has not been timed here yet."
        )
    body = (
        f"<p><strong>Results coming.</strong> This page's note {state}; below are its "
        f"prose and code, not yet executed. {when} The page reloads by itself when "
        f"its results are in.</p>"
        f"<p>Notes done: {ready} of {total}. Running now: {names or 'none'}.</p>"
    )
    return _after_title(
        html, f'<div class="admonition info difflab-pending">{body}</div>'
    )


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{round(seconds / 60)} min"


def _after_title(html: str, block: str) -> str:
    m = re.search(r"</h1\s*>", html)
    if m is None:
        return block + html
    return html[: m.end()] + block + html[m.end() :]


_JUPYTER_MATHJAX = re.compile(
    r"<script data-mkdocs-jupyter-mathjax=[^>]*>.*?</script>", re.S
)


def on_post_page(output, page, config):
    """Write the page's downloads and figures; drop mkdocs-jupyter 0.27's MathJax.

    mkdocs-jupyter 0.27 adds its own MathJax loader (from a CDN); the site already
    typesets notebook cells with the vendored MathJax (docs/javascripts/mathjax.js).
    """
    note = _state["notes"].get(page.file.src_uri)
    if note is not None:
        site = Path(config.site_dir)
        (site / page.file.src_uri).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(note["ipynb"], site / page.file.src_uri)
        for uri, data in note["files"].items():
            (site / uri).parent.mkdir(parents=True, exist_ok=True)
            (site / uri).write_bytes(data)
    return _JUPYTER_MATHJAX.sub("", output)


def on_build_error(error):
    """A failed build still says how long the notes before the failure took."""
    _log_table(finished=False)


def on_post_build(config):
    _evict_stale()
    _log_table(finished=True)


# ------------------------------------------------------- execution + cache


def _is_note(file) -> bool:
    return (
        file.src_uri.endswith(".py")
        and not file.src_uri.startswith(NOT_NOTES)
        and file.abs_src_path is not None
    )


def _fingerprint() -> tuple[str, str]:
    """(profile, hash of what outside a note and its modules changes what it prints).

    The rules are the package's own: its profile and its data folder (which
    datasets are present decides what ``auto`` loads). The note's modules are
    hashed per note (:meth:`_Job.key`).
    """
    from difflab.data.common import data_root
    from difflab.runtime.profiles import current_profile

    profile = current_profile()
    h = hashlib.sha256(f"v{HOOK_VERSION}|{_state['kernel']}|{profile}|".encode())
    data = data_root()
    if data.is_dir():
        for d in sorted(data.iterdir()):
            h.update(d.name.encode())
            if d.is_dir():
                h.update("|".join(sorted(x.name for x in d.iterdir())).encode())
    return profile, h.hexdigest()


def note_modules_hash(text: str, root: Path | None = None) -> str:
    """Hash of the source of the ``difflab`` modules a note reaches (the package's rule).

    :func:`difflab.runtime.cache.imported_modules` reads the note's imports and
    :func:`difflab.runtime.cache.deps_hash` hashes them and everything they import:
    the same rule that keys the trained models, whose own modules a note reaches
    through the pipeline it imports. A note that is not Python counts on the whole
    package (:func:`difflab.runtime.cache.source_hash`).
    """
    from difflab.runtime import cache

    root = root or cache.PACKAGE_DIR
    try:
        mods = cache.imported_modules(text, root)
    except SyntaxError:
        return "all:" + cache.source_hash()
    return cache.deps_hash(sorted(mods), root)


_COLD_SECONDS = re.compile(r"^#\s+cold_seconds:\s*([0-9]+(?:\.[0-9]*)?)\s*$", re.M)
_COLD_WITH = re.compile(
    r"^#\s+cold_seconds_with_([A-Za-z0-9_.-]+):\s*([0-9]+(?:\.[0-9]*)?)\s*$", re.M
)


def cold_hint(header: str, data: Path) -> tuple[float | None, str]:
    """A note's own estimate of its cold cost, and the suffix of its timing key.

    ``cold_seconds`` in the note's header is its cost on the embedded stand-ins;
    ``cold_seconds_with_<D>`` its cost when the dataset folder ``D`` of the data
    folder is not empty (the largest of those present counts). A real-data build
    on a fresh clone then starts its longest note first, not the note that is
    long on the stand-ins. The suffix names those datasets present, so that the
    timings of a stand-in build never order a build with the data, nor the other
    way round.
    """
    base = _COLD_SECONDS.search(header)
    found = {
        name: float(sec)
        for name, sec in _COLD_WITH.findall(header)
        if (data / name).is_dir() and any((data / name).iterdir())
    }
    if found:
        return max(found.values()), " with " + ", ".join(sorted(found))
    return (float(base[1]) if base else None), ""


# The trained models a note asks for by name or by trainer (what it may have to
# train, or wait for while another note trains it: the model cache's entry lock).
_MODEL_CALLS = re.compile(
    r"""\b(?:load_or_train|cached_net)\(\s*["']([\w.-]+)["']"""
    r"|\b(train_stable_diffusion|load_or_train_audio|train_latent_ddpm"
    r"|train_autoencoder|train_noisy_classifier)\("
)


def note_models(text: str) -> frozenset[str]:
    """The names of the trained models a note's code asks for (see _MODEL_CALLS)."""
    return frozenset(a or b for a, b in _MODEL_CALLS.findall(text))


class _Job:
    """One note: its key, its cache entry and how to execute it (thread-safe)."""

    def __init__(self, path: Path, rel: str):
        self.path, self.rel = path, rel
        self.run = not path.name.startswith("_")
        text = path.read_bytes()
        key = hashlib.sha256()
        if self.run:
            key.update(_state["fingerprint"].encode())
            key.update(note_modules_hash(text.decode("utf-8", "replace")).encode())
        else:
            key.update(f"v{HOOK_VERSION}".encode())
        key.update(text)
        self.digest = key.hexdigest()[:32]
        # The note's own estimate of its cold cost (``cold_seconds`` in its
        # header, or ``cold_seconds_with_<dataset>`` when that dataset is here),
        # for the order and the notice when no build here has timed it.
        self.hint, with_data = cold_hint(
            text[:4000].decode("utf-8", "replace"), _state["data"]
        )
        self.timing_key = rel + with_data
        self.models = (
            note_models(text.decode("utf-8", "replace")) if self.run else frozenset()
        )
        cache = _state["cache"]
        self.ipynb, self.meta = (
            cache / f"{self.digest}.ipynb",
            cache / f"{self.digest}.json",
        )
        self.profile, self.root, self.kernel = (
            _state["profile"],
            _state["root"],
            _state["kernel"],
        )

    def cached(self) -> bool:
        return self.ipynb.is_file() and self.meta.is_file()

    def cached_status(self) -> str:
        if not self.run:
            return "cached"
        try:
            seconds = json.loads(self.meta.read_text())["seconds"]
            return f"cached (executed in {seconds:.1f} s)"
        except Exception:
            return "cached"

    def placeholder(self) -> Path:
        """The note converted, not executed, for a page shown before its results."""
        out = self.ipynb.parent / "pending" / f"{self.digest}.ipynb"
        if not out.is_file():
            nb = _read_note(self.path)
            _clean(nb, self.rel)
            _write_atomic_nb(nb, out)
        return out

    def execute(self, threads: int, waiting_dir: Path | None = None) -> float:
        """Execute (or convert) the note into its cache entry; the seconds it took.

        ``waiting_dir``: where its kernel marks itself while it waits for a model
        that another process is training (:meth:`_Runner._lend`)."""
        from difflab.runtime.cache import write_atomic

        t0 = time.perf_counter()
        if self.run:
            log.info("notes: executing %s (profile %s)", self.rel, self.profile)
            nb = _execute(
                self.path,
                self.rel,
                self.root,
                self.kernel,
                self.profile,
                threads,
                waiting_dir,
            )
        else:
            nb = _read_note(self.path)
        cells = _cell_seconds(nb)
        _clean(nb, self.rel)
        seconds = time.perf_counter() - t0
        _write_atomic_nb(nb, self.ipynb)
        record = {"page": self.rel, "profile": self.profile, "seconds": seconds}
        self.cells = cells[:3]
        if cells:  # the heaviest cells: where a cold build spends its time
            record["heaviest_cells"] = self.cells
        # All or none, for a second build on this checkout reading it meanwhile.
        write_atomic(self.meta, lambda f: f.write(json.dumps(record).encode()))
        if self.run:
            _record_timing(self.ipynb.parent, self.timing_key, seconds)
        return seconds


def _read_note(path: Path):
    """The note as a notebook, with cell ids from their positions (jupytext draws
    random ones), so that the same note executed twice gives the same bytes."""
    nb = jupytext.read(path)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
    return nb


def _write_atomic_nb(nb, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        nbformat.write(nb, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


# The seconds each note last took to execute, whatever later builds found cached:
# the order of a cold build (longest first) and the estimates shown while serving.
# Kept per page and datasets present (``_Job.timing_key``).
_TIMINGS = "timings.json"
_timings_lock = threading.Lock()


def _timings(cache: Path) -> dict[str, float]:
    try:
        data = json.loads((cache / _TIMINGS).read_text())
        return {str(k): float(v) for k, v in data.items()}
    except Exception:
        return {}


def _cost(job: _Job, times: dict[str, float]) -> float | None:
    """The seconds a note is expected to take: its last time here, else its hint."""
    return times.get(job.timing_key, job.hint)


def _record_timing(cache: Path, rel: str, seconds: float) -> None:
    with _timings_lock:
        data = _timings(cache)
        data[rel] = round(seconds, 1)
        tmp = cache / f".{_TIMINGS}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(dict(sorted(data.items())), indent=1))
        os.replace(tmp, cache / _TIMINGS)


def notes_jobs() -> tuple[int, int]:
    """(workers, threads per worker) from ``DIFFLAB_NOTES_JOBS``/``_THREADS``.

    Default: one worker per core this process may use, and the cores shared out
    among the workers (at least one thread each), so workers never fight over
    cores. A bad value is one line naming the variable.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    values = []
    for name, default in (
        ("DIFFLAB_NOTES_JOBS", cores),
        ("DIFFLAB_NOTES_THREADS", None),
    ):
        raw = os.environ.get(name, "").strip()
        if not raw:
            values.append(default)
            continue
        if not raw.isdigit() or int(raw) < 1:
            raise PluginError(f"{name}={raw!r}: expected a whole number >= 1.")
        values.append(int(raw))
    jobs, threads = values
    return jobs, threads or max(1, cores // jobs)


class _Runner:
    """Daemon worker threads that execute notes, each in its own kernel.

    ``submit`` queues a job unless the same key is queued, running or done;
    ``on_done(job, error)`` is called from the worker thread when a job ends.
    """

    def __init__(self, jobs: int, threads: int, on_done=None):
        self.jobs, self.threads, self.on_done = jobs, threads, on_done
        self.lock = threading.Lock()
        self.ready = threading.Condition(self.lock)
        self.pending: list[tuple[float, int, _Job]] = []  # (priority, seq, job)
        self.queued: dict[str, _Job] = {}
        self.running: dict[str, tuple[_Job, float]] = {}
        self.finished: dict[str, str | None] = {}  # digest -> error text or None
        self.seconds: dict[str, float] = {}
        self.trained: set[str] = set()  # the models of the notes that ended well
        self.stopped = False  # no new note starts
        self.interrupted = False  # Ctrl-C: the running notes' failures are not theirs
        self._seq = 0
        # Where a kernel that waits for another note's model marks itself
        # (difflab.runtime.cache.waiting_marker): its core is idle meanwhile.
        self.waiting_dir = Path(tempfile.mkdtemp(prefix="difflab-notes-waiting-"))
        self.workers = [
            threading.Thread(target=self._work, daemon=True, name=f"notes-{i}")
            for i in range(jobs)
        ] + [
            threading.Thread(target=self._lend, daemon=True, name=f"notes-lent-{i}")
            for i in range(jobs)
        ]
        for w in self.workers:
            w.start()

    def submit(self, job: _Job, priority: float = 0.0) -> None:
        with self.lock:
            if job.digest in self.queued or job.digest in self.running:
                return
            if job.digest in self.finished:
                return
            self.queued[job.digest] = job
            self._seq += 1
            self.pending.append((priority, self._seq, job))
            self.pending.sort(key=lambda e: e[:2])
            self.ready.notify()

    def submit_all(self, jobs: list[_Job]) -> None:
        """Quickest first (by the last timings) in the background: pages appear soon."""
        times = _timings(_state["cache"])
        order = _state.get("nav_order", {})
        first = not self.finished and not self.running

        def rank(j: _Job) -> float:  # quickest first; untimed notes in reading order
            return _cost(j, times) or 1e6 + order.get(j.rel, len(order))

        for job in sorted(jobs, key=rank):
            self.submit(job, rank(job) if first else -1.0)

    def queued_jobs(self) -> list[_Job]:
        """The queued notes in the order they would start (call with the lock held)."""
        return [j for _, _, j in self.pending]

    def _next(self) -> _Job | None:
        """The first queued note (by priority) that asks for none of the models of
        a running note, else the first: a worker starts other work instead of
        waiting on the lock of a model that another note is training. A model that
        a finished note asked for is trained by then, so it holds nothing back
        (before, the quick notes that load the ``ddpm`` model waited for the DDPM
        page to end, and ran last, after notes a third of their length)."""
        busy = set().union(*(j.models for j, _ in self.running.values()))
        busy -= self.trained
        for i, (_, _, job) in enumerate(self.pending):
            if not job.models & busy:
                return self.pending.pop(i)[2]
        return self.pending.pop(0)[2]

    def _work(self) -> None:
        while True:
            with self.lock:
                while not self.pending and not self.stopped:
                    self.ready.wait()
                if self.stopped:
                    return
                job = self._take()
            self._run(job)

    def _waiting(self) -> int:
        """How many running kernels wait for a model lock that another holds."""
        count = 0
        try:
            markers = list(self.waiting_dir.iterdir())
        except OSError:  # removed: the runner has stopped
            return 0
        for marker in markers:
            try:
                os.kill(int(marker.name), 0)  # a killed kernel leaves its marker
            except (ValueError, ProcessLookupError):
                marker.unlink(missing_ok=True)
                continue
            except PermissionError:
                pass
            count += 1
        return count

    def _lend(self) -> None:
        """Start a queued note while a running one waits for a model that another
        note is training, so that no core idles: as many notes compute as there
        are workers. In a cold real-data build the latent-diffusion page waited
        about 20 s for the autoencoder that the Stable Diffusion page was training
        (two notes that ask for it through different functions)."""
        while True:
            time.sleep(0.5)
            waiting = self._waiting()
            with self.lock:
                if self.stopped:
                    return
                if not waiting or not self.pending:
                    continue
                if len(self.running) - waiting >= self.jobs:
                    continue
                job = self._take()
            log.info("notes: %s started while another note waits for a model", job.rel)
            self._run(job)

    def _take(self) -> _Job:
        """The next note, now running (call with the lock held)."""
        job = self._next()
        self.queued.pop(job.digest, None)
        self.running[job.digest] = (job, time.perf_counter())
        return job

    def _run(self, job: _Job) -> None:
        """Execute ``job`` (taken by :meth:`_take`) and record how it ended."""
        error = None
        try:
            self.seconds[job.digest] = job.execute(self.threads, self.waiting_dir)
        except PluginError as exc:
            error = str(exc)
        except Exception as exc:  # the hook's own fault: name the note anyway
            error = f"note {job.rel} could not be executed: {type(exc).__name__}: {exc}"
        with self.lock:
            self.running.pop(job.digest, None)
            self.finished[job.digest] = error
            if error is None:
                self.trained |= job.models
            interrupted = self.interrupted and error is not None
        if self.on_done is not None and not interrupted:
            self.on_done(job, error)

    def stop(self) -> None:
        """Start no more notes (the running ones finish); end the workers."""
        with self.lock:
            self.stopped = True
            self.ready.notify_all()
        shutil.rmtree(self.waiting_dir, ignore_errors=True)


def _run_now(jobs: list[_Job], results: dict, keep_going: bool) -> list[str]:
    """Execute ``jobs`` in parallel and wait; the errors (one text per raising note).

    Longest first (by the last timings), so the slowest note never starts last.
    Without keep-going, the first error stops new notes from starting.
    """
    workers, threads = notes_jobs()
    workers = min(workers, len(jobs))
    times = _timings(_state["cache"])
    errors: list[str] = []
    count = [0]
    lock = threading.Lock()

    def finished(job: _Job, error: str | None) -> None:
        with lock:
            count[0] += 1
            if error is None:
                seconds = runner.seconds[job.digest]
                status = "executed" if job.run else "converted"
                results[job.digest] = (job.ipynb, status, seconds)
                heavy = getattr(job, "cells", None)
                log.info(
                    "notes: [%d/%d] %s %s in %.1f s%s",
                    count[0],
                    len(jobs),
                    job.rel,
                    status,
                    seconds,
                    f" (heaviest cell: #{heavy[0]['cell']}, {heavy[0]['seconds']:.0f} s)"
                    if heavy
                    else "",
                )
            else:
                errors.append(error)
                log.error("notes: [%d/%d] %s raised", count[0], len(jobs), job.rel)
                if not keep_going:
                    runner.stop()  # the running notes finish; no new one starts

    log.info(
        "notes: %d to execute, %d at a time with %d thread(s) each",
        len(jobs),
        workers,
        threads,
    )
    runner = _Runner(workers, threads, on_done=finished)
    for job in sorted(jobs, key=lambda j: -(_cost(j, times) or 0.0)):
        runner.submit(job)
    try:
        while True:
            time.sleep(0.2)
            with runner.lock:
                if len(runner.finished) == len(jobs):
                    break
                if runner.stopped and not runner.running:
                    break
    except KeyboardInterrupt:
        with runner.lock:
            runner.stopped = runner.interrupted = True  # kernels end with the process
            names = sorted(j.rel for j, _ in runner.running.values())
        log.error(
            "notes: interrupted (Ctrl-C) while %s ran; nothing of them is kept, "
            "the %d notes finished before are cached",
            ", ".join(names) or "no note",
            sum(1 for e in runner.finished.values() if e is None),
        )
        raise
    finally:
        runner.stop()
    return errors


def _background() -> _Runner:
    """The serve-time runner, one per process (kept across rebuilds)."""
    store = sys.modules.setdefault(
        "difflab_notes_background", types.ModuleType("difflab_notes_background")
    )
    runner = getattr(store, "runner", None)
    if runner is None:
        workers, threads = notes_jobs()
        trigger = _state["cache"] / "ready" / "stamp"

        def on_done(job: _Job, error: str | None) -> None:
            if runner.stopped:  # serve is shutting down: its kernels are going too
                log.info("notes: %s stopped before it finished", job.rel)
                return
            if error is None:
                log.info(
                    "notes: %s is ready (%.1f s); rebuilding",
                    job.rel,
                    runner.seconds[job.digest],
                )
            else:
                log.error("notes: %s raised in the background:\n%s", job.rel, error)
            trigger.parent.mkdir(parents=True, exist_ok=True)
            trigger.write_text(f"{job.rel} {time.time()}\n")  # watched: a rebuild

        runner = store.runner = _Runner(workers, threads, on_done=on_done)
        log.info(
            "notes: serving first; notes run in the background, %d at a time", workers
        )
    return runner


@functools.cache
def _client_class():
    """nbclient's ``NotebookClient``, but quiet in its clean-up at interpreter exit.

    While a kernel runs, nbclient registers ``_cleanup_kernel`` with ``atexit`` (the
    execution itself cleans up through ``_async_cleanup_kernel`` and unregisters it).
    After Ctrl-C the process exits while the worker thread is still cleaning up the
    same kernel; when the worker set ``km`` to None half-way through the exit hook's
    clean-up, the exit hook printed a traceback (``'NoneType' object has no attribute
    'cleanup_resources'``; CI on dd8ad54). A kernel cleaned up, or being cleaned up,
    by its worker is left to it; one the worker never reached is still cleaned up.
    """
    from nbclient import NotebookClient

    class Client(NotebookClient):
        def _cleanup_kernel(self) -> None:
            if self.km is None:  # the worker's clean-up came first
                return
            # km set to None by the worker meanwhile: assert or attribute error
            with contextlib.suppress(AssertionError, AttributeError):
                super()._cleanup_kernel()

    return Client


def _execute(
    path: Path,
    rel: str,
    root: Path,
    kernel: str,
    profile: str,
    threads: int,
    waiting_dir: Path | None = None,
):
    from nbclient.exceptions import CellExecutionError

    nb = _read_note(path)
    nb.metadata["kernelspec"] = {
        "name": kernel,
        "display_name": "Python 3",
        "language": "python",
    }
    client = _client_class()(
        nb,
        timeout=int(os.environ.get("DIFFLAB_CELL_TIMEOUT", "1800")),
        kernel_name=kernel,
        allow_errors=False,
        record_timing=True,  # per-cell times, read into the meta, then dropped
        # Quiet the kernel's own log (its "TCP without encryption" notice on every
        # start); errors in the note still arrive through the execution messages.
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
        # The note is done and saved by then: end its kernel at once instead of
        # asking it to tear its interpreter down, which held the worker 0.8 s a
        # note (0.1 s this way; everything a note keeps is on disk already).
        shutdown_kernel="immediate",
        resources={"metadata": {"path": str(root)}},
    )
    pythonpath = os.pathsep.join(
        p for p in (str(root / "src"), os.environ.get("PYTHONPATH")) if p
    )
    env = dict(os.environ)
    env.update(
        {
            # ipykernel's inline backend, so plt.show() puts the figure in the page.
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "PYTHONPATH": pythonpath,
            "TQDM_DISABLE": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "DIFFLAB_PROFILE": profile,
            # Each worker's share of the cores (torch reads these when it starts).
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads),
        }
    )
    if waiting_dir is not None:
        from difflab.runtime.cache import WAITING_DIR_ENV

        env[WAITING_DIR_ENV] = str(waiting_dir)
    # The kernel process's own output (not the note's, which arrives as messages):
    # a log beside the cache, quoted when the kernel dies, deleted when all went well.
    kernel_log = (
        _state["cache"] / "kernels" / f"{os.getpid()}-{threading.get_ident()}.log"
    )
    kernel_log.parent.mkdir(parents=True, exist_ok=True)
    with open(kernel_log, "wb") as out:
        try:
            client.execute(env=env, stdout=out, stderr=out)
        except CellExecutionError as exc:
            raise PluginError(
                f"note {rel} raised while executing, so its page cannot be built:\n"
                f"{_ANSI.sub('', str(exc))}"
            ) from None
        except Exception as exc:  # a timeout, a dead kernel, nbclient's own clean-up
            # (it can fail after the kernel was killed): the page is named either way
            tail = kernel_log.read_text(errors="replace").strip().splitlines()[-15:]
            said = "\nthe kernel's last words:\n" + "\n".join(tail) if tail else ""
            raise PluginError(
                f"note {rel} could not be executed: {type(exc).__name__}: "
                f"{_ANSI.sub('', str(exc))}{said}"
            ) from None
    kernel_log.unlink(missing_ok=True)
    return nb


# ------------------------------------------------- what an executed note keeps


def _path_replacements() -> list[tuple[str, str]]:
    """Absolute paths of this machine and what a page says instead, longest first."""
    root = _state["root"]
    pairs = {str(root): ".", str(root.resolve()): "."}
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        pairs[prefix] = "<venv>" if prefix == sys.prefix else "<python>"
        pairs[os.path.realpath(prefix)] = pairs[prefix]
    home = os.path.expanduser("~")
    if home not in ("/", "~"):
        pairs.setdefault(home, "~")
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def _scrub(text: str, pairs) -> str:
    for path, label in pairs:
        text = text.replace(path, label)
    return text


def _cell_seconds(nb) -> list[dict]:
    """The code cells by the time they took (nbclient's timing), longest first."""
    from datetime import datetime

    out = []
    for i, cell in enumerate(nb.cells):
        t = cell.get("metadata", {}).get("execution", {})
        try:
            start = datetime.fromisoformat(
                t["iopub.execute_input"].replace("Z", "+00:00")
            )
            end = datetime.fromisoformat(
                t["shell.execute_reply"].replace("Z", "+00:00")
            )
        except (KeyError, ValueError, AttributeError):
            continue
        first = next((ln.strip() for ln in cell.source.splitlines() if ln.strip()), "")
        seconds = round((end - start).total_seconds(), 1)
        out.append({"cell": i, "seconds": seconds, "first_line": first[:80]})
    return sorted(out, key=lambda c: -c["seconds"])


def _clean(nb, rel: str) -> None:
    """Make an executed notebook fit to publish (see the module docstring)."""
    pairs = _path_replacements()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)  # timestamps: not the page's content
        if _import_only(cell.source):
            tags = cell.metadata.setdefault("tags", [])
            if FOLD_TAG not in tags:
                tags.append(FOLD_TAG)
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                first = out.get("text", "").strip().splitlines()[:1]
                log.info("notes: %s wrote to stderr (not published): %s", rel, first)
                continue
            _clean_output(out, pairs)
            kept.append(out)
        cell.outputs = kept


def _clean_output(out, pairs) -> None:
    if "text" in out:
        out["text"] = _scrub(out["text"], pairs)
    if "traceback" in out:
        out["traceback"] = [_scrub(t, pairs) for t in out["traceback"]]
    data = out.get("data", {})
    for mime, value in list(data.items()):
        if mime == "image/png":
            data[mime] = _smaller_png(value)
        elif mime.startswith("text/") or mime.endswith(("json", "+xml")):
            if isinstance(value, str):
                data[mime] = _scrub(value, pairs)
            elif isinstance(value, list):
                data[mime] = [_scrub(v, pairs) for v in value]


def _smaller_png(b64: str) -> str:
    """The same image (lossless), re-encoded by Pillow at its smallest."""
    try:
        from PIL import Image

        raw = base64.b64decode(b64)
        img = Image.open(io.BytesIO(raw))
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        if buf.tell() < len(raw):
            return base64.b64encode(buf.getvalue()).decode("ascii")
    except Exception as exc:  # an odd image stays as it was
        log.debug("notes: PNG kept as it was (%s)", exc)
    return b64


def _import_only(source: str) -> bool:
    """True for a set-up cell: imports, and at most the note's ``page.start()`` call."""
    import ast

    try:
        body = ast.parse(source).body
    except SyntaxError:  # IPython magics and the like: not plumbing
        return False

    def setup(node) -> bool:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return True
        call = getattr(node, "value", None)
        return (
            isinstance(node, (ast.Assign, ast.Expr))
            and isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "start"
            and isinstance(call.func.value, ast.Name)
            and call.func.value.id == "page"
        )

    return bool(body) and all(setup(node) for node in body)


def _fold_summaries(nb) -> list[str]:
    """One line per folded code cell, in page order."""
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code" or FOLD_TAG not in cell.metadata.get("tags", []):
            continue
        lines = [ln.strip() for ln in cell.source.splitlines() if ln.strip()]
        first = lines[0] if lines else ""
        if first.startswith("#") and first.lstrip("#").strip():
            text = first.lstrip("#").strip()
        elif _import_only(cell.source):
            mods = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", cell.source, re.M)
            text = "Imports: " + ", ".join(dict.fromkeys(mods))
        else:
            text = "Code"
        out.append(f"{text} ({len(lines)} line{'s' if len(lines) != 1 else ''})")
    return out


# ------------------------------------------------------- finishing the page


_PAGE_LINK = re.compile(
    r'href="(?![a-zA-Z][\w+.-]*:|/|#)([^"#?]+\.(?:md|py))(#[^"]*)?"'
)


def _rewrite_page_links(html: str, page, files) -> str:
    """Point a note's links to other pages (``../notation.md``) at the built pages.

    MkDocs rewrites such links in .md pages; a note's markdown cells are rendered
    by nbconvert, so the hook does it, through MkDocs' own file list.
    """
    src = page.file.src_uri

    def fix(m: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(src), m[1]))
        file = files.get_file_from_path(_state["py_to_page"].get(target, target))
        if file is None and target.startswith(f"{_LANG}/"):  # no twin: the English
            english = target[len(_LANG) + 1 :]
            file = files.get_file_from_path(_state["py_to_page"].get(english, english))
        if file is None or not file.is_documentation_page():
            log.warning("note docs/%s links to %s, which is not a page", src, m[1])
            return m[0]
        return f'href="{file.url_relative_to(page.file)}{m[2] or ""}"'

    return _PAGE_LINK.sub(fix, html)


_DIV = re.compile(r"<div\b|</div\s*>")


def _div_end(html: str, start: int) -> int:
    """Index just past the ``</div>`` closing the ``<div`` at ``start``."""
    depth = 0
    for m in _DIV.finditer(html, start):
        depth += 1 if m[0].startswith("<div") else -1
        if depth == 0:
            return m.end()
    raise ValueError("unbalanced <div> in a rendered note")


_FOLDED_CELL = re.compile(rf'<div\b[^>]*class="[^"]*\bcelltag_{FOLD_TAG}\b[^"]*"')
_INPUT = re.compile(r'<div class="jp-Cell-inputWrapper"')


def _fold_cells(html: str, summaries: list[str], src: str) -> str:
    """Wrap the input of each cell tagged ``fold`` in ``<details>``."""
    from html import escape

    out, pos, n = [], 0, 0
    for cell in _FOLDED_CELL.finditer(html):
        if cell.start() < pos or "jp-CodeCell" not in cell[0]:
            continue
        inp = _INPUT.search(html, cell.end(), _div_end(html, cell.start()))
        if inp is None:
            continue
        end = _div_end(html, inp.start())
        summary = summaries[n] if n < len(summaries) else "Code"
        n += 1
        out += [
            html[pos : inp.start()],
            f'<details class="difflab-fold"><summary>{escape(summary)}</summary>',
            html[inp.start() : end],
            "</details>",
        ]
        pos = end
    if n != len(summaries):
        log.info("notes: docs/%s: %d folded cells, %d found", src, len(summaries), n)
    out.append(html[pos:])
    return "".join(out)


_DATA_IMG = re.compile(
    r'<img\b([^>]*?)\bsrc="data:image/(png|jpeg|gif);base64,([^"]+)"([^>]*)>'
)


def _figure_notes(nb) -> dict[str, dict]:
    """What the kernel said of each PNG figure (:mod:`difflab.notes.figures`), by
    the SHA-256 of its bytes: ``{"alt": ..., "difflab": {measurements}}``."""
    out = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            meta = output.get("metadata", {}).get("image/png", {})
            if png and ("alt" in meta or "difflab" in meta):
                digest = hashlib.sha256(base64.b64decode(png)).hexdigest()
                out[digest] = meta
    return out


def _figure_attrs(meta: dict) -> str:
    """The ``<img>`` attributes of a figure: its alt text and the measurements that
    the browser tests check (``data-min-text-px``, ``data-min-cell-px``,
    ``data-overlaps``, ``data-native-width``)."""
    from html import escape

    found = meta.get("difflab", {})
    attrs = f' alt="{escape(meta["alt"])}"' if meta.get("alt") else ""
    for key, name in (
        ("min_text_px", "min-text-px"),
        ("min_cell_px", "min-cell-px"),
        ("width", "native-width"),
    ):
        if found.get(key) is not None:
            attrs += f' data-{name}="{found[key]}"'
    if "overlaps" in found:
        attrs += f' data-overlaps="{escape(json.dumps(found["overlaps"]))}"'
    return attrs


_ALT = re.compile(r'\s+alt="[^"]*"')


def _extract_images(html: str, note: dict, page) -> str:
    """Figures as files beside the page (``<name>_files/``), loaded lazily, with
    the alt text and measurements the kernel gave them (:func:`_figure_attrs`)."""
    # A Chinese twin (hooks/i18n.py) shares the English page's figure files.
    folder = note.get("figures_dir") or page.file.src_uri[: -len(".ipynb")] + "_files"
    figures = note.get("figures", {})

    def move(m: re.Match) -> str:
        data = base64.b64decode(m[3])
        ext = "jpg" if m[2] == "jpeg" else m[2]
        digest = hashlib.sha256(data).hexdigest()
        uri = f"{folder}/fig-{digest[:12]}.{ext}"
        note["files"][uri] = data
        rel = _href(uri, page)
        attrs = f"{m[1]}{m[4]}".replace(" loading=", " data-loading=").rstrip(" /")
        if digest in figures:
            attrs = _ALT.sub("", attrs) + _figure_attrs(figures[digest])
        return f'<img{attrs} src="{rel}" loading="lazy" decoding="async">'

    return _DATA_IMG.sub(move, html)


_STYLE = re.compile(r'<style type="text/css">(.{2000,}?)</style>', re.S)


def _share_styles(html: str, note: dict, page) -> str:
    """mkdocs-jupyter's notebook CSS (about 0.6 MB, the same on every note) as one
    shared file under ``assets/notes/`` that the browser caches, not inline."""

    def move(m: re.Match) -> str:
        data = m[1].encode()
        uri = f"assets/notes/nb-{hashlib.sha256(data).hexdigest()[:12]}.css"
        note["files"][uri] = data
        return f'<link rel="stylesheet" href="{_href(uri, page)}">'

    return _STYLE.sub(move, html)


def _add_downloads(html: str, page) -> str:
    """Links to the note and its executed notebook, right under the title."""
    note = _state["notes"][page.file.src_uri]
    py, ipynb = note["py"], page.file.src_uri
    zh = note.get("lang") == _LANG
    links = (
        f'<p class="difflab-downloads">{"下载：" if zh else "Download: "}'
        f'<a href="{_href(py, page)}" download title="the note, a py:percent '
        f'script">{posixpath.basename(py)}</a>'
    )
    if note["pending"] is None:
        links += (
            f' · <a href="{_href(ipynb, page)}" download title="the notebook as '
            f'executed for this page">{posixpath.basename(ipynb)}</a>'
            + ("（已执行）" if zh else " (executed)")
        )
    return _after_title(html, links + "</p>")


def _href(site_path: str, page) -> str:
    """Relative URL of ``site_path`` (a path in the built site) from ``page``."""
    return posixpath.relpath(site_path, posixpath.dirname(page.file.dest_uri) or ".")


# ------------------------------------------------------------- bookkeeping


def _log_table(finished: bool) -> None:
    rows = sorted(_state["rows"], key=lambda r: r[0])
    total = time.perf_counter() - (_state["t0"] or time.perf_counter())
    if not rows:
        log.info("notes: no notes in this build (%.1f s in all)", total)
        return
    width = max(len("page"), *(len(r[0]) for r in rows))
    lines = [f"{'page':<{width}}  {'seconds':>8}  status", "-" * (width + 20)]
    for page, seconds, status in rows:
        lines.append(f"{page:<{width}}  {seconds:8.1f}  {status}")
    lines.append("-" * (width + 20))
    lines.append(
        f"{'notes':<{width}}  {sum(r[1] for r in rows):8.1f}  profile "
        f"{_state.get('profile')}; whole build so far {total:.1f} s"
    )
    title = "per-page timing" if finished else "timing of the notes before the error"
    log.info("notes: %s\n%s", title, "\n".join(lines))
    if finished:
        summary = {
            "profile": _state.get("profile"),
            "build_seconds": total,
            "pages": [{"page": p, "seconds": s, "status": st} for p, s, st in rows],
        }
        _state["cache"].mkdir(parents=True, exist_ok=True)
        (_state["cache"] / "last-build.json").write_text(json.dumps(summary, indent=1))


def _evict_stale() -> None:
    """Drop older entries of pages rebuilt here under the same profile."""
    cache = _state["cache"]
    if not cache.is_dir():
        return
    fresh = set()
    for digest in _state["used"]:
        with contextlib.suppress(Exception):
            m = json.loads((cache / f"{digest}.json").read_text())
            fresh.add((m["page"], m["profile"]))
    for meta in cache.glob("*.json"):
        if meta.name == "last-build.json" or meta.stem in _state["used"]:
            continue
        with contextlib.suppress(Exception):
            m = json.loads(meta.read_text())
            if (m["page"], m["profile"]) in fresh:
                meta.with_suffix(".ipynb").unlink(missing_ok=True)
                meta.unlink()
