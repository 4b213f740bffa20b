"""MkDocs hook: make sure MathJax 3 is vendored into the site before the build.

The site typesets maths with MathJax 3 served from the site itself (no CDN), so that
it works offline and makes no request outside the machine. The files come from the
npm registry's ``mathjax`` package (the official MathJax distribution; its ``es5/``
folder holds the browser bundles), fetched once with ``npm pack mathjax@<pinned>``
and unpacked into ``docs/assets/vendor/mathjax/`` (git-ignored). The page loads
``tex-chtml.js`` (TeX input, CommonHTML output); its woff-v2 fonts and the TeX
extensions it may autoload are copied beside it and load from the same folder.

Why npm rather than PyPI: npm is where MathJax itself publishes; the PyPI packages
that embed MathJax 3 are third-party repackagings.

Offline or behind a mirror: set ``DIFFLAB_MATHJAX_TGZ=/path/to/mathjax-3.2.2.tgz``
(a tarball made by ``npm pack mathjax@3.2.2``), or unpack its ``es5/`` folder into
``docs/assets/vendor/mathjax/`` by hand. If neither works the build stops with one
message saying so.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from mkdocs.exceptions import PluginError

log = logging.getLogger("mkdocs.hooks.mathjax_vendor")

MATHJAX_VERSION = "3.2.2"
# What tex-chtml.js needs at run time: itself, fonts, autoloaded TeX extensions,
# the menu's accessibility pieces (loaded on demand) and the licence.
KEEP = ("tex-chtml.js", "input", "output", "a11y", "sre", "ui", "adaptors")


def on_config(config):
    target = Path(config.docs_dir) / "assets" / "vendor" / "mathjax"
    ensure_mathjax(target)
    return config


def ensure_mathjax(target: Path) -> Path:
    """Vendor MathJax ``MATHJAX_VERSION`` into ``target`` unless already there."""
    stamp = target / "VERSION"
    if (target / "tex-chtml.js").is_file() and stamp.is_file():
        if stamp.read_text().strip() == MATHJAX_VERSION:
            return target
    with tempfile.TemporaryDirectory(prefix="mathjax-") as tmp:
        tgz = _tarball(Path(tmp))
        with tarfile.open(tgz) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("package/es5/")]
            tar.extractall(tmp, members=members, filter="data")
            licence = [m for m in tar.getmembers() if m.name == "package/LICENSE"]
            tar.extractall(tmp, members=licence, filter="data")
        es5 = Path(tmp) / "package" / "es5"
        if not (es5 / "tex-chtml.js").is_file():
            raise PluginError(f"MathJax tarball {tgz} has no es5/tex-chtml.js.")
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in KEEP:
            src = es5 / name
            if src.is_dir():
                shutil.copytree(src, staging / name)
            elif src.is_file():
                shutil.copy2(src, staging / name)
        if (Path(tmp) / "package" / "LICENSE").is_file():
            shutil.copy2(Path(tmp) / "package" / "LICENSE", staging / "LICENSE")
        (staging / "VERSION").write_text(MATHJAX_VERSION + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    log.info("MathJax %s vendored into %s", MATHJAX_VERSION, target)
    return target


def _tarball(tmp: Path) -> Path:
    local = os.environ.get("DIFFLAB_MATHJAX_TGZ")
    if local:
        if not Path(local).is_file():
            raise PluginError(f"DIFFLAB_MATHJAX_TGZ={local} is not a file.")
        return Path(local)
    how = (
        "Install Node.js and npm (Debian: apt-get install -y npm) so that "
        f"`npm pack mathjax@{MATHJAX_VERSION}` can reach the npm registry, or set "
        f"DIFFLAB_MATHJAX_TGZ to a local mathjax-{MATHJAX_VERSION}.tgz."
    )
    npm = shutil.which("npm")
    if npm is None:
        raise PluginError(
            f"MathJax is not vendored yet and npm is not installed. {how}"
        )
    try:
        out = subprocess.run(
            [npm, "pack", f"mathjax@{MATHJAX_VERSION}", "--silent"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise PluginError(
            f"Could not fetch MathJax {MATHJAX_VERSION} with npm: "
            f"{detail.strip()[-500:]}\n{how}"
        ) from None
    name = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    tgz = tmp / name
    if not tgz.is_file():
        found = sorted(tmp.glob("mathjax-*.tgz"))
        if not found:
            raise PluginError(f"`npm pack` produced no MathJax tarball. {how}")
        tgz = found[0]
    return tgz
