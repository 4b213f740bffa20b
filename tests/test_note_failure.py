"""A note that raises fails the build and the error names the page; the cache
key of a note follows the package source."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from conftest import REPO, mkdocs_env, run_mkdocs

BROKEN = """# %% [markdown]
# # A deliberately broken note

# %%
x = 1

# %%
raise ValueError("deliberately broken note " + str(x))
"""


def _site_copy(tmp: Path) -> Path:
    """mkdocs.yml, hooks and docs/ (without the other notes and the API page)."""
    root = tmp / "repo"
    root.mkdir()
    shutil.copy2(REPO / "mkdocs.yml", root / "mkdocs.yml")
    shutil.copytree(
        REPO / "hooks", root / "hooks", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(
        REPO / "docs",
        root / "docs",
        ignore=lambda d, names: [
            n for n in names if n.endswith(".py") or n == "api.md"
        ],
    )
    (root / "src").symlink_to(REPO / "src", target_is_directory=True)
    return root


@pytest.mark.timeout(900)
def test_a_raising_note_fails_the_strict_build_naming_the_page(tmp_path):
    root = _site_copy(tmp_path)
    note = root / "docs" / "diffusion" / "broken-note.py"
    note.parent.mkdir(exist_ok=True)
    note.write_text(BROKEN)
    env = mkdocs_env(DIFFLAB_NOTES_CACHE=str(tmp_path / "cache"))
    res = run_mkdocs(
        ["build", "--strict", "-d", str(tmp_path / "site")], root, env, 600
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "docs/diffusion/broken-note.py" in out, out[-3000:]
    assert "deliberately broken note 1" in out, out[-3000:]
    assert not list((tmp_path / "cache").glob("*.ipynb")), "a failed note was cached"


def _notes_hook():
    spec = importlib.util.spec_from_file_location(
        "notes_hook", REPO / "hooks" / "notes.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cache_key_changes_with_src_profile_and_data_not_with_tests(tmp_path):
    hook = _notes_hook()
    pkg = tmp_path / "src" / "difflab"
    (pkg / "tests").mkdir(parents=True)
    (pkg / "schedules.py").write_text("T = 1000\n")
    (pkg / "tests" / "test_x.py").write_text("def test(): pass\n")
    key = hook._fingerprint(tmp_path, "quick")
    assert key == hook._fingerprint(tmp_path, "quick")
    (pkg / "tests" / "test_x.py").write_text("def test(): assert True\n")
    assert key == hook._fingerprint(tmp_path, "quick"), "unit tests changed the key"
    assert key != hook._fingerprint(tmp_path, "full"), "profile ignored"
    (pkg / "schedules.py").write_text("T = 999\n")
    changed = hook._fingerprint(tmp_path, "quick")
    assert changed != key, "a change in src/difflab did not change the key"
    (tmp_path / "data" / "MNIST").mkdir(parents=True)
    assert hook._fingerprint(tmp_path, "quick") != changed, "data folder ignored"
