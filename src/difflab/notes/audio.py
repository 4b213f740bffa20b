"""Clips a reader can hear on the page: ``<audio>`` elements with the WAV embedded.

Every clip is a 16-bit PCM WAV (:func:`difflab.data.signal.wav_bytes`) in a
``data:audio/wav;base64,...`` URI, beside its log spectrogram as an inline PNG,
so nothing loads from outside the page. Each ``<audio>`` carries
``data-expected-duration`` (samples / rate, in seconds) for the site test that
checks the browser decodes it to that length.
"""

from __future__ import annotations

import base64
import html
import io

import matplotlib
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from difflab.data.signal import stft, wav_bytes


def wav_data_uri(x: Tensor, rate: int) -> str:
    """The clip x (L,) as a ``data:audio/wav;base64`` URI."""
    return "data:audio/wav;base64," + base64.b64encode(wav_bytes(x, rate)).decode()


def spectrogram_png(
    x: Tensor, n_fft: int = 128, hop: int = 32, db_range: float = 70.0, scale: int = 2
) -> str:
    """A ``data:image/png`` URI of the clip's log-magnitude STFT (low frequencies down).

    The top ``db_range`` dB below the clip's peak are coloured with magma.
    """
    mag = stft(x.double(), n_fft, hop).abs()
    db = 20 * torch.log10(mag + 1e-8)
    db = ((db - db.max() + db_range) / db_range).clamp(0, 1).flip(0).numpy()
    rgb = (matplotlib.colormaps["magma"](db)[..., :3] * 255).astype(np.uint8)
    img = Image.fromarray(rgb).resize(
        (rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def clip_html(
    x: Tensor, rate: int, caption: str = "", n_fft: int = 128, label: str = ""
) -> str:
    """One clip: its spectrogram above an ``<audio controls>`` player.

    ``caption`` is shown under the player; ``label`` (or the caption) names the
    clip in the spectrogram's alt text.
    """
    seconds = x.shape[-1] / rate
    alt = f"log spectrogram of the clip {label or caption}".strip()
    alt += f", {seconds:.2f} s at {rate} Hz"
    return (
        '<figure class="difflab-clip" style="margin:2px;text-align:center">'
        f'<img src="{spectrogram_png(x, n_fft, n_fft // 4)}" alt="{html.escape(alt)}" '
        'style="display:block;margin:auto"/>'
        f'<audio controls preload="auto" data-expected-duration="{seconds:.6f}" '
        f'src="{wav_data_uri(x, rate)}" style="width:240px;height:32px"></audio>'
        f'<figcaption style="font-size:0.75em">{html.escape(caption)}</figcaption>'
        "</figure>"
    )


def clip_grid_html(
    clips: list[list[Tensor]],
    rate: int,
    row_labels: list[str],
    col_labels: list[str],
    caption: str = "",
) -> str:
    """A table of clips: one row per row label, one column per column label."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in col_labels)
    body = "".join(
        f"<tr><th>{html.escape(label)}</th>"
        + "".join(
            f"<td>{clip_html(x, rate, label=f'{label}, {col}')}</td>"
            for x, col in zip(row, col_labels, strict=True)
        )
        + "</tr>"
        for label, row in zip(row_labels, clips, strict=True)
    )
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (
        '<div style="overflow-x:auto"><table class="difflab-clips">'
        f"{cap}<tr><th></th>{head}</tr>{body}</table></div>"
    )


def show_html(text: str) -> None:
    """Display raw HTML in a notebook (printed as text elsewhere)."""
    try:
        from IPython.display import HTML, display

        display(HTML(text))
    except ImportError:  # pragma: no cover - IPython is installed with the docs
        print(text)
