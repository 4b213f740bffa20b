"""MathJax is vendored through Python alone (no npm), and only the official files.

The vendoring step (hooks/mathjax_vendor.py) checks whatever a route brings against
the pinned SHA-256 of the official MathJax 3.2.2 files.
"""

from __future__ import annotations

import importlib.util
import io
import os
import tarfile

import pytest
from conftest import REPO


def _hook():
    spec = importlib.util.spec_from_file_location(
        "mathjax_vendor", REPO / "hooks" / "mathjax_vendor.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _no_npm_path(tmp_path, monkeypatch):
    """PATH with no npm on it (the hook calls pip through sys.executable)."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("DIFFLAB_MATHJAX_TGZ", raising=False)


def test_the_pinned_list_covers_what_the_page_loads():
    pinned = _hook().pinned()
    assert "tex-chtml.js" in pinned
    fonts = [p for p in pinned if p.startswith("output/chtml/fonts/woff-v2/")]
    assert len(fonts) > 10
    assert all(len(d) == 64 for d in pinned.values())


@pytest.mark.timeout(600)
def test_vendored_with_npm_absent_from_path(tmp_path, monkeypatch):
    hook = _hook()
    _no_npm_path(tmp_path, monkeypatch)
    assert hook.shutil.which("npm") is None
    target = tmp_path / "docs" / "assets" / "vendor" / "mathjax"
    try:
        hook.ensure_mathjax(target)
    except hook.PluginError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PyPI here and nothing installed: {exc}")
    assert hook.verify(target) == []
    assert "PyPI" in (target / "VERSION").read_text()


def test_a_file_that_is_not_the_official_one_is_refused(tmp_path, monkeypatch):
    hook = _hook()
    _no_npm_path(tmp_path, monkeypatch)
    tgz = tmp_path / "mathjax-3.2.2.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        data = b"console.log('not MathJax');"
        info = tarfile.TarInfo("package/es5/tex-chtml.js")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    monkeypatch.setenv("DIFFLAB_MATHJAX_TGZ", str(tgz))
    monkeypatch.setattr(hook, "ROUTES", hook.ROUTES[:1])  # the tarball only
    target = tmp_path / "mathjax"
    with pytest.raises(hook.PluginError, match="not the official file|missing"):
        hook.ensure_mathjax(target)
    assert not (target / "tex-chtml.js").exists()
