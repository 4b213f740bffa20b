"""Every paper the site links to is in docs/references.bib, by arXiv id or DOI.

Reads the sources only (docs/**/*.md, docs/**/*.py notes, and the docstrings and
comments of src/difflab/**/*.py); no built site and no network are needed, so a
typo in an arXiv id is caught offline: a mistyped id names no bibliography entry.
The checker is itself tested on made-up text (a typo'd id must fail it).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIB = REPO / "docs" / "references.bib"

# New-style arXiv identifiers (April 2007 on): YYMM.NNNN until December 2014,
# YYMM.NNNNN from January 2015 (arXiv's "Understanding the arXiv identifier").
NEW_ID = re.compile(r"(?P<yy>\d{2})(?P<mm>\d{2})\.(?P<num>\d{4,5})")
# Old-style identifiers: archive(.subject class)/YYMMNNN, e.g. math.PR/0601001.
OLD_ID = re.compile(r"[a-z-]+(?:\.[A-Z]{2})?/\d{7}")
DOI = re.compile(r"10\.\d{4,9}/\S+")

# A link's id runs to the first character that cannot be part of one.
ARXIV_LINK = re.compile(
    r"arxiv\.org/(?:abs|pdf)/([A-Za-z.-]*/?[0-9.]+(?:v\d+)?)", re.IGNORECASE
)
# A DOI ends at whitespace, a quote or bracket, or a CJK character (a Chinese
# page's link is followed by text with no space between).
DOI_LINK = re.compile(r"doi\.org/(10\.[^\s\"'<>\]\u3000-\uffff]+)", re.IGNORECASE)


def well_formed_arxiv(identifier: str) -> bool:
    """Whether ``identifier`` (no version suffix) is a possible arXiv id."""
    if OLD_ID.fullmatch(identifier):
        return True
    m = NEW_ID.fullmatch(identifier)
    if not m or not 1 <= int(m["mm"]) <= 12:
        return False
    yymm = int(m["yy"] + m["mm"])
    if yymm < 704:  # new-style ids start in April 2007
        return False
    return len(m["num"]) == (4 if yymm < 1501 else 5)


def strip_version(identifier: str) -> str:
    return re.sub(r"v\d+$", "", identifier.removesuffix(".pdf"))


def _balanced(doi: str) -> str:
    """A DOI taken from Markdown, less the ')' and punctuation that end the link."""
    doi = doi.rstrip(".,;:")
    while doi.endswith(")") and doi.count(")") > doi.count("("):
        doi = doi[:-1]
    return doi.rstrip(".,;:")


def links_in(text: str) -> tuple[list[str], list[str]]:
    """The arXiv ids (version dropped) and DOIs that ``text`` links to."""
    arxiv = [strip_version(m.rstrip(".")) for m in ARXIV_LINK.findall(text)]
    return arxiv, [_balanced(m) for m in DOI_LINK.findall(text)]


def parse_bib(text: str) -> dict[str, dict[str, str]]:
    """``{key: {field: value}}`` of a BibTeX file (one level of braces in values)."""
    entries: dict[str, dict[str, str]] = {}
    for m in re.finditer(r"@(\w+)\s*\{\s*([^,\s]+)\s*,(.*?)\n\}", text, re.S):
        kind, key, body = m.groups()
        if key in entries:
            raise ValueError(f"duplicate bibliography key {key!r}")
        fields = {"type": kind.lower()}
        for f in re.finditer(r"(\w+)\s*=\s*\{((?:[^{}]|\{[^{}]*\})*)\}", body):
            fields[f.group(1).lower()] = f.group(2).strip()
        entries[key] = fields
    return entries


def bib_problems(entries: dict[str, dict[str, str]]) -> list[str]:
    """Malformed ids, ids that disagree with the entry's url, and duplicate ids."""
    problems, seen = [], {}
    for key, f in entries.items():
        eprint, doi, url = f.get("eprint"), f.get("doi"), f.get("url", "")
        if eprint is not None:
            if not well_formed_arxiv(eprint):
                problems.append(f"{key}: eprint {eprint!r} is not an arXiv id")
            if f.get("archiveprefix", "arXiv").lower() != "arxiv":
                problems.append(f"{key}: eprint without archiveprefix = {{arXiv}}")
        if doi is not None and not DOI.fullmatch(doi):
            problems.append(f"{key}: doi {doi!r} is not a DOI")
        url_ids, url_dois = links_in(url)
        for u in url_ids:
            if u != eprint:
                problems.append(f"{key}: url names arXiv {u} but eprint is {eprint}")
        for u in url_dois:
            if u != doi:
                problems.append(f"{key}: url names DOI {u} but doi is {doi}")
        for ident in filter(None, (eprint, doi)):
            if ident in seen:
                problems.append(f"{key}: {ident} is also entry {seen[ident]}")
            seen[ident] = key
    return problems


def unlisted_links(
    sources: dict[str, str], entries: dict[str, dict[str, str]]
) -> list[str]:
    """``where: id`` for every arXiv or DOI link no bibliography entry holds."""
    eprints = {f["eprint"] for f in entries.values() if "eprint" in f}
    dois = {f["doi"].lower() for f in entries.values() if "doi" in f}
    missing = []
    for where, text in sources.items():
        arxiv, doi_links = links_in(text)
        for ident in arxiv:
            if not well_formed_arxiv(ident):
                missing.append(f"{where}: arXiv {ident} is not a well-formed id")
            elif ident not in eprints:
                missing.append(f"{where}: arXiv {ident} is in no entry of the bib")
        for d in doi_links:
            if d.lower() not in dois:
                missing.append(f"{where}: DOI {d} is in no entry of the bib")
    return missing


def site_sources() -> dict[str, str]:
    """The text of every page source and package module, by repository path."""
    paths = [
        *sorted((REPO / "docs").rglob("*.md")),
        *sorted((REPO / "docs").rglob("*.py")),
        *sorted((REPO / "src" / "difflab").rglob("*.py")),
    ]
    return {
        p.relative_to(REPO).as_posix(): p.read_text(encoding="utf-8")
        for p in paths
        if "tests" not in p.relative_to(REPO).parts[:3]  # test data may be made up
    }


# --- the checker on made-up text ---------------------------------------------------

FAKE_BIB = """
@inproceedings{ho2020ddpm,
  title  = {Denoising Diffusion Probabilistic Models},
  year   = {2020},
  eprint = {2006.11239},
  archiveprefix = {arXiv},
  url    = {https://arxiv.org/abs/2006.11239}
}

@article{anderson1982,
  title = {Reverse-time diffusion equation models},
  year  = {1982},
  doi   = {10.1016/0304-4149(82)90051-5}
}
"""


def test_checker_accepts_listed_links_in_every_form():
    entries = parse_bib(FAKE_BIB)
    text = (
        "[DDPM](https://arxiv.org/abs/2006.11239), the PDF "
        "https://arxiv.org/pdf/2006.11239v2.pdf and "
        "[(Anderson 1982)](https://doi.org/10.1016/0304-4149(82)90051-5)."
    )
    assert links_in(text) == (
        ["2006.11239", "2006.11239"],
        ["10.1016/0304-4149(82)90051-5"],
    )
    assert unlisted_links({"page.md": text}, entries) == []
    assert bib_problems(entries) == []


def test_checker_catches_a_typo_in_an_id():
    entries = parse_bib(FAKE_BIB)
    # Two digits swapped: still well formed, but no entry holds it.
    swapped = "[DDPM](https://arxiv.org/abs/2006.11293)"
    assert unlisted_links({"page.md": swapped}, entries) == [
        "page.md: arXiv 2006.11293 is in no entry of the bib"
    ]
    # A digit dropped: not even a possible id.
    short = "see https://arxiv.org/abs/2006.1123 for details"
    assert unlisted_links({"n.py": short}, entries) == [
        "n.py: arXiv 2006.1123 is not a well-formed id"
    ]
    doi = "[x](https://doi.org/10.1016/0304-4149(82)90051-6)"
    assert unlisted_links({"n.py": doi}, entries) == [
        "n.py: DOI 10.1016/0304-4149(82)90051-6 is in no entry of the bib"
    ]


@pytest.mark.parametrize(
    "identifier, ok",
    [
        ("2006.11239", True),
        ("1412.6980", True),  # four digits before 2015
        ("1412.69801", False),
        ("1503.0358", False),  # five digits from 2015
        ("2013.01234", False),  # month 13
        ("0612.1234", False),  # before April 2007
        ("math.PR/0601001", True),
        ("hep-th/9901001", True),
        ("2006.11239v2", False),  # the bib holds ids without a version
    ],
)
def test_well_formed_arxiv(identifier, ok):
    assert well_formed_arxiv(identifier) is ok


def test_bib_problems_are_reported():
    bad = FAKE_BIB.replace("eprint = {2006.11239}", "eprint = {2006.1239}")
    problems = bib_problems(parse_bib(bad))
    assert "ho2020ddpm: eprint '2006.1239' is not an arXiv id" in problems
    assert any("url names arXiv 2006.11239" in p for p in problems)
    twice = FAKE_BIB + FAKE_BIB.replace("{ho2020ddpm,", "{ddpm_again,").replace(
        "{anderson1982,", "{anderson_again,"
    )
    assert any("also entry ho2020ddpm" in p for p in bib_problems(parse_bib(twice)))


# --- the site -----------------------------------------------------------------------


def test_bibliography_ids_are_well_formed():
    entries = parse_bib(BIB.read_text(encoding="utf-8"))
    assert len(entries) > 30
    assert bib_problems(entries) == []


def test_every_arxiv_and_doi_link_is_in_the_bibliography():
    entries = parse_bib(BIB.read_text(encoding="utf-8"))
    sources = site_sources()
    assert any("arxiv.org/abs/" in t for t in sources.values())
    missing = unlisted_links(sources, entries)
    assert missing == [], "add these to docs/references.bib:\n" + "\n".join(missing)
