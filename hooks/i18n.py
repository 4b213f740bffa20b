"""MkDocs hook: the Chinese edition (中文版), from the same executed notes.

Every page ``<path>`` has a Chinese twin ``zh/<path>`` in the same build, made from
the translation beside its source (``docs/<path>.zh.md``, format and tools in
``hooks/i18n_units.py``):

* a note's twin is its **executed** notebook (the one ``hooks/notes.py`` made for
  the English page) with each markdown cell replaced by its translation, so the
  Chinese edition runs no note and trains nothing: code, figures and printed
  results are the English page's own (its figure files are shared, not copied);
* a ``.md`` page's twin is its translated sections under the English page's
  front matter.

A unit (markdown cell or section) whose English changed since it was translated,
or that was never translated, is shown in English under a short notice and named
in the log: a warning (so ``mkdocs build --strict`` fails) unless its block is
marked ``waiting`` (then an INFO line). The generated API pages (``api/<part>.md``,
the package's docstrings) are code documentation, shared like code comments: the
Chinese API index links them.

The Chinese pages get their own nav (section titles from ``docs/i18n.zh.yml``),
Material's interface in Chinese (``overrides/partials/language.html`` picks the
language by the page's URL), and a language switcher in the header that leads to
the twin of the page one is on (``overrides/partials/alternate.html``, from
``extra.alternate``). Search segments Chinese with jieba (Material's search plugin
does when jieba is installed; the separator includes the zero-width space).
``docs/glossary.yml`` (the terms of the field in both languages) becomes the table
under ``<!-- difflab-glossary -->`` on the notation page of both editions.
"""

from __future__ import annotations

import copy
import logging
import posixpath
import re
import sys
from pathlib import Path

import yaml
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).resolve().parent))
import i18n_units as units  # noqa: E402

sys.path.pop(0)

log = logging.getLogger("mkdocs.hooks.i18n")

LANG = units.LANG
PREFIX = f"{LANG}/"
GLOSSARY = "glossary.yml"
STRINGS = f"i18n.{LANG}.yml"
GLOSSARY_MARK = "<!-- difflab-glossary -->"
NOT_TRANSLATED = ("api/",)  # generated from docstrings: shared like code

_state: dict = {"twins": {}, "nav": None, "strings": {}, "glossary": []}


def split(uri: str) -> tuple[str, str]:
    """``("zh", "a/b.md")`` for ``zh/a/b.md``; ``("en", uri)`` otherwise."""
    return (LANG, uri[len(PREFIX) :]) if uri.startswith(PREFIX) else ("en", uri)


def strings() -> dict:
    return _state["strings"]


def glossary() -> list[dict]:
    return _state["glossary"]


def _notes_state() -> dict:
    module = sys.modules.get("hooks/notes.py")
    if module is None:  # registered under another name
        module = next(
            m
            for m in list(sys.modules.values())
            if getattr(m, "__file__", "") and m.__file__.endswith("hooks/notes.py")
        )
    return module._state


# ------------------------------------------------------------------ events


def on_config(config):
    docs = Path(config.docs_dir)
    data = yaml.safe_load((docs / STRINGS).read_text(encoding="utf-8"))
    _state["strings"] = data["strings"]
    _state["nav_titles"] = data["nav"]
    _state["glossary"] = yaml.safe_load((docs / GLOSSARY).read_text(encoding="utf-8"))[
        "terms"
    ]
    _state["twins"] = {}
    _state["docs"] = docs
    return config


@event_priority(90)  # after hooks/notes.py (100), before mkdocs-jupyter (0)
def on_files(files, config):
    notes = _notes_state()
    docs = Path(config.docs_dir)
    pages_dir = notes["cache"] / "pages"
    for f in list(files):
        if units.is_translation(f.src_uri) or f.src_uri in (GLOSSARY, STRINGS):
            files.remove(f)
    twins, problems = {}, []
    for uri, note in list(notes["notes"].items()):
        if split(uri)[0] == LANG:
            continue
        import nbformat

        nb = nbformat.read(note["ipynb"], as_version=4)
        md = [c for c in nb.cells if c.cell_type == "markdown"]
        m = _match(docs / note["py"], [c.source for c in md], problems)
        zh = copy.deepcopy(nb)
        for cell, unit in zip(
            [c for c in zh.cells if c.cell_type == "markdown"], m.units, strict=True
        ):
            cell.source = _shown(unit)
        data = nbformat.writes(zh).encode()
        twin = PREFIX + uri
        out = pages_dir / twin
        if not out.is_file() or out.read_bytes() != data:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
        files.append(
            File(twin, str(pages_dir), config.site_dir, config.use_directory_urls)
        )
        notes["notes"][twin] = dict(
            note,
            ipynb=out,  # the download: the notebook as executed, in Chinese
            files={},
            lang=LANG,
            figures_dir=uri[: -len(".ipynb")] + "_files",
        )
        notes["py_to_page"][PREFIX + note["py"]] = twin
        twins[uri] = twin
    for f in list(files):
        uri = f.src_uri
        if not uri.endswith(".md") or split(uri)[0] == LANG:
            continue
        if uri.startswith(NOT_TRANSLATED) or f.abs_src_path is None:
            continue
        text = Path(f.abs_src_path).read_text(encoding="utf-8")
        m = _match(docs / uri, units.md_units(text), problems)
        body = "\n\n".join(_shown(u) for u in m.units)
        content = units.front_matter(text) + body + "\n"
        files.append(File.generated(config, PREFIX + uri, content=content))
        twins[uri] = PREFIX + uri
    _state["twins"] = twins
    for message, level in problems:
        log.log(level, message)
    return files


def _match(page: Path, english: list[str], problems: list) -> units.Match:
    tr = units.translation_path(page)
    rel = f"docs/{page.relative_to(_state['docs']).as_posix()}"
    if not tr.is_file():
        problems.append(
            (
                f"i18n: {rel} has no Chinese translation ({tr.name}); its Chinese "
                f"page shows the English (start one: python hooks/i18n_units.py "
                f"skeleton {rel})",
                logging.WARNING,
            )
        )
    m = units.match(english, units.parse(tr.read_text()) if tr.is_file() else [])
    if not tr.is_file():
        return m
    for u in m.units:
        if u.state == "translated":
            continue
        first = next((s for s in u.english.splitlines() if s.strip()), "")[:60]
        level = logging.INFO if u.state == "waiting" else logging.WARNING
        what = {
            "stale": "changed since it was translated",
            "missing": "has no translation",
            "waiting": "is marked waiting",
        }[u.state]
        problems.append(
            (
                f"i18n: {rel}: unit {u.n} ({first!r}) {what}; the Chinese page shows "
                f"the English (update {tr.name}, then python hooks/i18n_units.py "
                f"refresh {rel}; or mark the block waiting)",
                level,
            )
        )
    for b in m.orphans:
        problems.append(
            (
                f"i18n: {tr}: block {b.n} (en:{b.key}) translates no English unit",
                logging.WARNING,
            )
        )
    return m


_CJK = "\u3000-\u303f\u3400-\u9fff\uff00-\uffef"
_CJK_BREAK = re.compile(rf"(?<=[{_CJK}])[ \t]*\n[ \t]*(?=[{_CJK}])")


def _shown(unit: units.Unit) -> str:
    """What the Chinese page shows for a unit: its translation, or the English
    under a notice."""
    if unit.state == "translated":
        # A line break between two Chinese characters would show as a space.
        return _CJK_BREAK.sub("", unit.chinese)
    notice = (
        f'<div class="admonition info difflab-i18n-waiting" lang="{LANG}">'
        f"<p>{strings()['waiting']}</p></div>"
    )
    english = unit.english
    # A heading stays first, so that the page keeps its title and sections.
    head, _, rest = english.partition("\n")
    div = '<div lang="en" class="difflab-i18n-english" markdown>'
    if head.startswith("#"):
        return f"{head}\n\n{notice}\n\n{div}\n\n{rest}\n\n</div>"
    return f"{notice}\n\n{div}\n\n{english}\n\n</div>"


def twin(uri: str) -> str | None:
    """The other edition's page of page ``uri`` (None where there is none)."""
    lang, en = split(uri)
    if lang == LANG:
        return en
    return _state["twins"].get(uri)


def on_nav(nav, config, files):
    """Build the Chinese nav: the English one's structure over the twins."""
    from mkdocs.structure.nav import (
        Link,
        Navigation,
        Section,
        _add_parent_links,
        _add_previous_and_next_links,
        _get_by_type,
    )

    titles = _state["nav_titles"]
    _state["files"] = files

    def convert(item):
        if isinstance(item, Section):
            return Section(
                titles.get(item.title, item.title),
                [c for c in (convert(c) for c in item.children) if c is not None],
            )
        if isinstance(item, Link):
            return Link(item.title, item.url)
        page = item
        twin_uri = _state["twins"].get(page.file.src_uri)
        if twin_uri is None:  # no twin (the API part pages): the English page
            return Link(page.title, page.file.url)
        file = files.get_file_from_path(twin_uri)
        if file is None or file.page is None:
            return None
        if page.title in titles:  # a title the nav gives (Home, Notation, ...)
            file.page.title = titles[page.title]
        return file.page

    items = [c for c in (convert(i) for i in nav.items) if c is not None]
    pages = _get_by_type(items, type(nav.pages[0])) if nav.pages else []
    _add_previous_and_next_links(pages)
    _add_parent_links(items)
    zh_nav = Navigation(items, pages)
    # The logo and the site name lead to the edition's own home page.
    zh_nav.homepage = next(
        (p for p in pages if p.file.src_uri == f"{PREFIX}index.md"), None
    )
    _state["nav"] = zh_nav
    return nav


def on_page_markdown(markdown, page, config, files):
    lang, en = split(page.file.src_uri)
    if GLOSSARY_MARK in markdown:
        markdown = markdown.replace(GLOSSARY_MARK, _glossary_table(lang))
    if lang == LANG:
        markdown = _english_fallback_links(markdown, page, files)
    return markdown


def _glossary_table(lang: str) -> str:
    head = strings()["glossary_head" if lang == LANG else "glossary_head_en"]
    rows = ['<div class="difflab-glossary" markdown>', "", head, "| --- | --- | --- |"]
    for t in glossary():
        en = t["en"] + (f" ({', '.join(t['also'])})" if t.get("also") else "")
        zh = t["zh"] + (f"（{'、'.join(t['zh_also'])}）" if t.get("zh_also") else "")
        sym = f"${t['symbol']}$" if t.get("symbol") else ""
        rows.append(f"| {en} | {zh} | {sym} |")
    return "\n".join([*rows, "", "</div>"])


_LINK = re.compile(r"(\]\(\s*<?)([^)\s>#:]+)([)#>\s])")


def _english_fallback_links(markdown: str, page, files) -> str:
    """A Chinese page's relative link to a file with no twin (``references.bib``,
    an API part page) leads to the English one."""
    here = posixpath.dirname(page.file.src_uri)

    def fix(m: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(here, m[2]))
        notes = _notes_state()["py_to_page"]
        if files.get_file_from_path(notes.get(target, target)) is not None:
            return m[0]
        lang, en = split(target)
        if lang == LANG and files.get_file_from_path(notes.get(en, en)) is not None:
            return m[1] + posixpath.relpath(en, here or ".") + m[3]
        return m[0]

    return _LINK.sub(fix, markdown)


def on_page_context(context, page, config, nav):
    lang, _ = split(page.file.src_uri)
    if lang == LANG and _state["nav"] is not None:
        context["nav"] = _state["nav"]
    other = twin(page.file.src_uri)
    here = page.file.src_uri
    en_uri = here if lang != LANG else (other or here)
    zh_uri = here if lang == LANG else other
    context["difflab_alternates"] = [
        ("English", "en", _url(en_uri, page)),
        ("中文", LANG, _url(zh_uri, page) if zh_uri else None),
    ]
    return context


def _url(uri: str, page) -> str:
    """Relative URL of the page built from ``uri``, from ``page``."""
    return _state["files"].get_file_from_path(uri).url_relative_to(page.file)


@event_priority(40)  # after hooks/notes.py's on_page_content (50)
def on_page_content(html, page, config, files):
    if split(page.file.src_uri)[0] != LANG:
        return html
    s = strings()
    html = _STAND_IN.sub(
        lambda m: s["stand_in"].format(wanted=m[1], used=m[2], command=m[3]), html
    )
    html = html.replace(
        '<p class="admonition-title">Built on stand-in data</p>',
        f'<p class="admonition-title">{s["stand_in_title"]}</p>',
    )
    html = _PROVENANCE.sub(_provenance_zh, html)
    if page.file.src_uri.endswith(".ipynb"):
        html = _ids_from_toc(html, page)
    return html


_HEADING = re.compile(r'<h([1-6]) id="([^"]*)"(.*?)</h\1>', re.S)


def _ids_from_toc(html: str, page) -> str:
    """Give a Chinese note's headings the ids its table of contents links to.

    mkdocs-jupyter slugs both with Python-Markdown's ASCII rule, but the headings
    in the rendered notebook and the TOC disagree where nothing ASCII is left (a
    heading all in Chinese: ``id=""`` against ``#_1``); the TOC's ids, unique by
    construction, become the headings' (and their ``¶`` links')."""

    def flat(items):
        for item in items:
            yield item
            yield from flat(item.children)

    ids = [item.id for item in flat(page.toc)]
    headings = list(_HEADING.finditer(html))
    if len(ids) != len(headings):
        log.info(
            "i18n: %s: %d headings, %d TOC entries; ids left as they are",
            page.file.src_uri,
            len(headings),
            len(ids),
        )
        return html
    out, pos = [], 0
    for m, new in zip(headings, ids, strict=True):
        body = m[3].replace(
            f'class="anchor-link" href="#{m[2]}"', f'class="anchor-link" href="#{new}"'
        )
        out += [html[pos : m.start()], f'<h{m[1]} id="{new}"{body}</h{m[1]}>']
        pos = m.end()
    out.append(html[pos:])
    return "".join(out)


_STAND_IN = re.compile(
    r"This page was built without (.+?), which was not found, so everything below, "
    r"figures and numbers, comes from (.+?)\. To build it on .+?, run "
    r"<code>(.+?)</code> in the project folder and build again\.",
    re.S,
)
_PROVENANCE = re.compile(r"This page (?:was|is being) built with (.*?)\.</div>", re.S)
_PROVENANCE_WORDS = (
    ("profile ", "配置 "),
    ("dataset ", "数据集 "),
    ("device ", "设备 "),
    ("executed in ", "执行用时 "),
)


def _provenance_zh(m: re.Match) -> str:
    parts = m[1]
    for en, zh in _PROVENANCE_WORDS:
        parts = parts.replace(en, zh)
    return "本页构建所用：" + parts.replace(", ", "，") + "。</div>"


def on_post_build(config):
    """The Chinese edition's sitemap: Material's switcher script looks for
    ``zh/sitemap.xml`` (the alternate's own) before it keeps the reader on the same
    page; the site's one sitemap lists both editions."""
    site = Path(config.site_dir)
    if (site / "sitemap.xml").is_file() and (site / LANG).is_dir():
        (site / LANG / "sitemap.xml").write_bytes((site / "sitemap.xml").read_bytes())
