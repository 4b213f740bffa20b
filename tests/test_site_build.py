"""The site builds with --strict, every page is there, and it needs nothing online."""

from __future__ import annotations

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
