"""The units a translation is keyed by, and the translation files (no MkDocs here).

A page's prose is cut into *units*: a note's markdown cells (``docs/<stage>/<name>.py``,
read with jupytext exactly as the notes hook executes it), or a ``.md`` page's
sections (the text from one heading to the next, outside fenced code; front matter
is not prose and is shared). Each unit is keyed by :func:`unit_hash`, the first 12
hex digits of the SHA-256 of its text with trailing spaces and blank end lines
dropped.

The Chinese text of ``docs/<path>.py`` or ``docs/<path>.md`` lives beside it, in
``docs/<path>.zh.md``: one block per unit, in order, each opened by a line ::

    <!-- cell 3 en:0123456789ab -->

that names the unit (1-based) and the hash of the English it translates. A block
whose line ends in ``waiting`` (``<!-- cell 3 en:0123456789ab waiting -->``) is known
to be behind its English: the Chinese page shows the English unit under a short
notice, and ``mkdocs build --strict`` accepts it. Text before the first block (a
comment for translators) is ignored.

Run from the project root::

    python hooks/i18n_units.py skeleton docs/deeper/ddim.py   # start a translation
    python hooks/i18n_units.py status                         # which units are stale
    python hooks/i18n_units.py refresh docs/deeper/ddim.py    # re-key after checking

``skeleton`` writes the translation file with each block holding the English text
to replace. ``status`` lists, for every page, each unit whose English changed since
it was translated (or was never translated). ``refresh`` is for the translator who
has brought the Chinese up to date: it rewrites each stale block's hash to the
English unit's current one and drops ``waiting``; it never touches the text.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

LANG = "zh"
SUFFIX = f".{LANG}.md"
BLOCK = re.compile(r"^<!-- cell (\d+) en:([0-9a-f]{12})( waiting)? -->[ \t]*$", re.M)
_HEADING = re.compile(r"^#{1,6} ")
_FENCE = re.compile(r"^\s*(```|~~~)")
_FRONT = re.compile(r"\A---\n.*?\n---\n", re.S)


def unit_hash(text: str) -> str:
    """Key of a unit: SHA-256 (12 hex digits) of its text, trailing spaces and
    blank lines at either end dropped (so re-wrapping whitespace at the ends does
    not make a translation stale, and any other change does)."""
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def front_matter(text: str) -> str:
    """The YAML front matter of a ``.md`` page (with its ``---`` lines), or ``""``."""
    m = _FRONT.match(text)
    return m[0] if m else ""


def md_units(text: str) -> list[str]:
    """A ``.md`` page's sections: cut before every heading outside fenced code."""
    body = text[len(front_matter(text)) :]
    units, current, fenced = [], [], False
    for line in body.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        if not fenced and _HEADING.match(line) and any(s.strip() for s in current):
            units.append("\n".join(current).strip("\n"))
            current = []
        current.append(line)
    if any(s.strip() for s in current):
        units.append("\n".join(current).strip("\n"))
    return units


def note_units(path: Path) -> list[str]:
    """A note's markdown cells, as jupytext reads them (the executed notebook's)."""
    import jupytext

    nb = jupytext.read(path)
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def units_of(path: Path) -> list[str]:
    return note_units(path) if path.suffix == ".py" else md_units(path.read_text())


def translation_path(page: Path) -> Path:
    """``docs/a/b.py`` and ``docs/a/b.md`` -> ``docs/a/b.zh.md``."""
    return page.with_name(page.stem + SUFFIX)


def is_translation(name: str) -> bool:
    return name.endswith(SUFFIX)


@dataclass
class Block:
    n: int
    key: str
    waiting: bool
    text: str


@dataclass
class Unit:
    """One unit of a page and what the Chinese page shows for it."""

    n: int
    english: str
    key: str
    chinese: str | None = None  # None: show the English under a notice
    state: str = "translated"  # translated | waiting | stale | missing
    block: Block | None = None


@dataclass
class Match:
    units: list[Unit]
    orphans: list[Block] = field(default_factory=list)  # blocks matching no unit

    def problems(self) -> list[Unit]:
        """Units that fail ``--strict``: stale or never translated, not waiting."""
        return [u for u in self.units if u.state in ("stale", "missing")]


def parse(text: str) -> list[Block]:
    """The blocks of a translation file."""
    marks = list(BLOCK.finditer(text))
    blocks = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        body = text[m.end() : end].strip("\n")
        blocks.append(Block(int(m[1]), m[2], bool(m[3]), body))
    return blocks


def match(english: list[str], blocks: list[Block]) -> Match:
    """Pair each English unit with the block that translates it.

    A block translates a unit when its hash is the unit's (the first such block, in
    order). A unit left over is *stale* when a left-over block has its number (the
    translation of an older English text), *waiting* when that block is marked so,
    *missing* otherwise; the Chinese page shows the English of all three.
    """
    units = [Unit(i + 1, text, unit_hash(text)) for i, text in enumerate(english)]
    free = list(blocks)
    for unit in units:
        for b in free:
            if b.key == unit.key:
                unit.chinese, unit.block = b.text, b
                free.remove(b)
                break
    for unit in units:
        if unit.block is not None:
            continue
        old = next((b for b in free if b.n == unit.n), None)
        if old is None:
            unit.state = "missing"
            continue
        free.remove(old)
        unit.block = old
        unit.state = "waiting" if old.waiting else "stale"
    return Match(units, free)


def match_page(page: Path) -> Match:
    tr = translation_path(page)
    blocks = parse(tr.read_text()) if tr.is_file() else []
    return match(units_of(page), blocks)


def skeleton(page: Path, english: list[str] | None = None) -> str:
    english = units_of(page) if english is None else english
    head = (
        f"<!-- Chinese text of docs/{page.as_posix().split('docs/', 1)[-1]}: one "
        "block per unit (markdown cell or section), each under the line naming the "
        "English it translates. See hooks/i18n_units.py. -->\n"
    )
    parts = [head]
    for i, text in enumerate(english):
        parts.append(f"\n<!-- cell {i + 1} en:{unit_hash(text)} -->\n{text}\n")
    return "".join(parts)


def refresh(page: Path) -> int:
    """Re-key the stale and waiting blocks of ``page``'s translation to the current
    English (the translator has updated their text); returns how many."""
    tr = translation_path(page)
    text = tr.read_text()
    m = match_page(page)
    changed = 0
    for unit in m.units:
        if unit.state in ("stale", "waiting"):
            b = unit.block
            old = f"<!-- cell {b.n} en:{b.key}{' waiting' if b.waiting else ''} -->"
            new = f"<!-- cell {unit.n} en:{unit.key} -->"
            text = text.replace(old, new, 1)
            changed += 1
    tr.write_text(text)
    return changed


def pages(docs: Path) -> list[Path]:
    """Every page that has (or should have) a translation: notes and .md pages."""
    out = []
    for p in sorted(docs.rglob("*")):
        rel = p.relative_to(docs).as_posix()
        if rel.startswith(("assets/", "javascripts/", "stylesheets/", "zh/")):
            continue
        if p.suffix == ".py" and "__pycache__" not in rel:
            out.append(p)
        elif p.suffix == ".md" and not is_translation(p.name):
            out.append(p)
    return out


def _main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("skeleton", "status", "refresh"):
        print(__doc__)
        return 2
    cmd, args = argv[0], [Path(a) for a in argv[1:]]
    if cmd == "skeleton":
        for page in args:
            tr = translation_path(page)
            if tr.exists():
                print(f"{tr} exists; edit it (or delete it first)", file=sys.stderr)
                return 1
            tr.write_text(skeleton(page))
            print(f"wrote {tr} ({len(units_of(page))} units)")
        return 0
    if cmd == "refresh":
        for page in args:
            print(f"{translation_path(page)}: {refresh(page)} block(s) re-keyed")
        return 0
    bad = 0
    for page in args or pages(Path("docs")):
        if not translation_path(page).is_file():
            print(f"{page}: no translation ({translation_path(page).name} missing)")
            bad += 1
            continue
        m = match_page(page)
        for u in m.units:
            if u.state != "translated":
                first = (
                    u.english.strip().splitlines()[0][:70] if u.english.strip() else ""
                )
                print(f"{page}: unit {u.n} {u.state}: {first}")
                bad += u.state != "waiting"
        for b in m.orphans:
            print(f"{page}: block {b.n} (en:{b.key}) matches no English unit")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
