// MathJax 3 configuration for the site (MathJax itself is vendored: see
// hooks/mathjax_vendor.py; it loads after this file, see mkdocs.yml).
//
// Only these elements are typeset, and everything inside them:
//  - .arithmatex: maths of Markdown pages (pymdownx.arithmatex, generic mode, which
//    wraps it in \(..\) or \[..\]);
//  - .jp-RenderedMarkdown: markdown cells of notes. mkdocs-jupyter (0.26 and 0.27,
//    through nbconvert) leaves the raw $..$ and $$..$$ in their HTML, inside
//    <p>, <li>, ... children, so the whole subtree must be scanned;
//  - .jp-RenderedLatex: LaTeX outputs of code cells.
// Prose elsewhere is never scanned, so a "$" in text or code is safe. (The usual
// `ignoreHtmlClass: ".*|"` recipe would skip the unclassed <p> of notebook cells.)
// The CHTML fonts load from output/chtml/fonts/woff-v2 beside tex-chtml.js (MathJax's
// default, resolved from the script's own URL): local, like the script.
var DIFFLAB_MATH = ".arithmatex, .jp-RenderedMarkdown, .jp-RenderedLatex";

window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
    tags: "ams",
  },
  startup: {
    elements: [DIFFLAB_MATH],
  },
};

// Material's instant navigation swaps the page without reloading scripts: typeset
// each new page (MathJax typesets the first one itself when it starts).
document$.subscribe(function () {
  var mj = window.MathJax;
  if (!mj || !mj.startup || typeof mj.typesetPromise !== "function") {
    return;
  }
  mj.startup.promise = mj.startup.promise.then(function () {
    // No output.clearCache() here: it drops the CSS of glyphs already on the page,
    // and this also runs for the first page after MathJax has typeset it.
    mj.typesetClear();
    mj.texReset();
    return mj.typesetPromise([DIFFLAB_MATH]);
  });
});
