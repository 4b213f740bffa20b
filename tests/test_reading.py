"""The site reads like a book: checks of what a reader sees (issue 9).

Home links every page; every note has the orientation line, one provenance box at
the top, previous/next links, results as HTML tables, no literal ``**`` and no
float noise; the table of contents and the search index hold no TeX; figures are
readable at desktop width and fill a phone's width; no page scrolls sideways on a
phone except inside its own scroll boxes.

How figure text is measured. ``difflab.notes.page.start`` draws every figure at
``FIGURE_DPI`` (100) dots per inch with fonts of at least ``MIN_FONT_PT`` (9 pt)
and writes retina PNGs (twice the pixels, with the figure's natural CSS width in
the output's metadata, which nbconvert writes as the ``width`` attribute). A font
of ``p`` points is therefore ``p * FIGURE_DPI / 72`` CSS pixels high at natural
size, and ``scale = displayed width / natural width`` times that as shown. The
test asserts ``scale >= 2/3`` and that the smallest house font is at least
``MIN_TEXT_PX`` pixels high at 1280 px.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from conftest import doc_pages, html_of

from difflab.notes.page import FIGURE_DPI, MIN_FONT_PT

NOTES = [p for p in doc_pages() if p.endswith(".py")]
STAGE_PAGES = [p for p in doc_pages() if "/" in p]
MIN_SCALE = 2 / 3
MIN_TEXT_PX = 9.0
TEX = re.compile(r"\$|\\[A-Za-z]+|\\\(|\\\[")
FLOAT_NOISE = re.compile(r"\d\.\d{12,}")


def article(site_dir, page: str) -> str:
    html = (site_dir / html_of(page)).read_text(encoding="utf-8")
    return html.split("<article", 1)[-1].split("</article>", 1)[0]


class _Text(HTMLParser):
    """Visible text of a fragment (no script/style); ``prose_only``: only the text
    of markdown cells and of outputs, without code."""

    VOID = {"br", "img", "hr", "input", "meta", "link", "wbr", "source", "path"}

    def __init__(self, prose_only: bool = False):
        super().__init__(convert_charrefs=True)
        self.parts, self.prose_only = [], prose_only
        self.stack: list[tuple[str, bool]] = []  # (tag, inside prose)

    def _prose(self) -> bool:
        return bool(self.stack) and self.stack[-1][1]

    def handle_starttag(self, tag, attrs):
        if tag in ("td", "th"):  # cells of a row are separate words, not one number
            self.parts.append(" ")
        if tag in self.VOID:
            return
        cls = dict(attrs).get("class") or ""
        inside = self._prose() if self.stack else not self.prose_only
        if "jp-RenderedMarkdown" in cls or "jp-OutputArea-output" in cls:
            inside = True
        if tag in ("script", "style", "code") or "jp-InputArea" in cls:
            inside = False
        self.stack.append((tag, inside))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        if self._prose() if self.stack else not self.prose_only:
            self.parts.append(data)


def text_of(fragment: str, prose_only: bool = False) -> str:
    p = _Text(prose_only)
    p.feed(fragment)
    return "".join(p.parts)


# ------------------------------------------------------------------ static


def test_home_links_every_page_of_the_path(site_dir):
    home = article(site_dir, "index.md")
    missing = [p for p in STAGE_PAGES if f'href="{html_of(p)}"' not in home]
    assert not missing, f"the home page does not link {missing}"
    assert "difflab-home-figure" in home, "the home page lost its build-time figure"
    assert (site_dir / "assets/generated/home-noise.png").stat().st_size > 1000


@pytest.mark.parametrize("page_src", STAGE_PAGES)
def test_orientation_line_under_the_title(site_dir, page_src):
    html = article(site_dir, page_src)
    m = re.search(r"</h1>\s*<p class=\"difflab-orientation\">(.*?)</p>", html, re.S)
    assert m, "no orientation line right under the title"
    assert re.search(r"\d+ min read", m[1]), m[1]


@pytest.mark.parametrize("page_src", NOTES)
def test_provenance_box_once_at_the_top(site_dir, page_src):
    html = article(site_dir, page_src)
    boxes = [m.start() for m in re.finditer(r'class="difflab-provenance"', html)]
    assert len(boxes) == 1, f"{len(boxes)} provenance boxes"
    box = text_of(html[boxes[0] : boxes[0] + 2000].split("</div>", 1)[0])
    assert "profile" in box and "device" in box and "executed in" in box, box
    cells_before = len(
        re.findall(r"<div [^>]*class=\"[^\"]*jp-CodeCell", html[: boxes[0]])
    )
    assert cells_before <= 2, f"the box comes after {cells_before} code cells"


@pytest.mark.parametrize("page_src", NOTES)
def test_no_literal_markdown_or_float_noise_in_outputs(site_dir, page_src):
    text = text_of(article(site_dir, page_src), prose_only=True)
    assert "**" not in text, "literal ** (unrendered Markdown) in the page"
    noise = FLOAT_NOISE.findall(text)
    assert not noise, f"unformatted floats: {noise[:5]}"


@pytest.mark.parametrize("page_src", NOTES)
def test_results_are_html_tables_not_printed_pipes(site_dir, page_src):
    html = article(site_dir, page_src)
    for pre in re.findall(
        r'<div class="jp-RenderedText[^>]*>\s*<pre>(.*?)</pre>', html, re.S
    ):
        pipes = [line for line in text_of(pre).splitlines() if line.count("|") >= 3]
        assert len(pipes) < 3, f"a table printed as text: {pipes[:3]}"


def test_pages_that_discuss_results_show_tables(site_dir):
    for page in ("deeper/sde-sandbox.py", "deeper/ddim.py", "foundations/vae.py"):
        if page in NOTES:
            assert 'class="difflab-table"' in article(site_dir, page), page


@pytest.mark.parametrize("page_src", doc_pages())
def test_table_of_contents_has_no_tex(site_dir, page_src):
    html = (site_dir / html_of(page_src)).read_text(encoding="utf-8")
    labels = re.findall(
        r'<a href="#[^"]*" class="md-nav__link">\s*<span class="md-ellipsis">(.*?)</span>',
        html,
        re.S,
    )
    raw = [text_of(x).strip() for x in labels if TEX.search(text_of(x))]
    assert not raw, f"TeX in the table of contents: {raw[:4]}"


def test_search_index_has_no_tex(site_dir):
    docs = json.loads((site_dir / "search/search_index.json").read_text())["docs"]
    titles = [d["title"] for d in docs if TEX.search(d["title"])]
    assert not titles, f"TeX in search titles: {titles[:4]}"
    texts = [d["location"] for d in docs if re.search(r"\$[^$]+\$|\\\(", d["text"])]
    assert not texts, f"TeX in search texts: {texts[:4]}"


def test_search_index_has_no_code_inputs(site_dir):
    docs = json.loads((site_dir / "search/search_index.json").read_text())["docs"]
    # The notes' code is excluded; an API docstring may show the import as usage.
    imports = [
        d["location"]
        for d in docs
        if "from difflab.notes import page" in d["text"]
        and not d["location"].startswith("api/")
    ]
    assert not imports, f"code cells indexed for search: {imports[:4]}"


@pytest.mark.parametrize("page_src", NOTES)
def test_previous_and_next_links_in_the_footer(site_dir, page_src):
    html = (site_dir / html_of(page_src)).read_text(encoding="utf-8")
    links = re.findall(r'class="md-footer__link md-footer__link--(prev|next)"', html)
    assert links, "no previous/next links in the footer"


# ------------------------------------------------------------------ browser

FIGURES = """
async () => {
  await (window.MathJax && MathJax.startup ? MathJax.startup.promise : null);
  const imgs = Array.from(document.querySelectorAll(
    "article .jp-RenderedImage img, article img.difflab-home-figure"));
  imgs.forEach((i) => { i.loading = "eager"; });
  await Promise.all(imgs.map((i) => i.complete ? null : new Promise((r) => {
    i.addEventListener("load", r); i.addEventListener("error", r); })));
  const col = document.querySelector("article").getBoundingClientRect().width;
  return {col, imgs: imgs.map((i) => ({
    shown: i.getBoundingClientRect().width,
    natural: i.getAttribute("width") ? parseFloat(i.getAttribute("width"))
                                     : i.naturalWidth / 2,
    src: (i.getAttribute("src") || "").slice(0, 40),
  }))};
}
"""

OVERFLOW = """
() => {
  const vw = document.documentElement.clientWidth;
  const scrolls = (el) => {
    for (let e = el.parentElement; e; e = e.parentElement) {
      const o = getComputedStyle(e).overflowX;
      if ((o === "auto" || o === "scroll" || o === "hidden")
          && e.getBoundingClientRect().right <= vw + 1) return true;
    }
    return false;
  };
  const out = [];
  document.querySelectorAll("article *").forEach((el) => {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > vw + 1 && !scrolls(el)) {
      out.push(el.tagName + "." + (el.className && el.className.baseVal === undefined
        ? el.className : "") );
    }
  });
  return {page: document.documentElement.scrollWidth, vw, out: out.slice(0, 5)};
}
"""


def _open(browser, site_url, page_src, width, height):  # noqa: F811
    ctx = browser.new_context(viewport={"width": width, "height": height})
    page = ctx.new_page()
    page.goto(f"{site_url}/{html_of(page_src)}", wait_until="load", timeout=120_000)
    return ctx, page


@pytest.mark.parametrize("page_src", ["index.md", *NOTES])
def test_figures_readable_at_desktop_and_full_width_on_a_phone(
    browser,  # noqa: F811
    site_url,
    page_src,
):
    ctx, page = _open(browser, site_url, page_src, 1280, 900)
    try:
        desk = page.evaluate(FIGURES)
    finally:
        ctx.close()
    font_px = MIN_FONT_PT * FIGURE_DPI / 72
    for img in desk["imgs"]:
        scale = img["shown"] / img["natural"]
        assert scale >= MIN_SCALE, f"figure shown at {scale:.2f} of its size: {img}"
        assert font_px * min(scale, 1) >= MIN_TEXT_PX, img
    ctx, page = _open(browser, site_url, page_src, 390, 844)
    try:
        phone = page.evaluate(FIGURES)
    finally:
        ctx.close()
    for img in phone["imgs"]:
        if img["natural"] >= phone["col"]:
            assert img["shown"] >= 0.9 * phone["col"] - 40, (
                f"figure {img['shown']:.0f} px wide in a {phone['col']:.0f} px column"
            )


@pytest.mark.parametrize("page_src", doc_pages())
def test_no_sideways_scroll_on_a_phone(browser, site_url, page_src):  # noqa: F811
    if page_src == "api.md":
        pytest.skip("the API reference is laid out by mkdocstrings (issue 9.10)")
    ctx, page = _open(browser, site_url, page_src, 390, 844)
    try:
        page.evaluate("() => window.MathJax && MathJax.startup.promise")
        report = page.evaluate(OVERFLOW)
    finally:
        ctx.close()
    assert report["page"] <= report["vw"] + 1, report
    assert not report["out"], f"wider than the screen, outside a scroll box: {report}"
