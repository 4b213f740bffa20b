// MathJax 3 configuration for the site (MathJax itself is vendored: see
// hooks/mathjax_vendor.py; it loads after this file, see mkdocs.yml).
//
// Only these elements are typeset, and everything inside them:
//  - .arithmatex: maths of Markdown pages (pymdownx.arithmatex, generic mode, which
//    wraps it in \(..\) or \[..\]);
//  - .jp-RenderedMarkdown: markdown cells of notes. mkdocs-jupyter 0.26 (through
//    nbconvert) leaves the raw $..$ and $$..$$ in their HTML, inside <p>, <li>, ...
//    children, so the whole subtree is scanned; 0.27 wraps them in .arithmatex
//    inside the cell, so only outermost matches are typeset (never one twice);
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
    typeset: false, // pageReady below typesets only the elements listed above
    pageReady: function () {
      return MathJax.startup.defaultPageReady().then(function () {
        return MathJax.typesetPromise(difflabMathElements());
      });
    },
  },
};

// The outermost elements matching DIFFLAB_MATH.
function difflabMathElements() {
  var all = Array.prototype.slice.call(document.querySelectorAll(DIFFLAB_MATH));
  return all.filter(function (el) {
    return !all.some(function (other) {
      return other !== el && other.contains(el);
    });
  });
}

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
    return mj.typesetPromise(difflabMathElements());
  });
});
