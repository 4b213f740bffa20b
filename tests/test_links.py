"""Every internal link of the built site resolves: files exist, anchors exist.

(mkdocs-htmlproofer reports false 404s on notebook pages, hence this checker.)
"""

from __future__ import annotations

import functools
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

SKIP_SCHEMES = {"http", "https", "mailto", "data", "javascript", "tel", "blob"}
LINK_ATTRS = {
    "a": "href",
    "link": "href",
    "img": "src",
    "script": "src",
    "source": "src",
}


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if a.get(key):
                self.ids.add(a[key])
        attr = LINK_ATTRS.get(tag)
        if attr and a.get(attr):
            self.links.append(a[attr])


@functools.cache
def _parse(path: Path) -> _Collector:
    c = _Collector()
    c.feed(path.read_text(encoding="utf-8", errors="replace"))
    return c


def _target(site: Path, page: Path, url: str) -> tuple[Path, str] | None:
    parts = urlsplit(url)
    if parts.scheme in SKIP_SCHEMES or parts.netloc:
        return None
    if parts.path.startswith("/"):
        base = site / unquote(parts.path.lstrip("/"))
    elif parts.path:
        base = page.parent / unquote(parts.path)
    else:
        base = page
    if base.is_dir() or parts.path.endswith("/"):
        base = base / "index.html"
    return base.resolve(), unquote(parts.fragment)


def test_internal_links_and_anchors_resolve(site_dir):
    site = site_dir.resolve()
    broken = []
    checked = 0
    for page in sorted(site.rglob("*.html")):
        if page.name == "404.html":  # its links are relative to wherever it is shown
            continue
        for url in _parse(page).links:
            t = _target(site, page, url)
            if t is None:
                continue
            path, fragment = t
            checked += 1
            where = f"{page.relative_to(site)} -> {url}"
            if not path.is_file():
                broken.append(f"{where}: no file {path}")
            elif not path.is_relative_to(site):
                broken.append(f"{where}: leaves the site")
            elif (
                fragment and path.suffix == ".html" and fragment not in _parse(path).ids
            ):
                broken.append(f"{where}: no anchor #{fragment}")
    assert checked > 0
    assert not broken, f"{len(broken)} broken links:\n" + "\n".join(broken[:40])
