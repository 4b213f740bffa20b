"""Open every page in Debian's Chromium and check what a reader sees.

For each page: every equation typeset by MathJax (no raw $$, \\[ or TeX commands
left in the text, mjx-container present where the page has maths, no MathJax
error), every image loaded, no Python traceback, no JavaScript error, and no
request to any host but 127.0.0.1/localhost (all requests are routed; others are
recorded and aborted), and no local request answered with an error (a font or
script missing from the site).

Chromium comes from Debian (``apt-get install -y chromium``); Playwright is used as
a Python library only (no browser download). Without /usr/bin/chromium the tests
are skipped on a workstation and fail in CI.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from conftest import doc_pages, html_of

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
TEX_LEFT = re.compile(
    r"\$\$|\\\[|\\\]|\\\(|\\\)|\\(?:frac|sqrt|bar|mathbf|mathcal|mathrm|alpha|beta|"
    r"epsilon|sigma|theta|tag|begin|end|nabla|sum|int|left|right)\b"
)
HAS_MATH = re.compile(
    r'class="arithmatex"|\$\$|\\\(|\\\[|(?<![\w$])\$[^$\s<][^$<]*\$', re.S
)
NOT_PROSE = re.compile(r"<(script|style|pre|code)\b.*?</\1>", re.S | re.I)

# Text of the page that a reader sees as prose: code, already typeset maths and
# code cells are removed before looking for TeX left raw.
PAGE_REPORT = """
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const imgs = Array.from(document.images);
  imgs.forEach((img) => { img.loading = "eager"; });
  await Promise.all(imgs.map((img) => img.complete ? null :
    new Promise((r) => {
      img.addEventListener("load", r);
      img.addEventListener("error", r);
    })));
  const article = document.querySelector("article") || document.body;
  const prose = article.cloneNode(true);
  prose.querySelectorAll(
    "pre, code, mjx-container, script, style, .jp-CodeCell .jp-InputArea, " +
    ".highlight, .highlight-ipynb, .clipboard-copy-txt, .jp-OutputArea-output pre"
  ).forEach((e) => e.remove());
  return {
    mathjax: !!(window.MathJax && MathJax.version),
    containers: document.querySelectorAll("mjx-container").length,
    // A container drawn with no width has lost its glyphs (missing font CSS).
    blank: Array.from(document.querySelectorAll("mjx-container"))
      .filter((c) => c.checkVisibility() && c.getBoundingClientRect().width < 1)
      .length,
    errors: document.querySelectorAll("mjx-merror, [data-mjx-error]").length,
    errorText: Array.from(document.querySelectorAll("mjx-merror, [data-mjx-error]"))
      .slice(0, 3).map((e) => e.getAttribute("data-mjx-error") || e.textContent),
    prose: prose.textContent,
    text: document.body.innerText,
    badImages: imgs.filter((i) => !(i.complete && i.naturalWidth > 0))
      .map((i) => (i.currentSrc || i.src).slice(0, 80)),
    images: imgs.length,
  };
}
"""


@pytest.fixture(scope="session")
def context(browser):
    ctx = browser.new_context()
    ctx.foreign = []  # requests to other hosts, all aborted
    ctx.failed = []  # local requests answered with an error (a missing file)
    ctx.on(
        "response",
        lambda r: ctx.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None,
    )

    def route(r):
        host = urlsplit(r.request.url).hostname
        if urlsplit(r.request.url).scheme in ("http", "https", "ws", "wss") and (
            host not in LOCAL_HOSTS
        ):
            ctx.foreign.append(r.request.url)
            r.abort()
        else:
            r.continue_()

    ctx.route("**/*", route)
    yield ctx
    ctx.close()


@pytest.mark.parametrize("page_src", doc_pages())
def test_page_renders(context, site_url, site_dir, page_src):
    rel = html_of(page_src)
    html = (site_dir / rel).read_text(encoding="utf-8")
    content = html.split("<article", 1)[-1].split("</article>", 1)[0]
    content = NOT_PROSE.sub(" ", content)
    expects_math = bool(HAS_MATH.search(content))
    page = context.new_page()
    js_errors = []
    page.on("pageerror", lambda e: js_errors.append(str(e)))
    before, failed_before = len(context.foreign), len(context.failed)
    try:
        page.goto(f"{site_url}/{rel}", wait_until="load", timeout=120_000)
        report = page.evaluate(PAGE_REPORT)
    finally:
        page.close()
    foreign = context.foreign[before:]
    assert not foreign, f"requests left the machine: {foreign[:5]}"
    failed = context.failed[failed_before:]
    assert not failed, f"requests that failed: {failed[:5]}"
    assert not js_errors, f"JavaScript errors: {js_errors[:3]}"
    assert report["mathjax"], "MathJax did not load"
    assert report["errors"] == 0, f"MathJax errors: {report['errorText']}"
    assert report["blank"] == 0, f"{report['blank']} equations typeset blank"
    raw = TEX_LEFT.findall(report["prose"])
    assert not raw, f"TeX left untypeset: {raw[:8]}"
    if expects_math:
        assert report["containers"] > 0, "the page has maths but nothing was typeset"
    assert not report["badImages"], f"images not loaded: {report['badImages']}"
    assert "Traceback (most recent call last)" not in report["text"]


def test_instant_navigation_typesets_the_new_page(browser, site_url):
    """Material swaps pages without reloading: the new page's maths is typeset."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    try:
        page.goto(f"{site_url}/index.html", wait_until="load")
        page.evaluate("() => MathJax.startup.promise")
        page.evaluate("() => { window.__sameDocument = true; }")
        page.click("a.md-tabs__link[href$='notation.html']")
        page.wait_for_function(
            "() => location.pathname.endsWith('notation.html')"
            " && Array.from(document.querySelectorAll('article mjx-container'))"
            ".some((c) => c.getBoundingClientRect().width > 1)",
            timeout=60_000,
        )
        same = page.evaluate("() => window.__sameDocument === true")
    finally:
        ctx.close()
    assert same, "the click reloaded the page: instant navigation is off"


def test_numbered_equation_renders_its_tag(context, site_url):
    """`\\tag{n}` (with tags: 'ams') renders the label (n) beside the equation."""
    page = context.new_page()
    try:
        page.goto(f"{site_url}/notation.html", wait_until="load")
        page.evaluate("() => MathJax.startup.promise")
        result = page.evaluate(
            """async () => {
                const div = document.createElement("div");
                div.className = "arithmatex";
                div.textContent =
                    "\\\\[ x_t = \\\\sqrt{\\\\bar\\\\alpha_t}\\\\,x_0 \\\\tag{7} \\\\]";
                document.querySelector("article").appendChild(div);
                await MathJax.typesetPromise([div]);
                const c = div.querySelector("mjx-container");
                return {
                    typeset: !!c,
                    labels: c ? c.querySelectorAll("mjx-labels").length : 0,
                    text: c ? c.textContent : "",
                    error: div.querySelectorAll("mjx-merror").length,
                };
            }"""
        )
    finally:
        page.close()
    assert result["typeset"] and result["error"] == 0, result
    assert result["labels"] == 1 and "(7)" in result["text"], result


NOTE_REPORT = """
async () => {
  const folds = Array.from(document.querySelectorAll("details.difflab-fold"));
  const links = Array.from(document.querySelectorAll(".difflab-downloads a"));
  const status = await Promise.all(links.map((a) =>
    fetch(a.href).then((r) => r.status, () => 0)));
  return {
    prompts: Array.from(document.querySelectorAll(".jp-InputPrompt"))
      .filter((e) => e.checkVisibility() && e.textContent.trim()).length,
    folds: folds.length,
    open: folds.filter((d) => d.open).length,
    codeShown: folds.filter((d) =>
      Array.from(d.querySelectorAll("pre")).some((p) => p.checkVisibility())).length,
    summaries: folds.filter((d) => d.querySelector("summary").checkVisibility()
      && d.querySelector("summary").textContent.trim()).length,
    downloads: links.map((a) => a.getAttribute("href")),
    status: status,
  };
}
"""


@pytest.mark.parametrize("page_src", [p for p in doc_pages() if p.endswith(".py")])
def test_note_reading_aids(context, site_url, page_src):
    """No prompts, plumbing folded behind a visible summary, downloads served."""
    page = context.new_page()
    try:
        page.goto(f"{site_url}/{html_of(page_src)}", wait_until="load")
        report = page.evaluate(NOTE_REPORT)
    finally:
        page.close()
    assert report["prompts"] == 0, report
    assert report["open"] == 0 and report["codeShown"] == 0, report
    assert report["summaries"] == report["folds"], report
    assert len(report["downloads"]) == 2 and report["status"] == [200, 200], report
