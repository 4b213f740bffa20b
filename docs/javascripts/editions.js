// The site's two editions, English at the root and Chinese under zh/ (hooks/i18n.py),
// differ in <html lang>, in the interface's language and in the nav. Material's
// instant navigation swaps a page's parts in place, so a link from one edition to
// the other (the language switcher, a search result, a Chinese page's link to an
// English API page) loads the new page in full instead: the listener runs first
// (capture phase), keeps Material's from seeing the click, and lets the browser go.
(function () {
  var config = document.getElementById("__config");
  var base = config ? JSON.parse(config.textContent).base : ".";
  var root = new URL(base.replace(/\/?$/, "/"), location.href).pathname;

  function edition(pathname) {
    return pathname.indexOf(root + "zh/") === 0 ? "zh" : "en";
  }

  window.addEventListener(
    "click",
    function (ev) {
      var a = ev.target instanceof Element ? ev.target.closest("a[href]") : null;
      if (!a || a.target || ev.metaKey || ev.ctrlKey || ev.shiftKey) return;
      var url = new URL(a.href, location.href);
      if (url.origin !== location.origin) return;
      if (edition(url.pathname) !== edition(location.pathname)) ev.stopPropagation();
    },
    true
  );
})();
