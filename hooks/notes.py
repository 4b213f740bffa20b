"""MkDocs hook: execute the site's notes once, cache them, and time every page.

mkdocs-jupyter turns each py:percent note (``docs/**/*.py``) into a page. Its own
execution runs every note on every build, and its own cache is keyed on the note's
text only, so a change in ``src/difflab`` would be hidden by it. This hook therefore
wraps ``mkdocs_jupyter.convert.nb2html`` (the function both mkdocs-jupyter 0.26 and
0.27 call for each page):

1. The cache key is a SHA-256 of the note's text, every ``src/difflab/**/*.py`` (but
   the unit tests), the
   resolved profile (``DIFFLAB_PROFILE``), the names in the data folder, the kernel
   name and this hook's version.
2. On a hit, the executed notebook is read from ``.cache/notes/<key>.ipynb``; on a
   miss, the hook executes the note with nbclient (the venv's ``python3`` kernel,
   working directory the project root, ``src/`` first on ``PYTHONPATH``, inline
   matplotlib, a generous per-cell timeout) and stores the result.
3. mkdocs-jupyter then converts the executed notebook (``execute=False``), so the
   page shows the outputs of the code that ran; the HTML is kept beside it
   (``<key>-<options>.html``) so that a warm rebuild converts nothing either.

A note that raises fails the build with ``Error: note docs/<stage>/<name>.py raised
...`` and a non-zero exit (with or without ``--strict``). At the end of each build
the hook logs a table: page, seconds, and whether it was executed or cached.

Environment: ``DIFFLAB_NOTES_CACHE`` (cache folder, default ``<root>/.cache/notes``),
``DIFFLAB_CELL_TIMEOUT`` (seconds per cell, default 1800: a cell may train a model on a busy laptop).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import re
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from mkdocs.exceptions import PluginError

log = logging.getLogger("mkdocs.hooks.notes")

HOOK_VERSION = "1"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

_state: dict = {
    "root": None,
    "cache": None,
    "kernel": "python3",
    "fingerprint": None,
    "profile": None,
    "rows": [],
    "used": set(),
    "t0": None,
}


# --------------------------------------------------------------------- config


def on_config(config):
    root = Path(config.config_file_path).resolve().parent
    _state["root"] = root
    _state["docs"] = Path(config.docs_dir).resolve()
    _state["dir_urls"] = bool(config.use_directory_urls)
    cache = os.environ.get("DIFFLAB_NOTES_CACHE") or root / ".cache" / "notes"
    _state["cache"] = Path(cache)
    plugin = config.plugins.get("mkdocs-jupyter")
    if plugin is None:
        raise PluginError(
            "hooks/notes.py needs the mkdocs-jupyter plugin in mkdocs.yml."
        )
    if plugin.config.get("cache"):
        # Its cache ignores src/; ours does not. Never let both answer.
        log.info(
            "notes: turning mkdocs-jupyter's own cache off (hooks/notes.py caches)"
        )
        plugin.config["cache"] = False
    _state["kernel"] = plugin.config.get("kernel_name") or "python3"
    _install_wrapper()
    return config


def on_pre_build(config):
    _state["rows"] = []
    _state["used"] = set()
    _state["t0"] = time.perf_counter()
    _state["profile"] = _resolved_profile()
    _state["fingerprint"] = _fingerprint(_state["root"], _state["profile"])


def on_build_error(error):
    """A failed build still says how long the notes before the failure took."""
    _log_table(finished=False)


def on_post_build(config):
    _evict_stale()
    _log_table(finished=True)


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
    notes_s = sum(r[1] for r in rows)
    lines.append("-" * (width + 20))
    lines.append(
        f"{'notes':<{width}}  {notes_s:8.1f}  profile {_state['profile']}; "
        f"whole build so far {total:.1f} s"
    )
    title = "per-page timing" if finished else "timing of the notes before the error"
    log.info("notes: %s\n%s", title, "\n".join(lines))
    if not finished:
        return
    summary = {
        "profile": _state["profile"],
        "build_seconds": total,
        "pages": [{"page": p, "seconds": s, "status": st} for p, s, st in rows],
    }
    _state["cache"].mkdir(parents=True, exist_ok=True)
    (_state["cache"] / "last-build.json").write_text(json.dumps(summary, indent=1))


_JUPYTER_MATHJAX = re.compile(
    r"<script data-mkdocs-jupyter-mathjax=[^>]*>.*?</script>", re.S
)


def on_post_page(output, page, config):
    """Drop mkdocs-jupyter 0.27's own MathJax loader (0.26 has none).

    It points at a CDN and typesets notebook cells itself, racing the site's
    configuration (docs/javascripts/mathjax.js), which already typesets them with
    the vendored MathJax.
    """
    return _JUPYTER_MATHJAX.sub("", output)


# ------------------------------------------------------------ the wrapper


def _install_wrapper() -> None:
    from mkdocs_jupyter import convert

    # `mkdocs serve` loads this hook afresh for every rebuild while mkdocs_jupyter
    # stays imported: always wrap the original, with this load's state.
    original = getattr(convert.nb2html, "_difflab_original", convert.nb2html)

    def nb2html(nb_path, *args, execute=False, **kwargs):
        t0 = time.perf_counter()
        rel = _rel(nb_path)
        if not execute:
            html = original(nb_path, *args, execute=False, **kwargs)
            html = _rewrite_page_links(html, Path(nb_path))
            _state["rows"].append((rel, time.perf_counter() - t0, "not executed"))
            return html
        nb, status, digest = _executed_notebook(Path(nb_path), rel)
        html_path = _state["cache"] / f"{digest}-{_options_key(args, kwargs)}.html"
        if html_path.is_file() and status != "executed":
            html = html_path.read_text(encoding="utf-8")
        else:
            html = _convert_executed(original, nb_path, nb, args, kwargs)
            html_path.write_text(html, encoding="utf-8")
        html = _rewrite_page_links(html, Path(nb_path))
        _state["rows"].append((rel, time.perf_counter() - t0, status))
        return html

    nb2html._difflab_original = original
    convert.nb2html = nb2html


def _options_key(args, kwargs) -> str:
    """Hash of how mkdocs-jupyter asked for the page to be converted."""
    from mkdocs_jupyter import __about__

    opts = {k: v for k, v in kwargs.items() if k != "image_dependencies"}
    text = f"{__about__.__version__}|{args!r}|{sorted(opts.items())!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _convert_executed(original, nb_path, nb, args, kwargs):
    """Run mkdocs-jupyter's converter on ``nb`` (already executed) for ``nb_path``.

    nb2html reads a .py note with ``jupytext.read(nb_path)``; for this one call that
    name answers with the executed notebook, so the page keeps mkdocs-jupyter's
    normal .py rendering (title, anchors, source link) plus the outputs.
    """
    module = sys.modules.get("mkdocs_jupyter.nbconvert2")
    if module is None or getattr(module, "jupytext", None) is not jupytext:
        raise PluginError(
            "hooks/notes.py: this mkdocs-jupyter version converts notes differently "
            "(mkdocs_jupyter.nbconvert2.jupytext not found); pin mkdocs-jupyter<0.28."
        )
    target = os.path.abspath(nb_path)

    class _Reader:
        def __getattr__(self, name):
            return getattr(jupytext, name)

        def read(self, path, *a, **k):
            if os.path.abspath(str(path)) == target:
                return nbformat.from_dict(json.loads(json.dumps(nb)))
            return jupytext.read(path, *a, **k)

    module.jupytext = _Reader()
    try:
        return original(nb_path, *args, execute=False, **kwargs)
    finally:
        module.jupytext = jupytext


_PAGE_LINK = re.compile(
    r'href="(?![a-zA-Z][\w+.-]*:|/|#)([^"#?]+\.(?:md|py))(#[^"]*)?"'
)


def _page_url(src: str) -> str:
    """The built path of page ``src`` (relative to docs/), as MkDocs writes it."""
    stem = src.rsplit(".", 1)[0]
    if not _state["dir_urls"]:
        return stem + ".html"
    if stem == "index" or stem.endswith("/index"):
        return stem + ".html"
    return stem + "/index.html"


def _rewrite_page_links(html: str, note: Path) -> str:
    """Point a note's links to other pages (``../notation.md``) at the built pages.

    MkDocs rewrites such links in .md pages; nbconvert renders a note's markdown
    cells without MkDocs, so the hook does it. A link to a page that does not
    exist is a warning (an error under --strict), as it is for .md pages.
    """
    docs = _state["docs"]
    src = note.resolve().relative_to(docs).as_posix()
    here = posixpath.dirname(_page_url(src))

    def fix(m: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(src), m[1]))
        if not (docs / target).is_file():
            log.warning("note docs/%s links to %s, which is not a page", src, m[1])
            return m[0]
        url = posixpath.relpath(_page_url(target), here or ".")
        return f'href="{url}{m[2] or ""}"'

    return _PAGE_LINK.sub(fix, html)


# ------------------------------------------------------- execution + cache


def _executed_notebook(path: Path, rel: str):
    key = hashlib.sha256()
    key.update(_state["fingerprint"].encode())
    key.update(path.read_bytes())
    digest = key.hexdigest()[:32]
    cache = _state["cache"]
    ipynb = cache / f"{digest}.ipynb"
    meta = cache / f"{digest}.json"
    _state["used"].add(digest)
    if ipynb.exists():
        try:
            nb = nbformat.read(ipynb, as_version=4)
            seconds = json.loads(meta.read_text()).get("seconds", 0.0)
            return nb, f"cached (executed in {seconds:.1f} s)", digest
        except Exception as exc:  # a corrupt entry is executed again
            log.info("notes: ignoring unreadable cache entry %s (%s)", ipynb, exc)
    log.info("notes: executing %s (profile %s)", rel, _state["profile"])
    t0 = time.perf_counter()
    nb = _execute(path, rel)
    seconds = time.perf_counter() - t0
    cache.mkdir(parents=True, exist_ok=True)
    tmp = ipynb.with_suffix(".tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, ipynb)
    meta.write_text(
        json.dumps({"page": rel, "profile": _state["profile"], "seconds": seconds})
    )
    return nb, "executed", digest


def _execute(path: Path, rel: str):
    from nbclient import NotebookClient
    from nbclient.exceptions import (
        CellExecutionError,
        CellTimeoutError,
        DeadKernelError,
    )

    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {
        "name": _state["kernel"],
        "display_name": "Python 3",
        "language": "python",
    }
    root = _state["root"]
    client = NotebookClient(
        nb,
        timeout=int(os.environ.get("DIFFLAB_CELL_TIMEOUT", "1800")),
        kernel_name=_state["kernel"],
        allow_errors=False,
        record_timing=False,
        # Quiet the kernel's own log (its "TCP without encryption" notice on every
        # start); errors in the note still arrive through the execution messages.
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
        resources={"metadata": {"path": str(root)}},
    )
    src = str(root / "src")
    pythonpath = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    env = {
        # ipykernel's inline backend, so plt.show() puts the figure in the page.
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "PYTHONPATH": pythonpath,
        "TQDM_DISABLE": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "DIFFLAB_PROFILE": _state["profile"],
    }
    try:
        with _environ(env):
            client.execute()
    except CellExecutionError as exc:
        raise PluginError(
            f"note {rel} raised while executing, so its page cannot be built:\n"
            f"{_ANSI.sub('', str(exc))}"
        ) from None
    except (CellTimeoutError, DeadKernelError, RuntimeError, OSError) as exc:
        raise PluginError(
            f"note {rel} could not be executed: {type(exc).__name__}: "
            f"{_ANSI.sub('', str(exc))}"
        ) from None
    return nb


@contextlib.contextmanager
def _environ(values: dict):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _resolved_profile() -> str:
    """The profile the notes will run under (what ``current_profile`` answers)."""
    name = os.environ.get("DIFFLAB_PROFILE", "").strip().lower()
    if name:
        return name
    try:
        sys.path.insert(0, str(_state["root"] / "src"))
        from difflab.train.profiles import current_profile

        return current_profile()
    except Exception:  # no package yet: the notes decide
        return "auto"
    finally:
        sys.path.pop(0)


def _fingerprint(root: Path, profile: str) -> str:
    """Hash of everything outside a note that changes what the note prints."""
    h = hashlib.sha256(f"v{HOOK_VERSION}|{_state['kernel']}|{profile}|".encode())
    src = root / "src" / "difflab"
    for f in sorted(src.rglob("*.py")) if src.is_dir() else []:
        if {"__pycache__", "tests"} & set(f.relative_to(src).parts):
            continue  # the unit tests do not change what a note prints
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    data = Path(os.environ.get("DIFFLAB_DATA") or root / "data")
    if data.is_dir():  # which datasets are present decides what "auto" loads
        for d in sorted(data.iterdir()):
            h.update(d.name.encode())
            if d.is_dir():
                h.update("|".join(sorted(x.name for x in d.iterdir())).encode())
    return h.hexdigest()


def _evict_stale() -> None:
    """Drop older entries of pages rebuilt here under the same profile."""
    cache = _state["cache"]
    if not cache or not cache.is_dir():
        return
    fresh = {}
    for digest in _state["used"]:
        with contextlib.suppress(Exception):
            m = json.loads((cache / f"{digest}.json").read_text())
            fresh[(m["page"], m["profile"])] = digest
    for meta in cache.glob("*.json"):
        if meta.name == "last-build.json" or meta.stem in _state["used"]:
            continue
        with contextlib.suppress(Exception):
            m = json.loads(meta.read_text())
            if (m["page"], m["profile"]) in fresh:
                meta.with_suffix(".ipynb").unlink(missing_ok=True)
                for html in cache.glob(f"{meta.stem}-*.html"):
                    html.unlink()
                meta.unlink()


def _rel(path) -> str:
    try:
        return str(Path(path).resolve().relative_to(_state["root"]))
    except ValueError:
        return str(path)
