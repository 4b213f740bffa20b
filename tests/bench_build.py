"""Benchmark of the site build (not a test): cold, then warm, with the per-note table.

    make bench-build                     # or: python tests/bench_build.py
    python tests/bench_build.py --jobs 1 # the same with one worker

The cold build runs ``mkdocs build --strict`` with an empty notes cache and an
empty model cache (both in a temporary folder, so the checkout's own caches are
left alone), the warm build runs it again on those caches, and a third build
follows an edit of one note's prose (a copy of the docs with one markdown line
added), which must execute that note only. It prints the wall-clock seconds of
each, the machine (cores, threads per worker) and the per-note table of the cold
build (``last-build.json``), longest first. The datasets found in ``data/`` (or
``DIFFLAB_DATA``) are used as in any build; move them aside to time the embedded
defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build(root: Path, env: dict, site: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t0
    log = res.stdout + res.stderr
    if res.returncode != 0:
        sys.exit(f"the build failed ({res.returncode}):\n{log[-4000:]}")
    return seconds, log


def edited_build(work: Path, env: dict) -> tuple[float, list[str]]:
    """Build a copy of the checkout with one note's prose edited (the docs are not
    touched) on the caches of the builds before; the seconds and the log lines of
    the notes it executed."""
    copy = work / "edited"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir()
    for name in ("mkdocs.yml", "hooks", "docs", "overrides"):  # what mkdocs.yml reads
        src = REPO / name
        if src.is_dir():
            shutil.copytree(
                src, copy / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(src, copy / name)
    (copy / "src").symlink_to(REPO / "src", target_is_directory=True)
    # A line added to the first markdown cell, and its Chinese block marked as
    # behind its English (``waiting``), as a writer leaves it for the translator:
    # a strict build accepts that; an untranslated unit it would refuse.
    note = copy / "docs" / "foundations" / "markov-chains.py"
    text = note.read_text()
    cell = "# %% [markdown]\n"
    at = text.index("\n", text.index(cell + "# ") + len(cell)) + 1  # after its title
    note.write_text(text[:at] + "# An edited line.\n" + text[at:])
    zh = note.with_suffix(".zh.md")
    zh.write_text(
        re.sub(r"^(<!-- cell 1 en:[0-9a-f]{12}) -->", r"\1 waiting -->", zh.read_text(),
               count=1, flags=re.M)
    )  # fmt: skip
    edited, elog = build(copy, env, work / "site-edited")
    executed = [
        ln for ln in elog.splitlines() if "notes: [" in ln and " executed in " in ln
    ]
    return edited, executed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, help="DIFFLAB_NOTES_JOBS (default: cores)")
    parser.add_argument("--keep", help="keep the caches and sites in this folder")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-build-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        NO_MKDOCS_2_WARNING="1",
        DIFFLAB_PROFILE=env.get("DIFFLAB_PROFILE", "quick"),
        DIFFLAB_CACHE=str(work / "models"),
        DIFFLAB_NOTES_CACHE=str(work / "notes"),
    )
    if args.jobs:
        env["DIFFLAB_NOTES_JOBS"] = str(args.jobs)
    for d in ("models", "notes"):
        shutil.rmtree(work / d, ignore_errors=True)

    cold, log = build(REPO, env, work / "site")
    # Printed now, so that a failure of a later build does not lose it.
    print(f"cold build (empty caches): {cold:7.1f} s", flush=True)
    table = json.loads((work / "notes" / "last-build.json").read_text())
    workers = next((ln for ln in log.splitlines() if "at a time with" in ln), "")
    warm, _ = build(REPO, env, work / "site")

    edited, executed = edited_build(work, env)

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores")
    print(
        f"workers: {workers.split('notes: ')[-1] if workers else '(nothing executed)'}"
    )
    print(f"cold build (empty caches): {cold:7.1f} s")
    print(f"warm build (nothing changed): {warm:7.1f} s")
    print(
        f"after editing one note's prose: {edited:7.1f} s, notes executed: {len(executed)}"
    )
    for ln in executed:
        print("   ", ln.split("notes: ")[-1])
    print("\ncold build, per note (longest first):")
    rows = sorted(table["pages"], key=lambda r: -r["seconds"])
    width = max(len(r["page"]) for r in rows)
    for r in rows:
        print(f"  {r['page']:<{width}}  {r['seconds']:7.1f} s  {r['status']}")
    print(f"  {'sum of the notes':<{width}}  {sum(r['seconds'] for r in rows):7.1f} s")
    print("\nheaviest cells of the cold build (note, cell index, seconds, first line):")
    for meta in sorted((work / "notes").glob("*.json")):
        record = json.loads(meta.read_text())
        for c in record.get("heaviest_cells", [])[:2] if "page" in record else []:
            if c["seconds"] >= 10:
                print(
                    f"  {record['page']:<{width}}  #{c['cell']:<3} {c['seconds']:6.1f} s  "
                    f"{c['first_line']}"
                )
    print(f"\ncaches and sites kept in {work}" if args.keep else "")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
