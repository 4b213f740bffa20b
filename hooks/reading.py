"""MkDocs hook: what helps a reader find their way (orientation, home path, TOC, search).

Registered in ``mkdocs.yml`` before ``hooks/site_nav.py``.

Orientation. Every page of a stage (a page in a folder: ``foundations/…``) gets a
line under its title: its reading time and the pages to read first, linked. A
note declares what it needs first once, in its jupytext header::

    # ---
    # jupyter:
    #   difflab:
    #     prerequisites:
    #     - foundations/probability.py
    #   jupytext: ...
    # ---

(paths relative to ``docs/``); a ``.md`` page says the same in its front matter
(``prerequisites: [diffusion/ddpm.py]``). The reading time is computed, never
written: prose words at :data:`WORDS_PER_MINUTE` plus code lines at
:data:`CODE_LINES_PER_MINUTE`, rounded up to whole minutes.

Home. In ``docs/index.md`` the line ``<!-- difflab-stage: <nav section> -->``
becomes Material grid cards for the pages of that stage (title linked, first
sentence, reading time, what it needs first). ``<!-- difflab-home-
figure -->`` becomes a figure made at build time (:func:`home_figure`): a digit
dissolving into noise under the closed-form forward process, and noise turned back
into a digit by deterministic DDIM with the exact denoiser of the training digits.

Table of contents and search. Headings may hold maths (``$q(x_t \\mid x_0)$``);
MathJax typesets it in the page, but the table of contents and the search index
take the heading's text. This hook rewrites TOC titles, page titles and the built
search index with :func:`detex` (``q(xₜ | x₀)``). Code input cells of notes carry
``data-search-exclude`` (on their ``<pre>``), so search finds prose and results, not import blocks.
"""

from __future__ import annotations

import io
import json
import logging
import math
import posixpath
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.reading")

WORDS_PER_MINUTE = 200
# Chinese prose (the Chinese edition, hooks/i18n.py): characters read per minute of
# technical text; Latin words and numbers in it still count at WORDS_PER_MINUTE.
HANZI_PER_MINUTE = 300
CODE_LINES_PER_MINUTE = 20
STAGE_MARK = re.compile(r"^<!-- difflab-stage: (.+?) -->$", re.M)
FIGURE_MARK = "<!-- difflab-home-figure -->"
FIGURE_URI = "assets/generated/home-noise.png"

_state: dict = {"docs": None, "root": None, "info": {}}


# ------------------------------------------------------------------ detex

_SYMBOLS = {
    "alpha": "α",
    "beta": "β",
    "gamma": "γ",
    "delta": "δ",
    "epsilon": "ε",
    "varepsilon": "ε",
    "eta": "η",
    "theta": "θ",
    "lambda": "λ",
    "mu": "μ",
    "sigma": "σ",
    "tau": "τ",
    "phi": "φ",
    "psi": "ψ",
    "omega": "ω",
    "pi": "π",
    "rho": "ρ",
    "xi": "ξ",
    "nabla": "∇",
    "mid": "|",
    "to": "→",
    "infty": "∞",
    "le": "≤",
    "leq": "≤",
    "ge": "≥",
    "geq": "≥",
    "approx": "≈",
    "times": "×",
    "cdot": "·",
    "sim": "~",
    "propto": "∝",
    "in": "∈",
    "partial": "∂",
    "Sigma": "Σ",
    "Delta": "Δ",
    "mathcal N": "𝒩",
    "log": "log",
    "exp": "exp",
    "sqrt": "√",
    "ldots": "…",
    "dots": "…",
    "quad": " ",
    "qquad": " ",
    "Vert": "‖",
    "|": "‖",
    "lvert": "|",
    "rvert": "|",
}
_SUB = str.maketrans(
    "0123456789+-=()aehijklmnoprstuvx", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑₕᵢⱼₖₗₘₙₒₚᵣₛₜᵤᵥₓ"
)
_SUP = str.maketrans("0123456789+-=()in", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁱⁿ")
_MATH = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.S)


def _script(text: str, table: dict, mark: str) -> str:
    """``t`` -> ``ₜ`` when every character has a unicode sub/superscript."""
    converted = text.translate(table)
    if all(c != o or c in " " for c, o in zip(converted, text, strict=True)):
        return converted
    return f"{mark}{text}" if len(text) == 1 else f"{mark}({text})"


def _detex_math(tex: str) -> str:
    s = tex.strip()
    s = re.sub(
        r"\\(?:text|mathrm|operatorname|mathbf|boldsymbol|mathbb)\s*\{([^{}]*)\}",
        r"\1",
        s,
    )
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"\1/\2", s)
    s = re.sub(r"\\(?:bar|overline)\s*\{?\\?([A-Za-z])\}?", lambda m: _bar(m[1]), s)
    s = re.sub(r"\\hat\s*\{?([A-Za-z])\}?", lambda m: m[1] + "\u0302", s)
    s = re.sub(r"\\tilde\s*\{?\\?([A-Za-z])\}?", lambda m: _bar(m[1], "\u0303"), s)
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)\b\s*", "", s)
    s = re.sub(r"\\[,;:! ]", " ", s)
    s = re.sub(r"\\mathcal\s*\{?N\}?", "𝒩", s)
    s = re.sub(r"\\([A-Za-z]+|\|)", lambda m: _SYMBOLS.get(m[1], m[1]), s)
    s = re.sub(r"_\{([^{}]*)\}|_(\S)", lambda m: _script(m[1] or m[2], _SUB, "_"), s)
    s = re.sub(r"\^\{([^{}]*)\}|\^(\S)", lambda m: _script(m[1] or m[2], _SUP, "^"), s)
    s = s.replace("{", "").replace("}", "").replace("\\", "")
    return re.sub(r"\s+", " ", s).strip()


def _bar(letter: str, mark: str = "\u0304") -> str:
    return _SYMBOLS.get(letter, letter) + mark


def detex(text: str) -> str:
    """Replace the maths in ``text`` (``$..$``, ``\\(..\\)``, ...) by readable unicode."""
    return _MATH.sub(lambda m: _detex_math(next(g for g in m.groups() if g)), text)


# ------------------------------------------------------------------ page info


_HANZI = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def _read_note(path: Path, chinese: bool = False) -> dict:
    """Title, first sentence, reading time and prerequisites of one page source
    (``chinese``: of its Chinese twin, from the translation beside it)."""
    if path.suffix == ".py":
        import jupytext

        nb = jupytext.read(path)
        prose = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        meta = nb.metadata.get("difflab", {}) or {}
    else:
        from mkdocs.utils.meta import get_data

        prose, meta = get_data(path.read_text(encoding="utf-8"))
        code = ""
    if chinese:
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "i18n_units", Path(__file__).with_name("i18n_units.py")
        )
        i18n_units = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(i18n_units)
        prose = "\n\n".join(
            u.chinese if u.state == "translated" else u.english
            for u in i18n_units.match_page(path).units
        )
    hanzi = len(_HANZI.findall(prose))
    words = len(re.findall(r"\S+", _HANZI.sub(" ", prose)))
    code_lines = sum(1 for line in code.splitlines() if line.strip())
    minutes = max(
        1,
        math.ceil(
            hanzi / HANZI_PER_MINUTE
            + words / WORDS_PER_MINUTE
            + code_lines / CODE_LINES_PER_MINUTE
        ),
    )
    title_m = re.search(r"^#\s+(.+)$", prose, re.M)
    title = title_m[1].strip() if title_m else path.stem.replace("-", " ").capitalize()
    summary = ""
    if title_m:
        rest = prose[title_m.end() :].strip().split("\n\n", 1)[0]
        rest = re.sub(r"\s+", " ", rest)
        rest = re.sub(
            r"\[([^\]]*)\]\([^)]*\)", r"\1", rest
        )  # links: relative to the note
        end = re.search(r"(?<!al)(?<!e\.g)(?<!i\.e)\.(\s|$)|。", rest)
        summary = rest[: end.end()].strip() if end else rest
    prereq = meta.get("prerequisites") or []
    if isinstance(prereq, str):
        prereq = [prereq]
    return {
        "title": title,
        "summary": summary,
        "minutes": minutes,
        "words": words,
        "code_lines": code_lines,
        "prerequisites": list(prereq),
    }


def _page_uri(src: str) -> str:
    """The page a source becomes: hooks/notes.py serves note ``x.py`` as page
    ``x.ipynb`` (its executed notebook); the ``.py`` itself is a download."""
    return src[: -len(".py")] + ".ipynb" if src.endswith(".py") else src


def _english(src: str) -> tuple[bool, str]:
    """(is the Chinese twin, the English page's source) of ``zh/x`` or ``x``."""
    return (True, src[3:]) if src.startswith("zh/") else (False, src)


def _note_uri(src: str) -> str:
    """The source a page was made from (``x.ipynb`` page -> ``x.py`` note)."""
    english = _english(src)[1]
    if (
        src.endswith(".ipynb")
        and (_state["docs"] / english).with_suffix(".py").is_file()
    ):
        return src[: -len(".ipynb")] + ".py"
    return src


def page_info(src: str) -> dict | None:
    """Cached :func:`_read_note` of ``docs/<src>`` (None if it does not exist);
    of the Chinese twin for ``zh/<src>``."""
    info = _state["info"]
    if src not in info:
        chinese, english = _english(src)
        path = _state["docs"] / english
        info[src] = _read_note(path, chinese) if path.is_file() else None
    return info[src]


# ------------------------------------------------------------------ events


def on_config(config):
    _state["docs"] = Path(config.docs_dir).resolve()
    _state["root"] = Path(config.config_file_path).resolve().parent
    _state["info"] = {}
    _state["zh"] = None
    return config


def on_files(files, config):
    import sys

    from mkdocs.structure.files import File

    sys.path.insert(0, str(_state["root"] / "src"))  # this checkout's difflab
    try:
        png = _cached_home_figure()
    except Exception as exc:  # the home page then says the figure is missing
        log.warning("reading: the home figure could not be made: %s", exc)
        return files
    finally:
        sys.path.pop(0)
    files.append(File.generated(config, FIGURE_URI, content=png))
    return files


def _sections(nav) -> dict:
    """{section title: [page src, ...]} of the top-level nav sections."""
    out = {}
    for item in nav or []:
        if isinstance(item, dict):
            ((title, value),) = item.items()
            if isinstance(value, list):
                out[title] = [v for v in _leaves(value)]
    return out


def _leaves(items):
    for item in items:
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for v in item.values():
                yield from _leaves(v if isinstance(v, list) else [v])


def _link_list(srcs, here_dir: str) -> str:
    links = []
    for s in srcs:
        info = page_info(s)
        if info is None:
            log.warning("reading: prerequisite %s is not a page", s)
            continue
        links.append(
            f"[{detex(info['title'])}]"
            f"({posixpath.relpath(_page_uri(s), here_dir or '.')})"
        )
    return ", ".join(links)


def on_page_markdown(markdown, page, config, files):
    chinese, english = _english(page.file.src_uri)
    if english != "index.md":
        return markdown
    written = _sections(config.nav)
    zh = _zh_strings() if chinese else None

    def stage(m: re.Match) -> str:
        name = m[1].strip()
        pages = [_note_uri(p) for p in written.get(name, [])]
        cards = []
        for src in pages:
            info = page_info(f"zh/{src}" if chinese else src)
            if info is None:
                continue
            if chinese:
                needs = _link_list([f"zh/{p}" for p in info["prerequisites"]], "zh")
                needs = (
                    zh["needs_first"].format(links=needs)
                    if needs
                    else zh["needs_nothing"]
                )
                read = zh["min_read"].format(minutes=info["minutes"])
            else:
                needs = _link_list(info["prerequisites"], "")
                needs = f"needs first: {needs}" if needs else "needs nothing earlier"
                read = f"{info['minutes']} min read"
            summary = f"\n\n    {info['summary']}" if info["summary"] else ""
            cards.append(
                f"-   [**{info['title']}**]({_page_uri(src)}){summary}\n\n"
                f"    <small>{read} · {needs}</small>\n"
            )
        out = []
        if cards:
            out += ['<div class="grid cards" markdown>', "", *cards, "</div>", ""]
        else:
            log.warning("reading: index.md names stage %r, which the nav lacks", name)
        return "\n".join(out)

    markdown = STAGE_MARK.sub(stage, markdown)
    if FIGURE_MARK in markdown:
        alt = (
            zh["home_figure_alt"]
            if chinese
            else "A handwritten digit dissolving into noise and coming back"
        )
        uri = f"../{FIGURE_URI}" if chinese else FIGURE_URI
        markdown = markdown.replace(
            FIGURE_MARK, f"![{alt}]({uri}){{ .difflab-home-figure loading=lazy }}"
        )
    return markdown


def _zh_strings() -> dict:
    """The Chinese edition's interface lines (``docs/i18n.zh.yml``), read once a
    build (``mkdocs serve`` reads an edited file again on the next one)."""
    if _state.get("zh") is None:
        import yaml

        path = _state["docs"] / "i18n.zh.yml"
        _state["zh"] = yaml.safe_load(path.read_text("utf-8"))["strings"]
    return _state["zh"]


def _is_stage_page(page) -> bool:
    src = _english(page.file.src_uri)[1]
    return "/" in src and src.endswith((".py", ".ipynb", ".md"))


def on_page_content(html, page, config, files):
    _detex_toc(page.toc)
    if page.title:
        page.title = detex(page.title)
    if not _is_stage_page(page):
        return html
    info = page_info(_note_uri(page.file.src_uri))
    if info is None:
        return html
    chinese = _english(page.file.src_uri)[0]
    needs = []
    for s in info["prerequisites"]:
        s = f"zh/{s}" if chinese else s
        f = files.get_file_from_path(_page_uri(s))
        target = page_info(s)
        if f is None or target is None:
            log.warning(
                "reading: %s needs %s, which is not a page", page.file.src_uri, s
            )
            continue
        url = f.url_relative_to(page.file)
        needs.append(f'<a href="{url}">{detex(target["title"])}</a>')
    if chinese:
        zh = _zh_strings()
        needs_html = (
            zh["read_first"] + "，".join(needs) if needs else zh["no_prerequisites"]
        )
        read = zh["min_read"].format(minutes=info["minutes"])
    else:
        needs_html = "Read first: " + ", ".join(needs) if needs else "No prerequisites"
        read = f"{info['minutes']} min read"
    line = f'<p class="difflab-orientation">{read} · {needs_html}</p>'
    html = re.sub(r"(</h1>)", r"\1" + line.replace("\\", "\\\\"), html, count=1)
    if _note_uri(page.file.src_uri).endswith(".py"):
        # Search indexes prose and outputs, not the code (Material honours this).
        # Material's search parser ends an exclusion at the first closing tag of the
        # same name, so the mark goes on elements with no same-tag children: the
        # code's <pre> and the copy button's "Copied!" notice.
        html = re.sub(
            r'(<div class="highlight-ipynb[^"]*">)<pre>',
            r"\1<pre data-search-exclude>",
            html,
        )
        # mkdocs-jupyter keeps each cell's source again, as text, for its copy button.
        html = re.sub(
            r'<div class="clipboard-copy-txt"',
            r'<div class="clipboard-copy-txt" data-search-exclude',
            html,
        )
        html = re.sub(
            r'<span class="notice" hidden(="")?>',
            r'<span class="notice" hidden\1 data-search-exclude>',
            html,
        )
    return html


def _detex_toc(items) -> None:
    for item in items or []:
        item.title = detex(item.title)
        _detex_toc(item.children)


def on_post_build(config):
    index = Path(config.site_dir) / "search" / "search_index.json"
    if not index.is_file():
        return
    data = json.loads(index.read_text(encoding="utf-8"))
    for doc in data.get("docs", []):
        for key in ("title", "text"):
            if isinstance(doc.get(key), str):
                doc[key] = detex(doc[key])
    index.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


# ------------------------------------------------------------------ home figure


def _cached_home_figure() -> bytes:
    """:func:`home_figure`, drawn again only when its code or what it uses changes.

    The key is this hook's source, the source of the difflab modules it uses (the
    package's rule, ``deps_hash``) and matplotlib's version; the PNG is kept in
    ``.cache/site/`` (about a second saved on every rebuild).
    """
    import hashlib

    import matplotlib

    from difflab.runtime.cache import deps_hash, write_atomic

    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(deps_hash(("difflab.data.images", "difflab.diffusion.schedules")).encode())
    h.update(matplotlib.__version__.encode())
    path = _state["root"] / ".cache" / "site" / f"home-{h.hexdigest()[:16]}.png"
    if path.is_file():
        return path.read_bytes()
    png = home_figure()
    # A temporary name of its own: two builds at once may both draw the figure.
    write_atomic(path, lambda f: f.write(png))
    for old in path.parent.glob("home-*.png"):
        if old != path:
            old.unlink(missing_ok=True)
    return png


def home_figure(steps: int = 8) -> bytes:
    """PNG of a digit dissolving into noise (top) and noise becoming a digit (bottom).

    Top row: ``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps`` (Ho et al.
    2020, Eq. 4) for one digit at increasing t. Bottom row: deterministic DDIM (Song
    et al. 2021, Eq. 12 with eta = 0) from that last noise, with the exact denoiser
    of the training digits, E[x_0 | x_t] = a softmax-weighted mean of them. About a
    second on a CPU.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from difflab.data.images import load_digits
    from difflab.diffusion.schedules import make_schedule

    data = load_digits("train").images.to(torch.float64).flatten(1)  # (N, 64)
    alpha_bar = make_schedule("linear", 1000).alpha_bar.to(torch.float64)
    gen = torch.Generator().manual_seed(3)
    x0 = data[7]
    shown = [0, 50, 100, 200, 300, 450, 650, 999][:steps]  # where the digit fades
    eps = torch.randn(64, generator=gen, dtype=torch.float64)
    top = [alpha_bar[t].sqrt() * x0 + (1 - alpha_bar[t]).sqrt() * eps for t in shown]

    def x0_hat(x, t):
        a = alpha_bar[t]
        logits = -((x - a.sqrt() * data) ** 2).sum(1) / (2 * (1 - a))
        return torch.softmax(logits, 0) @ data

    grid = torch.linspace(999, 0, 50).round().long().tolist()
    x = top[-1]
    path = {999: x}
    for t, s in zip(grid[:-1], grid[1:], strict=True):
        xh = x0_hat(x, t)
        e = (x - alpha_bar[t].sqrt() * xh) / (1 - alpha_bar[t]).sqrt()
        x = alpha_bar[s].sqrt() * xh + (1 - alpha_bar[s]).sqrt() * e
        path[s] = x
    bottom = [path[min(path, key=lambda k: abs(k - t))] for t in reversed(shown)]
    bottom[-1] = x0_hat(x, 0)

    fig, axes = plt.subplots(2, steps, figsize=(6.4, 2.0), dpi=200)
    for row, images, ts in ((0, top, shown), (1, bottom, list(reversed(shown)))):
        for k, (img, t) in enumerate(zip(images, ts, strict=True)):
            ax = axes[row, k]
            ax.imshow(img.view(8, 8).clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"t = {t + 1}", fontsize=8)
    axes[0, 0].set_ylabel("noising", fontsize=9)
    axes[1, 0].set_ylabel("denoising", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    return buf.getvalue()
