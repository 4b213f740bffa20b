"""What a shown figure says and how legible it is: alt text and three measurements.

When a note shows a matplotlib figure in Jupyter, :func:`install` (called by
:func:`difflab.notes.page.start`) has the PNG output carry, beside its width and
height, what the site's hook writes onto the figure's ``<img>``:

* ``alt``: what the figure shows, built from its suptitle, each panel's title,
  axis labels and legend entries, and "grid of N images" for a sample grid
  (:func:`alt_text`); a note overrides it with :func:`describe`;
* ``difflab``: measurements of the figure at its native resolution (``fig.dpi``,
  100 in the house style, so one figure pixel is one CSS pixel before the page
  shrinks a figure to the column): ``min_text_px``, the smallest drawn font size;
  ``min_cell_px``, the smallest image cell of a sample grid (one digit; the whole
  image for a plain ``imshow``); ``overlaps``, the pairs of drawn texts whose
  boxes intersect; ``width``, the PNG's native width in CSS pixels.

The browser tests (``tests/test_browser.py``) scale the sizes by the width the
figure is shown at and hold them to the site's rules: text at least 10 px,
a digit at least 28 px, no overlapping labels, a real alt text.
"""

from __future__ import annotations

import functools
import re
import weakref

from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.transforms import Bbox

__all__ = ["alt_text", "describe", "install", "mark_grid", "measure"]

# Texts whose boxes intersect by more than this, in pixels along both axes, overlap.
OVERLAP_TOLERANCE_PX = 1.0

_ALT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # figure -> alt text
_GRIDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # image -> tiles


def describe(fig: Figure, text: str) -> Figure:
    """Give ``fig`` the alt text ``text`` (what it shows), instead of the built one."""
    _ALT[fig] = " ".join(text.split())
    return fig


def mark_grid(image: AxesImage, tile: tuple[int, int], count: int) -> None:
    """Record that ``image`` tiles ``count`` images of ``tile`` = (H, W) pixels.

    :func:`difflab.notes.plotting.show_grid` calls it, so that :func:`measure`
    reports the size of one digit, not of the whole grid.
    """
    _GRIDS[image] = (tuple(int(v) for v in tile), int(count))


class _RecordingRenderer(RendererAgg):
    """An Agg renderer that remembers which texts were actually drawn."""

    def __init__(self, width: float, height: float, dpi: float):
        super().__init__(width, height, dpi)
        self.texts: dict[int, object] = {}

    def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if mtext is not None and s.strip():
            self.texts.setdefault(id(mtext), mtext)
        return super().draw_text(gc, x, y, s, prop, angle, ismath, mtext)


def _plain(text: str) -> str:
    """A label as words: mathtext's ``$``, font commands, backslashes and braces
    removed (tick and legend labels come as ``$\\mathdefault{0}$``)."""
    text = re.sub(
        r"\\(mathdefault|mathrm|mathbf|mathcal|operatorname|text)\b", "", text
    )
    text = re.sub(r"[\\${}]", "", text)
    return " ".join(text.split())


def _drawn_images(fig: Figure, renderer) -> list[tuple[AxesImage, Bbox]]:
    """Each visible image of the figure with the box it is drawn in (pixels)."""
    out = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for im in ax.images:
            if not im.get_visible() or im.get_array() is None:
                continue
            box = Bbox.intersection(im.get_window_extent(renderer), ax.bbox)
            if box is not None and box.width > 0 and box.height > 0:
                out.append((im, box))
    return out


def measure(fig: Figure) -> dict:
    """Draw ``fig`` once at its own dpi and measure what a reader sees.

    Returns ``min_text_px`` (smallest font size among the drawn texts, in pixels
    at ``fig.dpi``; ``None`` without text), ``min_cell_px`` (smallest side of one
    image cell as drawn, ``None`` without images), ``overlaps`` (pairs of drawn
    texts whose boxes intersect, as ``[text_a, text_b]``) and ``alt``.
    """
    w, h = fig.get_size_inches() * fig.dpi
    renderer = _RecordingRenderer(w, h, fig.dpi)
    fig.draw(renderer)
    texts = list(renderer.texts.values())
    sizes = [t.get_fontsize() * fig.dpi / 72.0 for t in texts]
    boxes = [
        (t, t.get_window_extent(renderer))
        for t in texts
        if t.get_rotation() % 90 == 0  # a slanted label's box is not its outline
    ]
    overlaps = []
    for i, (ta, a) in enumerate(boxes):
        for tb, b in boxes[i + 1 :]:
            dx = min(a.x1, b.x1) - max(a.x0, b.x0)
            dy = min(a.y1, b.y1) - max(a.y0, b.y0)
            if dx > OVERLAP_TOLERANCE_PX and dy > OVERLAP_TOLERANCE_PX:
                overlaps.append([_plain(ta.get_text()), _plain(tb.get_text())])
    cells = []
    for im, box in _drawn_images(fig, renderer):
        rows, cols = im.get_array().shape[:2]
        tile_h, tile_w = _GRIDS.get(im, ((rows, cols), 1))[0]
        cells.append(min(box.height * tile_h / rows, box.width * tile_w / cols))
    return {
        "min_text_px": round(min(sizes), 2) if sizes else None,
        "min_cell_px": round(min(cells), 2) if cells else None,
        "overlaps": overlaps,
        "alt": _ALT.get(fig) or alt_text(fig),
    }


def _legend_labels(ax) -> list[str]:
    legend = ax.get_legend()
    if legend is None or not legend.get_visible():
        return []
    return [_plain(t.get_text()) for t in legend.get_texts() if t.get_text().strip()]


def _panel(ax) -> str:
    """One panel in words: title, then axes, legend and images."""
    title = " ".join(
        _plain(ax.get_title(loc)) for loc in ("left", "center", "right")
    ).strip()
    parts = []
    if ax.axison:
        x, y = _plain(ax.get_xlabel()), _plain(ax.get_ylabel())
        if x and y:
            parts.append(f"{y} against {x}")
        elif x or y:
            parts.append(x or y)
    if labels := _legend_labels(ax):
        parts.append("legend: " + ", ".join(labels))
    for im in ax.images:
        if im.get_visible():
            grid = _GRIDS.get(im)
            parts.append(f"grid of {grid[1]} images" if grid else "an image")
    body = "; ".join(parts)
    if title and body:
        return f"{title} ({body})"
    return title or body


def alt_text(fig: Figure) -> str | None:
    """The built alt text: suptitle, then each panel; ``None`` when nothing names it."""
    axes = [ax for ax in fig.axes if ax.get_visible()]
    lead = _plain(fig.get_suptitle())
    named = lead or any(
        ax.get_title(loc).strip() for ax in axes for loc in ("left", "center", "right")
    )
    named = named or any(_legend_labels(ax) for ax in axes)
    named = named or any(
        ax.axison and (ax.get_xlabel().strip() or ax.get_ylabel().strip())
        for ax in axes
    )
    if not named:  # "an image" says nothing: the note must describe it
        return None
    panels = [p for ax in axes if (p := _panel(ax))]
    kind = "Figure" if len(panels) == 1 else f"Figure, {len(panels)} panels"
    text = f"{kind}: " + (f"{lead}. " if lead else "") + "; ".join(panels)
    return text if len(text) <= 600 else text[:597] + "..."


def _with_measurements(base, fig: Figure):
    """``base``'s PNG of ``fig`` with ``alt`` and ``difflab`` in its metadata."""
    out = base(fig)
    data, meta = out if isinstance(out, tuple) else (out, {})
    meta = dict(meta or {})
    found = measure(fig)
    alt = found.pop("alt")
    if alt:
        meta["alt"] = alt
    found["width"] = meta.get("width")  # retina PNGs say their CSS width
    meta["difflab"] = found
    return data, meta


def install(shell) -> None:
    """Wrap the shell's PNG formatter of figures so each output carries the above.

    Call after choosing the figure format (``set_matplotlib_formats``), which
    replaces the formatter.
    """
    png = shell.display_formatter.formatters["image/png"]
    try:
        base = png.lookup_by_type(Figure)
    except KeyError:
        return
    if isinstance(base, functools.partial) and base.func is _with_measurements:
        return
    png.for_type(Figure, functools.partial(_with_measurements, base))
