"""Progress bars that stay out of the published pages.

``tqdm.auto`` warns (``TqdmWarning: IProgress not found``, with the path of the
environment) when it is imported in a Jupyter kernel without ``ipywidgets``, which
is how the site executes its notes, and a text bar written to a kernel's stderr
ends up in the page. :func:`tqdm` here is a drop-in for ``tqdm.auto.tqdm``:

* ``disable=True`` (or ``TQDM_DISABLE=1`` in the environment): no bar;
* in a Jupyter kernel with ``ipywidgets``: the notebook widget bar;
* otherwise the text bar, shown only when stderr is a terminal (tqdm's
  ``disable=None``), so a build, a pipe or a log file gets no bar.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from tqdm.std import tqdm as _text_tqdm

__all__ = ["tqdm"]


def _widget_tqdm():
    """tqdm.notebook's bar class when it can draw here, else None."""
    if "ipykernel" not in sys.modules or importlib.util.find_spec("ipywidgets") is None:
        return None
    from tqdm.notebook import tqdm as notebook_tqdm

    return notebook_tqdm


def tqdm(iterable=None, *args, disable: bool | None = False, **kwargs):
    """A progress bar over ``iterable`` (same arguments as ``tqdm.tqdm``)."""
    if disable or os.environ.get("TQDM_DISABLE", "").strip().lower() in (
        "1",
        "true",
        "yes",
    ):
        return _text_tqdm(iterable, *args, disable=True, **kwargs)
    widget = _widget_tqdm()
    if widget is not None:
        return widget(iterable, *args, **kwargs)
    return _text_tqdm(iterable, *args, disable=None, **kwargs)
