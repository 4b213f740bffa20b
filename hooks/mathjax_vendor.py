"""MkDocs hook: make sure MathJax 3 is vendored into the site before the build.

The site typesets maths with MathJax 3.2.2 served from the site itself (no CDN), so
that it works offline and makes no request outside the machine. The page loads
``tex-chtml.js`` (TeX input, CommonHTML output); its woff-v2 fonts, the TeX
extensions it may autoload and the menu's accessibility pieces are copied beside it
into ``docs/assets/vendor/mathjax/`` (git-ignored).

Every file is checked against ``hooks/mathjax-3.2.2.sha256``, the SHA-256 of the
official distribution's files (the ``es5/`` folder of the npm package
``mathjax@3.2.2``), whichever route brought it. Routes, first that works wins:

1. ``DIFFLAB_MATHJAX_TGZ=/path/to/mathjax-3.2.2.tgz``: a tarball made by
   ``npm pack mathjax@3.2.2`` (offline, or behind a mirror).
2. Python only (what ``make serve`` on a bare machine has): the PyPI package
   ``sphinx-mathjax-offline==0.0.2``, which ships the same 3.2.2 files byte for
   byte. If it is installed, its files are used; otherwise its wheel is fetched
   with ``python -m pip download --no-deps`` into a temporary folder (nothing is
   installed).
3. npm: ``npm pack mathjax@3.2.2``.

If no route works the build stops with one message naming all of them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from mkdocs.exceptions import PluginError

log = logging.getLogger("mkdocs.hooks.mathjax_vendor")

MATHJAX_VERSION = "3.2.2"
PYPI_PACKAGE = "sphinx-mathjax-offline"
PYPI_VERSION = "0.0.2"
MANIFEST = Path(__file__).with_name(f"mathjax-{MATHJAX_VERSION}.sha256")


def on_config(config):
    target = Path(config.docs_dir) / "assets" / "vendor" / "mathjax"
    ensure_mathjax(target)
    return config


def pinned() -> dict[str, str]:
    """``{relative path: sha256}`` of the official files the site serves."""
    out = {}
    for line in MANIFEST.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, rel = line.split(maxsplit=1)
            out[rel] = digest
    return out


def verify(folder: Path) -> list[str]:
    """What in ``folder`` differs from the pinned files (empty when all match)."""
    bad = []
    for rel, digest in pinned().items():
        f = folder / rel
        if not f.is_file():
            bad.append(f"{rel}: missing")
        elif hashlib.sha256(f.read_bytes()).hexdigest() != digest:
            bad.append(f"{rel}: not the official file")
    return bad


def ensure_mathjax(target: Path) -> Path:
    """Vendor MathJax ``MATHJAX_VERSION`` into ``target`` unless already there."""
    stamp = target / "VERSION"
    if (target / "tex-chtml.js").is_file() and stamp.is_file():
        if stamp.read_text().split()[:1] == [MATHJAX_VERSION]:
            return target
    failures = []
    for name, route in ROUTES:
        with tempfile.TemporaryDirectory(prefix="mathjax-") as tmp:
            try:
                es5 = route(Path(tmp))
            except _Skip as why:
                failures.append(f"{name}: {why}")
                continue
            bad = verify(es5)
            if bad:
                failures.append(f"{name}: {len(bad)} files differ ({bad[0]}, ...)")
                continue
            _install(es5, target, name)
            log.info("MathJax %s vendored into %s (%s)", MATHJAX_VERSION, target, name)
            return target
    raise PluginError(
        f"MathJax {MATHJAX_VERSION} is not vendored yet and no route worked:\n  "
        + "\n  ".join(failures)
        + f"\nWith Python only: `python -m pip install {PYPI_PACKAGE}=={PYPI_VERSION}"
        " --no-deps` (or let the build fetch it from PyPI); with Node.js: install "
        f"npm; offline: set DIFFLAB_MATHJAX_TGZ to a mathjax-{MATHJAX_VERSION}.tgz."
    )


def _install(es5: Path, target: Path, route: str) -> None:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for rel in pinned():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(es5 / rel, staging / rel)
    licence = es5.parent / "LICENSE"
    if licence.is_file():
        shutil.copy2(licence, staging / "LICENSE")
    (staging / "VERSION").write_text(f"{MATHJAX_VERSION} (from {route})\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


class _Skip(Exception):
    """This route is not available here; the message says why."""


def _from_tarball(tgz: Path, tmp: Path) -> Path:
    with tarfile.open(tgz) as tar:
        members = [
            m
            for m in tar.getmembers()
            if m.name.startswith("package/es5/") or m.name == "package/LICENSE"
        ]
        tar.extractall(tmp, members=members, filter="data")
    return tmp / "package" / "es5"


def _route_tarball(tmp: Path) -> Path:
    local = os.environ.get("DIFFLAB_MATHJAX_TGZ")
    if not local:
        raise _Skip("DIFFLAB_MATHJAX_TGZ not set")
    if not Path(local).is_file():
        raise _Skip(f"DIFFLAB_MATHJAX_TGZ={local} is not a file")
    return _from_tarball(Path(local), tmp)


def _route_python(tmp: Path) -> Path:
    from importlib import metadata

    try:
        dist = metadata.distribution(PYPI_PACKAGE)
        js = [f for f in dist.files or () if str(f).endswith("mathjax/tex-chtml.js")]
        if js:
            return Path(dist.locate_file(js[0])).parent
    except metadata.PackageNotFoundError:
        pass
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary"]
    cmd += [":all:", "-q", "-d", str(tmp), f"{PYPI_PACKAGE}=={PYPI_VERSION}"]
    try:
        subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = (getattr(exc, "stderr", "") or str(exc)).strip().splitlines()
        raise _Skip(f"pip download failed ({detail[-1] if detail else exc})") from None
    wheels = sorted(tmp.glob("*.whl"))
    if not wheels:
        raise _Skip("pip download produced no wheel")
    with zipfile.ZipFile(wheels[0]) as whl:
        whl.extractall(tmp / "wheel")
    found = sorted((tmp / "wheel").rglob("mathjax/tex-chtml.js"))
    if not found:
        raise _Skip(f"{wheels[0].name} has no mathjax/tex-chtml.js")
    return found[0].parent


def _route_npm(tmp: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise _Skip("npm is not installed")
    try:
        subprocess.run(
            [npm, "pack", f"mathjax@{MATHJAX_VERSION}", "--silent"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = (getattr(exc, "stderr", "") or str(exc)).strip()
        raise _Skip(f"npm pack failed ({detail[-300:]})") from None
    found = sorted(tmp.glob("mathjax-*.tgz"))
    if not found:
        raise _Skip("npm pack produced no tarball")
    return _from_tarball(found[0], tmp)


ROUTES = (
    ("DIFFLAB_MATHJAX_TGZ", _route_tarball),
    (f"PyPI {PYPI_PACKAGE}", _route_python),
    ("npm", _route_npm),
)
