"""The Chinese edition (中文版): every page twice, from the same executed notes.

* the translation files: how a unit is matched, made stale, marked waiting;
* every page has a current translation, and the Chinese uses the glossary's term
  wherever the English uses the English one;
* a small site: a changed English cell fails ``--strict`` naming it, passes when
  marked waiting (the Chinese page then shows the English under a notice), and the
  Chinese page runs no note (the note executes once, both pages show its output);
* the whole site: every page has its twin and back, no Chinese page leaves a
  paragraph untranslated, each note ran at most once; in Chromium (desktop and
  phone) the switcher leads to the twin, and search finds 扩散 and 得分匹配.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from conftest import REPO, doc_pages, html_of, mkdocs_env, run_mkdocs, site_copy

sys.path.insert(0, str(REPO / "hooks"))
import i18n_units as units  # noqa: E402

sys.path.pop(0)

DOCS = REPO / "docs"
HANZI = re.compile(r"[\u3400-\u9fff]")
GLOSSARY = yaml.safe_load((DOCS / "glossary.yml").read_text("utf-8"))["terms"]


# ------------------------------------------------------------ the unit format


def test_a_unit_is_keyed_by_its_text_not_its_end_whitespace():
    assert units.unit_hash("# A\n\ntext\n") == units.unit_hash("\n# A\n\ntext   \n\n")
    assert units.unit_hash("# A\n\ntext") != units.unit_hash("# A\n\ntext.")


def test_match_names_translated_stale_waiting_and_missing_units():
    english = ["# Title\n\nOne.", "Two.", "Three."]
    tr = units.skeleton(Path("docs/x.md"), english)
    blocks = units.parse(tr)
    assert [b.n for b in blocks] == [1, 2, 3]
    m = units.match(english, blocks)
    assert [u.state for u in m.units] == ["translated"] * 3
    # The English of unit 2 changes: its block is now stale, and strict fails on it.
    changed = ["# Title\n\nOne.", "Two, changed.", "Three.", "Four, new."]
    m = units.match(changed, blocks)
    assert [u.state for u in m.units] == [
        "translated",
        "stale",
        "translated",
        "missing",
    ]
    assert [u.n for u in m.problems()] == [2, 4]
    # Marked waiting, unit 2 no longer fails; the new unit 4 still does.
    waiting = tr.replace(
        f"en:{units.unit_hash('Two.')} -->", f"en:{units.unit_hash('Two.')} waiting -->"
    )
    m = units.match(changed, units.parse(waiting))
    assert [u.state for u in m.units][:2] == ["translated", "waiting"]
    assert [u.n for u in m.problems()] == [4]


def test_md_units_are_sections_and_ignore_headings_in_code():
    text = "---\nprerequisites: []\n---\n# A\n\nx\n\n```\n# not a heading\n```\n\n## B\n\ny\n"
    assert units.md_units(text) == [
        "# A\n\nx\n\n```\n# not a heading\n```",
        "## B\n\ny",
    ]
    assert units.front_matter(text) == "---\nprerequisites: []\n---\n"


# ------------------------------------------------------- the translations here


PAGES = [p.relative_to(DOCS).as_posix() for p in units.pages(DOCS)]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_has_a_current_translation(page):
    path = DOCS / page
    tr = units.translation_path(path)
    assert tr.is_file(), (
        f"{page}: no {tr.name} (python hooks/i18n_units.py skeleton docs/{page})"
    )
    m = units.match_page(path)
    late = [(u.n, u.state) for u in m.problems()]
    assert not late, f"{page}: units not translated or stale: {late}"
    assert not m.orphans, (
        f"{tr.name}: blocks that translate no English unit: {m.orphans}"
    )


def _title_case(words: list[str]) -> bool:
    caps = [w for w in words if w[:1].isupper()]
    return len(caps) >= 3 and 2 * len(caps) >= len(words)


def _prose(text: str) -> str:
    """Prose without code, maths, link targets, HTML comments and quoted titles
    (italic spans in title case: the papers' titles stay in English)."""
    text = re.sub(
        r"(?<![*\w])\*([^*]+?)\*(?![*\w])",
        lambda m: " " if _title_case(m[1].split()) else m[0],
        text,
    )
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\$\$.*?\$\$|\$[^$]*\$", " ", text, flags=re.S)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    return re.sub(r"\s+", " ", text)


def _english_term(term: str) -> re.Pattern:
    words = [re.escape(w) for w in re.split(r"[\s-]+", term)]
    return re.compile(
        r"(?<![\w-])" + r"[\s-]+".join(words) + r"(?:s|es)?(?![\w-])", re.I
    )


@pytest.mark.parametrize("page", PAGES)
def test_the_chinese_page_uses_the_glossary_terms_of_its_english(page):
    m = units.match_page(DOCS / page)
    english = _prose("\n\n".join(u.english for u in m.units))
    chinese = _prose("\n\n".join(u.chinese or "" for u in m.units))
    missing = []
    for t in GLOSSARY:
        forms = [t["en"], *t.get("also", [])]
        if not any(_english_term(f).search(english) for f in forms):
            continue
        zh = [t["zh"], *t.get("zh_also", [])]
        if not any(z in chinese for z in zh):
            missing.append(f"{t['en']} -> {t['zh']}")
    assert not missing, f"{page}: the English uses, the Chinese lacks: {missing}"


def test_the_glossary_check_fails_a_page_that_uses_another_term():
    """The check above can fail: 分数函数 for "score function" is caught."""
    t = next(t for t in GLOSSARY if t["en"] == "score function")
    assert _english_term(t["en"]).search(_prose("The score functions of $p$."))
    chinese = _prose("$p$ 的分数函数。")
    assert not any(z in chinese for z in [t["zh"], *t.get("zh_also", [])])


# ------------------------------------------------------------ a small site


NOTE = """# %% [markdown]
# # A small note
#
# The answer is computed below.

# %%
print("the answer is", 6 * 7)

# %% [markdown]
# ## What it means
#
# Nothing more.
"""


def _small_site(tmp_path: Path) -> Path:
    root = site_copy(tmp_path, pages=False)
    (root / "docs" / "index.zh.md").write_text(
        units.skeleton(root / "docs" / "index.md").replace(
            "# Home\n\nA small site.", "# 首页\n\n一个小网站。"
        )
    )
    note = root / "docs" / "diffusion" / "small.py"
    note.parent.mkdir(parents=True)
    note.write_text(NOTE)
    tr = units.skeleton(note)
    tr = tr.replace(
        "# A small note\n\nThe answer is computed below.",
        "# 一个小笔记\n\n答案在下面算出。",
    )
    tr = tr.replace("## What it means\n\nNothing more.", "## 它的意思\n\n仅此而已。")
    units.translation_path(note).write_text(tr)
    return root


def _env(tmp_path: Path) -> dict:
    return mkdocs_env(DIFFLAB_NOTES_CACHE=str(tmp_path / "notes-cache"))


def test_a_changed_english_cell_fails_strict_until_marked_waiting(tmp_path):
    root = _small_site(tmp_path)
    env = _env(tmp_path)
    site = tmp_path / "site"
    res = run_mkdocs(
        ["build", "--strict", "-d", str(site)], root, env, 600, stubs=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
    log = res.stdout + res.stderr
    # The note ran once, for both editions; both pages show its output.
    assert log.count("notes: executing docs/diffusion/small.py") == 1, log
    en = (site / "diffusion" / "small.html").read_text()
    zh = (site / "zh" / "diffusion" / "small.html").read_text()
    assert "the answer is 42" in en and "the answer is 42" in zh
    assert "一个小笔记" in zh and '<html lang="zh"' in zh and '<html lang="en"' in en
    assert "A small note" not in zh

    # The English of cell 2 changes: the strict build fails and names it.
    note = root / "docs" / "diffusion" / "small.py"
    note.write_text(
        NOTE.replace("# Nothing more.", "# Nothing more, and a new sentence.")
    )
    res = run_mkdocs(
        ["build", "--strict", "-d", str(site)], root, env, 600, stubs=False
    )
    log = res.stdout + res.stderr
    assert res.returncode != 0, log
    assert (
        "docs/diffusion/small.py: unit 2 ('## What it means') changed since it was translated"
        in log
    ), log
    # A plain build warns and shows the English cell under the notice.
    res = run_mkdocs(["build", "-d", str(site)], root, env, 600, stubs=False)
    assert res.returncode == 0, res.stdout + res.stderr
    zh = (site / "zh" / "diffusion" / "small.html").read_text()
    assert (
        "difflab-i18n-waiting" in zh and "a new sentence" in zh and "仅此而已" not in zh
    )

    # Marked waiting, the strict build passes; the page still shows the English.
    tr = units.translation_path(note)
    text = re.sub(
        r"(<!-- cell 2 en:[0-9a-f]{12}) -->", r"\1 waiting -->", tr.read_text()
    )
    tr.write_text(text)
    res = run_mkdocs(
        ["build", "--strict", "-d", str(site)], root, env, 600, stubs=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
    zh = (site / "zh" / "diffusion" / "small.html").read_text()
    assert "difflab-i18n-waiting" in zh and "a new sentence" in zh
    assert "notes: executing" not in res.stdout + res.stderr  # cached: nothing ran


def test_a_page_without_a_translation_fails_strict_naming_it(tmp_path):
    root = _small_site(tmp_path)
    units.translation_path(root / "docs" / "diffusion" / "small.py").unlink()
    res = run_mkdocs(
        ["build", "--strict", "-d", str(tmp_path / "site")],
        root,
        _env(tmp_path),
        600,
        stubs=False,
    )
    assert res.returncode != 0
    assert (
        "docs/diffusion/small.py has no Chinese translation (small.zh.md)"
        in res.stdout + res.stderr
    )


# ------------------------------------------------------------ the whole site


def _twin_pairs(site: Path) -> tuple[set, set]:
    en = {
        p.relative_to(site).as_posix()
        for p in site.rglob("*.html")
        if not p.relative_to(site)
        .as_posix()
        .startswith(("zh/", "api/", "assets/", "search/"))
        and p.name != "404.html"
    }
    zh = {p.relative_to(site / "zh").as_posix() for p in (site / "zh").rglob("*.html")}
    return en, zh


def test_every_page_has_its_chinese_twin_and_back(site_dir):
    en, zh = _twin_pairs(site_dir)
    assert {html_of(p) for p in doc_pages()} <= en
    assert en == zh, (
        f"without a twin: English {sorted(en - zh)}, Chinese {sorted(zh - en)}"
    )


def test_the_switcher_in_each_page_links_its_twin(site_dir):
    en, _ = _twin_pairs(site_dir)
    for page in sorted(en):
        for lang_dir, other in (("", "zh/"), ("zh/", "")):
            html = (site_dir / lang_dir / page).read_text("utf-8")
            m = re.search(
                rf'<a href="([^"]+)" hreflang="{"en" if other == "" else "zh"}"', html
            )
            assert m, f"{lang_dir}{page}: no switcher link"
            target = (site_dir / lang_dir / page).parent / m[1]
            assert target.resolve() == (site_dir / other / page).resolve(), (
                lang_dir + page,
                m[1],
            )


class _Blocks(HTMLParser):
    """Text of each prose block (p, li, h1-h6, td, th, dt, dd) of the article,
    without code, maths, notebook cells' outputs, quoted titles
    (external links' and emphasised text), the bibliography, and the English the
    edition shows on purpose (units waiting for a translation)."""

    BLOCK = {"p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "td", "th", "dt", "dd"}
    SKIP_TAGS = {"pre", "code", "script", "style", "em", "cite", "svg", "math"}
    SKIP_CLASSES = (
        "arithmatex",
        "jp-OutputArea",
        "footnote",
        "difflab-i18n-english",
        "difflab-glossary",
        "md-source-file",
        "headerlink",
    )

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.blocks, self.in_article = [], [], 0

    def handle_starttag(self, tag, attrs):
        if tag in ("br", "img", "hr", "input", "meta", "link", "source", "col", "wbr"):
            return
        a = dict(attrs)
        cls = a.get("class") or ""
        skip = (
            tag in self.SKIP_TAGS
            or any(c in cls for c in self.SKIP_CLASSES)
            or (tag == "a" and (a.get("href") or "").startswith("http"))
        )
        article = tag == "article"
        quoted = tag in ("em", "cite") or (tag == "a" and skip)
        if quoted and self.blocks and not self._skipping():
            self.blocks[-1][1] += TITLE
        self.stack.append((tag, skip, article, tag in self.BLOCK))
        if tag in self.BLOCK and not self._skipping():
            self.blocks.append([tag, ""])

    def handle_endtag(self, tag):
        while self.stack:
            t = self.stack.pop()
            if t[0] == tag:
                break

    def _skipping(self):
        return any(s for _, s, _, _ in self.stack)

    def handle_data(self, data):
        if (
            not any(a for _, _, a, _ in self.stack)
            or self._skipping()
            or not self.blocks
        ):
            return
        if any(b for _, _, _, b in self.stack):
            self.blocks[-1][1] += data


_MATH = re.compile(r"\$\$.+?\$\$|\$[^$]+\$|\\\(.+?\\\)|\\\[.+?\\\]", re.S)
TITLE = (
    "\u27e8title\u27e9"  # where a quoted title (italic or external link) was taken out
)


def _citation(tag: str, text: str) -> bool:
    """A list item that cites a quoted title: authors, venue and year around it
    (at most three lower-case words outside the title: "and", "in", "their")."""
    rest = text.replace(TITLE, " ")
    return (
        tag == "li"
        and TITLE in text
        and re.search(r"\b(19|20)\d\d\b", rest) is not None
        and len(re.findall(r"\b[a-z]{2,}\b", rest.replace("et al", ""))) <= 3
    )


def untranslated(html: str) -> list[str]:
    p = _Blocks()
    p.feed(html)
    bad = []
    for tag, text in p.blocks:
        text = re.sub(r"\s+", " ", _MATH.sub(" ", text)).strip()
        if _citation(tag, text):
            continue
        text = text.replace(TITLE, " ").strip()
        if len(re.findall(r"[A-Za-z]{2,}", text)) >= 5 and not HANZI.search(text):
            bad.append(f"<{tag}> {text[:90]}")
    return bad


def test_the_untranslated_check_catches_an_english_paragraph():
    page = (
        "<article><p>这是中文，带有 <code>some code here and there too</code>。</p>"
        "<p>This paragraph was left in English by mistake.</p>"
        '<p><a href="https://arxiv.org/abs/1">A Quoted Paper Title Stays As It Is</a>（2020）</p>'
        "</article>"
    )
    assert untranslated(page) == ["<p> This paragraph was left in English by mistake."]


@pytest.mark.parametrize("page_src", doc_pages())
def test_no_chinese_page_has_an_untranslated_paragraph(site_dir, page_src):
    html = (site_dir / "zh" / html_of(page_src)).read_text("utf-8")
    assert untranslated(html) == []


def test_the_build_executes_each_note_at_most_once(site_build):
    log = site_build["log"]
    if log is None:
        pytest.skip("DIFFLAB_SITE_DIR: a site built elsewhere, no build log here")
    runs = re.findall(r"notes: executing (\S+)", log)
    assert len(runs) == len(set(runs)), runs
    assert not [r for r in runs if "/zh/" in r or r.startswith("docs/zh")]
    table = REPO / ".cache" / "notes" / "last-build.json"
    if table.is_file():
        import json

        pages = [row["page"] for row in json.loads(table.read_text())["pages"]]
        assert len(pages) == len(set(pages))
        assert not [p for p in pages if p.endswith(".zh.md") or "/zh/" in p]


# ------------------------------------------------------------------ Chromium


VIEWPORTS = {"desktop": (1366, 900), "phone": (390, 844)}
SWITCH_PAGES = [
    "foundations/probability.html",
    "deeper/score-matching.html",
    "notation.html",
    "index.html",
]


@pytest.mark.parametrize("width", sorted(VIEWPORTS))
@pytest.mark.parametrize("page_html", SWITCH_PAGES)
def test_the_switcher_leads_to_the_twin_in_chromium(
    browser, site_url, page_html, width
):
    w, h = VIEWPORTS[width]
    ctx = browser.new_context(viewport={"width": w, "height": h})
    page = ctx.new_page()
    try:
        for here, there, lang in (
            (page_html, f"zh/{page_html}", "zh"),
            (f"zh/{page_html}", page_html, "en"),
        ):
            page.goto(f"{site_url}/{here}")
            button = page.locator(".md-header__option .md-select > button")
            button.hover()
            link = page.locator(f'.md-select__link[hreflang="{lang}"]')
            link.wait_for(state="visible", timeout=5000)
            link.click()
            page.wait_for_url(f"{site_url}/{there}", timeout=10000)
            assert page.evaluate("document.documentElement.lang") == lang
    finally:
        ctx.close()


SEARCHES = {
    "扩散": "zh/diffusion/ddpm.html",
    "得分匹配": "zh/deeper/score-matching.html",
}


@pytest.mark.parametrize("query", sorted(SEARCHES))
def test_search_finds_chinese_words(browser, site_url, query):
    ctx = browser.new_context(viewport={"width": 1366, "height": 900})
    page = ctx.new_page()
    try:
        page.goto(f"{site_url}/zh/index.html")
        page.locator(".md-search__input").click()
        page.locator(".md-search__input").fill(query)
        page.locator(".md-search-result__item").first.wait_for(timeout=15000)
        hrefs = page.eval_on_selector_all(
            ".md-search-result__item > a", "els => els.map(e => e.getAttribute('href'))"
        )
        pages = [h.split("#")[0].split("?")[0] for h in hrefs]
        assert any(p.endswith(SEARCHES[query]) for p in pages), pages
        assert all("/zh/" in f"/{p}" for p in pages[:3]), pages  # Chinese pages first
    finally:
        ctx.close()


_DISPLAY = re.compile(r"\$\$.+?\$\$", re.S)
_TARGET = re.compile(r"\]\(\s*<?([^)\s>]+)")


@pytest.mark.parametrize("page", PAGES)
def test_the_translation_keeps_the_maths_and_the_links(page):
    """Each unit's displayed equations are the English ones, in order, character
    for character; and the page links to the same targets."""
    m = units.match_page(DOCS / page)
    for u in m.units:
        assert _DISPLAY.findall(u.chinese or "") == _DISPLAY.findall(u.english), (
            page,
            u.n,
        )
    english = {t for u in m.units for t in _TARGET.findall(u.english)}
    chinese = {t for u in m.units for t in _TARGET.findall(u.chinese or "")}
    assert english <= chinese, f"{page}: links lost: {sorted(english - chinese)}"


@pytest.mark.parametrize("page_src", [p for p in doc_pages() if "/" in p])
def test_the_reading_time_is_computed_for_the_chinese_text(site_dir, page_src):
    zh = (site_dir / "zh" / html_of(page_src)).read_text("utf-8")
    m = re.search(r'<p class="difflab-orientation">阅读约 (\d+) 分钟 · ', zh)
    assert m, page_src
    sys.path.insert(0, str(REPO / "hooks"))
    try:
        import reading
    finally:
        sys.path.pop(0)
    hanzi = sum(
        len(HANZI.findall(u.chinese or ""))
        for u in units.match_page(DOCS / page_src).units
    )
    assert hanzi / reading.HANZI_PER_MINUTE <= int(m[1])  # the Chinese prose is counted
