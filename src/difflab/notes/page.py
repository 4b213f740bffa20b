"""The line every page of the site prints: profile, dataset, device and time taken.

Usage in a note::

    from difflab.notes import page
    run = page.start()            # first code cell
    ...
    run.finish(dataset=data.name) # last code cell
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import matplotlib

from difflab.train.device import default_device, describe
from difflab.train.profiles import current_profile


@dataclass
class PageRun:
    """Clock and context of one executed page."""

    profile: str
    device: str
    t0: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def finish(self, dataset: str | None = None) -> None:
        """Print the provenance line of the page (returns nothing, so a note's last
        cell shows no ``Out[n]``)."""
        parts = [f"profile **{self.profile}**"]
        if dataset:
            parts.append(f"dataset **{dataset}**")
        parts += [
            f"device **{self.device}**",
            f"executed in **{self.elapsed():.1f} s**",
        ]
        line = "This page was built with " + ", ".join(parts) + "."
        print(line)


def start() -> PageRun:
    """Start the page clock; sets a non-interactive, site-friendly matplotlib style."""
    matplotlib.rcParams.update(
        {"figure.dpi": 100, "savefig.dpi": 100, "axes.grid": True, "grid.alpha": 0.3}
    )
    run = PageRun(profile=current_profile(), device=describe(default_device()))
    print(f"Profile: {run.profile} | device: {run.device}")
    return run
