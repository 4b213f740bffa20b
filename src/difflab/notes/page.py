"""What every note does first and last: the house figure style and the provenance box.

Usage in a note::

    from difflab.notes import page
    run = page.start()            # first code cell: style + provenance box
    ...
    run.finish(dataset=data.name) # last code cell: fills in dataset and seconds

:func:`start` sets the house matplotlib style (:data:`HOUSE_STYLE`): figures are
drawn at ``figure.dpi`` 100, so one inch of figure is 100 CSS pixels on the page,
and rendered as retina PNG (twice the pixels, shown at half size), so they stay
sharp on high-density screens. The default figure is :data:`FIGURE_WIDTH_IN` inches
wide, no wider than the site's text column (about 650 px at desktop width); a note
never asks for a wider figure, and lays long strips out as grids
(:func:`difflab.notes.plotting.grid_shape`). Fonts are stated in points: at
100 dpi a 9 pt tick label is 12.5 px high, readable at the column width.

The provenance (profile, device, dataset, seconds) is one small rendered box at the
top of the page: :func:`start` shows it with the profile and device, and
:meth:`PageRun.finish` updates that same box in place (a Jupyter display id) with
the dataset and the time taken, so the last cell shows nothing. Outside Jupyter
the two calls print one plain line each.

Every figure a note shows gets an alt text built from its titles, labels and
legends, and the measurements the site's browser tests check (smallest text, one
digit's size, overlapping labels; :mod:`difflab.notes.figures`);
``page.describe_figure(fig, "...")`` says better what a figure shows.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field

import matplotlib

from difflab.core.memory import keep_freed_memory
from difflab.notes import figures
from difflab.runtime.device import default_device, describe
from difflab.runtime.profiles import current_profile

#: Give a figure the alt text that says what it shows: ``describe_figure(fig, "...")``.
describe_figure = figures.describe

#: Figure dots per inch: one inch of figure is this many CSS pixels on the page.
FIGURE_DPI = 100
#: The widest figure a note draws, in inches (640 px: the text column's width).
FIGURE_WIDTH_IN = 6.4
#: The smallest font of the house style, in points (tick labels, legends).
MIN_FONT_PT = 9

HOUSE_STYLE = {
    "figure.dpi": FIGURE_DPI,
    "savefig.dpi": FIGURE_DPI,
    "figure.figsize": (FIGURE_WIDTH_IN, 3.6),
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": MIN_FONT_PT,
    "ytick.labelsize": MIN_FONT_PT,
    "legend.fontsize": MIN_FONT_PT,
    "legend.title_fontsize": 10,
    "figure.titlesize": 12,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "image.interpolation": "nearest",
}

_BOX_STYLE = (
    "font-size:0.8em;line-height:1.5;padding:0.35em 0.75em;margin:0.2em 0;"
    "border-left:0.2rem solid #3f51b5;background:rgba(63,81,181,0.07);"
    "border-radius:0.1rem"
)


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "ipykernel" in type(shell).__module__


@dataclass
class PageRun:
    """Clock and context of one executed page."""

    profile: str
    device: str
    t0: float = field(default_factory=time.perf_counter)
    _handle: object = field(default=None, repr=False)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def provenance_html(self, dataset: str | None = None, done: bool = False) -> str:
        """The provenance box as HTML (profile, device; dataset and seconds once done)."""
        esc = html.escape
        parts = [
            f"profile <b>{esc(self.profile)}</b>",
            f"device <b>{esc(self.device)}</b>",
        ]
        if dataset:
            parts.insert(1, f"dataset <b>{esc(dataset)}</b>")
        if done:
            parts.append(f"executed in <b>{self.elapsed():.1f} s</b>")
        lead = "This page was built with " if done else "This page is being built with "
        return (
            f'<div class="difflab-provenance" style="{_BOX_STYLE}">'
            f"{lead}{', '.join(parts)}.</div>"
        )

    def show(self) -> None:
        """Show the provenance box (in a kernel: once, updatable)."""
        if _in_kernel():
            from IPython.display import HTML, display

            self._handle = display(HTML(self.provenance_html()), display_id=True)
        else:
            print(f"Profile: {self.profile} | device: {self.device}")

    def data_notice(self, wanted: str, used: str, command: str) -> None:
        """Say at the top of the page that it was built without ``wanted``.

        ``used``: what the page ran on instead; ``command``: what fetches the
        data. In a kernel this is a warning box that the site's hook moves under
        the page title (class ``difflab-data-notice``); elsewhere one line.
        """
        esc = html.escape
        text = (
            f"This page was built without {esc(wanted)}, which was not found, so "
            f"everything below, figures and numbers, comes from {esc(used)}. To build "
            f"it on {esc(wanted)}, run <code>{esc(command)}</code> in the project "
            "folder and build again."
        )
        if _in_kernel():
            from IPython.display import HTML, display

            display(
                HTML(
                    '<div class="admonition warning difflab-data-notice">'
                    f'<p class="admonition-title">Built on stand-in data</p>'
                    f"<p>{text}</p></div>"
                )
            )
        else:
            print(html.unescape(text.replace("<code>", "`").replace("</code>", "`")))

    def found_mnist(self, stand_in: str) -> bool:
        """Whether MNIST is downloaded (what ``load_images("auto")`` would load); if
        not, the page says so at its top (:meth:`data_notice`), naming ``stand_in``,
        what it runs on instead, and the command that fetches MNIST."""
        from difflab.data.images import mnist_present

        if mnist_present():
            return True
        self.data_notice("MNIST", stand_in, "bash download-datasets.sh mnist")
        return False

    def finish(self, dataset: str | None = None) -> None:
        """Complete the provenance box at the top with the dataset and the time taken.

        Returns nothing and, in a kernel, outputs nothing in its own cell.
        """
        if self._handle is not None:
            from IPython.display import HTML

            self._handle.update(HTML(self.provenance_html(dataset, done=True)))
            return
        line = f"profile {self.profile}, device {self.device}"
        if dataset:
            line = f"profile {self.profile}, dataset {dataset}, device {self.device}"
        print(f"Built with {line}, executed in {self.elapsed():.1f} s.")


def set_house_style() -> None:
    """Apply :data:`HOUSE_STYLE`; in Jupyter, retina PNG output that carries each
    figure's alt text and legibility measurements (:mod:`difflab.notes.figures`)."""
    matplotlib.rcParams.update(HOUSE_STYLE)
    if _in_kernel():
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("retina")
        figures.install(get_ipython())


def start() -> PageRun:
    """Start the page clock, set the house figure style and show the provenance box.

    It also lets the kernel keep the memory it frees (:mod:`difflab.core.memory`):
    the page's CPU loops run faster, with the same results.
    """
    keep_freed_memory()
    set_house_style()
    run = PageRun(profile=current_profile(), device=describe(default_device()))
    run.show()
    return run
