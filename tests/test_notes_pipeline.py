"""What hooks/notes.py publishes, on a small site with one made-up note.

The note exercises every rule at once: a set-up cell of imports and a cell tagged
``fold`` (both folded, with their one-line summaries), a figure (a lazy file beside
the page, not base64 in the HTML), output naming the build machine's paths (scrubbed),
stderr and a warning (never published), links to another page, no prompts, and the
downloads under the title, and a stand-in data notice moved from its cell to the top.
"""

from __future__ import annotations

import json
import re
import shutil
import sys

import pytest
from conftest import REPO, copy_config, mkdocs_env, run_mkdocs

NOTE = """# %% [markdown]
# # Plumbing demo
#
# Back to [the home page](../index.md).

# %%
import os
import sys
import warnings

# %% tags=["fold"]
# Draw the figure
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(3, 2))
ax.plot([0, 1], [0, 1])
plt.show()

# %%
print("cwd:", os.getcwd())
print("prefix:", sys.prefix)
print("to stderr", file=sys.stderr)
warnings.warn("a warning the reader must not see", stacklevel=1)
answer = 41 + 1
print("the answer is", answer)

# %%
from difflab.notes import page

page.PageRun("quick", "cpu").data_notice("MNIST", "the 8x8 digits", "bash get mnist")
"""

INDEX = """# Home

The [demo note](diffusion/plumbing-demo.py).
"""


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mini")
    root = tmp / "repo"
    root.mkdir()
    copy_config(root)
    shutil.copytree(
        REPO / "hooks", root / "hooks", ignore=shutil.ignore_patterns("__pycache__")
    )
    docs = root / "docs"
    for folder in ("javascripts", "stylesheets", "assets"):
        if (REPO / "docs" / folder).is_dir():
            shutil.copytree(REPO / "docs" / folder, docs / folder)
    for name in ("references.bib", "glossary.yml", "i18n.zh.yml"):
        shutil.copy2(REPO / "docs" / name, docs / name)
    (docs / "index.md").write_text(INDEX)
    (docs / "diffusion").mkdir(parents=True)
    (docs / "diffusion" / "plumbing-demo.py").write_text(NOTE)
    (root / "src").symlink_to(REPO / "src", target_is_directory=True)
    env = mkdocs_env(DIFFLAB_NOTES_CACHE=str(tmp / "cache"))
    site = tmp / "site"
    res = run_mkdocs(["build", "--strict", "-d", str(site)], root, env, 600)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    html = (site / "diffusion" / "plumbing-demo.html").read_text(encoding="utf-8")
    return {"root": root, "site": site, "log": log, "html": html}


def test_timing_table_and_stderr_logged_not_published(mini):
    assert "notes: per-page timing" in mini["log"]
    assert "docs/diffusion/plumbing-demo.py" in mini["log"]
    assert "wrote to stderr (not published)" in mini["log"]
    html = mini["html"]
    assert "application/vnd.jupyter.stderr" not in html
    out = re.findall(r"jp-OutputArea-output\b[^>]*>(.*?)</div>", html, re.S)
    text = " ".join(out)
    assert "the answer is 42" in text
    assert "a warning the reader must not see" not in text
    assert "to stderr" not in text


def test_no_path_of_the_build_machine(mini):
    html = mini["html"]
    for path in {str(mini["root"]), str(mini["root"].resolve()), sys.prefix, str(REPO)}:
        assert path not in html, path
    assert "cwd: ." in html


def test_prompts_hidden_and_plumbing_folded(mini):
    html = mini["html"]
    assert "jp-InputPrompt" not in html and "In&nbsp;[" not in html
    summaries = re.findall(
        r'<details class="difflab-fold"><summary>([^<]*)</summary>', html
    )
    assert summaries == [
        "Imports: os, sys, warnings (3 lines)",
        "Draw the figure (5 lines)",
    ], summaries
    assert '<details class="difflab-fold" open' not in html
    # The derivation cell stays open: its code is outside any <details>.
    last = html.rsplit("</details>", 1)[-1]
    assert "answer" in last


def test_figures_are_lazy_files_and_the_page_is_light(mini):
    html, site = mini["html"], mini["site"]
    assert "data:image/png" not in html
    imgs = re.findall(r"<img\b[^>]*>", html)
    figs = [i for i in imgs if "_files/fig-" in i]
    assert figs and all('loading="lazy"' in i for i in figs)
    for tag in figs:
        src = re.search(r'src="([^"]+)"', tag)[1]
        assert (site / "diffusion" / src).is_file(), src
    assert len(html.encode()) < 400_000, "a note's HTML should be small"


def test_downloads_under_the_title(mini):
    html, site = mini["html"], mini["site"]
    m = re.search(r'<p class="difflab-downloads">(.*?)</p>', html, re.S)
    assert m and html.index("</h1>") < m.start()
    hrefs = re.findall(r'href="([^"]+)"', m[1])
    assert hrefs == ["plumbing-demo.py", "plumbing-demo.ipynb"]
    py = site / "diffusion" / "plumbing-demo.py"
    assert py.read_text() == NOTE
    nb = json.loads((site / "diffusion" / "plumbing-demo.ipynb").read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert any(o.get("output_type") == "display_data" for o in outputs)
    assert not any(o.get("name") == "stderr" for o in outputs)


def test_links_between_pages_resolve(mini):
    html = mini["html"]
    assert 'href="../index.html"' in html
    home = (mini["site"] / "index.html").read_text(encoding="utf-8")
    assert 'href="diffusion/plumbing-demo.html"' in home


def test_a_stand_in_data_notice_moves_from_its_cell_to_under_the_title(mini):
    html = mini["html"]
    assert html.count("difflab-data-notice") == 1
    after = html[re.search(r"</h1\s*>", html).end() :]
    at = after.index('<div class="admonition warning difflab-data-notice">')
    # only the page's one-line paragraphs (orientation, downloads) before it
    assert "<div" not in after[:at] and "<h2" not in after[:at], after[:at]
    notice = after[at : after.index("</div>", at) + 6]
    assert "built without MNIST" in notice and "<code>bash get mnist</code>" in notice
