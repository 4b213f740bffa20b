"""Fixtures of the site tests: one --strict build of the whole site per session.

``site_dir`` builds the site once (quick profile, ``mkdocs build --strict``) into a
temporary folder; executed notes are reused from ``.cache/notes`` as in any build.
Set ``DIFFLAB_SITE_DIR=/path/to/site`` to test an already built site instead (for
example after ``make build``: ``DIFFLAB_SITE_DIR=site make test-site``); ``DIFFLAB_DOCS_DIR`` names
the docs tree it was built from when that is not this repository's ``docs/``.
``site_url`` serves that folder on 127.0.0.1 (random port) from a thread.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The docs tree the tested site was built from (another one only with DIFFLAB_SITE_DIR).
DOCS = Path(os.environ.get("DIFFLAB_DOCS_DIR") or REPO / "docs").resolve()
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


# The first test that asks for the site waits for the whole build (cold: up to
# twenty minutes on two cores), so those tests get a long pytest-timeout.
BUILD_TIMEOUT_S = 60 * 60


def pytest_collection_modifyitems(items):
    for item in items:
        if "site_build" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_S), append=False)


def doc_pages() -> list[str]:
    """Every page source under docs/, as a path relative to docs/ (posix)."""
    pages = []
    for p in sorted(DOCS.rglob("*")):
        rel = p.relative_to(DOCS)
        if rel.parts[0] in ("assets", "javascripts", "stylesheets"):
            continue
        if p.name.endswith(".zh.md"):  # a translation (the Chinese edition), not a page
            continue
        if p.suffix == ".md" or (p.suffix == ".py" and not p.name.startswith("_")):
            pages.append(rel.as_posix())
    return pages


def html_of(page: str) -> str:
    """The built file of a page (use_directory_urls is false in mkdocs.yml)."""
    return str(Path(page).with_suffix(".html").as_posix())


def mkdocs_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.setdefault("DIFFLAB_PROFILE", "quick")
    env["NO_MKDOCS_2_WARNING"] = "1"
    env.update(extra)
    return env


def stub_translations(root: Path) -> None:
    """Give every page of the site copy ``root`` that has no Chinese translation a
    stub one (each block holding the English, as ``hooks/i18n_units.py skeleton``
    writes it), so that a test's strict build is about what the test tests."""
    sys.path.insert(0, str(REPO / "hooks"))
    try:
        import i18n_units
    finally:
        sys.path.pop(0)
    for page in i18n_units.pages(root / "docs"):
        tr = i18n_units.translation_path(page)
        if not tr.exists():
            tr.write_text(i18n_units.skeleton(page))


def run_mkdocs(
    args: list[str], cwd: Path, env: dict, timeout: float, *, stubs: bool = True
):
    """Run ``python -m mkdocs`` of this interpreter; returns CompletedProcess.

    In a site copy (``cwd`` is not this repository) the pages a test wrote get stub
    translations first (:func:`stub_translations`; ``stubs=False`` to keep them out).
    """
    if stubs and Path(cwd).resolve() != REPO and (Path(cwd) / "docs").is_dir():
        stub_translations(Path(cwd))
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def copy_config(root: Path) -> None:
    """This repository's mkdocs.yml into ``root``, for a site that holds only some of
    the pages: its nav leaves out the rest (``tests/partial_nav.py``, registered
    first), where the real build fails on a nav entry without a file."""
    config = (REPO / "mkdocs.yml").read_text()
    hook = f"hooks:\n  - {REPO / 'tests' / 'partial_nav.py'}\n"
    assert config.count("hooks:\n") == 1, "mkdocs.yml: one hooks: list expected"
    (root / "mkdocs.yml").write_text(config.replace("hooks:\n", hook))
    shutil.copytree(REPO / "overrides", root / "overrides")  # theme.custom_dir


def site_copy(tmp: Path, *, pages: bool = True) -> Path:
    """A checkout to build small sites in: mkdocs.yml, hooks and docs/ without the
    notes and the API page (``pages=False``: without the .md pages either, a home
    page instead, so a strict build has no link to a missing note); ``src`` is a
    link to this repository's package."""
    root = tmp / "repo"
    root.mkdir()
    copy_config(root)
    shutil.copytree(
        REPO / "hooks", root / "hooks", ignore=shutil.ignore_patterns("__pycache__")
    )

    def skip(folder, names):
        top = Path(folder).resolve() == (REPO / "docs").resolve()
        return [
            n
            for n in names
            if n.endswith(".py")
            or n == "api.md"
            or (not pages and (n.endswith(".md") or (top and n in _STAGES)))
        ]

    shutil.copytree(REPO / "docs", root / "docs", ignore=skip)
    if not pages:
        (root / "docs" / "index.md").write_text("# Home\n\nA small site.\n")
    (root / "src").symlink_to(REPO / "src", target_is_directory=True)
    return root


_STAGES = ("foundations", "diffusion", "deeper", "applications", "practice", "frontier")


@pytest.fixture(scope="session")
def site_build(tmp_path_factory) -> dict:
    """Build the site once: {"dir": Path, "log": str | None, "seconds": float}."""
    reuse = os.environ.get("DIFFLAB_SITE_DIR")
    if reuse:
        site = Path(reuse).resolve()
        if not (site / "index.html").is_file():
            pytest.fail(f"DIFFLAB_SITE_DIR={reuse} holds no built site (no index.html)")
        return {"dir": site, "log": None, "seconds": 0.0}
    out = tmp_path_factory.mktemp("site")
    t0 = time.perf_counter()
    res = run_mkdocs(
        ["build", "--strict", "--site-dir", str(out)],
        REPO,
        mkdocs_env(),
        BUILD_TIMEOUT_S,
    )
    seconds = time.perf_counter() - t0
    log = res.stdout + res.stderr
    (out.parent / "mkdocs-build.log").write_text(log)
    if res.returncode != 0:
        pytest.fail(f"mkdocs build --strict failed ({res.returncode}):\n{log[-6000:]}")
    return {"dir": out, "log": log, "seconds": seconds}


@pytest.fixture(scope="session")
def site_dir(site_build) -> Path:
    return site_build["dir"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    origin = ""  # http://127.0.0.1:<port>/, set once the server has its port

    def log_message(self, *args):  # keep pytest output readable
        pass

    def do_GET(self):
        if self.path.split("?")[0] != "/sitemap.xml":
            return super().do_GET()
        # The sitemap names pages under site_url (mkdocs.yml); Material's instant
        # navigation only follows links found there, so serve it as if the site
        # were published here, the way it is at its real address.
        text = (Path(self.directory) / "sitemap.xml").read_text(encoding="utf-8")
        locs = re.findall(r"<loc>([^<]*)</loc>", text)
        base = min(locs, key=len).rsplit("/", 1)[0] + "/" if locs else ""
        body = (text.replace(base, self.origin) if base else text).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="session")
def site_url(site_dir):
    handler = functools.partial(_QuietHandler, directory=str(site_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    _QuietHandler.origin = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# One Chromium for the whole session, shared by every browser test module
# (Playwright's sync API cannot run two instances in one process).
@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(
                "CI needs Debian's Chromium at /usr/bin/chromium (.ci/run installs it)"
            )
        pytest.skip(
            "no /usr/bin/chromium (apt-get install -y chromium); not CI, so skipped"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip(
            "the playwright Python package is not installed (pip install -e .[test])"
        )
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()
