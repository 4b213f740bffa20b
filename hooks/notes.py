"""MkDocs hook: run the notes before MkDocs reads them; mkdocs-jupyter only renders.

A note is a py:percent file ``docs/<stage>/<name>.py``. The route is plain, and uses
only MkDocs' own events and mkdocs-jupyter's documented options:

1. ``on_files`` (run before every plugin's): for each note the hook computes a key
   and looks for ``.cache/notes/<key>.ipynb``. On a miss it reads the note with
   jupytext, executes it with nbclient (the ``python3`` kernel, working directory
   the project root, ``src/`` first on ``PYTHONPATH``) and stores the executed
   notebook there. The note's entry in MkDocs' file list is then backed by that
   notebook (same page path and URL, so ``nav`` and links keep naming the ``.py``).
2. mkdocs-jupyter, configured with ``include: ["*.ipynb"]`` and ``execute: false``,
   renders the executed notebook like any other; its own HTML cache is keyed on the
   notebook's bytes, so a warm rebuild converts nothing either.
3. ``on_page_content`` finishes the page (see "What a page shows").

The key is a SHA-256 of the note's text, ``difflab.train.cache.source_hash()`` (the
package's own rule for "the code changed"), ``difflab.train.profiles.current_profile()``,
the datasets present in ``difflab.data.common.data_root()``, the kernel name and
``HOOK_VERSION``. Notes named ``_*.py`` are rendered without being executed.

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
...`` (with or without ``--strict``) and nothing is cached for it. Each build logs a
table of the notes (seconds, executed or cached) and writes it to
``.cache/notes/last-build.json``.

Environment: ``DIFFLAB_NOTES_CACHE`` (cache folder, default ``<root>/.cache/notes``),
``DIFFLAB_CELL_TIMEOUT`` (seconds per cell, default 1800: a cell may train a model
on a busy laptop), ``DIFFLAB_NOTES_KEEP_GOING=1`` (run every note even after one
raised, then fail the build naming all that raised: one cold build finds every
broken note instead of the first).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import shutil
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.notes")

HOOK_VERSION = "2"
FOLD_TAG = "fold"
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
    return config


def on_pre_build(config):
    _state.update(notes={}, rows=[], used=set(), t0=time.perf_counter())
    _state["profile"], _state["fingerprint"] = _fingerprint()


@event_priority(100)  # before mkdocs-jupyter decides which files are notebooks
def on_files(files, config):
    pages = _state["cache"] / "pages"
    keep_going = os.environ.get("DIFFLAB_NOTES_KEEP_GOING", "") not in ("", "0")
    failed: list[str] = []
    for file in list(files):
        if not _is_note(file):
            continue
        rel = f"docs/{file.src_uri}"
        t0 = time.perf_counter()
        try:
            ipynb, status = _executed(Path(file.abs_src_path), rel)
        except PluginError as exc:
            if not keep_going:
                raise
            _state["rows"].append((rel, time.perf_counter() - t0, "raised"))
            failed.append(str(exc))
            log.error(f"notes: {rel} raised; running the rest (the errors follow)")
            continue
        _state["rows"].append((rel, time.perf_counter() - t0, status))
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
        _state["notes"][uri] = {
            "py": file.src_uri,
            "source": Path(file.abs_src_path),
            "ipynb": ipynb,
            "folds": _fold_summaries(nbformat.read(ipynb, as_version=4)),
            "files": {},  # site path -> bytes: figures and shared CSS
        }
    if failed:
        raise PluginError(
            f"{len(failed)} note(s) raised (DIFFLAB_NOTES_KEEP_GOING ran the rest):\n"
            + "\n\n".join(failed)
        )
    _state["py_to_page"] = {n["py"]: uri for uri, n in _state["notes"].items()}
    config.nav = _nav_to_pages(config.nav)
    return files


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
    return _add_downloads(html, page)


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
    """(profile, hash of everything outside a note that changes what it prints).

    The rules are the package's own: its source hash, its profile and its data
    folder (which datasets are present decides what ``auto`` loads).
    """
    from difflab.data.common import data_root
    from difflab.train.cache import source_hash
    from difflab.train.profiles import current_profile

    profile = current_profile()
    h = hashlib.sha256(f"v{HOOK_VERSION}|{_state['kernel']}|{profile}|".encode())
    h.update(source_hash().encode())
    data = data_root()
    if data.is_dir():
        for d in sorted(data.iterdir()):
            h.update(d.name.encode())
            if d.is_dir():
                h.update("|".join(sorted(x.name for x in d.iterdir())).encode())
    return profile, h.hexdigest()


def _executed(path: Path, rel: str) -> tuple[Path, str]:
    """The executed (or, for ``_*.py``, converted) notebook of ``path`` and how."""
    run = not path.name.startswith("_")
    key = hashlib.sha256()
    key.update(_state["fingerprint"].encode() if run else f"v{HOOK_VERSION}".encode())
    key.update(path.read_bytes())
    digest = key.hexdigest()[:32]
    cache = _state["cache"]
    ipynb, meta = cache / f"{digest}.ipynb", cache / f"{digest}.json"
    _state["used"].add(digest)
    if ipynb.is_file() and meta.is_file():
        with contextlib.suppress(Exception):
            seconds = json.loads(meta.read_text())["seconds"]
            return ipynb, f"cached (executed in {seconds:.1f} s)" if run else "cached"
    t0 = time.perf_counter()
    if run:
        log.info("notes: executing %s (profile %s)", rel, _state["profile"])
        nb = _execute(path, rel)
    else:
        nb = jupytext.read(path)
    _clean(nb, rel)
    seconds = time.perf_counter() - t0
    cache.mkdir(parents=True, exist_ok=True)
    tmp = ipynb.with_suffix(".tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, ipynb)
    meta.write_text(
        json.dumps({"page": rel, "profile": _state["profile"], "seconds": seconds})
    )
    return ipynb, "executed" if run else "not executed"


def _execute(path: Path, rel: str):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

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
    pythonpath = os.pathsep.join(
        p for p in (str(root / "src"), os.environ.get("PYTHONPATH")) if p
    )
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
    except Exception as exc:  # a timeout, a dead kernel, nbclient's own clean-up
        # (it can fail after the kernel was killed): the page is named either way
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


def _clean(nb, rel: str) -> None:
    """Make an executed notebook fit to publish (see the module docstring)."""
    pairs = _path_replacements()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
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


def _extract_images(html: str, note: dict, page) -> str:
    """Figures as files beside the page (``<name>_files/``), loaded lazily."""
    folder = page.file.src_uri[: -len(".ipynb")] + "_files"

    def move(m: re.Match) -> str:
        data = base64.b64decode(m[3])
        ext = "jpg" if m[2] == "jpeg" else m[2]
        uri = f"{folder}/fig-{hashlib.sha256(data).hexdigest()[:12]}.{ext}"
        note["files"][uri] = data
        rel = _href(uri, page)
        attrs = f"{m[1]}{m[4]}".replace(" loading=", " data-loading=")
        return f'<img{attrs.rstrip(" /")} src="{rel}" loading="lazy" decoding="async">'

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
    py, ipynb = _state["notes"][page.file.src_uri]["py"], page.file.src_uri
    links = (
        '<p class="difflab-downloads">Download: '
        f'<a href="{_href(py, page)}" download title="the note, a py:percent '
        f'script">{posixpath.basename(py)}</a> · '
        f'<a href="{_href(ipynb, page)}" download title="the notebook as executed '
        f'for this page">{posixpath.basename(ipynb)}</a> (executed)</p>'
    )
    m = re.search(r"</h1\s*>", html)
    if m is None:
        return links + html
    return html[: m.end()] + links + html[m.end() :]


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
