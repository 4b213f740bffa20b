"""Results as HTML tables with fixed digits, shown in a note's output.

A result a page discusses is a table, never printed pipes or aligned text::

    from difflab.notes.tables import show_table

    show_table(
        rows,                                   # list of dicts (or of sequences)
        columns=["sampler", "nfe", "sw"],       # keys, in order
        headers={"nfe": "NFE", "sw": "sliced W2"},
        digits={"sw": 4},                       # fixed decimals per column
        spread={"sw": "sw_se"},                 # shown as "mean ± spread"
        caption="Samplers on the eight-Gaussian world",
    )

Floats get fixed decimals (``digits``, default 3; a column given ``"e"`` digits,
e.g. ``"2e"``, is written in scientific notation with that many decimals), so no
page shows ``2.0999999999999996``. Integers and strings are written as they are.
Numeric columns are right-aligned. :func:`fmt` formats one number the same way,
for prose printed from code.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Mapping, Sequence

__all__ = ["fmt", "table_html", "show_table"]

_STYLE = (
    "<style>"
    ".difflab-table{border-collapse:collapse;margin:0.4em 0;font-size:0.85em;"
    "font-variant-numeric:tabular-nums}"
    ".difflab-table caption{caption-side:top;text-align:left;font-weight:600;"
    "padding-bottom:0.3em}"
    ".difflab-table th,.difflab-table td{padding:0.2em 0.7em;"
    "border-bottom:1px solid rgba(127,127,127,0.3)}"
    ".difflab-table th{border-bottom:2px solid rgba(127,127,127,0.6)}"
    ".difflab-table td.num,.difflab-table th.num{text-align:right}"
    ".difflab-table td.txt,.difflab-table th.txt{text-align:left}"
    "</style>"
)


def fmt(value, digits: int | str = 3, signed: bool = False) -> str:
    """One value as text: floats with fixed ``digits`` decimals (``"2e"``: scientific)."""
    if value is None:
        return ""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()  # a 0-d tensor or numpy scalar
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{value:+d}" if signed else f"{value:d}"
    if math.isnan(value):
        return "nan"
    sign = "+" if signed else ""
    if isinstance(digits, str) and digits.endswith("e"):
        return f"{value:{sign}.{int(digits[:-1])}e}"
    return f"{value:{sign}.{int(digits)}f}"


def _is_num(value) -> bool:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def table_html(
    rows: Sequence[Mapping | Sequence],
    columns: Sequence[str] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    digits: int | str | Mapping[str, int | str] = 3,
    spread: Mapping[str, str] | None = None,
    signed: Sequence[str] = (),
    caption: str | None = None,
) -> str:
    """The HTML of a results table (see the module docstring for the arguments).

    ``rows`` are dicts (``columns`` picks and orders their keys; default: the first
    row's keys) or sequences (``columns`` then names them in order). ``spread``
    maps a column to the key of its spread (standard error, bootstrap or seed
    standard deviation), written ``mean ± spread`` with the column's digits.
    ``signed`` columns show an explicit ``+``.
    """
    if not rows:
        raise ValueError("table_html needs at least one row")
    first = rows[0]
    if isinstance(first, Mapping):
        columns = list(columns or first.keys())
        records = [dict(r) for r in rows]
    else:
        if columns is None:
            raise ValueError("rows given as sequences need `columns` to name them")
        columns = list(columns)
        records = [dict(zip(columns, r, strict=True)) for r in rows]
    headers = dict(headers or {})
    spread = dict(spread or {})

    def digits_of(col):
        return digits.get(col, 3) if isinstance(digits, Mapping) else digits

    numeric = {
        c: all(_is_num(r.get(c)) for r in records if r.get(c) is not None)
        for c in columns
    }
    out = [_STYLE, '<table class="difflab-table">']
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<thead><tr>")
    for c in columns:
        cls = "num" if numeric[c] else "txt"
        out.append(f'<th class="{cls}">{html.escape(headers.get(c, c))}</th>')
    out.append("</tr></thead><tbody>")
    for r in records:
        out.append("<tr>")
        for c in columns:
            v = r.get(c)
            text = fmt(v, digits_of(c), signed=c in signed)
            if c in spread and r.get(spread[c]) is not None:
                text += " ± " + fmt(r[spread[c]], digits_of(c))
            cls = "num" if numeric[c] else "txt"
            out.append(f'<td class="{cls}">{html.escape(text)}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def show_table(rows, columns=None, **kwargs) -> None:
    """Display :func:`table_html` in a note (prints plain text outside Jupyter)."""
    text = table_html(rows, columns, **kwargs)
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(HTML(text))
    else:
        import re

        print(re.sub(r"<style>.*?</style>|<[^>]+>", " ", text))
