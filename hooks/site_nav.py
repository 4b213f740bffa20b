"""MkDocs hook: a tolerant nav, and the module list of the API page.

Nav. ``nav:`` in mkdocs.yml lists every stage and its pages in reading order, and
only pages that exist. Before the build this hook

* warns about an entry whose file does not exist, naming it (so ``--strict``
  fails: the nav says what the site has), and leaves it out of a plain build;
* appends to a stage the pages (``.md``/``.py``) found in that stage's folder but
  not listed anywhere, so a new page is never hidden (list it to fix its place).

API. When ``docs/api.md`` exists, the API reference is generated from the package:
one page ``api/<part>.md`` per subpackage of ``src/difflab`` (and one per top-level
module such as ``cli``), in layer order (``LAYERS`` of ``src/difflab/layers.py``,
the order the layering test enforces), each holding one ``::: difflab.<part>.<module>`` section per public
module, so every public module appears exactly once and a new one appears without
editing anything. The nav's ``API: api.md`` becomes a section with ``api.md`` as its
index and those pages; in ``api.md`` the line ``<!-- difflab-api -->`` becomes the
list of parts with the first line of each one's docstring. Sphinx roles in the
docstrings become links (``hooks/griffe_roles.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

log = logging.getLogger("mkdocs.hooks.site_nav")

PAGE_SUFFIXES = (".md", ".py")
API_MARKER = "<!-- difflab-api -->"
API_PAGE = "api.md"
_api: dict = {"parts": []}


def api_parts(src: Path) -> list[tuple[str, list[str]]]:
    """``[(part, [module, ...]), ...]`` of package ``src``, in layer order.

    A part is a subpackage (its public modules, sorted) or a top-level module
    (itself). The order is the package's ``LAYERS``, then the rest by name.
    """
    order = _layers(src / "layers.py")
    parts = []
    for p in sorted(src.iterdir()):
        if p.name.startswith(("_", ".")) or p.name == "tests":
            continue
        if p.is_dir() and any(p.glob("*.py")):
            mods = sorted(
                f"{p.name}.{m.stem}"
                for m in p.glob("*.py")
                if not m.stem.startswith("_")
            )
            parts.append((p.name, mods))
        elif p.suffix == ".py":
            parts.append((p.stem, [p.stem]))
    rank = {name: i for i, name in enumerate(order)}
    return sorted(parts, key=lambda part: (rank.get(part[0], len(rank)), part[0]))


def _layers(path: Path) -> list[str]:
    """Names of the package's ``LAYERS`` (``difflab/layers.py``, loaded by path so
    the package itself is not imported), lowest rank first."""
    import importlib.util

    if not path.is_file():
        return []
    spec = importlib.util.spec_from_file_location("_difflab_layers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return sorted(module.LAYERS, key=module.LAYERS.get)  # stable: ties keep order


def _summary(path: Path) -> str:
    """First line of the docstring of module or package ``path``."""
    import ast

    f = path / "__init__.py" if path.is_dir() else path
    if not f.is_file():
        return ""
    doc = ast.get_docstring(ast.parse(f.read_text())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _api_page(part: str, mods: list[str], src: Path) -> str:
    lines = []
    if mods != [part]:  # a subpackage: its own docstring first, as the page title
        lines += [f"::: difflab.{part}", "    options:", "      members: false"]
        lines += ["      heading_level: 1", "      show_root_full_path: true", ""]
    else:
        lines += [f"# difflab.{part}", ""]
    for mod in mods:
        lines += [f"::: difflab.{mod}", ""]
    return "\n".join(lines)


def on_config(config):
    docs = Path(config.docs_dir)
    nav = config.nav
    if not nav:
        return config
    listed = set(_leaves(nav))
    config.nav = [e for e in (_prune(item, docs, listed) for item in nav) if e]
    src = Path(config.config_file_path).resolve().parent / "src" / "difflab"
    _api["parts"] = api_parts(src) if (docs / API_PAGE).is_file() else []
    _api["src"] = src
    if _api["parts"]:
        pages = [{f"difflab.{p}": f"api/{p}.md"} for p, _ in _api["parts"]]
        config.nav = [_api_section(item, pages) for item in config.nav]
    return config


def _api_section(item, pages):
    """``{"API": "api.md"}`` becomes ``{"API": ["api.md", *pages]}``."""
    if isinstance(item, dict) and len(item) == 1:
        ((title, value),) = item.items()
        if value == API_PAGE:
            return {title: [API_PAGE, *pages]}
    return item


def on_files(files, config):
    from mkdocs.structure.files import File

    for part, mods in _api["parts"]:
        content = _api_page(part, mods, _api["src"])
        files.append(File.generated(config, f"api/{part}.md", content=content))
    return files


def _leaves(items):
    for item in items if isinstance(items, list) else [items]:
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for value in item.values():
                yield from _leaves(value)


def _exists(path: str, docs: Path) -> bool:
    return "://" in path or (docs / path).is_file()


def _prune(item, docs: Path, listed: set):
    """Return ``item`` without missing pages (None if nothing is left)."""
    if isinstance(item, str):
        if _exists(item, docs):
            return item
        log.warning(
            "nav: mkdocs.yml lists %s, but docs/%s does not exist; write the page or "
            "take the entry out of the nav",
            item,
            item,
        )
        return None
    if not isinstance(item, dict) or len(item) != 1:
        return item
    ((title, value),) = item.items()
    if isinstance(value, str):
        return item if _prune(value, docs, listed) else None
    children = [c for c in (_prune(c, docs, listed) for c in value) if c]
    children += _unlisted(value, docs, listed)
    return {title: children} if children else None


def _unlisted(section, docs: Path, listed: set) -> list:
    """Pages in the folders of ``section`` that no nav entry lists."""
    folders = {
        str(PurePosixPath(p).parent)
        for p in _leaves(section)
        if "://" not in p and str(PurePosixPath(p).parent) != "."
    }
    extra = []
    for folder in sorted(folders):
        d = docs / folder
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            rel = f"{folder}/{f.name}"
            if (
                f.suffix in PAGE_SUFFIXES
                and not f.name.startswith(".")
                and not f.name.endswith(".zh.md")  # a translation (hooks/i18n.py)
                and rel not in listed
            ):
                log.info(
                    "nav: %s is not listed in mkdocs.yml; appended to its stage", rel
                )
                extra.append(rel)
                listed.add(rel)
    return extra


def on_page_markdown(markdown, page, config, files):
    # The API index of either edition (the Chinese one, zh/api.md, links the same
    # English part pages: docstrings are code documentation, shared like code).
    if (
        page.file.src_uri not in (API_PAGE, f"zh/{API_PAGE}")
        or API_MARKER not in markdown
    ):
        return markdown
    zh = page.file.src_uri.startswith("zh/")
    up = "../" if zh else ""
    if zh:
        import yaml

        path = Path(config.docs_dir) / "i18n.zh.yml"
        table = yaml.safe_load(path.read_text("utf-8")).get("api", {})
    rows = []
    for part, mods in _api["parts"]:
        path = _api["src"] / part if mods != [part] else _api["src"] / f"{part}.py"
        summary = _summary(path)
        if zh:
            summary = _chinese_summary(part, summary, table)
        rows.append(f"- [`difflab.{part}`]({up}api/{part}.md): {summary}")
    return markdown.replace(API_MARKER, "\n".join(rows))


def _chinese_summary(part: str, english: str, table: dict) -> str:
    """A part's line on the Chinese API index (``table``: ``api:`` of
    ``docs/i18n.zh.yml``); the English one, and a warning, where it is missing or
    its English changed."""
    import hashlib

    entry = table.get(part) or {}
    key = hashlib.sha256(english.encode()).hexdigest()[:12]
    if entry.get("en") == key and entry.get("zh"):
        return entry["zh"]
    log.warning(
        "i18n: the Chinese API index has no current line for difflab.%s (docs/i18n.zh.yml "
        "api.%s: en must be %s, the hash of %r)",
        part,
        part,
        key,
        english,
    )
    return f'<span lang="en" class="difflab-i18n-english">{english}</span>'
