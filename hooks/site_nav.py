"""MkDocs hook: a tolerant nav, and the module list of the API page.

Nav. ``nav:`` in mkdocs.yml lists every stage and its pages in reading order,
including pages not written yet. Before the build this hook

* drops entries whose file does not exist (INFO line), so ``--strict`` passes while
  chapters are still being written, and drops a stage left empty;
* appends to a stage the pages (``.md``/``.py``) found in that stage's folder but
  not listed anywhere, so a new page is never hidden (list it to fix its place).

API. In ``docs/api.md`` the line ``<!-- difflab-api -->`` becomes one
``::: difflab.<module>`` section per module that exists in ``src/difflab`` (in the
order of ``API_ORDER``, then the rest alphabetically), so the page never points at
a module that is not there yet.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

log = logging.getLogger("mkdocs.hooks.site_nav")

PAGE_SUFFIXES = (".md", ".py")
API_MARKER = "<!-- difflab-api -->"
API_ORDER = (
    "device",
    "profiles",
    "page",
    "schedules",
    "diffusion",
    "parameterization",
    "losses",
    "samplers",
    "sde",
    "sde_samplers",
    "likelihood",
    "score_matching",
    "toy",
    "data",
    "mlp",
    "unet",
    "classifier",
    "training",
    "recipes",
    "metrics",
    "plotting",
    "cli",
    "bench",
)


def on_config(config):
    docs = Path(config.docs_dir)
    nav = config.nav
    if not nav:
        return config
    listed = set(_leaves(nav))
    config.nav = [e for e in (_prune(item, docs, listed) for item in nav) if e]
    return config


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
        log.info("nav: %s is listed but not written yet; left out of the nav", item)
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
                and rel not in listed
            ):
                log.info(
                    "nav: %s is not listed in mkdocs.yml; appended to its stage", rel
                )
                extra.append(rel)
                listed.add(rel)
    return extra


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "api.md" or API_MARKER not in markdown:
        return markdown
    src = Path(config.config_file_path).resolve().parent / "src" / "difflab"
    present = {p.stem for p in src.glob("*.py") if not p.stem.startswith("_")}
    ordered = [m for m in API_ORDER if m in present]
    ordered += sorted(present - set(ordered))
    blocks = [f"::: difflab.{m}\n" for m in ordered]
    return markdown.replace(API_MARKER, "\n".join(blocks))
