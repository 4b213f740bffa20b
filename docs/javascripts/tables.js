// Tables wider than the text column scroll inside it, with a cue (notes.css).
//
// Each table of the page is put in a frame: div.difflab-table-frame holds the
// scrolling box (div.difflab-scroll, or Material's own .md-typeset__scrollwrap
// around a Markdown table) and a "scroll →" hint. When the table is wider than
// the box, the frame gets the class difflab-overflows: the hint and a fade on the
// right edge show, and the first column (the row's name) stays in place while
// the rest scrolls. At the right end (difflab-at-end) the fade goes. The check
// runs on each page (Material's instant navigation swaps pages without reloading
// scripts) and whenever a box changes size (window resize, fonts, MathJax).

function difflabFrameTable(table) {
  var box = table.closest(".md-typeset__scrollwrap, .difflab-scroll");
  if (!box) {
    box = document.createElement("div");
    box.className = "difflab-scroll";
    table.parentNode.insertBefore(box, table);
    box.appendChild(table);
  }
  if (box.parentElement.classList.contains("difflab-table-frame")) {
    return box.parentElement;
  }
  var frame = document.createElement("div");
  frame.className = "difflab-table-frame";
  box.parentNode.insertBefore(frame, box);
  frame.appendChild(box);
  var hint = document.createElement("span");
  hint.className = "difflab-scroll-hint";
  hint.setAttribute("aria-hidden", "true");
  hint.textContent = "scroll \u2192";
  frame.appendChild(hint);
  return frame;
}

function difflabUpdateFrame(frame) {
  var box = frame.firstElementChild;
  var overflows = box.scrollWidth > box.clientWidth + 1;
  frame.classList.toggle("difflab-overflows", overflows);
  frame.classList.toggle(
    "difflab-at-end",
    overflows && box.scrollLeft + box.clientWidth >= box.scrollWidth - 1
  );
}

function difflabFrameTables() {
  var article = document.querySelector("article") || document.body;
  var resized = new ResizeObserver(function (entries) {
    entries.forEach(function (e) {
      difflabUpdateFrame(e.target.closest(".difflab-table-frame"));
    });
  });
  article.querySelectorAll("table").forEach(function (table) {
    if (table.parentElement.closest("table")) {
      return; // a table inside a table cell scrolls with its host
    }
    var frame = difflabFrameTable(table);
    var box = frame.firstElementChild;
    box.addEventListener("scroll", function () {
      difflabUpdateFrame(frame);
    }, { passive: true });
    resized.observe(box);
    resized.observe(table);
    difflabUpdateFrame(frame);
  });
}

if (typeof document$ !== "undefined") {
  document$.subscribe(difflabFrameTables);
} else {
  document.addEventListener("DOMContentLoaded", difflabFrameTables);
}
