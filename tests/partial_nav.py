"""MkDocs hook for the tests' small sites only: the nav without the missing pages.

``conftest.site_copy`` builds sites from a copy of the checkout that holds only the
notes a test puts there, under the real ``mkdocs.yml``. The real build fails on a nav
entry without a file (``hooks/site_nav.py``); this hook, registered first in the
copies alone, drops such entries (and stages left empty) before the others run.
"""

from __future__ import annotations

from pathlib import Path


def _keep(item, docs: Path):
    if isinstance(item, str):
        return item if "://" in item or (docs / item).is_file() else None
    if isinstance(item, dict) and len(item) == 1:
        ((title, value),) = item.items()
        kept = _keep(value, docs)
        return {title: kept} if kept else None
    if isinstance(item, list):
        kept = [k for k in (_keep(i, docs) for i in item) if k]
        return kept or None
    return item


def on_config(config):
    if config.nav:
        config.nav = _keep(config.nav, Path(config.docs_dir)) or []
    return config
