"""The nav says what the site has: an entry without a file fails ``--strict``.

A two-page MkDocs project with only ``hooks/site_nav.py`` (seconds, no notes): its
nav lists a page that does not exist. The strict build fails and names it; without
the entry, or without ``--strict``, it builds. The real nav lists no such page.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import REPO, mkdocs_env, run_mkdocs


def _project(root: Path, nav: list) -> Path:
    (root / "docs" / "stage").mkdir(parents=True)
    (root / "docs" / "index.md").write_text("# Home\n")
    (root / "docs" / "stage" / "written.md").write_text("# Written\n")
    config = {
        "site_name": "nav test",
        "hooks": [str(REPO / "hooks" / "site_nav.py")],
        "nav": nav,
    }
    (root / "mkdocs.yml").write_text(yaml.safe_dump(config))
    return root


def test_a_nav_entry_without_a_file_fails_strict_naming_it(tmp_path):
    nav = ["index.md", {"Stage": ["stage/written.md", "stage/phantom.md"]}]
    root = _project(tmp_path / "bad", nav)
    res = run_mkdocs(["build", "--strict"], root, mkdocs_env(), timeout=120)
    assert res.returncode != 0, res.stderr
    assert "stage/phantom.md" in res.stderr and "does not exist" in res.stderr
    # a plain build leaves it out and succeeds
    res = run_mkdocs(["build"], root, mkdocs_env(), timeout=120)
    assert res.returncode == 0, res.stderr
    assert (root / "site" / "stage" / "written" / "index.html").is_file()


def test_the_same_nav_without_the_phantom_builds_strict(tmp_path):
    root = _project(tmp_path / "good", ["index.md", {"Stage": ["stage/written.md"]}])
    res = run_mkdocs(["build", "--strict"], root, mkdocs_env(), timeout=120)
    assert res.returncode == 0, res.stderr


def test_the_site_nav_lists_only_pages_that_exist():
    text = (REPO / "mkdocs.yml").read_text()
    nav = yaml.load(text[text.index("\nnav:") :], Loader=yaml.BaseLoader)["nav"]

    def leaves(item):
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for v in item.values():
                yield from leaves(v)
        else:
            for v in item:
                yield from leaves(v)

    missing = [
        p for p in leaves(nav) if "://" not in p and not (REPO / "docs" / p).is_file()
    ]
    assert not missing, missing
