"""The audio chapter in Chromium: every clip loads and lasts as long as it should.

Each ``<audio>`` of ``applications/audio.html`` embeds its WAV as a data URI
(nothing is fetched from elsewhere) and states the duration its samples imply in
``data-expected-duration``; the browser must decode the header to that length,
to within one sample at the chapter's 4 kHz (0.25 ms). Uses the session's site
and Chromium fixtures, so it skips or builds exactly as the other site tests do.
"""

from __future__ import annotations

import pytest

PAGE = "applications/audio.html"

AUDIO_REPORT = """
async () => {
  const els = Array.from(document.querySelectorAll("article audio"));
  return await Promise.all(els.map((a) => new Promise((resolve) => {
    const done = () => resolve({
      ready: a.readyState, error: a.error ? a.error.code : 0,
      duration: a.duration, expected: parseFloat(a.dataset.expectedDuration),
      controls: a.controls, src: a.currentSrc.slice(0, 22),
    });
    if (a.readyState >= 1) return done();
    a.addEventListener("loadedmetadata", done, {once: true});
    a.addEventListener("error", done, {once: true});
    setTimeout(done, 30000);
    a.load();
  })));
}
"""


def test_every_audio_element_loads_with_its_duration(browser, site_url, site_dir):
    if not (site_dir / PAGE).is_file():
        pytest.fail(f"{PAGE} is missing from the built site")
    page = browser.new_page()
    try:
        page.goto(f"{site_url}/{PAGE}", wait_until="load", timeout=120_000)
        clips = page.evaluate(AUDIO_REPORT)
    finally:
        page.close()
    # Two real rows of 5, and a 10 x 3 grid per model.
    assert len(clips) >= 10 + 2 * 30, f"only {len(clips)} audio elements"
    for k, c in enumerate(clips):
        assert c["src"] == "data:audio/wav;base64,", (k, c)
        assert c["controls"], (k, "no controls")
        assert c["error"] == 0 and c["ready"] >= 1, (k, c)
        assert abs(c["duration"] - c["expected"]) < 1 / 4000, (k, c)


@pytest.mark.parametrize("width", [1366, 390])
def test_players_are_wide_enough_to_scrub(browser, site_url, site_dir, width):
    """Issue 20, point 4: every player is at least 240 px wide as laid out, on a
    desktop and on a phone (a grid wider than the column scrolls inside it)."""
    if not (site_dir / PAGE).is_file():
        pytest.fail(f"{PAGE} is missing from the built site")
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        page.goto(f"{site_url}/{PAGE}", wait_until="load", timeout=120_000)
        widths = page.evaluate(
            "() => Array.from(document.querySelectorAll('article audio'))"
            ".map((a) => a.getBoundingClientRect().width)"
        )
    finally:
        page.close()
    assert widths, "no audio element"
    narrow = [round(w) for w in widths if w < 240]
    assert not narrow, (
        f"{len(narrow)} of {len(widths)} players under 240 px: {narrow[:5]}"
    )
