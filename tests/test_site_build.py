"""The site builds with --strict, every page is there, and it needs nothing online."""

from __future__ import annotations

import os
import re

import pytest
from conftest import doc_pages, html_of


def test_site_builds_strict_with_timing_table(site_build):
    if site_build["log"] is None:
        pytest.skip("DIFFLAB_SITE_DIR given: the site was built elsewhere")
    log = site_build["log"]
    assert "WARNING" not in log, log[-4000:]
    notes = [p for p in doc_pages() if p.endswith(".py")]
    if notes:
        assert "notes: per-page timing" in log, log[-4000:]
        for note in notes:
            assert f"docs/{note}" in log, f"{note} missing from the timing table"


@pytest.mark.parametrize("page", doc_pages())
def test_every_page_is_built(site_dir, page):
    assert (site_dir / html_of(page)).is_file(), f"docs/{page} was not built"


def test_notes_ship_their_source(site_dir):
    for page in doc_pages():
        if page.endswith(".py"):
            assert (site_dir / page).is_file(), f"source of docs/{page} not in the site"


def test_mathjax_is_vendored(site_dir):
    mj = site_dir / "assets" / "vendor" / "mathjax"
    assert (mj / "tex-chtml.js").is_file()
    fonts = list((mj / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert len(fonts) > 10, "MathJax's CHTML fonts are not vendored"


def test_no_page_loads_anything_from_elsewhere(site_dir):
    """Static check (the browser test checks the requests): no http(s) src or css."""
    pattern = re.compile(
        r"""<(?:script|img|iframe|source)\b[^>]*\bsrc=["']((?:https?:)?//[^"']+)"""
        r"""|<link\b[^>]*\brel=["']stylesheet["'][^>]*\bhref=["']((?:https?:)?//[^"']+)""",
        re.I,
    )
    offenders = []
    for html in site_dir.rglob("*.html"):
        for m in pattern.finditer(html.read_text(encoding="utf-8")):
            offenders.append(
                f"{html.relative_to(site_dir)}: {m.group(1) or m.group(2)}"
            )
    assert not offenders, "\n".join(offenders[:20])


# ------------------------------------------------ what the published pages hold

PAGE_BUDGET = 3_000_000  # bytes: a page's HTML plus the figures it loads
MACHINE_PATH = re.compile(
    r"(?<![\w.~:/-])/(?:home|root|work|tmp|Users|usr|opt|var|srv|mnt|private)/[\w.-]"
)
ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):`")


def _notes() -> list[str]:
    return [p for p in doc_pages() if p.endswith(".py")]


def test_no_stderr_cell_and_no_path_of_the_build_machine(site_dir):
    import sys

    from conftest import REPO

    exact = {str(REPO), str(REPO.resolve()), sys.prefix, os.path.realpath(sys.prefix)}
    offenders = []
    for html in sorted(site_dir.rglob("*.html")):
        text = html.read_text(encoding="utf-8")
        rel = html.relative_to(site_dir)
        if "application/vnd.jupyter.stderr" in text:
            offenders.append(f"{rel}: a stderr output cell")
        for m in MACHINE_PATH.finditer(text):
            offenders.append(f"{rel}: {text[m.start() : m.start() + 60]!r}")
        offenders += [f"{rel}: {p}" for p in exact if p in text]
        # A warning printed by running code; the API pages may name one in prose.
        if rel.parts[0] != "api" and re.search(
            r"\b(?:Tqdm|User|Runtime|Future|Deprecation)Warning\b", text
        ):
            offenders.append(f"{rel}: a warning")
    assert not offenders, "\n".join(offenders[:20])


@pytest.mark.parametrize("page", _notes())
def test_note_offers_downloads_prompts_hidden_figures_lazy(site_dir, page):
    html_path = site_dir / html_of(page)
    html = html_path.read_text(encoding="utf-8")
    m = re.search(r'<p class="difflab-downloads">(.*?)</p>', html, re.S)
    assert m, "no downloads line under the title"
    hrefs = re.findall(r'href="([^"]+)"', m[1])
    assert [h.rsplit(".", 1)[-1] for h in hrefs] == ["py", "ipynb"], hrefs
    for href in hrefs:  # relative links: they work from disk and over http
        assert (html_path.parent / href).is_file(), href
    assert "jp-InputPrompt" not in html, "input prompts shown"
    assert "data:image/png" not in html, "figures embedded as base64"
    size = len(html.encode())
    for tag in re.findall(r"<img\b[^>]*>", html):
        src = re.search(r'src="([^"]+)"', tag)
        if src and "_files/fig-" in src[1]:
            assert 'loading="lazy"' in tag
            size += (html_path.parent / src[1]).stat().st_size
    assert size < PAGE_BUDGET, f"{page}: {size} bytes with its figures"


def test_every_page_under_the_budget(site_dir):
    heavy = [
        f"{p.relative_to(site_dir)}: {p.stat().st_size}"
        for p in site_dir.rglob("*.html")
        if p.stat().st_size > PAGE_BUDGET
    ]
    assert not heavy, heavy


def test_api_pages_one_per_part_every_module_once_no_literal_roles(site_dir):
    from conftest import REPO

    sys_path = str(REPO / "hooks")
    import sys

    sys.path.insert(0, sys_path)
    try:
        from site_nav import api_parts
    finally:
        sys.path.remove(sys_path)
    parts = api_parts(REPO / "src" / "difflab")
    assert [p for p, _ in parts][:4] == ["core", "layers", "foundations", "nets"]
    seen = {}
    for part, mods in parts:
        html = (site_dir / "api" / f"{part}.html").read_text(encoding="utf-8")
        assert not ROLE.search(html), f"api/{part}.html prints a Sphinx role"
        for mod in mods:
            if re.search(rf'id="difflab\.{re.escape(mod)}"', html):
                seen[mod] = seen.get(mod, 0) + 1
    every = [m for _, mods in parts for m in mods]
    assert {m: seen.get(m, 0) for m in every} == dict.fromkeys(every, 1)


def test_no_built_page_carries_the_serve_notice(site_dir):
    """The "results coming" notice is for ``mkdocs serve``; a build executes all."""
    offenders = [
        str(html.relative_to(site_dir))
        for html in site_dir.rglob("*.html")
        if "difflab-pending" in html.read_text(encoding="utf-8")
    ]
    assert not offenders, offenders


STAND_IN_PAGES = {  # page: (the stand-in's name in the provenance box, fetch command)
    "practice/mnist.py": ("digits", "bash download-datasets.sh mnist"),
    "practice/cifar10.py": ("digits", "bash download-datasets.sh cifar10"),
    "applications/audio.py": ("tones", "bash download-datasets.sh fsdd"),
    "applications/latent-diffusion.py": ("digits", "bash download-datasets.sh mnist"),
    "applications/stable-diffusion.py": ("digits", "bash download-datasets.sh mnist"),
    "applications/conditioning.py": ("digits", "bash download-datasets.sh mnist"),
    "frontier/flow-matching.py": (
        "synthetic Gaussian mixture (eight Gaussians); digits",
        "bash download-datasets.sh mnist",
    ),
}


@pytest.mark.parametrize("page", sorted(STAND_IN_PAGES))
def test_a_page_built_on_stand_in_data_says_so_under_its_title(site_dir, page):
    """A page built on its stand-in (as its provenance box says) carries one
    notice right under its title, with the command that fetches the data; a
    page built on the real data carries none."""
    stand_in, command = STAND_IN_PAGES[page]
    text = (site_dir / html_of(page)).read_text(encoding="utf-8")
    used = re.search(r"dataset <b>([^<]+)</b>", text)
    assert used is not None, f"{page}: no dataset in the provenance box"
    notices = text.count("difflab-data-notice")
    if used[1] != stand_in:
        assert notices == 0, (page, used[1])
        return
    assert notices == 1, (page, notices)
    title = re.search(r"</h1\s*>", text)
    assert title is not None
    after = text[title.end() :]
    at = after.index('<div class="admonition warning difflab-data-notice">')
    # only the page's one-line paragraphs (orientation, downloads) before it
    assert "<div" not in after[:at] and "<h2" not in after[:at], after[:at]
    assert command in after[at : at + 2000]
