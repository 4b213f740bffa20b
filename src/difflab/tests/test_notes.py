"""The note helpers: tables with fixed digits, the house style, quiet progress bars,
the stand-in data notice."""

from __future__ import annotations

import io
import re

import matplotlib
import torch

from difflab.core import progress
from difflab.notes import page
from difflab.notes.tables import fmt, table_html


def test_fmt_fixed_digits_never_shows_float_noise():
    assert fmt(2.0999999999999996, 2) == "2.10"
    assert fmt(0.1 + 0.2) == "0.300"
    assert fmt(1234.5, "2e") == "1.23e+03"
    assert fmt(7) == "7" and fmt(-0.5, 1, signed=True) == "-0.5"
    assert fmt(torch.tensor(0.123456), 4) == "0.1235"
    assert fmt("DDIM") == "DDIM"


def test_table_html_cells_spread_and_alignment():
    rows = [
        {"sampler": "Euler", "nfe": 10, "sw": 0.123456, "se": 0.0042},
        {"sampler": "Heun", "nfe": 20, "sw": 0.05, "se": 0.001},
    ]
    text = table_html(
        rows,
        ["sampler", "nfe", "sw"],
        headers={"sw": "SW"},
        digits={"sw": 3},
        spread={"sw": "se"},
        caption="a <caption>",
    )
    cells = re.findall(r"<td class=\"(\w+)\">([^<]*)</td>", text)
    assert cells == [
        ("txt", "Euler"),
        ("num", "10"),
        ("num", "0.123 ± 0.004"),
        ("txt", "Heun"),
        ("num", "20"),
        ("num", "0.050 ± 0.001"),
    ]
    assert '<th class="num">SW</th>' in text
    assert "a &lt;caption&gt;" in text  # text is escaped


def test_house_style_sets_dpi_and_readable_fonts():
    page.set_house_style()
    rc = matplotlib.rcParams
    assert rc["figure.dpi"] == page.FIGURE_DPI
    assert rc["figure.figsize"][0] <= page.FIGURE_WIDTH_IN
    assert rc["xtick.labelsize"] >= page.MIN_FONT_PT


def test_progress_bar_is_silent_off_a_terminal(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    err = io.StringIO()  # not a TTY, as under the site build
    assert list(progress.tqdm(range(3), file=err)) == [0, 1, 2]
    assert err.getvalue() == ""


def test_found_mnist_says_so_at_the_top_only_when_mnist_is_missing(
    tmp_path, monkeypatch, capsys
):
    """Without MNIST a page gets the stand-in notice naming what it runs on and the
    fetch command; with MNIST it gets none."""
    monkeypatch.setenv("DIFFLAB_DATA", str(tmp_path))  # an empty data folder
    run = page.PageRun("quick", "cpu")
    assert run.found_mnist("the 8x8 digits") is False
    said = capsys.readouterr().out
    assert "without MNIST" in said and "the 8x8 digits" in said
    assert "`bash download-datasets.sh mnist`" in said

    raw = tmp_path / "MNIST" / "raw"  # the training split's two files, present
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert run.found_mnist("the 8x8 digits") is False  # half a split is not MNIST
    capsys.readouterr()
    (raw / "train-labels-idx1-ubyte").write_bytes(b"")
    assert run.found_mnist("the 8x8 digits") is True
    assert capsys.readouterr().out == ""
