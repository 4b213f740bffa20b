"""A shown figure's alt text and legibility measurements (difflab.notes.figures).

Each check is shown to fail on a bad figure: a 6 pt legend reads below 10 px, two
labels drawn on one spot are an overlap, a grid of 8x8 digits on a small axis is
below 28 px a digit.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from difflab.notes import figures, page  # noqa: E402
from difflab.notes.plotting import show_grid  # noqa: E402


@pytest.fixture(autouse=True)
def house_style():
    with matplotlib.rc_context():
        page.set_house_style()
        yield
    plt.close("all")


def _curves(legend_pt: float):
    fig, ax = plt.subplots(figsize=(page.FIGURE_WIDTH_IN, 3.0))
    ax.plot([0, 1], [0, 1], label="DDPM")
    ax.plot([0, 1], [1, 0], label="DDIM")
    ax.set(title="Error against steps", xlabel="NFE", ylabel="sliced W2")
    ax.legend(fontsize=legend_pt)
    return fig


def test_a_six_point_legend_reads_below_ten_pixels_and_the_house_style_above():
    small = figures.measure(_curves(6))["min_text_px"]
    house = figures.measure(_curves(page.MIN_FONT_PT))["min_text_px"]
    assert small == pytest.approx(6 * page.FIGURE_DPI / 72, abs=0.01)  # 8.33 px
    assert small < 10 <= house


def test_hidden_tick_labels_are_not_measured():
    fig, ax = plt.subplots()
    ax.imshow(np.zeros((8, 8)))
    ax.tick_params(labelsize=4)
    ax.set_axis_off()  # the 4 pt tick labels are never drawn
    assert figures.measure(fig)["min_text_px"] is None


def test_two_labels_on_one_spot_overlap_and_apart_they_do_not():
    fig, ax = plt.subplots()
    ax.annotate("w = 1", (0.5, 0.5))
    ax.annotate("w = 3", (0.5, 0.5), xytext=(2, 1), textcoords="offset points")
    found = figures.measure(fig)["overlaps"]
    assert ["w = 1", "w = 3"] in found
    fig, ax = plt.subplots()
    ax.annotate("w = 1", (0.1, 0.1))
    ax.annotate("w = 3", (0.7, 0.7))
    assert figures.measure(fig)["overlaps"] == []


def test_digit_size_is_one_tile_of_the_grid_not_the_grid():
    digits = torch.zeros(40, 1, 8, 8)
    fig, ax = plt.subplots(figsize=(2.0, 1.0))  # 10 digits across 200 px at most
    show_grid(ax, digits, nrow=10)
    cell = figures.measure(fig)["min_cell_px"]
    assert 10 < cell < 20  # about 18 px a digit: the flow-matching page's size
    fig, ax = plt.subplots(figsize=(page.FIGURE_WIDTH_IN, 3.2))
    show_grid(ax, digits[:8], nrow=4)
    assert figures.measure(fig)["min_cell_px"] >= 28


def test_alt_text_names_titles_labels_legend_and_grids():
    fig = _curves(9)
    alt = figures.measure(fig)["alt"]
    for word in ("Error against steps", "NFE", "sliced W2", "DDPM", "DDIM"):
        assert word in alt
    fig, axes = plt.subplots(1, 2)
    fig.suptitle("Samples, $w = 3$")
    show_grid(axes[0], torch.zeros(16, 1, 8, 8), nrow=4, title="test digits")
    show_grid(axes[1], torch.zeros(16, 1, 8, 8), nrow=4, title="samples")
    alt = figures.measure(fig)["alt"]
    assert alt.startswith("Figure, 2 panels: Samples, w = 3.")
    assert "test digits (grid of 16 images)" in alt


def test_a_figure_without_words_has_no_alt_until_described():
    fig, ax = plt.subplots()
    ax.imshow(np.zeros((8, 8)))
    ax.set_axis_off()
    assert figures.measure(fig)["alt"] is None
    page.describe_figure(fig, "One blank 8x8 image.")
    assert figures.measure(fig)["alt"] == "One blank 8x8 image."


def test_the_kernel_formatter_adds_alt_and_measurements_to_the_png():
    def png(fig):  # what IPython's retina formatter returns
        return "aGVsbG8=", {"width": 640, "height": 300}

    data, meta = figures._with_measurements(png, _curves(7))
    assert data == "aGVsbG8=" and meta["width"] == 640
    assert "DDPM" in meta["alt"]
    assert meta["difflab"]["width"] == 640
    assert meta["difflab"]["min_text_px"] < 10  # 7 pt = 9.7 px


def test_mathtext_labels_read_as_words():
    """Tick and legend labels that matplotlib writes as mathtext lose their font
    commands in the alt text (``$\\mathdefault{0}$`` reads "0", not "mathdefault0")."""
    from difflab.notes.figures import _plain

    assert _plain(r"$\mathdefault{0}$") == "0"
    assert _plain(r"$\mathrm{SNR}_t$") == "SNR_t"
